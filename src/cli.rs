//! Command-line interface (SPEC §1). Parsing only; `main` dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;
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
    /// Validate a config and print the effective config, or every error.
    ///
    /// The effective config has every default filled in and secrets shown
    /// as `<redacted>`. With no --config, checks the embedded default with
    /// the flags applied: what `run` with the same flags would run. Each
    /// error names its key path and line, or the flag it came from.
    Check(CheckArgs),
    /// Print the config's JSON Schema (draft-07).
    ///
    /// Generated from the same key declarations as the loader, for editors
    /// (YAML language servers) and CI. docs/CONFIG.md is the same
    /// reference in prose.
    Schema,
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
    /// The values that override the file.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// `breakwater check` flags: the same as `run`'s.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Config file (YAML); without it, the embedded default.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The values that override the file.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// The flags that override config values (`run` and `check`).
#[derive(Debug, clap::Args)]
pub struct OverrideArgs {
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

impl OverrideArgs {
    /// The flags as config [`Overrides`].
    pub fn into_overrides(self) -> Overrides {
        Overrides {
            listen: self.listen,
            upstream: self.upstream,
            admin: self.admin,
            threads: self.threads,
            command: self.command,
        }
    }
}
