//! Running the rules: finding iptables (legacy or nft), checking that the
//! caller may change the `nat` table, and applying [`Step`]s so that
//! `install` and `remove` are idempotent. The I/O edge of
//! `breakwater iptables`; the rules themselves are `rules.rs`'s data.
//!
//! **Two backends.** Linux has two iptables implementations writing to
//! different kernel tables: `iptables-legacy` (x_tables) and
//! `iptables-nft` (nf_tables). Rules written with the one the node does
//! not use are silently ignored by the other's traffic path... or both
//! apply, in an order nobody chose. So, like Kubernetes' iptables-wrapper,
//! `--backend auto` looks for rules already present with each and picks the
//! one that has more (the node's kube-proxy or CNI wrote them); with none
//! anywhere it follows what plain `iptables` is (`--version` says
//! `legacy` or `nf_tables`), and with no plain `iptables`, nft, the
//! default of every current distribution.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::rules::{jump_args, Family, OptionsError, Step};

/// Which iptables implementation writes the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `iptables-legacy`: the x_tables kernel interface.
    Legacy,
    /// `iptables-nft`: nf_tables through the iptables command line.
    Nft,
}

impl Backend {
    /// `legacy` or `nft`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

/// Why the rules could not be printed, installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// No iptables binary at all.
    #[error("{looked_for} not found in PATH or /usr/sbin, /sbin: install the iptables package (Debian: apt-get install iptables; Alpine: apk add iptables)")]
    NotFound {
        /// The names looked for.
        looked_for: String,
    },
    /// The backend asked for is not installed.
    #[error("--backend {backend}: no {binary} (nor an `iptables` of that kind) found; install it or use --backend auto")]
    BackendNotFound {
        /// `legacy` or `nft`.
        backend: &'static str,
        /// The binary looked for.
        binary: String,
    },
    /// The caller lacks the capability to change the rules.
    #[error("changing iptables rules needs {capability}: run as root, or give the (init) container `securityContext.capabilities.add: [NET_ADMIN, NET_RAW]`")]
    NoCapability {
        /// `CAP_NET_ADMIN` or `CAP_NET_RAW`.
        capability: &'static str,
    },
    /// The options would break interception.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The OS error.
        source: io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command as run.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// One iptables binary of one backend and family.
#[derive(Debug, Clone)]
pub struct Iptables {
    /// The binary run.
    pub binary: PathBuf,
    /// Its backend.
    pub backend: Backend,
}

/// Where binaries are looked for besides `PATH` (often missing `sbin` for
/// non-root shells).
const SBIN: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn prefix(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// What plain `iptables --version` says it is, if it runs.
fn version_backend(binary: &Path) -> Option<Backend> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("nf_tables") {
        Some(Backend::Nft)
    } else if text.contains("legacy") {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// Rules present with `backend`, counted from its `-save` output, which
/// lists only tables that exist (`-S` would create them, leaving empty
/// legacy tables behind on an nft node).
fn count_rules(backend: Backend) -> usize {
    let Some(save) = find_in_path(&format!("iptables-{}-save", backend.as_str())) else {
        return 0;
    };
    let Ok(output) = Command::new(save).output() else {
        return 0;
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("-A ") || line.starts_with("-N "))
        .count()
}

/// The binary of `backend` for `family`: `iptables-nft`, or a plain
/// `iptables` that is that backend.
fn binary_of(backend: Backend, family: Family) -> Option<PathBuf> {
    let name = format!("{}-{}", prefix(family), backend.as_str());
    find_in_path(&name).or_else(|| {
        find_in_path(prefix(family)).filter(|plain| version_backend(plain) == Some(backend))
    })
}

/// Picks the backend: `choice` when given, else by the rules already
/// present (see the module docs). Returns it and why.
pub fn detect(choice: Option<Backend>) -> Result<(Backend, String), IptablesError> {
    if let Some(backend) = choice {
        return Ok((backend, "asked for with --backend".to_owned()));
    }
    let legacy = find_in_path("iptables-legacy");
    let nft = find_in_path("iptables-nft");
    let plain = find_in_path("iptables");
    match (&legacy, &nft) {
        (Some(_), Some(_)) => {
            let (n_legacy, n_nft) = (count_rules(Backend::Legacy), count_rules(Backend::Nft));
            if n_legacy > n_nft {
                return Ok((
                    Backend::Legacy,
                    format!("{n_legacy} rules already use legacy, {n_nft} nft"),
                ));
            }
            if n_nft > n_legacy {
                return Ok((
                    Backend::Nft,
                    format!("{n_nft} rules already use nft, {n_legacy} legacy"),
                ));
            }
        }
        (Some(_), None) => {
            return Ok((
                Backend::Legacy,
                "only iptables-legacy is installed".to_owned(),
            ))
        }
        (None, Some(_)) => return Ok((Backend::Nft, "only iptables-nft is installed".to_owned())),
        (None, None) => {}
    }
    match plain.as_deref().map(version_backend) {
        Some(Some(backend)) => Ok((
            backend,
            format!("no rules yet; `iptables` is {}", backend.as_str()),
        )),
        Some(None) | None if legacy.is_some() || nft.is_some() => {
            Ok((Backend::Nft, "no rules yet; nft is the default".to_owned()))
        }
        Some(None) => Ok((
            Backend::Nft,
            "`iptables` does not say; assuming nft".to_owned(),
        )),
        None => Err(IptablesError::NotFound {
            looked_for: "iptables, iptables-nft, iptables-legacy".to_owned(),
        }),
    }
}

/// The binary for `family` of `backend`.
pub fn binary(backend: Backend, family: Family) -> Result<Iptables, IptablesError> {
    match binary_of(backend, family) {
        Some(binary) => Ok(Iptables { binary, backend }),
        None => Err(IptablesError::BackendNotFound {
            backend: backend.as_str(),
            binary: format!("{}-{}", prefix(family), backend.as_str()),
        }),
    }
}

/// Whether this process has the capability numbered `bit` in its
/// effective set (`/proc/self/status`); `None` when that cannot be read.
fn has_capability(bit: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let effective = u64::from_str_radix(hex, 16).ok()?;
    Some(effective & (1 << bit) != 0)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

/// Refuses early, with the fix, when the rules cannot be changed.
pub fn check_capabilities(backend: Backend) -> Result<(), IptablesError> {
    if has_capability(CAP_NET_ADMIN) == Some(false) {
        return Err(IptablesError::NoCapability {
            capability: "CAP_NET_ADMIN",
        });
    }
    // iptables-legacy opens a raw socket to talk to x_tables.
    if backend == Backend::Legacy && has_capability(CAP_NET_RAW) == Some(false) {
        return Err(IptablesError::NoCapability {
            capability: "CAP_NET_RAW",
        });
    }
    Ok(())
}

// === impl Iptables ===

impl Iptables {
    fn command_line(&self, args: &[String]) -> String {
        format!("{} {}", self.binary.display(), args.join(" "))
    }

    fn output(&self, args: &[String]) -> Result<Output, IptablesError> {
        Command::new(&self.binary)
            .args(args)
            .output()
            .map_err(|source| IptablesError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })
    }

    /// Runs a command that must succeed; returns its command line.
    fn run(&self, args: &[String]) -> Result<String, IptablesError> {
        let output = self.output(args)?;
        let command = self.command_line(args);
        if output.status.success() {
            return Ok(command);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let stderr = if stderr.contains("ermission denied") {
            format!("{stderr} (needs CAP_NET_ADMIN and, for legacy, CAP_NET_RAW)")
        } else {
            stderr
        };
        Err(IptablesError::Failed {
            command,
            status: output.status.to_string(),
            stderr,
        })
    }

    /// Whether a checking command (`-C`, `-S`) succeeds.
    fn holds(&self, args: &[String]) -> Result<bool, IptablesError> {
        Ok(self.output(args)?.status.success())
    }

    fn nat(args: &[&str]) -> Vec<String> {
        ["-w", "-t", "nat"]
            .iter()
            .chain(args)
            .map(|arg| (*arg).to_owned())
            .collect()
    }

    fn chain_exists(&self, chain: &str) -> Result<bool, IptablesError> {
        self.holds(&Self::nat(&["-S", chain]))
    }

    /// Applies `steps` idempotently; returns each command that changed
    /// something, as run.
    pub fn apply(&self, steps: &[Step]) -> Result<Vec<String>, IptablesError> {
        let mut done = Vec::new();
        for step in steps {
            match step {
                Step::Chain(chain) => {
                    let verb = if self.chain_exists(chain)? {
                        "-F"
                    } else {
                        "-N"
                    };
                    done.push(self.run(&Self::nat(&[verb, chain]))?);
                }
                Step::Append(..) => done.push(self.run(&step.argv())?),
                Step::Jump { from, to } => {
                    let check = [Self::nat(&[]), jump_args("-C", from, to)].concat();
                    if !self.holds(&check)? {
                        done.push(self.run(&step.argv())?);
                    }
                }
                Step::Unjump { from, to } => {
                    let check = [Self::nat(&[]), jump_args("-C", from, to)].concat();
                    // Bounded: each pass deletes one copy.
                    for _ in 0..64 {
                        if !self.holds(&check)? {
                            break;
                        }
                        done.push(self.run(&step.argv())?);
                    }
                }
                Step::DeleteChain(chain) => {
                    if self.chain_exists(chain)? {
                        done.push(self.run(&Self::nat(&["-F", chain]))?);
                        done.push(self.run(&Self::nat(&["-X", chain]))?);
                    }
                }
            }
        }
        Ok(done)
    }
}

/// `steps` as `binary`'s commands on a table without breakwater's rules,
/// each with what makes it idempotent: what `print` shows.
pub fn script(binary: &str, steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        out.push_str(binary);
        out.push(' ');
        out.push_str(&step.argv().join(" "));
        if let Some(note) = step.note() {
            out.push_str("    # ");
            out.push_str(note);
        }
        out.push('\n');
    }
    out
}
