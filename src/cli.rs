//! Command-line interface (SPEC §1). Parsing only; `main` dispatches.
//!
//! `--help` is what users read: it names no internal document.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;
use crate::telemetry::LogFormat;

/// What `--version` prints after the name: the version, the git commit it
/// was built from (`unknown` without git) and the build date (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BREAKWATER_COMMIT"),
    ", built ",
    env!("BREAKWATER_BUILD_DATE"),
    ")"
);

/// The git commit breakwater was built from, or `unknown`.
pub const COMMIT: &str = env!("BREAKWATER_COMMIT");

/// breakwater: a sidecar resilience proxy.
#[derive(Debug, Parser)]
#[command(name = "breakwater", version = VERSION, about, long_about = None)]
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
    /// Run the proxy (with no --config: the embedded default, which
    /// `breakwater check` prints).
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
    ///
    /// Uses the fixed ports 127.0.0.1:15006 (proxy), 15000 (admin) and
    /// 18080 (the sim). The per-request access log is off unless RUST_LOG
    /// is set, so the instructions stay on screen.
    Demo,
    /// A small controllable upstream for demos, tests and benches.
    Sim(crate::sim::SimArgs),
    /// Print shell completions to stdout.
    ///
    /// bash: `breakwater completions bash > ~/.local/share/bash-completion/completions/breakwater`;
    /// zsh: into a directory on `$fpath` as `_breakwater`; fish:
    /// `breakwater completions fish > ~/.config/fish/completions/breakwater.fish`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout.
    ///
    /// `breakwater man > breakwater.1 && man ./breakwater.1`, or install it
    /// under a `man1` directory on your MANPATH.
    Man,
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
