//! Command-line interface (SPEC §1). Parsing only; `main` dispatches.
//!
//! `--help` is what users read: it names no internal document.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;
use crate::intercept::rules::{InboundPorts, Options, Outbound};
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
    /// Transparent interception: the nat-table rules that send a pod's
    /// traffic through breakwater (for an init container, or a host).
    ///
    /// Rules live in breakwater's own chains (BREAKWATER_INBOUND,
    /// BREAKWATER_OUTBOUND), entered by one jump each from PREROUTING and
    /// OUTPUT; `remove` deletes exactly those. Needs CAP_NET_ADMIN (and
    /// CAP_NET_RAW for iptables-legacy).
    Iptables(IptablesArgs),
}

/// `breakwater iptables …`
#[derive(Debug, clap::Args)]
pub struct IptablesArgs {
    /// What to do with the rules.
    #[command(subcommand)]
    pub action: IptablesAction,
}

/// `print`, `install` or `remove`.
#[derive(Debug, Subcommand)]
pub enum IptablesAction {
    /// Show the commands `install` would run, without running them.
    Print(InterceptArgs),
    /// Install the rules. Idempotent: running it again with the same
    /// flags leaves the same rules; with other flags, the new ones.
    Install(InterceptArgs),
    /// Delete the rules `install` added, and nothing else.
    Remove(BackendArgs),
}

/// Which iptables, and which families.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// iptables implementation: `auto` picks the one the node's existing
    /// rules use (like Kubernetes' iptables-wrapper).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Also apply the rules to IPv6 (ip6tables).
    #[arg(long)]
    pub ipv6: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Detect.
    Auto,
    /// iptables-legacy (x_tables).
    Legacy,
    /// iptables-nft (nf_tables).
    Nft,
}

impl BackendChoice {
    /// The backend asked for, `None` for auto.
    pub fn backend(self) -> Option<crate::intercept::iptables::Backend> {
        use crate::intercept::iptables::Backend;
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Legacy => Some(Backend::Legacy),
            BackendChoice::Nft => Some(Backend::Nft),
        }
    }
}

/// What to intercept (`print` and `install`).
#[derive(Debug, Clone, clap::Args)]
pub struct InterceptArgs {
    /// The transparent listener's port: inbound traffic is redirected here.
    #[arg(long, default_value_t = 15006)]
    pub proxy_port: u16,
    /// Inbound TCP ports to redirect: a comma-separated list (8080,9090)
    /// or `all`.
    #[arg(long, default_value = "all", value_parser = parse_inbound_ports)]
    pub inbound_ports: InboundPorts,
    /// Inbound ports never redirected (with `all`), e.g. 22.
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// breakwater's admin port: never redirected, so probes reach it.
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    /// Also capture outbound TCP (redirected to --outbound-port); needs
    /// --proxy-uid or --proxy-gid so breakwater's own connections are not
    /// captured.
    #[arg(long)]
    pub outbound: bool,
    /// Where outbound connections are redirected (a transparent listener
    /// whose routes use an `original_dst: address` upstream).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Outbound destination ports never captured, e.g. 5432.
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// The uid breakwater runs as: its connections are never captured.
    #[arg(long)]
    pub proxy_uid: Option<u32>,
    /// The gid breakwater runs as: exempt like the uid.
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// Which iptables, and whether IPv6 too.
    #[command(flatten)]
    pub backend: BackendArgs,
}

fn parse_inbound_ports(text: &str) -> Result<InboundPorts, String> {
    if text.trim().eq_ignore_ascii_case("all") || text.trim() == "*" {
        return Ok(InboundPorts::All);
    }
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            part.trim().parse::<u16>().map_err(|_| {
                format!("expected `all` or ports like 8080,9090; {part:?} is not a port")
            })
        })
        .collect::<Result<Vec<u16>, String>>()
        .map(InboundPorts::Only)
}

impl InterceptArgs {
    /// The rules' options.
    pub fn options(&self) -> Options {
        Options {
            proxy_port: self.proxy_port,
            inbound: self.inbound_ports.clone(),
            exclude_inbound: self.exclude_inbound_ports.clone(),
            admin_port: self.admin_port,
            outbound: self.outbound.then(|| Outbound {
                port: self.outbound_port,
                exclude_ports: self.exclude_outbound_ports.clone(),
            }),
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid,
        }
    }
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
