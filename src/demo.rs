//! `breakwater demo`: the one-command tour.
//!
//! Runs `breakwater sim` as the supervised upstream process behind the proxy
//! with `config/demo.yaml` (embedded), prints what to try — including how
//! to crash the upstream and watch the supervisor bring it back — and serves
//! until Ctrl-C, which drains, stops the child and exits.

use crate::config::{self, Overrides};
use crate::reload::ConfigSource;

/// The demo config, embedded so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");
const SIM_ADDRESS: &str = "127.0.0.1:18080";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded config failed to load (a bug).
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// breakwater cannot find its own executable to run the sim.
    #[error("cannot find breakwater's own executable to run the sim: {0}")]
    Exe(std::io::Error),
    /// The proxy failed to start.
    #[error("{0}")]
    Run(#[from] crate::run::RunError),
}

/// Runs the demo until Ctrl-C.
pub async fn run() -> Result<(), DemoError> {
    let exe = std::env::current_exe().map_err(DemoError::Exe)?;
    let command: Vec<String> = [
        exe.to_string_lossy().as_ref(),
        "sim",
        "--listen",
        SIM_ADDRESS,
        "--name",
        "demo-app",
        "--latency",
        "20ms",
    ]
    .iter()
    .map(|part| (*part).to_owned())
    .collect();
    let overrides = Overrides {
        command,
        ..Overrides::default()
    };
    let config = config::load_str(DEMO_CONFIG, "<demo config>", &overrides)?;
    let proxy = config
        .listeners
        .first()
        .map(|l| l.listen.to_string())
        .unwrap_or_default();
    let admin = config.admin.listen.to_string();
    let running = crate::run::start(config, ConfigSource::Embedded, overrides).await?;
    println!(
        "\nbreakwater demo is running.\
         \n\n  proxy     http://{proxy}/          try:  curl -i http://{proxy}/\
         \n  admin     http://{admin}/status    also /metrics, /readyz\
         \n  upstream  breakwater sim on {SIM_ADDRESS}, supervised by breakwater (20ms latency)\
         \n\nBreak the upstream and watch breakwater answer for it:\
         \n  curl -X POST {SIM_ADDRESS}/__sim/config -d '{{\"hang\":true}}'    then: curl -i http://{proxy}/api   → 504 timeout after 2s\
         \n  curl -X POST {SIM_ADDRESS}/__sim/config -d '{{\"status\":503}}'   then: curl -i http://{proxy}/      → 503s until the breaker opens (breaker-open)\
         \n  curl -X POST {SIM_ADDRESS}/__sim/crash                          then: curl -s http://{admin}/status → the supervisor restarted it (new pid)\
         \n  curl -X POST {SIM_ADDRESS}/__sim/reset                          back to normal; POST http://{admin}/breakers/reset closes breakers\
         \n\nCtrl-C drains, stops the sim and exits.\n"
    );
    Ok(running.until_signal().await?)
}
