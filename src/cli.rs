//! Command-line interface (SPEC §1). Parsing only; `main` dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// breakwater: a sidecar resilience proxy.
#[derive(Debug, Parser)]
#[command(name = "breakwater", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (with no --config: the embedded default, SPEC §8.3).
    Run(RunArgs),
    /// Validate a config and print the effective config (defaults filled in).
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// One-command tour: a sim upstream behind the proxy, and what to try.
    Demo,
    /// A small controllable upstream for demos, tests and benches.
    Sim(crate::sim::SimArgs),
}

/// `breakwater run` flags; each overrides the config file.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (YAML). Watched for changes; SIGHUP reloads it too.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address of the (single) listener.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// host:port of the (single) upstream's one endpoint.
    #[arg(long)]
    pub upstream: Option<String>,
    /// Admin server address.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Worker threads (default: CPUs available to the process).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Command to supervise as the upstream process (`-- CMD ARGS…`);
    /// replaces `supervisor.process`.
    #[arg(last = true)]
    pub command: Vec<String>,
}
