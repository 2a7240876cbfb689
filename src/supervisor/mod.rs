//! The embedded supervisor (SPEC §5): runs the upstream's process, gates
//! traffic until it is ready, restarts it when it exits, and stops it last
//! on shutdown.
//!
//! [`restart`] decides (pure: policy, backoff, crash loop); [`process`]
//! acts (spawn, signals, output). [`Supervisor::spawn`] is the task that
//! joins them: spawn → wait until the upstream answers (readiness gates
//! traffic with 503 `starting`) → wait for exit or stop → decide → back
//! off → respawn, or escalate on a crash loop. Its [`Status`] is shown at
//! `/status`. Recovery ladders, failover and the other triggers of SPEC
//! §5.2–5.4 build on this in a later part.

pub mod process;
pub mod restart;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, Process};
use crate::events::Severity;
use crate::state::State;
use process::{ProcessSpec, Running};
use restart::{Decision, Exit, RestartPolicy, RestartSettings, RestartTracker};

/// What the supervisor is doing, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `starting`, `running`, `backoff`, `stopped`, `needs_intervention`.
    pub state: &'static str,
    /// The child's pid while it runs.
    pub pid: Option<u32>,
    /// Restarts since breakwater started.
    pub restarts: u64,
    /// How the last run ended, e.g. `exit 1` or `signal 9`.
    pub last_exit: Option<String>,
    /// Seconds the current process has been up.
    pub uptime_seconds: Option<f64>,
    /// Seconds until the next start, while backing off.
    pub next_start_in_seconds: Option<f64>,
    #[serde(skip)]
    started_at: Option<Instant>,
    #[serde(skip)]
    next_start_at: Option<Instant>,
}

impl Status {
    fn new() -> Self {
        Status {
            state: "starting",
            pid: None,
            restarts: 0,
            last_exit: None,
            uptime_seconds: None,
            next_start_in_seconds: None,
            started_at: None,
            next_start_at: None,
        }
    }
}

/// Handle to the supervisor task.
pub struct Supervisor {
    /// The upstream whose primary endpoints this process serves.
    pub upstream: String,
    status: Mutex<Status>,
    /// True while the child is up and has answered its readiness probe.
    pub ready: AtomicBool,
    stop: watch::Sender<bool>,
    restart: watch::Sender<u64>,
    done: watch::Sender<bool>,
}

impl Supervisor {
    /// Starts supervising `config.supervisor.process`, if there is one.
    pub fn spawn(state: &Arc<State>, config: &Config) -> Option<Arc<Supervisor>> {
        let process = config.supervisor.process.clone()?;
        let upstream_name = config
            .supervisor
            .upstream
            .clone()
            .or_else(|| config.upstreams.first().map(|u| u.name.clone()))?;
        let probe_address = config.upstream(&upstream_name)?.endpoints.first()?.clone();
        let (stop, _) = watch::channel(false);
        let (done, _) = watch::channel(false);
        let (restart, _) = watch::channel(0);
        let supervisor = Arc::new(Supervisor {
            upstream: upstream_name.clone(),
            status: Mutex::new(Status::new()),
            ready: AtomicBool::new(false),
            stop,
            restart,
            done,
        });
        let task = Task {
            supervisor: supervisor.clone(),
            state: state.clone(),
            process,
            name: upstream_name,
            probe_address,
            startup_timeout: config.supervisor.startup_timeout,
        };
        tokio::spawn(task.run());
        Some(supervisor)
    }

    /// The current status, with live durations.
    pub fn status(&self) -> Status {
        let mut status = self
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        let now = Instant::now();
        status.uptime_seconds = status
            .started_at
            .map(|at| now.saturating_duration_since(at).as_secs_f64());
        status.next_start_in_seconds = status
            .next_start_at
            .map(|at| at.saturating_duration_since(now).as_secs_f64());
        status
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
    }

    /// Asks for the child to be stopped and started again now (an
    /// operator's restart; no backoff).
    pub fn restart(&self) {
        self.restart.send_modify(|n| *n += 1);
    }

    /// Marks the process ready or not, and tells the upstream's pool, so
    /// traffic goes to backups (if any) while it is down.
    fn set_ready(&self, state: &State, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        let snapshot = state.snapshot();
        if let Some(pool) = snapshot
            .upstreams
            .iter()
            .find(|pool| pool.config.name == self.upstream)
        {
            pool.set_primary_down(!ready);
        }
    }

    /// Stops the child (stop signal, then SIGKILL after its grace) and
    /// waits until it is gone.
    pub async fn stop(&self) {
        let mut done = self.done.subscribe();
        self.stop.send_replace(true);
        let _ = done.wait_for(|done| *done).await;
    }
}

struct Task {
    supervisor: Arc<Supervisor>,
    state: Arc<State>,
    process: Process,
    name: String,
    probe_address: String,
    startup_timeout: Duration,
}

impl Task {
    async fn run(self) {
        let spec = ProcessSpec {
            command: self.process.command.clone(),
            args: self.process.args.clone(),
            env: self.process.env.clone(),
            cwd: self.process.cwd.clone(),
        };
        let settings = RestartSettings {
            policy: self.process.restart,
            initial: self.process.backoff.initial,
            max: self.process.backoff.max,
            multiplier: self.process.backoff.multiplier,
            jitter: self.process.backoff.jitter,
            max_restarts: self.process.crash_loop.max_restarts,
            window: self.process.crash_loop.window,
        };
        let stop_signal = process::parse_signal(&self.process.stop_signal).unwrap_or(libc::SIGTERM);
        let mut tracker = RestartTracker::new(settings);
        let mut stop = self.supervisor.stop.subscribe();
        let mut restart = self.supervisor.restart.subscribe();
        self.supervisor.set_ready(&self.state, false);
        let events = &self.state.events;
        loop {
            let mut running = match process::spawn(&spec, &self.name) {
                Ok(running) => running,
                Err(error) => {
                    events.emit(
                        "process_start_failed",
                        &self.name,
                        Severity::Critical,
                        &error.to_string(),
                    );
                    self.supervisor
                        .update(|status| status.state = "needs_intervention");
                    break;
                }
            };
            let started = Instant::now();
            let pid = running.pid;
            self.supervisor.update(|status| {
                status.state = "starting";
                status.pid = Some(pid);
                status.started_at = Some(started);
                status.next_start_at = None;
            });
            events.emit(
                "process_start",
                &self.name,
                Severity::Info,
                &format!("pid {pid}: {}", spec.command),
            );

            let exit = tokio::select! {
                exit = self.ready_then_wait(&mut running, pid) => exit,
                _ = restart.changed() => {
                    self.supervisor.set_ready(&self.state, false);
                    let exit = running.stop(stop_signal, self.process.stop_grace).await;
                    self.state.metrics.supervisor_restarts.with_label_values(&["admin"]).inc();
                    events.emit("process_restart", &self.name, Severity::Warning, &format!("pid {pid}: restarted by an operator ({})", describe(exit)));
                    self.supervisor.update(|status| {
                        status.restarts += 1;
                        status.last_exit = Some(describe(exit));
                    });
                    continue;
                }
                _ = stopped(&mut stop) => {
                    self.supervisor.set_ready(&self.state, false);
                    let exit = running.stop(stop_signal, self.process.stop_grace).await;
                    events.emit("process_stop", &self.name, Severity::Info, &format!("pid {pid}: {}", describe(exit)));
                    self.supervisor.update(|status| {
                        status.state = "stopped";
                        status.pid = None;
                        status.started_at = None;
                        status.last_exit = Some(describe(exit));
                    });
                    break;
                }
            };
            self.supervisor.set_ready(&self.state, false);
            let now = Instant::now();
            let decision = tracker.on_exit(exit, started, now, rand::random());
            self.supervisor.update(|status| {
                status.pid = None;
                status.started_at = None;
                status.last_exit = Some(describe(exit));
            });
            match decision {
                Decision::Restart { after } => {
                    let reason = if matches!(exit, Exit::Signal(_)) {
                        "signal"
                    } else {
                        "exit"
                    };
                    self.state
                        .metrics
                        .supervisor_restarts
                        .with_label_values(&[reason])
                        .inc();
                    events.emit(
                        "process_exit",
                        &self.name,
                        Severity::Warning,
                        &format!("pid {pid}: {}; restarting in {after:?}", describe(exit)),
                    );
                    self.supervisor.update(|status| {
                        status.state = "backoff";
                        status.restarts += 1;
                        status.next_start_at = Some(now + after);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(after) => {}
                        _ = stopped(&mut stop) => {
                            self.supervisor.update(|status| status.state = "stopped");
                            break;
                        }
                    }
                }
                Decision::Stop => {
                    events.emit(
                        "process_exit",
                        &self.name,
                        Severity::Warning,
                        &format!(
                            "pid {pid}: {}; not restarting (restart: {:?})",
                            describe(exit),
                            self.process.restart
                        ),
                    );
                    self.supervisor.update(|status| status.state = "stopped");
                    break;
                }
                Decision::Escalate { restarts } => {
                    events.emit(
                        "escalation",
                        &self.name,
                        Severity::Critical,
                        &format!(
                            "crash loop: {restarts} restarts within {:?}; needs intervention",
                            self.process.crash_loop.window
                        ),
                    );
                    self.supervisor
                        .update(|status| status.state = "needs_intervention");
                    break;
                }
            }
        }
        self.supervisor.done.send_replace(true);
    }

    /// Polls the upstream until it accepts connections (bounded by
    /// `startup_timeout`), marks the process ready, then waits for its exit.
    async fn ready_then_wait(&self, running: &mut Running, pid: u32) -> Exit {
        let probe = async {
            let deadline = Instant::now() + self.startup_timeout;
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(&self.probe_address)
                    .await
                    .is_ok()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        tokio::select! {
            exit = running.wait() => return exit,
            ready = probe => {
                if ready {
                    self.supervisor.set_ready(&self.state, true);
                    self.supervisor.update(|status| status.state = "running");
                    self.state.events.emit("process_ready", &self.name, Severity::Info, &format!("pid {pid}"));
                } else {
                    self.state.events.emit("startup_timeout", &self.name, Severity::Warning, &format!("pid {pid} did not accept connections within {:?}", self.startup_timeout));
                }
            }
        }
        running.wait().await
    }
}

/// Resolves once a stop is requested (the watch guard is not held across
/// an await, so the task stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

fn describe(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("exit {code}"),
        Exit::Signal(signal) => format!("signal {signal}"),
    }
}

/// `RestartPolicy` as written in config.
pub fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}
