//! The processes a bench run starts, and how it stops them.
//!
//! Each target runs in the foreground as a child of the bench, in its own
//! process group, with its config written from `config/` into a temporary
//! directory. Proxies are pinned to the proxy core with `taskset`. Nothing here touches a system
//! service, a system config file or a port outside 127.0.0.1.
//!
//! [`start_proxy`] starts a proxy for the HTTP phases (HTTP/1.1 and h2c to
//! the HTTP upstream); [`start_grpc_proxy`] starts one for the gRPC part
//! (h2c in, HTTP/2 to the gRPC upstream), Envoy included.
//!
//! Stopping: [`Daemon::stop`] sends SIGTERM and waits briefly; dropping a
//! [`Daemon`] (an error, a panic, Ctrl-C) sends SIGKILL to its whole process
//! group, so nginx's worker goes with its master.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use crate::gen::{self, Endpoint, Proto};
use crate::grpc;

const BREAKWATER_CONFIG: &str = include_str!("config/breakwater.yaml");
const NGINX_CONFIG: &str = include_str!("config/nginx.conf");
const HAPROXY_CONFIG: &str = include_str!("config/haproxy.cfg");
const BREAKWATER_GRPC_CONFIG: &str = include_str!("config/breakwater-grpc.yaml");
const NGINX_GRPC_CONFIG: &str = include_str!("config/nginx-grpc.conf");
const HAPROXY_GRPC_CONFIG: &str = include_str!("config/haproxy-grpc.cfg");
const ENVOY_GRPC_CONFIG: &str = include_str!("config/envoy-grpc.yaml");

/// How long a daemon may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process the bench owns.
pub struct Daemon {
    /// Shown in messages.
    pub name: String,
    /// Its process id (also its process group id).
    pub pid: u32,
    child: Child,
}

// === impl Daemon ===

impl Daemon {
    /// Starts `command` in its own process group, output to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let log_file = std::fs::File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Daemon {
            name: name.to_owned(),
            pid,
            child,
        })
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited early: {status}", self.name),
        }
    }

    /// SIGTERM, then up to 5 s for a clean exit; SIGKILL after that.
    pub async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        if timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
        // Drop reaps the group with SIGKILL in case a worker lingers.
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }
}

/// A free port on 127.0.0.1, picked by binding port 0 and letting go.
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Which proxy to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    /// This project's binary.
    Breakwater,
    /// nginx as a reverse proxy.
    Nginx,
    /// HAProxy as a reverse proxy.
    Haproxy,
    /// Envoy (gRPC part only).
    Envoy,
}

// === impl ProxyKind ===

impl ProxyKind {
    /// The target name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Breakwater => "breakwater",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Envoy => "envoy",
        }
    }
}

/// A started proxy: its process and where it listens.
pub struct Proxy {
    /// The process (tree).
    pub daemon: Daemon,
    /// HTTP/1.1 listener.
    pub http1: SocketAddr,
    /// h2c (prior knowledge) listener; the same port for breakwater.
    pub h2c: SocketAddr,
}

/// Everything needed to start the proxies.
pub struct ProxySetup<'a> {
    /// Temporary directory for configs and logs.
    pub dir: &'a Path,
    /// The upstream every proxy forwards to.
    pub upstream: SocketAddr,
    /// The breakwater binary.
    pub breakwater_bin: &'a Path,
    /// `Some(cpu)` pins proxies to that CPU with `taskset`.
    pub pin_cpu: Option<usize>,
    /// The Envoy binary, when one was found (gRPC part only).
    pub envoy_bin: Option<&'a Path>,
}

/// Starts one proxy and waits until it serves a request through to the upstream.
pub async fn start_proxy(kind: ProxyKind, setup: &ProxySetup<'_>) -> Result<Proxy> {
    let http1 = free_port()?;
    let (program, args, h2c, name): (PathBuf, Vec<String>, SocketAddr, &str) = match kind {
        ProxyKind::Breakwater => {
            let admin = free_port()?;
            let config = fill(BREAKWATER_CONFIG, setup, http1, http1, admin);
            let path = setup.dir.join("breakwater.yaml");
            std::fs::write(&path, config)?;
            let args = vec!["run".into(), "--config".into(), path.display().to_string()];
            (
                setup.breakwater_bin.to_path_buf(),
                args,
                http1,
                "breakwater",
            )
        }
        ProxyKind::Nginx => {
            let h2c = free_port()?;
            let config = fill(NGINX_CONFIG, setup, http1, h2c, http1);
            let path = setup.dir.join("nginx.conf");
            std::fs::write(&path, config)?;
            let prefix = format!("{}/", setup.dir.display());
            let error_log = setup.dir.join("nginx-error.log").display().to_string();
            let args = vec![
                "-p".into(),
                prefix,
                "-c".into(),
                path.display().to_string(),
                "-e".into(),
                error_log,
            ];
            (which("nginx")?, args, h2c, "nginx")
        }
        ProxyKind::Haproxy => {
            let h2c = free_port()?;
            let config = fill(HAPROXY_CONFIG, setup, http1, h2c, http1);
            let path = setup.dir.join("haproxy.cfg");
            std::fs::write(&path, config)?;
            let args = vec!["-db".into(), "-f".into(), path.display().to_string()];
            (which("haproxy")?, args, h2c, "haproxy")
        }
        ProxyKind::Envoy => bail!("Envoy runs in the gRPC part only"),
    };
    let log = setup.dir.join(format!("{name}.log"));
    let mut daemon = launch(kind, &program, &args, setup, &log)?;
    let ready = async {
        wait_ready(&Endpoint::loopback(http1)?, Proto::Http1, Some(&mut daemon)).await?;
        wait_ready(&Endpoint::loopback(h2c)?, Proto::H2c, Some(&mut daemon)).await
    };
    if let Err(error) = ready.await {
        bail!("{error:#}\n--- {} ---\n{}", log.display(), log_tail(&log));
    }
    Ok(Proxy { daemon, http1, h2c })
}

/// The gRPC part: starts one proxy with its gRPC config (h2c listener, one
/// route to the gRPC upstream over HTTP/2) and waits until a unary call
/// through it ends OK with the echo. Returns the proxy and its listener.
pub async fn start_grpc_proxy(kind: ProxyKind, setup: &ProxySetup<'_>) -> Result<Proxy> {
    let listen = free_port()?;
    let name = kind.name();
    let (template, file) = match kind {
        ProxyKind::Breakwater => (BREAKWATER_GRPC_CONFIG, "breakwater-grpc.yaml"),
        ProxyKind::Nginx => (NGINX_GRPC_CONFIG, "nginx-grpc.conf"),
        ProxyKind::Haproxy => (HAPROXY_GRPC_CONFIG, "haproxy-grpc.cfg"),
        ProxyKind::Envoy => (ENVOY_GRPC_CONFIG, "envoy-grpc.yaml"),
    };
    // nginx's pid file and temp paths go to their own directory, away from
    // the HTTP part's nginx.
    let dir = setup.dir.join(format!("{name}-grpc"));
    std::fs::create_dir_all(&dir)?;
    let grpc_setup = ProxySetup {
        dir: &dir,
        ..*setup
    };
    let admin = free_port()?;
    let path = dir.join(file);
    std::fs::write(&path, fill(template, &grpc_setup, listen, listen, admin))?;
    let config = path.display().to_string();
    let (program, args): (PathBuf, Vec<String>) = match kind {
        ProxyKind::Breakwater => (
            setup.breakwater_bin.to_path_buf(),
            vec!["run".into(), "--config".into(), config],
        ),
        ProxyKind::Nginx => (
            which("nginx")?,
            vec![
                "-p".into(),
                format!("{}/", dir.display()),
                "-c".into(),
                config,
                "-e".into(),
                dir.join("nginx-error.log").display().to_string(),
            ],
        ),
        ProxyKind::Haproxy => (which("haproxy")?, vec!["-db".into(), "-f".into(), config]),
        ProxyKind::Envoy => {
            let Some(envoy) = setup.envoy_bin else {
                bail!("no Envoy binary");
            };
            (
                envoy.to_path_buf(),
                // One worker, like nginx's one worker and HAProxy's one
                // thread; no shared memory for hot restart, so nothing
                // outside this process and 127.0.0.1 is touched.
                vec![
                    "-c".into(),
                    config,
                    "--concurrency".into(),
                    "1".into(),
                    "--disable-hot-restart".into(),
                    "--log-level".into(),
                    "warn".into(),
                ],
            )
        }
    };
    let log = dir.join(format!("{name}.log"));
    let mut daemon = launch(kind, &program, &args, &grpc_setup, &log)?;
    let endpoint = Endpoint::new(listen, &listen.to_string(), grpc::METHOD)?;
    if let Err(error) = wait_ready(&endpoint, Proto::Grpc, Some(&mut daemon)).await {
        bail!("{error:#}\n--- {} ---\n{}", log.display(), log_tail(&log));
    }
    Ok(Proxy {
        daemon,
        http1: listen,
        h2c: listen,
    })
}

/// Starts `program` with `args` as `kind`, pinned as `setup` says, output
/// to `log`.
fn launch(
    kind: ProxyKind,
    program: &Path,
    args: &[String],
    setup: &ProxySetup<'_>,
    log: &Path,
) -> Result<Daemon> {
    let mut command = match setup.pin_cpu {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    };
    command.args(args);
    if kind == ProxyKind::Breakwater {
        // The per-request access log off, as for nginx and HAProxy.
        command.env("RUST_LOG", "info,breakwater::access=off");
    }
    Daemon::spawn(kind.name(), command, log)
}

/// `{{…}}` placeholders of a config template, from `setup` and the ports.
fn fill(
    template: &str,
    setup: &ProxySetup<'_>,
    listen: SocketAddr,
    listen_h2c: SocketAddr,
    admin: SocketAddr,
) -> String {
    let open_files = open_files_limit();
    template
        .replace("{{NOFILE}}", &open_files.to_string())
        .replace(
            "{{HAPROXY_MAXCONN}}",
            &(open_files.saturating_sub(100) / 2).to_string(),
        )
        .replace(
            "{{NGINX_CONNECTIONS}}",
            &open_files.saturating_sub(100).to_string(),
        )
        .replace("{{TMP}}", &setup.dir.display().to_string())
        .replace("{{UPSTREAM_PORT}}", &setup.upstream.port().to_string())
        .replace("{{UPSTREAM}}", &setup.upstream.to_string())
        .replace("{{LISTEN_H2C}}", &listen_h2c.to_string())
        .replace("{{LISTEN_PORT}}", &listen.port().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{ADMIN}}", &admin.to_string())
}

/// The soft open-files limit the daemons inherit.
fn open_files_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(1 << 20))
}

/// The last lines of a daemon's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// The full path of a program on `PATH` (or in /usr/sbin, where Debian
/// puts nginx and haproxy).
pub fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir: PathBuf| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!("{program} not found; install it with: apt-get install -y {program}")
        })
}

/// Polls one GET (or gRPC call) until it answers 200 (gRPC: OK with the
/// echo), at most [`READY_TIMEOUT`].
async fn wait_ready(
    endpoint: &Endpoint,
    proto: Proto,
    mut daemon: Option<&mut Daemon>,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(daemon) = daemon.as_deref_mut() {
            daemon.check_alive()?;
        }
        match gen::probe(endpoint, proto).await {
            Ok(answer) if answer.is_ready() => return Ok(()),
            Ok(answer) => last = format!("{answer:?}"),
            Err(error) => last = format!("{error:#}"),
        }
        sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} ({}) not ready after {READY_TIMEOUT:?}: {last}",
        endpoint.addr,
        proto.label()
    )
}
