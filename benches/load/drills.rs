//! Resilience drills: what a client sees when something breaks.
//!
//! Each drill starts breakwater (the release binary) and one or two
//! `breakwater sim` upstreams on 127.0.0.1, drives a steady open-loop
//! HTTP/1.1 load at it, breaks something at a known instant, and reports
//! figures (never pass/fail):
//!
//! 1. **breaker**: the sim flips to 503; time until the first
//!    `x-breakwater-reason: breaker-open`, and the fast-fail latency.
//! 2. **kill -9**: breakwater supervises the sim; the child is killed;
//!    failed requests, time until requests sent after the kill get 200 again,
//!    and the restarts `/status` counts.
//! 3. **failover**: primary and backup sims, retries and outlier detection
//!    on; the primary is killed; failed requests and time until the backup serves.
//! 4. **shed**: bulkhead `{max_concurrent: 8, max_queue: 0}` in front of a
//!    50 ms sim (≈ 160 req/s capacity), offered 10× that.
//!
//! The load: `WORKERS` connections, each with its share of a fixed schedule
//! (worker `i` sends requests `i, i + W, i + 2W, …` at `k / rate`). A late
//! request goes out as soon as its worker is free. Latencies here are
//! from the actual send (service time seen by the client), since the point
//! is how fast breakwater answers a refused request. Every request has a
//! timeout, every worker a request and reconnect bound, every drill a
//! fixed length; every process is a [`Daemon`], killed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::daemons::{free_port, Daemon};

/// Connections the open loop spreads its schedule over.
const WORKERS: usize = 128;
/// A request without a response after this counts as failed (status 0).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnects one worker may make in one drill.
const MAX_RECONNECTS: u32 = 2_000;
/// The CPU breakwater (and its supervised child) is pinned to, if any.
static PIN: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

/// How long a started process may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What one request got.
#[derive(Clone, Debug)]
struct Record {
    /// When it was sent, from the drill's start.
    sent: Duration,
    /// When its response (or error) came, from the drill's start.
    done: Duration,
    /// HTTP status, 0 for a connection error or timeout.
    status: u16,
    /// `x-breakwater-reason`, if any.
    reason: Option<String>,
    /// `x-sim-name`, if any.
    sim: Option<String>,
}

/// One drill's figures, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Drill {
    /// Short name.
    pub name: &'static str,
    /// What was broken and how the load looked.
    pub setup: String,
    /// Labelled figures, in order.
    pub figures: Vec<(String, String)>,
}

/// Runs every drill, one after another; a drill that fails to set up is
/// reported as such and the rest still run.
/// `pin`: the CPU for breakwater (the sims and the load stay on the bench's).
pub async fn run_all(breakwater_bin: &Path, dir: &Path, pin: Option<usize>) -> Vec<Drill> {
    let _ = PIN.set(pin);
    let mut drills = Vec::new();
    type Runner = for<'a> fn(
        &'a Path,
        &'a Path,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Drill>> + 'a>,
    >;
    let runners: [(&str, Runner); 5] = [
        ("breaker open time", |bin, dir| Box::pin(breaker(bin, dir))),
        ("kill -9 of a supervised upstream", |bin, dir| {
            Box::pin(kill_supervised(bin, dir))
        }),
        ("failover to a backup", |bin, dir| {
            Box::pin(failover(bin, dir, true))
        }),
        ("failover to a backup, breaker off", |bin, dir| {
            Box::pin(failover(bin, dir, false))
        }),
        ("shed under 10× overload", |bin, dir| {
            Box::pin(shed(bin, dir))
        }),
    ];
    for (name, runner) in runners {
        eprintln!("load bench: drill: {name}");
        match runner(breakwater_bin, dir).await {
            Ok(drill) => drills.push(drill),
            Err(error) => {
                eprintln!("load bench: drill {name} failed: {error:#}");
                drills.push(Drill {
                    name: "failed",
                    setup: name.to_owned(),
                    figures: vec![("error".into(), format!("{error:#}"))],
                });
            }
        }
    }
    drills
}

// --- the drills ---

async fn breaker(bin: &Path, dir: &Path) -> Result<Drill> {
    let rate = 1_000;
    let sim_addr = free_port()?;
    let _sim = start_sim(bin, dir, "sim", sim_addr, &[]).await?;
    let route = "circuit_breaker: {consecutive_failures: 5, open_duration: 5s}";
    let (proxy, listen, _admin) =
        start_breakwater(bin, dir, "breaker", route, sim_addr, "", "").await?;
    let flip_at = Duration::from_millis(1_000);
    let flip = async move {
        sleep(flip_at).await;
        let flipped = Instant::now();
        sim_set_status(sim_addr, 503).await?;
        Ok::<_, anyhow::Error>(flipped)
    };
    let (records, flipped, start) = drive(listen, rate, Duration::from_millis(3_000), flip).await?;
    drop(proxy);
    let flip = flipped? - start;
    let after: Vec<&Record> = records.iter().filter(|r| r.sent >= flip).collect();
    let first_open = after
        .iter()
        .filter(|r| r.reason.as_deref() == Some("breaker-open"))
        .map(|r| r.done)
        .min();
    let passed_503 = after
        .iter()
        .filter(|r| r.status == 503 && r.reason.is_none() && first_open.is_none_or(|t| r.sent <= t))
        .count();
    let open = latencies(
        after
            .iter()
            .copied()
            .filter(|r| r.reason.as_deref() == Some("breaker-open")),
    );
    Ok(Drill {
        name: "breaker",
        setup: format!(
            "{rate} req/s open loop, {WORKERS} conns; sim flipped to 503 at 1 s; \
             breaker `consecutive_failures: 5`"
        ),
        figures: vec![
            (
                "flip → first breaker-open".into(),
                fmt_opt_ms(first_open.map(|t| t.saturating_sub(flip))),
            ),
            (
                "upstream 503s passed through before it opened".into(),
                passed_503.to_string(),
            ),
            (
                "breaker-open responses (2 s)".into(),
                open.count.to_string(),
            ),
            ("fast-fail latency p50 / p99".into(), open.p50_p99()),
        ],
    })
}

async fn kill_supervised(bin: &Path, dir: &Path) -> Result<Drill> {
    let rate = 1_000;
    let sim_addr = free_port()?;
    let supervisor = format!(
        "supervisor:\n  startup_timeout: 10s\n  process:\n    command: {bin}\n    \
         args: [sim, --listen, \"{sim_addr}\", --record, \"false\"]\n    \
         restart: always\n    backoff: {{initial: 250ms, max: 2s, multiplier: 2, jitter: 0}}\n",
        bin = bin.display()
    );
    let (proxy, listen, admin) =
        start_breakwater(bin, dir, "supervised", "", sim_addr, "", &supervisor).await?;
    let status = admin_status(admin).await?;
    let child = status["supervisor"]["pid"]
        .as_u64()
        .ok_or_else(|| anyhow!("no supervisor.pid in /status: {status}"))?;
    let kill_at = Duration::from_millis(1_000);
    let killer = async move {
        sleep(kill_at).await;
        let killed = Instant::now();
        kill(Pid::from_raw(child as i32), Signal::SIGKILL)?;
        Ok::<_, anyhow::Error>(killed)
    };
    let (records, killed, start) =
        drive(listen, rate, Duration::from_millis(3_500), killer).await?;
    let status = admin_status(admin).await?;
    drop(proxy);
    let killed = killed? - start;
    let after: Vec<&Record> = records.iter().filter(|r| r.done >= killed).collect();
    let failed: Vec<&Record> = after.iter().copied().filter(|r| r.status != 200).collect();
    let back = after
        .iter()
        .filter(|r| r.status == 200 && r.sent >= killed)
        .map(|r| r.done)
        .min();
    let last_failure = failed.iter().map(|r| r.done).max();
    Ok(Drill {
        name: "kill -9",
        setup: format!(
            "{rate} req/s open loop; `supervisor.process` = `breakwater sim`, \
             backoff initial 250 ms, no jitter; `kill -9` of the child at 1 s"
        ),
        figures: vec![
            ("requests failed (non-200)".into(), failed.len().to_string()),
            ("of which".into(), breakdown(&failed)),
            (
                "kill → first 200 sent after it".into(),
                fmt_opt_ms(back.map(|t| t - killed)),
            ),
            (
                "kill → last failure".into(),
                fmt_opt_ms(last_failure.map(|t| t - killed)),
            ),
            (
                "restarts (/status)".into(),
                status["supervisor"]["restarts"].to_string(),
            ),
        ],
    })
}

async fn failover(bin: &Path, dir: &Path, breaker: bool) -> Result<Drill> {
    let rate = 1_000;
    let primary_addr = free_port()?;
    let backup_addr = free_port()?;
    let primary = start_sim(bin, dir, "primary", primary_addr, &[]).await?;
    let _backup = start_sim(bin, dir, "backup", backup_addr, &[]).await?;
    let mut route =
        String::from("retry: {attempts: 3, retry_on: [connect_error, connect_timeout, reset]}");
    if !breaker {
        route.push_str("\n        circuit_breaker: false");
    }
    let upstream = format!(
        "    backup: [\"{backup_addr}\"]\n    \
         outlier_detection: {{consecutive_failures: 5, base_ejection_time: 30s, max_ejection_percent: 100}}\n"
    );
    let (proxy, listen, admin) =
        start_breakwater(bin, dir, "failover", &route, primary_addr, &upstream, "").await?;
    let primary_pid = primary.pid;
    let kill_at = Duration::from_millis(1_000);
    let killer = async move {
        sleep(kill_at).await;
        let killed = Instant::now();
        kill(Pid::from_raw(primary_pid as i32), Signal::SIGKILL)?;
        Ok::<_, anyhow::Error>(killed)
    };
    let (records, killed, start) =
        drive(listen, rate, Duration::from_millis(3_000), killer).await?;
    let status = admin_status(admin).await?;
    let primary_ejected = status["upstreams"][0]["endpoints"][0]["ejected"].to_string();
    let (_, metrics) = once(admin, "GET", "/metrics", "").await?;
    let budget_exhausted = metric_sum(&metrics, "breakwater_retry_budget_exhausted_total");
    let retries = metric_sum(&metrics, "breakwater_retries_total");
    drop(proxy);
    drop(primary);
    let killed = killed? - start;
    let after: Vec<&Record> = records.iter().filter(|r| r.done >= killed).collect();
    let failed: Vec<&Record> = after.iter().copied().filter(|r| r.status != 200).collect();
    let first_backup = after
        .iter()
        .filter(|r| r.status == 200 && r.sim.as_deref() == Some("backup"))
        .map(|r| r.done)
        .min();
    let by_backup = after
        .iter()
        .filter(|r| r.sim.as_deref() == Some("backup"))
        .count();
    let served = latencies(after.iter().copied().filter(|r| r.status == 200));
    Ok(Drill {
        name: if breaker { "failover" } else { "failover, breaker off" },
        setup: format!(
            "{rate} req/s open loop; primary + `backup` sim, `retry: {{attempts: 3, retry_on: \
             [connect_error, connect_timeout, reset]}}`, outlier detection on (`max_ejection_percent: 100`), \
             breaker {}; `kill -9` of the primary at 1 s",
            if breaker { "at its default (on)" } else { "`false`" }
        ),
        figures: vec![
            ("requests failed (non-200)".into(), failed.len().to_string()),
            ("of which".into(), breakdown(&failed)),
            ("kill → first response from the backup".into(), fmt_opt_ms(first_backup.map(|t| t - killed))),
            ("served by the backup (2 s)".into(), by_backup.to_string()),
            ("latency after the kill p50 / p99".into(), served.p50_p99()),
            ("primary ejected at the end (/status)".into(), primary_ejected),
            (
                "retries / retry budget exhausted (/metrics)".into(),
                format!("{retries} / {budget_exhausted}"),
            ),
        ],
    })
}

async fn shed(bin: &Path, dir: &Path) -> Result<Drill> {
    let rate = 1_600;
    let sim_addr = free_port()?;
    let _sim = start_sim(bin, dir, "slow", sim_addr, &["--latency", "50ms"]).await?;
    let route = "bulkhead: {max_concurrent: 8, max_queue: 0, queue_timeout: 100ms}";
    let (proxy, listen, _admin) =
        start_breakwater(bin, dir, "shed", route, sim_addr, "", "").await?;
    let window = Duration::from_millis(3_000);
    let skip = Duration::from_millis(500);
    let (records, (), _) = drive(listen, rate, window, async {}).await?;
    drop(proxy);
    let measured: Vec<&Record> = records.iter().filter(|r| r.sent >= skip).collect();
    let shed = latencies(
        measured
            .iter()
            .copied()
            .filter(|r| r.reason.as_deref() == Some("shed")),
    );
    let admitted = latencies(measured.iter().copied().filter(|r| r.status == 200));
    let other: Vec<&Record> = measured
        .iter()
        .copied()
        .filter(|r| r.status != 200 && r.reason.as_deref() != Some("shed"))
        .collect();
    let seconds = (window - skip).as_secs_f64();
    Ok(Drill {
        name: "shed",
        setup: format!(
            "{rate} req/s open loop (≈ 10× capacity); sim `--latency 50ms`; \
             `bulkhead: {{max_concurrent: 8, max_queue: 0}}`; last 2.5 s of 3 s"
        ),
        figures: vec![
            ("requests".into(), measured.len().to_string()),
            (
                "shed (503 shed)".into(),
                format!(
                    "{} ({:.0}%)",
                    shed.count,
                    100.0 * shed.count as f64 / measured.len().max(1) as f64
                ),
            ),
            ("shed latency p50 / p99".into(), shed.p50_p99()),
            (
                "admitted (200)".into(),
                format!(
                    "{} ({:.0} req/s)",
                    admitted.count,
                    admitted.count as f64 / seconds
                ),
            ),
            ("admitted latency p50 / p99".into(), admitted.p50_p99()),
            (
                "other".into(),
                if other.is_empty() {
                    "0".into()
                } else {
                    breakdown(&other)
                },
            ),
        ],
    })
}

// --- processes ---

async fn start_sim(
    bin: &Path,
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    extra: &[&str],
) -> Result<Daemon> {
    let mut command = Command::new(bin);
    command
        .args([
            "sim",
            "--listen",
            &addr.to_string(),
            "--record",
            "false",
            "--name",
            name,
        ])
        .args(extra)
        .env("RUST_LOG", "warn");
    let log = dir.join(format!("drill-sim-{name}.log"));
    let daemon = Daemon::spawn(&format!("sim {name}"), command, &log)?;
    wait_200(addr)
        .await
        .with_context(|| format!("sim {name} not ready"))?;
    Ok(daemon)
}

/// Starts breakwater with one route to one upstream at `endpoint`;
/// `route` and `upstream` are extra YAML lines (route: one line, indented
/// by the template; upstream: full lines), `supervisor` a top-level block.
async fn start_breakwater(
    bin: &Path,
    dir: &Path,
    name: &str,
    route: &str,
    endpoint: SocketAddr,
    upstream: &str,
    supervisor: &str,
) -> Result<(Daemon, SocketAddr, SocketAddr)> {
    let listen = free_port()?;
    let admin = free_port()?;
    let route = if route.is_empty() {
        String::new()
    } else {
        format!("        {route}\n")
    };
    let config = format!(
        "runtime:\n  threads: 1\nadmin:\n  listen: \"{admin}\"\nlisteners:\n  - name: drill\n    \
         listen: \"{listen}\"\n    routes:\n      - name: all\n        match: {{path_prefix: /}}\n        \
         upstream: app\n{route}upstreams:\n  - name: app\n    endpoints: [\"{endpoint}\"]\n    \
         protocol: http1\n{upstream}{supervisor}"
    );
    let path = dir.join(format!("drill-{name}.yaml"));
    std::fs::write(&path, config)?;
    let mut command = match PIN.get().copied().flatten() {
        Some(cpu) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(bin);
            command
        }
        None => Command::new(bin),
    };
    command
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info,breakwater::access=off");
    let log = dir.join(format!("drill-{name}.log"));
    let mut daemon = Daemon::spawn(&format!("breakwater ({name})"), command, &log)?;
    let ready = wait_200(listen).await;
    if let Err(error) = ready.and_then(|()| daemon.check_alive()) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("{error:#}\n--- {} ---\n{text}", log.display());
    }
    Ok((daemon, listen, admin))
}

async fn wait_200(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match once(addr, "GET", "/", "").await {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) => last = format!("status {status}"),
            Err(error) => last = format!("{error:#}"),
        }
        sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr} not ready after {READY_TIMEOUT:?}: {last}")
}

/// One request on a fresh connection (`Connection: close`): status and body.
async fn once(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(4 << 20).read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("no status line from {addr}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
            .to_owned();
        Ok::<_, anyhow::Error>((status, body))
    };
    timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{addr} timed out"))?
}

async fn sim_set_status(addr: SocketAddr, status: u16) -> Result<()> {
    let (code, body) = once(
        addr,
        "POST",
        "/__sim/config",
        &format!("{{\"status\":{status}}}"),
    )
    .await?;
    if code != 200 {
        bail!("POST /__sim/config: {code} {body}");
    }
    Ok(())
}

async fn admin_status(admin: SocketAddr) -> Result<serde_json::Value> {
    let (code, body) = once(admin, "GET", "/status", "").await?;
    if code != 200 {
        bail!("GET /status: {code}");
    }
    // The body may be chunked: take the JSON object between the outer braces.
    let start = body.find('{').ok_or_else(|| anyhow!("/status: no JSON"))?;
    let end = body.rfind('}').ok_or_else(|| anyhow!("/status: no JSON"))?;
    Ok(serde_json::from_str(&body[start..=end])?)
}

/// The sum of every sample of `name` in a Prometheus text body.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// --- load ---

/// Drives `rate` req/s at `addr` for `length` while `event` runs; returns
/// every record, `event`'s output and the drill's start instant.
async fn drive<T>(
    addr: SocketAddr,
    rate: u64,
    length: Duration,
    event: impl std::future::Future<Output = T>,
) -> Result<(Vec<Record>, T, Instant)> {
    let start = Instant::now();
    let end = start + length;
    let interval = Duration::from_secs_f64(WORKERS as f64 / rate as f64);
    let records = Rc::new(std::cell::RefCell::new(Vec::with_capacity(
        (rate * 5) as usize,
    )));
    let workers = (0..WORKERS).map(|worker| {
        let records = records.clone();
        let first = start + Duration::from_secs_f64(worker as f64 / rate as f64);
        async move {
            let mut connection: Option<http1::SendRequest<Empty<Bytes>>> = None;
            let mut reconnects = 0;
            let max_requests = length.as_millis() as u64 * rate / 1_000 / WORKERS as u64 + 2;
            for k in 0..max_requests {
                let scheduled = first + interval * k as u32;
                if scheduled >= end {
                    break;
                }
                sleep_until(scheduled).await;
                let sent = Instant::now();
                let outcome = timeout(
                    REQUEST_TIMEOUT,
                    request(addr, &mut connection, &mut reconnects),
                )
                .await;
                let done = Instant::now();
                let record = match outcome {
                    Ok(Ok((status, reason, sim))) => Record {
                        sent: sent - start,
                        done: done - start,
                        status,
                        reason,
                        sim,
                    },
                    _ => {
                        connection = None;
                        Record {
                            sent: sent - start,
                            done: done - start,
                            status: 0,
                            reason: None,
                            sim: None,
                        }
                    }
                };
                records.borrow_mut().push(record);
                if reconnects > MAX_RECONNECTS {
                    break;
                }
            }
        }
    });
    let (_, output) = tokio::join!(join_all(workers), event);
    let records = Rc::try_unwrap(records)
        .map_err(|_| anyhow!("records still shared"))?
        .into_inner();
    Ok((records, output, start))
}

/// One GET on the worker's connection (opening one if needed).
async fn request(
    addr: SocketAddr,
    connection: &mut Option<http1::SendRequest<Empty<Bytes>>>,
    reconnects: &mut u32,
) -> Result<(u16, Option<String>, Option<String>)> {
    if connection.as_ref().is_none_or(|sender| sender.is_closed()) {
        *connection = None;
        *reconnects += 1;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *connection = Some(sender);
    }
    let sender = connection.as_mut().expect("just set");
    let result = async {
        sender.ready().await?;
        let request = Request::get("/")
            .header("host", addr.to_string())
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let reason = header("x-breakwater-reason");
        let sim = header("x-sim-name");
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok::<_, anyhow::Error>((status, reason, sim))
    }
    .await;
    if result.is_err() {
        *connection = None;
    }
    result
}

// --- figures ---

struct Latencies {
    count: usize,
    histogram: Histogram<u64>,
}

impl Latencies {
    fn p50_p99(&self) -> String {
        if self.count == 0 {
            return "–".into();
        }
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1_000.0;
        format!("{} / {}", fmt_ms(ms(0.5)), fmt_ms(ms(0.99)))
    }
}

/// Send → response latencies of `records`, in µs.
fn latencies<'a>(records: impl Iterator<Item = &'a Record>) -> Latencies {
    let mut histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut count = 0;
    for record in records {
        count += 1;
        let micros = (record.done - record.sent).as_micros().clamp(1, 60_000_000) as u64;
        let _ = histogram.record(micros);
    }
    Latencies { count, histogram }
}

/// "12 × 502 upstream-unavailable, 3 × error" for failed records.
fn breakdown(records: &[&Record]) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for record in records {
        let key = match (record.status, &record.reason) {
            (0, _) => "connection error/timeout".to_owned(),
            (status, Some(reason)) => format!("{status} {reason}"),
            (status, None) => format!("{status}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    if counts.is_empty() {
        return "–".into();
    }
    counts
        .iter()
        .map(|(key, count)| format!("{count} × {key}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1_000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn fmt_opt_ms(duration: Option<Duration>) -> String {
    duration.map_or("never (within the drill)".into(), |d| {
        fmt_ms(d.as_secs_f64() * 1_000.0)
    })
}

const BEGIN: &str =
    "<!-- drills:begin (generated by benches/load --drills; edits inside are overwritten) -->";
const END: &str = "<!-- drills:end -->";

/// Writes `section` between the drill markers of `path`, keeping the rest
/// of the file (appending the markers if they are not there yet).
pub fn write_section(path: &Path, section: &str) -> Result<()> {
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if end > begin => {
            format!(
                "{}{block}{}",
                &existing[..begin],
                &existing[end + END.len()..]
            )
        }
        _ => format!("{}\n\n{block}\n", existing.trim_end()),
    };
    std::fs::write(path, text)?;
    Ok(())
}

/// The drills as a markdown section.
pub fn markdown(drills: &[Drill], command: &str, revision: &str) -> String {
    let mut out = String::from("## Resilience drills\n\n");
    out.push_str(&format!(
        "`{command}` at {revision}, release binary, everything on 127.0.0.1. \
         Figures, not verdicts: one run each; latencies are send → response. {}\n\n",
        match PIN.get().copied().flatten() {
            Some(cpu) => format!(
                "breakwater (and its supervised child) pinned to CPU {cpu}, \
                 the sims and the load generator to the bench's CPU."
            ),
            None => "Not pinned.".into(),
        }
    ));
    out.push_str("| drill | setup | figure | value |\n|---|---|---|---|\n");
    for drill in drills {
        for (index, (label, value)) in drill.figures.iter().enumerate() {
            let (name, setup) = if index == 0 {
                (drill.name, drill.setup.as_str())
            } else {
                ("", "")
            };
            out.push_str(&format!(
                "| {name} | {setup} | {label} | {} |\n",
                value.replace('|', "\\|")
            ));
        }
    }
    out
}
