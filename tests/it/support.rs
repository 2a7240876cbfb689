//! Test harness: real `breakwater` processes on 127.0.0.1, bounded polling,
//! and cleanup on drop. Every wait here has a deadline; nothing sleeps a
//! fixed time hoping something happened.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_breakwater")
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`
/// naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client that ignores proxy environment variables.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Collects a child's output lines so tests can wait for or search them.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    /// Collects `stream`'s lines from a thread of its own, echoed to
    /// stderr tagged `[echo]` when `BREAKWATER_TEST_ECHO` is set.
    pub fn capture(&self, stream: impl Read + Send + 'static, echo: &'static str) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("BREAKWATER_TEST_ECHO").is_some() {
                    eprintln!("[{echo}] {line}");
                }
                lines.lock().expect("lines").push(line);
            }
        });
    }

    /// Every line so far, joined.
    pub fn text(&self) -> String {
        self.0.lock().expect("lines").join("\n")
    }

    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .expect("lines")
            .iter()
            .any(|line| line.contains(needle))
    }

    /// Waits (bounded) until a line contains `needle`.
    pub async fn wait_for(&self, needle: &str, limit: Duration) {
        let what = format!("output line containing {needle:?}");
        eventually(&what, limit, || async {
            self.contains(needle).then_some(())
        })
        .await;
    }
}

/// A running child process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub stdout: Output,
    pub stderr: Output,
}

impl Process {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut command = Command::new(bin());
        command.args(args);
        for (key, value) in envs {
            command.env(key, value);
        }
        Process::spawn_command(command)
    }

    /// Spawns `command` (any program: `ip netns exec … breakwater …`),
    /// its output captured like breakwater's.
    pub fn spawn_command(mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn");
        let stdout = Output::default();
        let stderr = Output::default();
        stdout.capture(child.stdout.take().expect("stdout"), "out");
        stderr.capture(child.stderr.take().expect("stderr"), "err");
        Process {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY-free: libc::kill via the `kill` command keeps tests free of unsafe.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Peak resident memory in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// Current resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a /proc status field")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SIGTERM: i32 = 15;
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;

/// `breakwater sim`, built with flags.
pub struct SimBuilder {
    name: String,
    args: Vec<String>,
}

/// `/__sim/stats` of the sim listening on `address`, or `None` while it
/// does not answer (a supervised child between restarts).
pub async fn sim_stats_at(address: &str) -> Option<serde_json::Value> {
    client()
        .get(format!("http://{address}/__sim/stats"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

pub fn sim(name: &str) -> SimBuilder {
    SimBuilder {
        name: name.to_owned(),
        args: Vec::new(),
    }
}

impl SimBuilder {
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub async fn run(self) -> Sim {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut args = vec!["sim", "--listen", &address, "--name", &self.name];
        args.extend(self.args.iter().map(String::as_str));
        let process = Process::spawn(&args, &[]);
        process
            .stdout
            .wait_for("listening on", Duration::from_secs(10))
            .await;
        Sim { process, address }
    }
}

/// A running sim upstream.
pub struct Sim {
    pub process: Process,
    pub address: String,
}

impl Sim {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn control(&self, json: &str) {
        let response = client()
            .post(self.url("/__sim/config"))
            .body(json.to_owned())
            .send()
            .await
            .expect("sim control");
        assert!(
            response.status().is_success(),
            "sim control {json}: {}",
            response.status()
        );
    }

    pub async fn stats(&self) -> serde_json::Value {
        sim_stats_at(&self.address).await.expect("sim stats")
    }

    pub async fn requests(&self) -> u64 {
        self.stats().await["requests"].as_u64().expect("requests")
    }
}

/// A breakwater proxy process with a config file in a temp dir.
pub struct Proxy {
    pub process: Process,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// Fills `{listen}` and `{admin}` in a config template with free ports.
pub struct ProxyBuilder {
    template: String,
    envs: Vec<(String, String)>,
    args: Vec<String>,
}

pub fn proxy(template: &str) -> ProxyBuilder {
    ProxyBuilder {
        template: template.to_owned(),
        envs: Vec::new(),
        args: Vec::new(),
    }
}

impl ProxyBuilder {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Starts the proxy and waits until its admin port answers `/healthz`.
    pub async fn run(self) -> Proxy {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("breakwater.yaml");
        let text = fill(&self.template, listen, admin);
        std::fs::write(&config_path, text).expect("write config");
        let config_arg = config_path.to_str().expect("path").to_owned();
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.splice(0..0, ["run", "--config", config_arg.as_str()]);
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let process = Process::spawn(&args, &envs);
        let mut proxy = Proxy {
            process,
            dir,
            config_path,
            listen,
            admin,
        };
        proxy.wait_healthy().await;
        proxy
    }
}

pub fn fill(template: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    template
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Waits (bounded) until the admin port answers `/healthz`; fails at
    /// once, with the proxy's stderr, if the process exits first.
    pub async fn wait_healthy(&mut self) {
        let url = self.admin_url("/healthz");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(response) = client().get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!(
                    "proxy exited ({status}) before serving:\n{}",
                    self.process.stderr.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "proxy admin /healthz did not answer in 15s:\n{}",
                self.process.stderr.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("GET through proxy")
    }

    pub async fn status_json(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Rewrites the config file (same ports).
    pub fn rewrite(&self, template: &str) {
        write_atomically(&self.config_path, &fill(template, self.listen, self.admin));
    }
}

/// The value of the series `series` (name and labels exactly as
/// rendered, e.g. `breakwater_shed_total{reason="full",route="main"}`) in
/// a Prometheus text page; `None` when it is not there.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Replaces a file by rename, as editors and config tools do.
pub fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).expect("write temp");
    std::fs::rename(&temp, path).expect("rename");
}

/// Sends raw bytes on a fresh connection and reads until the peer closes
/// or `limit` passes; returns what was read.
pub fn raw_exchange(address: SocketAddr, request: &[u8], limit: Duration) -> String {
    raw_exchange_closed(address, request, limit).0
}

/// Like [`raw_exchange`], and whether the peer closed the connection
/// (rather than the read timing out).
pub fn raw_exchange_closed(address: SocketAddr, request: &[u8], limit: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(limit)).expect("timeout");
    // The peer may close before taking all of a refused request.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let closed = match stream.read_to_end(&mut response) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    };
    (String::from_utf8_lossy(&response).into_owned(), closed)
}

/// The value of `name` in a raw HTTP/1 response head, if present.
pub fn raw_header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A webhook receiver on 127.0.0.1: records each POST body.
pub async fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let body = http_body_util::BodyExt::collect(request.into_body())
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if let Ok(value) = serde_json::from_slice(&body) {
                                store.lock().unwrap().push(value);
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}/hook"), received)
}
