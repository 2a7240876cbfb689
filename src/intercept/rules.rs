//! The interception rules as data: a pure function from [`Options`] to the
//! iptables steps that install them ([`install`]) or take them away
//! ([`remove`]). Nothing here runs a command; `iptables.rs` does.
//!
//! Every rule lives in breakwater's own chains of the `nat` table, entered
//! by one jump from a built-in chain, as istio-init and linkerd's
//! proxy-init do:
//!
//! ```text
//! PREROUTING -p tcp -j BREAKWATER_INBOUND     inbound: redirected to --proxy-port
//! OUTPUT     -p tcp -j BREAKWATER_OUTBOUND    outbound (--outbound): to --outbound-port,
//!                                             breakwater's own uid/gid exempt
//! ```
//!
//! So `remove` deletes exactly those two jumps and those two chains, and
//! nothing that anyone else put in the table. `install` converges: it
//! creates a missing chain or empties an existing one, fills it, adds each
//! jump only when it is not there yet, and takes the outbound chain away
//! when `--outbound` is no longer asked for — running it twice leaves the
//! same rules as running it once.

use std::fmt;

/// The chain inbound traffic goes through.
pub const INBOUND_CHAIN: &str = "BREAKWATER_INBOUND";
/// The chain outbound traffic goes through.
pub const OUTBOUND_CHAIN: &str = "BREAKWATER_OUTBOUND";

/// Which inbound ports are redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every TCP port but the excluded ones (and the proxy's own ports).
    All,
    /// Only these.
    Only(Vec<u16>),
}

/// Outbound capture (`--outbound`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Where outbound connections are redirected.
    pub port: u16,
    /// Destination ports never captured.
    pub exclude_ports: Vec<u16>,
}

/// What to intercept, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// breakwater's transparent inbound listener port.
    pub proxy_port: u16,
    /// Inbound ports redirected to `proxy_port`.
    pub inbound: InboundPorts,
    /// Inbound ports never redirected (with `All`).
    pub exclude_inbound: Vec<u16>,
    /// breakwater's admin port: never redirected, so probes and operators
    /// reach it.
    pub admin_port: u16,
    /// Outbound capture, if asked for.
    pub outbound: Option<Outbound>,
    /// The uid breakwater runs as: its own connections are never captured.
    pub proxy_uid: Option<u32>,
    /// The gid breakwater runs as, exempt like the uid.
    pub proxy_gid: Option<u32>,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }
}

/// Options that cannot be installed safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A port the proxy itself needs was asked to be redirected.
    #[error("port {port} is breakwater's {what}; it is never redirected (remove it from --inbound-ports)")]
    OwnPort {
        /// The port.
        port: u16,
        /// `admin port` or `proxy port`.
        what: &'static str,
    },
    /// `--inbound-ports` named no port.
    #[error("--inbound-ports names no port; give ports like 8080,9090 or `all`")]
    NoInboundPorts,
    /// Outbound capture without an exempt identity would capture the
    /// proxy's own upstream connections in a loop.
    #[error("--outbound needs --proxy-uid or --proxy-gid: breakwater's own connections must be exempt, or they would be captured and loop")]
    OutboundWithoutExemption,
    /// Port 0.
    #[error("port 0 is not a port")]
    PortZero,
}

/// One thing `install` or `remove` does to the `nat` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create `chain`, or empty it if it exists (`-N`, else `-F`).
    Chain(&'static str),
    /// Append a rule to one of breakwater's chains (`-A chain args…`).
    Append(&'static str, Vec<String>),
    /// Jump from a built-in chain to one of ours, unless the jump is
    /// already there (`-C`, then `-A`).
    Jump {
        /// `PREROUTING` or `OUTPUT`.
        from: &'static str,
        /// Our chain.
        to: &'static str,
    },
    /// Delete every copy of that jump (`-D` while `-C` finds one).
    Unjump {
        /// `PREROUTING` or `OUTPUT`.
        from: &'static str,
        /// Our chain.
        to: &'static str,
    },
    /// Empty and delete `chain` if it exists (`-F`, `-X`).
    DeleteChain(&'static str),
}

impl Step {
    /// The arguments of the one iptables command that does this step on a
    /// table where it is needed (what `print` shows; the runner adds the
    /// checks that make it idempotent).
    pub fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = vec!["-w".into(), "-t".into(), "nat".into()];
        match self {
            Step::Chain(chain) => argv.extend(["-N".to_owned(), (*chain).to_owned()]),
            Step::Append(chain, rule) => {
                argv.extend(["-A".to_owned(), (*chain).to_owned()]);
                argv.extend(rule.iter().cloned());
            }
            Step::Jump { from, to } => argv.extend(jump_args("-A", from, to)),
            Step::Unjump { from, to } => argv.extend(jump_args("-D", from, to)),
            Step::DeleteChain(chain) => argv.extend(["-X".to_owned(), (*chain).to_owned()]),
        }
        argv
    }
}

impl Step {
    /// What makes the step idempotent, for `print`: when the runner does
    /// something else, or nothing.
    pub fn note(&self) -> Option<&'static str> {
        match self {
            Step::Chain(_) => Some("or -F when the chain exists"),
            Step::Append(..) => None,
            Step::Jump { .. } => Some("unless already there (-C)"),
            Step::Unjump { .. } => Some("every copy there is (-C)"),
            Step::DeleteChain(_) => Some("after -F, if the chain exists"),
        }
    }
}

/// `-A|-C|-D FROM -p tcp -j TO`.
pub fn jump_args(verb: &str, from: &str, to: &str) -> Vec<String> {
    [verb, from, "-p", "tcp", "-j", to]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect()
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

fn rule(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn redirect(port: u16) -> Vec<String> {
    rule(&["-j", "REDIRECT", "--to-ports", &port.to_string()])
}

fn port_rule(port: u16, then: Vec<String>) -> Vec<String> {
    let mut args = rule(&["-p", "tcp", "--dport", &port.to_string()]);
    args.extend(then);
    args
}

/// Checks `options` for what would break interception or loop.
pub fn check(options: &Options) -> Result<(), OptionsError> {
    let mut ports = vec![options.proxy_port, options.admin_port];
    ports.extend(&options.exclude_inbound);
    if let InboundPorts::Only(only) = &options.inbound {
        if only.is_empty() {
            return Err(OptionsError::NoInboundPorts);
        }
        ports.extend(only);
        for (port, what) in [
            (options.admin_port, "admin port"),
            (options.proxy_port, "proxy port"),
        ] {
            if only.contains(&port) {
                return Err(OptionsError::OwnPort { port, what });
            }
        }
    }
    if let Some(outbound) = &options.outbound {
        ports.push(outbound.port);
        ports.extend(&outbound.exclude_ports);
        if options.proxy_uid.is_none() && options.proxy_gid.is_none() {
            return Err(OptionsError::OutboundWithoutExemption);
        }
    }
    if ports.contains(&0) {
        return Err(OptionsError::PortZero);
    }
    Ok(())
}

/// The steps that install `options` for `family`, in order.
pub fn install(options: &Options, family: Family) -> Result<Vec<Step>, OptionsError> {
    check(options)?;
    let mut steps = vec![Step::Chain(INBOUND_CHAIN)];
    match &options.inbound {
        InboundPorts::All => {
            // The proxy's own ports first: the admin port for probes and
            // operators, the proxy and outbound ports so a connection made
            // to them directly is not "redirected" to itself.
            let mut exempt = vec![options.admin_port, options.proxy_port];
            exempt.extend(options.outbound.as_ref().map(|outbound| outbound.port));
            exempt.extend(&options.exclude_inbound);
            let mut seen = Vec::new();
            for port in exempt {
                if !seen.contains(&port) {
                    seen.push(port);
                    steps.push(Step::Append(
                        INBOUND_CHAIN,
                        port_rule(port, rule(&["-j", "RETURN"])),
                    ));
                }
            }
            let mut all = rule(&["-p", "tcp"]);
            all.extend(redirect(options.proxy_port));
            steps.push(Step::Append(INBOUND_CHAIN, all));
        }
        InboundPorts::Only(ports) => {
            let mut seen = Vec::new();
            for &port in ports {
                if !seen.contains(&port) && !options.exclude_inbound.contains(&port) {
                    seen.push(port);
                    steps.push(Step::Append(
                        INBOUND_CHAIN,
                        port_rule(port, redirect(options.proxy_port)),
                    ));
                }
            }
        }
    }
    steps.push(Step::Jump {
        from: "PREROUTING",
        to: INBOUND_CHAIN,
    });
    match &options.outbound {
        Some(outbound) => {
            steps.push(Step::Chain(OUTBOUND_CHAIN));
            if let Some(uid) = options.proxy_uid {
                steps.push(Step::Append(
                    OUTBOUND_CHAIN,
                    rule(&[
                        "-m",
                        "owner",
                        "--uid-owner",
                        &uid.to_string(),
                        "-j",
                        "RETURN",
                    ]),
                ));
            }
            if let Some(gid) = options.proxy_gid {
                steps.push(Step::Append(
                    OUTBOUND_CHAIN,
                    rule(&[
                        "-m",
                        "owner",
                        "--gid-owner",
                        &gid.to_string(),
                        "-j",
                        "RETURN",
                    ]),
                ));
            }
            steps.push(Step::Append(
                OUTBOUND_CHAIN,
                rule(&["-d", family.loopback(), "-j", "RETURN"]),
            ));
            let mut seen = Vec::new();
            for &port in &outbound.exclude_ports {
                if !seen.contains(&port) {
                    seen.push(port);
                    steps.push(Step::Append(
                        OUTBOUND_CHAIN,
                        port_rule(port, rule(&["-j", "RETURN"])),
                    ));
                }
            }
            let mut all = rule(&["-p", "tcp"]);
            all.extend(redirect(outbound.port));
            steps.push(Step::Append(OUTBOUND_CHAIN, all));
            steps.push(Step::Jump {
                from: "OUTPUT",
                to: OUTBOUND_CHAIN,
            });
        }
        // An earlier install with --outbound is undone, so the table
        // matches these options.
        None => steps.extend(remove_chain("OUTPUT", OUTBOUND_CHAIN)),
    }
    Ok(steps)
}

fn remove_chain(from: &'static str, chain: &'static str) -> [Step; 2] {
    [Step::Unjump { from, to: chain }, Step::DeleteChain(chain)]
}

/// The steps that remove everything [`install`] may have added, and
/// nothing else.
pub fn remove() -> Vec<Step> {
    let mut steps = Vec::new();
    steps.extend(remove_chain("PREROUTING", INBOUND_CHAIN));
    steps.extend(remove_chain("OUTPUT", OUTBOUND_CHAIN));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            proxy_port: 15006,
            inbound: InboundPorts::Only(vec![8080, 9090]),
            exclude_inbound: Vec::new(),
            admin_port: 15000,
            outbound: None,
            proxy_uid: None,
            proxy_gid: None,
        }
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(Step::to_string).collect()
    }

    #[test]
    fn chosen_ports_are_redirected_to_the_proxy_port() {
        let steps = install(&options(), Family::V4).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "-w -t nat -N BREAKWATER_INBOUND",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 9090 -j REDIRECT --to-ports 15006",
                "-w -t nat -A PREROUTING -p tcp -j BREAKWATER_INBOUND",
                "-w -t nat -D OUTPUT -p tcp -j BREAKWATER_OUTBOUND",
                "-w -t nat -X BREAKWATER_OUTBOUND",
            ]
        );
    }

    #[test]
    fn all_ports_exempt_the_admin_and_proxy_ports_and_the_exclusions() {
        let steps = install(
            &Options {
                inbound: InboundPorts::All,
                exclude_inbound: vec![22, 15000],
                ..options()
            },
            Family::V4,
        )
        .unwrap();
        assert_eq!(
            lines(&steps)[..5],
            [
                "-w -t nat -N BREAKWATER_INBOUND",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 15000 -j RETURN",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 15006 -j RETURN",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 22 -j RETURN",
                "-w -t nat -A BREAKWATER_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            ]
        );
    }

    #[test]
    fn an_excluded_port_is_left_out_of_a_port_list() {
        let steps = install(
            &Options {
                exclude_inbound: vec![9090],
                ..options()
            },
            Family::V4,
        )
        .unwrap();
        assert!(!lines(&steps).iter().any(|line| line.contains("9090")));
    }

    #[test]
    fn outbound_capture_exempts_the_proxy_identity_and_loopback() {
        let steps = install(
            &Options {
                outbound: Some(Outbound {
                    port: 15001,
                    exclude_ports: vec![5432],
                }),
                proxy_uid: Some(1337),
                proxy_gid: Some(1337),
                ..options()
            },
            Family::V6,
        )
        .unwrap();
        assert_eq!(
            lines(&steps)[4..],
            [
                "-w -t nat -N BREAKWATER_OUTBOUND",
                "-w -t nat -A BREAKWATER_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
                "-w -t nat -A BREAKWATER_OUTBOUND -m owner --gid-owner 1337 -j RETURN",
                "-w -t nat -A BREAKWATER_OUTBOUND -d ::1/128 -j RETURN",
                "-w -t nat -A BREAKWATER_OUTBOUND -p tcp --dport 5432 -j RETURN",
                "-w -t nat -A BREAKWATER_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
                "-w -t nat -A OUTPUT -p tcp -j BREAKWATER_OUTBOUND",
            ]
        );
    }

    #[test]
    fn unsafe_options_are_refused() {
        let refused = |options: Options| install(&options, Family::V4).unwrap_err();
        assert_eq!(
            refused(Options {
                inbound: InboundPorts::Only(vec![8080, 15000]),
                ..options()
            }),
            OptionsError::OwnPort {
                port: 15000,
                what: "admin port"
            }
        );
        assert_eq!(
            refused(Options {
                inbound: InboundPorts::Only(vec![15006]),
                ..options()
            }),
            OptionsError::OwnPort {
                port: 15006,
                what: "proxy port"
            }
        );
        assert_eq!(
            refused(Options {
                inbound: InboundPorts::Only(Vec::new()),
                ..options()
            }),
            OptionsError::NoInboundPorts
        );
        assert_eq!(
            refused(Options {
                outbound: Some(Outbound {
                    port: 15001,
                    exclude_ports: Vec::new()
                }),
                ..options()
            }),
            OptionsError::OutboundWithoutExemption
        );
        assert_eq!(
            refused(Options {
                exclude_inbound: vec![0],
                ..options()
            }),
            OptionsError::PortZero
        );
    }

    #[test]
    fn remove_touches_only_breakwater_chains_and_jumps() {
        assert_eq!(
            lines(&remove()),
            [
                "-w -t nat -D PREROUTING -p tcp -j BREAKWATER_INBOUND",
                "-w -t nat -X BREAKWATER_INBOUND",
                "-w -t nat -D OUTPUT -p tcp -j BREAKWATER_OUTBOUND",
                "-w -t nat -X BREAKWATER_OUTBOUND",
            ]
        );
        for step in remove() {
            let argv = step.argv();
            assert!(
                argv.iter().any(|arg| arg.starts_with("BREAKWATER_")),
                "{step}"
            );
        }
    }
}
