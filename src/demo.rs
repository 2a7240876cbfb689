//! `breakwater demo`: the one-command tour.
//!
//! Starts `breakwater sim` as a child process, puts the proxy in front of it
//! with `config/demo.yaml` (embedded), prints what to try, and serves until
//! Ctrl-C, then stops both. Part 3 turns the child into a supervised one.

use std::time::Duration;

use tokio::process::{Child, Command};

use crate::config::{self, Overrides};
use crate::state::ConfigSource;

/// The demo config, embedded so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");
const SIM_ADDRESS: &str = "127.0.0.1:18080";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded config failed to load (a bug).
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The sim could not be started.
    #[error("cannot start the demo upstream (breakwater sim): {0}")]
    Spawn(std::io::Error),
    /// The sim did not start listening.
    #[error("the demo upstream did not start listening on {SIM_ADDRESS} within 10s (is the port in use?)")]
    SimNotReady,
    /// The proxy failed to start.
    #[error("{0}")]
    Run(#[from] crate::run::RunError),
}

/// Runs the demo until Ctrl-C.
pub async fn run() -> Result<(), DemoError> {
    let config = config::load_str(DEMO_CONFIG, "<demo config>", &Overrides::default())?;
    let mut sim = spawn_sim().map_err(DemoError::Spawn)?;
    if !wait_listening(&mut sim).await {
        let _ = sim.kill().await;
        return Err(DemoError::SimNotReady);
    }
    let proxy = config
        .listeners
        .first()
        .map(|l| l.listen.to_string())
        .unwrap_or_default();
    let admin = config.admin.listen.to_string();
    let running =
        match crate::run::start(config, ConfigSource::Embedded, Overrides::default()).await {
            Ok(running) => running,
            Err(error) => {
                let _ = sim.kill().await;
                return Err(error.into());
            }
        };
    println!(
        "\nbreakwater demo is running.\n\
         \n  proxy     http://{proxy}/          try:  curl -i http://{proxy}/\
         \n  admin     http://{admin}/status    also /metrics, /readyz\
         \n  upstream  breakwater sim on {SIM_ADDRESS} (20ms latency)\
         \n\nBreak the upstream and watch the proxy answer for it:\
         \n  curl -X POST {SIM_ADDRESS}/__sim/config -d '{{\"hang\":true}}'     then: curl -i http://{proxy}/api  → 504 timeout after 2s\
         \n  curl -X POST {SIM_ADDRESS}/__sim/config -d '{{\"status\":503}}'    then: curl -i http://{proxy}/     → the upstream's 503\
         \n  curl -X POST {SIM_ADDRESS}/__sim/crash                           then: curl -i http://{proxy}/     → 502 upstream-unavailable\
         \n  curl -X POST {SIM_ADDRESS}/__sim/reset                           back to normal (unless crashed)\
         \n\nCtrl-C stops everything.\n"
    );
    let result = running.until_signal().await;
    let _ = sim.kill().await;
    Ok(result?)
}

fn spawn_sim() -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .args([
            "sim",
            "--listen",
            SIM_ADDRESS,
            "--name",
            "demo-app",
            "--latency",
            "20ms",
        ])
        .kill_on_drop(true)
        .spawn()
}

/// Polls (bounded) until the sim accepts connections, or it exits.
async fn wait_listening(sim: &mut Child) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = sim.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(SIM_ADDRESS).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
