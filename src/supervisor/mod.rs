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

pub mod ladder;
pub mod process;
pub mod restart;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use tokio::sync::mpsc;

use std::collections::VecDeque;

use crate::config::{Config, Failback, Process, Recovery, Triggers};
use crate::events::Severity;
use crate::policy::breaker::BreakerState;
use crate::state::State;
use ladder::{Action, Ladder, LadderConfig};
use process::LogWatch;
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
    /// Recovery actions taken (restarts by trigger, failovers, execs).
    pub recovery_attempts: u64,
    /// The last rung the recovery ladder used.
    pub ladder_rung: Option<Action>,
    /// Whether the ladder (not an operator) failed the upstream over.
    pub failed_over_by_ladder: bool,
    /// Mean time from the process going down to serving again.
    pub mttr_seconds: Option<f64>,
    /// Share of the time since supervision began that it was serving
    /// (the first start counts as down until ready).
    pub availability: Option<f64>,
    #[serde(skip)]
    supervising_since: Instant,
    #[serde(skip)]
    down_since: Option<Instant>,
    #[serde(skip)]
    downtime: Duration,
    #[serde(skip)]
    recoveries: u64,
    #[serde(skip)]
    recovery_time: Duration,
    #[serde(skip)]
    served_once: bool,
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
            recovery_attempts: 0,
            ladder_rung: None,
            failed_over_by_ladder: false,
            mttr_seconds: None,
            availability: None,
            supervising_since: Instant::now(),
            down_since: Some(Instant::now()),
            downtime: Duration::ZERO,
            recoveries: 0,
            recovery_time: Duration::ZERO,
            served_once: false,
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
            triggers: config.supervisor.triggers.clone(),
            recovery: config.supervisor.recovery.clone(),
            failback: config.supervisor.failback.clone(),
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
        let current_outage = status
            .down_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let observed = now
            .saturating_duration_since(status.supervising_since)
            .as_secs_f64();
        let down = (status.downtime + current_outage).as_secs_f64();
        status.availability = if observed > 0.0 {
            Some(((observed - down) / observed).clamp(0.0, 1.0))
        } else {
            None
        };
        status.mttr_seconds = (status.recoveries > 0)
            .then(|| status.recovery_time.as_secs_f64() / status.recoveries as f64);
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
        let was_ready = self.ready.swap(ready, Ordering::AcqRel);
        let now = Instant::now();
        state
            .metrics
            .upstream_up
            .with_label_values(&[&self.upstream])
            .set(i64::from(ready));
        self.update(|status| match (was_ready, ready) {
            (true, false) => status.down_since = Some(now),
            (false, true) => {
                // A recovery: time from going down to serving again.
                if let Some(since) = status.down_since.take() {
                    let outage = now.saturating_duration_since(since);
                    status.downtime += outage;
                    // The first start is not a recovery.
                    if status.served_once {
                        status.recoveries += 1;
                        status.recovery_time += outage;
                    }
                }
                status.served_once = true;
            }
            _ => {}
        });
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
    triggers: Triggers,
    recovery: Recovery,
    failback: Failback,
}

/// Samples of the pool's try counters, for the error-rate trigger.
type TrySamples = VecDeque<(Instant, u64, u64)>;

/// How one run of the process ended.
enum Ended {
    /// It exited by itself.
    Exited(Exit),
    /// It is to be restarted now (a trigger or an operator), for `reason`.
    Restart(&'static str),
    /// breakwater is shutting down.
    Stop,
}

/// How often the triggers are sampled while the process runs.
const MONITOR_EVERY: Duration = Duration::from_millis(250);

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
        let stop_signal = self.process.stop_signal.number();
        let mut tracker = RestartTracker::new(settings);
        let mut ladder = Ladder::new(LadderConfig {
            ladder: self.recovery.ladder.clone(),
            max_attempts: self.recovery.max_attempts,
            cooldown: self.recovery.cooldown,
            stable_for: self.recovery.stable_for,
        });
        let patterns: Vec<(regex::Regex, Action)> = self
            .process
            .log_patterns
            .iter()
            .filter_map(|pattern| Some((pattern.regex()?.clone(), pattern.action)))
            .collect();
        let (matches_tx, mut matches) = mpsc::channel(16);
        let watch = (!patterns.is_empty()).then(|| LogWatch {
            patterns: Arc::new(patterns),
            matches: matches_tx,
        });
        let mut control = Control {
            stop: self.supervisor.stop.subscribe(),
            restart: self.supervisor.restart.subscribe(),
        };
        let events = &self.state.events;
        self.supervisor.set_ready(&self.state, false);
        loop {
            let mut running = match process::spawn(&spec, &self.name, watch.clone()) {
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

            let ended = self
                .watch(&mut running, pid, &mut ladder, &mut matches, &mut control)
                .await;
            self.supervisor.set_ready(&self.state, false);
            let exit = match ended {
                Ended::Exited(exit) => exit,
                Ended::Restart(reason) => {
                    let exit = running.stop(stop_signal, self.process.stop_grace).await;
                    self.record_end(exit);
                    self.count_restart(reason);
                    events.emit(
                        "process_restart",
                        &self.name,
                        Severity::Warning,
                        &format!("pid {pid}: restarted ({reason}); {}", describe(exit)),
                    );
                    continue;
                }
                Ended::Stop => {
                    let exit = running.stop(stop_signal, self.process.stop_grace).await;
                    self.record_end(exit);
                    self.supervisor.update(|status| status.state = "stopped");
                    events.emit(
                        "process_stop",
                        &self.name,
                        Severity::Info,
                        &format!("pid {pid}: {}", describe(exit)),
                    );
                    break;
                }
            };
            let now = Instant::now();
            let decision = tracker.on_exit(exit, started, now, rand::random());
            self.record_end(exit);
            match decision {
                Decision::Restart { after } => {
                    let reason = if matches!(exit, Exit::Signal(_)) {
                        "signal"
                    } else {
                        "exit"
                    };
                    self.count_restart(reason);
                    events.emit(
                        "process_exit",
                        &self.name,
                        Severity::Warning,
                        &format!("pid {pid}: {}; restarting in {after:?}", describe(exit)),
                    );
                    self.supervisor.update(|status| {
                        status.state = "backoff";
                        status.next_start_at = Some(now + after);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(after) => {}
                        _ = stopped(&mut control.stop) => {
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
                            "pid {pid}: {}; not restarting (restart: {})",
                            describe(exit),
                            policy_name(self.process.restart)
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

    /// Waits for the process to accept connections (bounded by
    /// `startup_timeout`), then watches it: its exit, operator requests, log
    /// pattern matches, and the triggers sampled every [`MONITOR_EVERY`],
    /// acting on the recovery ladder's decisions.
    async fn watch(
        &self,
        running: &mut Running,
        pid: u32,
        ladder: &mut Ladder,
        matches: &mut mpsc::Receiver<Action>,
        control: &mut Control,
    ) -> Ended {
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
        let events = &self.state.events;
        tokio::select! {
            exit = running.wait() => return Ended::Exited(exit),
            _ = stopped(&mut control.stop) => return Ended::Stop,
            _ = control.restart.changed() => return Ended::Restart("admin"),
            ready = probe => {
                if ready {
                    self.supervisor.set_ready(&self.state, true);
                    self.supervisor.update(|status| status.state = "running");
                    events.emit("process_ready", &self.name, Severity::Info, &format!("pid {pid}"));
                } else {
                    events.emit("startup_timeout", &self.name, Severity::Warning, &format!("pid {pid} did not accept connections within {:?}", self.startup_timeout));
                }
            }
        }
        let mut ticks = tokio::time::interval(MONITOR_EVERY);
        let mut breaker_open_since: Option<Instant> = None;
        let mut healthy_since: Option<Instant> = None;
        let mut samples = TrySamples::new();
        loop {
            let (action, reason) = tokio::select! {
                exit = running.wait() => return Ended::Exited(exit),
                _ = stopped(&mut control.stop) => return Ended::Stop,
                _ = control.restart.changed() => return Ended::Restart("admin"),
                Some(action) = matches.recv() => (Some(action), "log_pattern"),
                _ = ticks.tick() => {
                    let now = Instant::now();
                    match self.trigger(pid, now, &mut breaker_open_since, &mut samples) {
                        Some(reason) => {
                            healthy_since = None;
                            (ladder.on_trigger(now), reason)
                        }
                        None => {
                            let since = *healthy_since.get_or_insert(now);
                            if now.saturating_duration_since(since) >= self.failback.stable_for && self.failback_after_ladder() {
                                events.emit("failback", &self.name, Severity::Info, &format!("primary healthy for {:?}", self.failback.stable_for));
                            }
                            if ladder.on_healthy(now) {
                                events.emit("recovery_reset", &self.name, Severity::Info, &format!("healthy for {:?}", self.recovery.stable_for));
                            }
                            (None, "")
                        }
                    }
                }
            };
            let Some(action) = action else { continue };
            self.supervisor.update(|status| {
                status.recovery_attempts += 1;
                status.ladder_rung = Some(action);
            });
            events.emit(
                "recovery",
                &self.name,
                Severity::Warning,
                &format!("{reason}: {}", action.as_str()),
            );
            let started = Instant::now();
            let result = match action {
                Action::Restart => {
                    self.record_attempt(action, "started", started);
                    ladder.on_done();
                    return Ended::Restart(reason);
                }
                Action::Failover => match self.pool() {
                    Some(pool) if !pool.backup().is_empty() => {
                        pool.set_failed_over(true);
                        self.supervisor
                            .update(|status| status.failed_over_by_ladder = true);
                        events.emit(
                            "failover",
                            &self.name,
                            Severity::Warning,
                            &format!("recovery ladder ({reason})"),
                        );
                        "ok"
                    }
                    _ => "no_backup",
                },
                Action::Exec => self.exec().await,
                Action::Escalate => {
                    events.emit(
                        "escalation",
                        &self.name,
                        Severity::Critical,
                        &format!("recovery ladder exhausted ({reason}); needs intervention"),
                    );
                    self.supervisor
                        .update(|status| status.state = "needs_intervention");
                    "escalated"
                }
            };
            self.record_attempt(action, result, started);
            ladder.on_done();
        }
    }

    /// Notes that the current run ended with `exit`. The state leaves
    /// `running` in the same update, so `/status` never shows a running
    /// process without a pid (or with the restart already counted).
    fn record_end(&self, exit: Exit) {
        self.supervisor.update(|status| {
            status.state = "exited";
            status.pid = None;
            status.started_at = None;
            status.last_exit = Some(describe(exit));
        });
    }

    /// Counts one restart, for `/status` and the metric.
    fn count_restart(&self, reason: &str) {
        self.state
            .metrics
            .supervisor_restarts
            .with_label_values(&[reason])
            .inc();
        self.supervisor.update(|status| status.restarts += 1);
    }

    fn record_attempt(&self, action: Action, result: &str, started: Instant) {
        let metrics = &self.state.metrics;
        metrics
            .recovery_attempts
            .with_label_values(&[action.as_str(), result])
            .inc();
        metrics
            .recovery_duration
            .with_label_values(&[action.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }

    fn pool(&self) -> Option<Arc<crate::proxy::forward::UpstreamPool>> {
        self.state
            .snapshot()
            .upstreams
            .iter()
            .find(|pool| pool.config.name == self.name)
            .cloned()
    }

    /// Undoes a failover the ladder made, once the primary is stable.
    fn failback_after_ladder(&self) -> bool {
        let mut was = false;
        self.supervisor.update(|status| {
            was = status.failed_over_by_ladder;
            status.failed_over_by_ladder = false;
        });
        was && self.pool().is_some_and(|pool| pool.set_failed_over(false))
    }

    /// Runs `recovery.exec` with a bound of `cooldown` (at most 60s).
    async fn exec(&self) -> &'static str {
        let Some((program, args)) = self.recovery.exec.split_first() else {
            return "no_command";
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let limit = self
            .recovery
            .cooldown
            .min(Duration::from_secs(60))
            .max(Duration::from_secs(1));
        match tokio::time::timeout(limit, command.status()).await {
            Ok(Ok(status)) if status.success() => "ok",
            Ok(Ok(_)) => "failed",
            Ok(Err(_)) => "not_started",
            Err(_) => "timeout",
        }
    }

    /// The first sustained-failure trigger that holds now, if any.
    fn trigger(
        &self,
        pid: u32,
        now: Instant,
        breaker_open_since: &mut Option<Instant>,
        samples: &mut TrySamples,
    ) -> Option<&'static str> {
        if let Some(limit) = self.process.memory_limit {
            if crate::overload::rss_of(&pid.to_string()).is_some_and(|rss| rss > limit.0) {
                return Some("memory_limit");
            }
        }
        let snapshot = self.state.snapshot();
        let pool = snapshot
            .upstreams
            .iter()
            .find(|pool| pool.config.name == self.name)?;
        if pool.config.health_check.is_some()
            && !pool.endpoints().is_empty()
            && pool
                .endpoints()
                .iter()
                .all(|endpoint| !endpoint.healthy.load(Ordering::Relaxed))
        {
            return Some("health_check");
        }
        if let Some(error_rate) = &self.triggers.error_rate {
            let (tries, failed) = pool.try_counts();
            samples.push_back((now, tries, failed));
            // Keep one sample at or before the window's start as the baseline.
            while samples.len() > 2
                && samples
                    .get(1)
                    .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= error_rate.window)
            {
                samples.pop_front();
            }
            if let (Some(&(_, tries_then, failed_then)), Some(&(_, tries_now, failed_now))) =
                (samples.front(), samples.back())
            {
                let tries = tries_now.saturating_sub(tries_then);
                let failed = failed_now.saturating_sub(failed_then);
                if tries >= error_rate.min_requests
                    && failed as f64 / tries as f64 >= error_rate.threshold
                {
                    samples.clear();
                    return Some("error_rate");
                }
            }
        }
        let breaker_open = snapshot
            .routes()
            .filter(|route| route.config.upstream == self.name)
            .any(|route| {
                route.breaker.as_ref().is_some_and(|breaker| {
                    matches!(breaker.state(), BreakerState::Open | BreakerState::HalfOpen)
                })
            });
        match (breaker_open, *breaker_open_since) {
            (false, _) => *breaker_open_since = None,
            (true, None) => *breaker_open_since = Some(now),
            (true, Some(since))
                if now.saturating_duration_since(since) >= self.triggers.breaker_open_for =>
            {
                *breaker_open_since = None;
                return Some("breaker_open");
            }
            (true, Some(_)) => {}
        }
        None
    }
}

/// The supervisor's control channels.
struct Control {
    stop: watch::Receiver<bool>,
    restart: watch::Receiver<u64>,
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
