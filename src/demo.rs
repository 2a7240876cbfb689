//! `breakwater demo`: the one-command tour.
//!
//! Runs `breakwater sim` as the supervised upstream process behind the proxy
//! with `config/demo.yaml` (embedded), waits until the sim serves, prints
//! what to try — including how to crash the upstream and watch the
//! supervisor bring it back — and serves until Ctrl-C (or its terminal
//! closes), which drains, stops the child and exits.
//!
//! The screen is the interface here: every line printed fits 80 columns,
//! every command is one line to copy, each step says what it leaves
//! behind and how to undo it, and the per-request access log is off
//! (`telemetry::Style::Demo`) so the log shows only what breakwater does:
//! breakers, exits, restarts.

use std::time::Duration;

use crate::config::{self, Overrides};
use crate::proxy::gate::Readiness;
use crate::reload::ConfigSource;
use crate::run::RunError;

/// The demo config, embedded so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.yaml");
const SIM_ADDRESS: &str = "127.0.0.1:18080";
/// How long the demo waits for the sim before printing the steps anyway.
const SIM_READY_WAIT: Duration = Duration::from_secs(5);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded config failed to load (a bug).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// breakwater cannot find its own executable to run the sim.
    #[error("cannot find breakwater's own executable to run the sim: {0}")]
    Exe(std::io::Error),
    /// The sim's port is taken: the sim would crash-loop.
    #[error("cannot listen on {SIM_ADDRESS} (the demo's sim)")]
    SimPort(#[source] std::io::Error),
    /// The proxy failed to start.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs the demo until Ctrl-C.
pub async fn run() -> Result<(), DemoError> {
    let exe = std::env::current_exe().map_err(DemoError::Exe)?;
    // The sim is a child that would only crash-loop on a taken port: say
    // so now, the way a taken proxy or admin port is reported.
    drop(std::net::TcpListener::bind(SIM_ADDRESS).map_err(DemoError::SimPort)?);
    let command: Vec<String> = [
        exe.to_string_lossy().as_ref(),
        "sim",
        "--listen",
        SIM_ADDRESS,
        "--name",
        "demo",
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
    // The start-up lines first, the steps last: they stay on screen. The
    // sim serves once it accepts connections and the supervisor has seen
    // it do so (the gate says ready; before the first start it says so
    // too, hence the connect).
    let ready = tokio::time::timeout(SIM_READY_WAIT, async {
        loop {
            let accepts = tokio::net::TcpStream::connect(SIM_ADDRESS).await.is_ok();
            let ready = running
                .supervisors
                .get()
                .is_none_or(|supervisor| supervisor.readiness() == Readiness::Ready);
            if accepts && ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if ready.is_err() {
        tracing::warn!("The sim is not serving yet; the steps may answer 503 starting.");
    }
    println!("{}", screen(&proxy, &admin));
    // Closing the terminal (SIGHUP) ends the demo too: a demo left running
    // without its terminal would keep the fixed ports for the next one.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signal)?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    };
    tracing::info!(signal = name, "Stopping the demo.");
    running.drain().await;
    Ok(())
}

/// What the demo prints: addresses, then the steps, each with what it
/// leaves behind and how to undo it. No line is over 80 columns.
fn screen(proxy: &str, admin: &str) -> String {
    let sim = SIM_ADDRESS;
    format!(
        "
breakwater demo: breakwater sim behind the proxy. Ctrl-C stops both.
  proxy  http://{proxy}/  (/api times out after 2s, / after 5s)
  admin  http://{admin}/status  (also /metrics /readyz /events)
  sim    {sim}, started and watched by breakwater

From another terminal, one step at a time (the log here shows the rest):
1. A request through the proxy: 200 from the sim.
   curl -i {proxy}/
2. The sim hangs: /api answers 504 timeout after 2s. It hangs until reset.
   curl -X POST {sim}/__sim/config -d '{{\"hang\":true}}'
   curl -i {proxy}/api
   curl -X POST {sim}/__sim/reset
3. The sim answers 503: after five the breaker opens, and breakwater answers
   503 breaker-open itself. Reset the sim, then close the breaker.
   curl -X POST {sim}/__sim/config -d '{{\"status\":503,\"body\":\"503\\n\"}}'
   for i in 1 2 3 4 5 6; do curl -s {proxy}/; done
   curl -X POST {sim}/__sim/reset
   curl -X POST {admin}/breakers/reset
4. The sim crashes: breakwater starts it again. Nothing to undo.
   curl -X POST {sim}/__sim/crash"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_fits_80_columns_and_24_rows() {
        let text = screen("127.0.0.1:15006", "127.0.0.1:15000");
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{} > 80: {line}", line.len());
        }
        assert!(text.lines().count() <= 23, "{text}");
    }
}
