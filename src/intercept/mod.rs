//! Transparent interception (SPEC §9): traffic reaches breakwater without
//! the service or its clients changing anything.
//!
//! - `rules.rs`: the nat-table rules as data — a pure function from the
//!   `breakwater iptables` options to the steps that install or remove
//!   them, in breakwater's own chains (like istio-init and linkerd's
//!   proxy-init).
//! - `iptables.rs`: the I/O edge — finding iptables (legacy or nft),
//!   checking capabilities, applying the steps idempotently.
//! - `original_dst.rs`: where a redirected connection was going, for
//!   transparent listeners.
//!
//! The data plane uses only [`original_dst`]; the command line uses the
//! rest.

pub mod iptables;
mod original_dst;
pub mod rules;

pub use original_dst::original_dst;

use iptables::{Backend, IptablesError};
use rules::{Family, Options, Step};

/// What `install` or `remove` did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The backend used.
    pub backend: Backend,
    /// Why that backend.
    pub why: String,
    /// Each command that changed something, as run.
    pub commands: Vec<String>,
}

fn families(ipv6: bool) -> &'static [Family] {
    if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    }
}

/// `breakwater iptables print`: the commands `install` runs on a table
/// without breakwater's rules, as a script. Runs nothing; when iptables is
/// not installed here it names the plain binaries.
pub fn print(
    options: &Options,
    backend: Option<Backend>,
    ipv6: bool,
) -> Result<String, IptablesError> {
    let detected = iptables::detect(backend).ok();
    let mut script = match &detected {
        Some((backend, why)) => format!("# backend: {} ({why})\n", backend.as_str()),
        None => "# backend: not detected (iptables is not installed here)\n".to_owned(),
    };
    for &family in families(ipv6) {
        let steps = rules::install(options, family)?;
        let binary = detected
            .as_ref()
            .and_then(|(backend, _)| iptables::binary(*backend, family).ok())
            .map_or_else(
                || match family {
                    Family::V4 => "iptables".to_owned(),
                    Family::V6 => "ip6tables".to_owned(),
                },
                |found| found.binary.display().to_string(),
            );
        script.push_str(&iptables::script(&binary, &steps));
    }
    Ok(script)
}

fn apply(
    backend: Option<Backend>,
    ipv6: bool,
    steps: impl Fn(Family) -> Result<Vec<Step>, IptablesError>,
) -> Result<Applied, IptablesError> {
    // Bad options are reported before anything is looked up or run.
    let planned = families(ipv6)
        .iter()
        .map(|&family| Ok((family, steps(family)?)))
        .collect::<Result<Vec<_>, IptablesError>>()?;
    let (backend, why) = iptables::detect(backend)?;
    iptables::check_capabilities(backend)?;
    let mut commands = Vec::new();
    for (family, steps) in planned {
        commands.extend(iptables::binary(backend, family)?.apply(&steps)?);
    }
    Ok(Applied {
        backend,
        why,
        commands,
    })
}

/// `breakwater iptables install`: applies `options`, idempotently.
pub fn install(
    options: &Options,
    backend: Option<Backend>,
    ipv6: bool,
) -> Result<Applied, IptablesError> {
    apply(backend, ipv6, |family| Ok(rules::install(options, family)?))
}

/// `breakwater iptables remove`: deletes what `install` added.
pub fn remove(backend: Option<Backend>, ipv6: bool) -> Result<Applied, IptablesError> {
    apply(backend, ipv6, |_| Ok(rules::remove()))
}
