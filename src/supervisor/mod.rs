//! The embedded supervisor (SPEC §5): runs the upstream's process, tells
//! the data plane when it is ready, restarts it when it exits or fails,
//! climbs the recovery ladder on sustained failure, and stops it last on
//! shutdown.
//!
//! [`restart`] and [`ladder`] decide (pure: policy, backoff, crash loop;
//! which rung next); [`process`] acts (spawn, signals, output). A
//! [`Supervisor`] is the handle to one task that joins them:
//!
//! ```text
//! spawn ─▶ wait until it accepts connections (startup_timeout → a trigger)
//!   ─▶ watch: exit, operator, config, log patterns, triggers every 250 ms
//!   ─▶ exit: back off and respawn, or halt (crash loop, restart: never)
//!   ─▶ halted: wait for an operator's restart or a changed process spec
//! ```
//!
//! The task tells the data plane what it needs through the upstream's
//! [`UpstreamGate`] — readiness (`starting`, `needs_intervention`) and
//! failover — and never the other way round: traffic never waits on the
//! supervisor. It reads the live snapshot for the triggers that watch
//! traffic (breakers, endpoint health) and follows its own config section
//! on reload (`Supervisor::reconfigure`): new settings apply at once, a
//! changed process spec restarts the child with it. [`Supervisors`] holds
//! the running one for the admin port and the reload path.
//!
//! Operations (SPEC §12) sit on the same loop: the child starts only when
//! its required dependencies are up ([`depends`], checked by [`monitor`])
//! and recovery holds while one is down; an operator's maintenance window
//! (on the gate) holds it too; drills ([`drill`]) signal the child and
//! time the recovery; a changed spec that fails is rolled back to the last
//! stable one ([`rollback`]).

pub mod depends;
pub mod drill;
pub mod ladder;
pub mod monitor;
pub mod process;
pub mod restart;
pub mod rollback;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use std::collections::VecDeque;

use tokio::sync::oneshot;

use crate::config::{Config, Process};
use crate::events::Severity;
use crate::policy::breaker::BreakerState;
use crate::proxy::gate::{Readiness, UpstreamGate};
use crate::proxy::DataPlane;
use drill::{ActiveDrill, DrillAction, DrillStatus};
use ladder::{Action, Ladder, LadderConfig};
use monitor::{DependencyStatus, Monitor, MonitorView};
use process::LogWatch;
use process::{ProcessSpec, Running};
use restart::{Decision, Exit, RestartPolicy, RestartSettings, RestartTracker};
use rollback::{Deploy, RollbackStatus};

/// What the supervisor is doing, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `starting`, `running`, `backoff`, `exited`, `stopped`,
    /// `needs_intervention`.
    pub state: &'static str,
    /// What runs: the command's file name and its arguments.
    pub command: String,
    /// The child's pid while it runs.
    pub pid: Option<u32>,
    /// Restarts since breakwater started.
    pub restarts: u64,
    /// How the last run ended, e.g. `exit 1` or `signal 9`.
    pub last_exit: Option<String>,
    /// Why the supervisor stopped acting, while it waits for an operator.
    pub halted_because: Option<String>,
    /// Seconds the current process has been up.
    pub uptime_seconds: Option<f64>,
    /// Seconds until the next start, while backing off.
    pub next_start_in_seconds: Option<f64>,
    /// Recovery actions taken (restarts by trigger, failovers, execs).
    pub recovery_attempts: u64,
    /// The last rung the recovery ladder used.
    pub ladder_rung: Option<Action>,
    /// Whether the ladder escalated and has not been reset since.
    pub escalated: bool,
    /// Whether the ladder (not an operator) failed the upstream over.
    pub failed_over_by_ladder: bool,
    /// Mean time from the process going down to serving again.
    pub mttr_seconds: Option<f64>,
    /// Share of the time since the process first served that it was
    /// serving. The first start is not an outage.
    pub availability: Option<f64>,
    /// Why the supervisor holds instead of acting (maintenance, a
    /// dependency down), while it does.
    pub held_because: Option<String>,
    /// Required and optional dependencies, as last checked.
    pub dependencies: Vec<DependencyStatus>,
    /// The last drill: how fast the trouble was seen and served again.
    pub last_drill: Option<DrillStatus>,
    /// The last automatic rollback of the process spec.
    pub rollback: Option<RollbackStatus>,
    /// A spec rolled back and not tried again until the config changes it.
    pub refused_spec: Option<String>,
    #[serde(skip)]
    serving_since_first: Option<Instant>,
    #[serde(skip)]
    down_since: Option<Instant>,
    #[serde(skip)]
    downtime: Duration,
    #[serde(skip)]
    recoveries: u64,
    #[serde(skip)]
    recovery_time: Duration,
    #[serde(skip)]
    started_at: Option<Instant>,
    #[serde(skip)]
    next_start_at: Option<Instant>,
}

impl Status {
    fn new(command: String) -> Self {
        Status {
            state: "starting",
            command,
            pid: None,
            restarts: 0,
            last_exit: None,
            halted_because: None,
            uptime_seconds: None,
            next_start_in_seconds: None,
            recovery_attempts: 0,
            ladder_rung: None,
            escalated: false,
            failed_over_by_ladder: false,
            mttr_seconds: None,
            availability: None,
            held_because: None,
            dependencies: Vec::new(),
            last_drill: None,
            rollback: None,
            refused_spec: None,
            serving_since_first: None,
            down_since: None,
            downtime: Duration::ZERO,
            recoveries: 0,
            recovery_time: Duration::ZERO,
            started_at: None,
            next_start_at: None,
        }
    }
}

/// What an operator or a reload asks of the task.
enum Command {
    /// Stop the child now and start it again, forgetting the crash loop.
    Restart,
    /// Follow a new config section.
    Reconfigure(Box<Settings>),
    /// Signal the child for a drill; the answer says whether it was sent.
    Drill(DrillAction, oneshot::Sender<Result<u32, String>>),
    /// Stop the child and end.
    Stop,
}

/// The parts of the config the task follows.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    process: Process,
    section: crate::config::Supervisor,
    /// Where the readiness probe connects: the upstream's first endpoint.
    probe_address: String,
}

/// Handle to the supervisor task of one upstream.
pub struct Supervisor {
    /// The upstream whose primary endpoints this process serves.
    pub upstream: String,
    gate: Arc<UpstreamGate>,
    status: Mutex<Status>,
    /// The dependency checks' findings, read for `/status`.
    dependencies: Mutex<Option<MonitorView>>,
    commands: mpsc::UnboundedSender<Command>,
    done: watch::Receiver<bool>,
}

// === impl Supervisor ===

impl Supervisor {
    /// Starts supervising `config.supervisor.process`, if there is one.
    pub fn spawn(plane: &Arc<DataPlane>, config: &Config) -> Option<Arc<Supervisor>> {
        let settings = settings_of(config)?;
        let upstream = upstream_of(config)?;
        let gate = plane.gates.get(&upstream);
        // Down until it first serves, and scraped as such from the start.
        plane
            .metrics
            .upstream_up
            .with_label_values(&[&upstream])
            .set(0);
        let (commands, receiver) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(false);
        let supervisor = Arc::new(Supervisor {
            upstream: upstream.clone(),
            gate,
            status: Mutex::new(Status::new(describe_command(&settings.process))),
            dependencies: Mutex::new(None),
            commands,
            done,
        });
        let task = Task {
            supervisor: supervisor.clone(),
            plane: plane.clone(),
            name: upstream,
            settings,
            commands: receiver,
            ready_at: None,
        };
        tokio::spawn(async move {
            task.run().await;
            done_tx.send_replace(true);
        });
        Some(supervisor)
    }

    /// The current status, with live durations.
    pub fn status(&self) -> Status {
        let mut status = self.lock().clone();
        let now = Instant::now();
        if let Some(since) = status.serving_since_first {
            let current_outage = status
                .down_since
                .map_or(Duration::ZERO, |down| now.saturating_duration_since(down));
            let observed = now.saturating_duration_since(since).as_secs_f64();
            let down = (status.downtime + current_outage).as_secs_f64();
            status.availability = (observed > 0.0)
                .then(|| round_to(((observed - down) / observed).clamp(0.0, 1.0), 6));
        }
        status.mttr_seconds = (status.recoveries > 0).then(|| {
            round_to(
                status.recovery_time.as_secs_f64() / status.recoveries as f64,
                3,
            )
        });
        status.uptime_seconds = status
            .started_at
            .map(|at| round_to(now.saturating_duration_since(at).as_secs_f64(), 3));
        status.next_start_in_seconds = status
            .next_start_at
            .map(|at| round_to(at.saturating_duration_since(now).as_secs_f64(), 3));
        if let Some(view) = self
            .dependencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            status.dependencies = view.status();
        }
        status
    }

    /// A drill: SIGKILL (`kill`) or SIGSTOP (`hang`) to the running child,
    /// then the triggers and the ladder act as they would for real. Returns
    /// the pid signalled, or why there is none to drill.
    pub async fn drill(&self, action: DrillAction) -> Result<u32, String> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Drill(action, reply)).is_err() {
            return Err("the supervisor has stopped".to_owned());
        }
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(result)) => result,
            _ => Err("the supervisor did not answer".to_owned()),
        }
    }

    fn set_monitor_view(&self, view: MonitorView) {
        *self
            .dependencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(view);
    }

    /// Readiness of the supervised process, as the data plane sees it.
    pub fn readiness(&self) -> Readiness {
        self.gate.readiness()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.lock());
    }

    /// An operator's restart: stop the child and start it again now (no
    /// backoff), with the crash-loop history and the ladder reset — also
    /// when the supervisor had stopped trying.
    pub fn restart(&self) {
        let _ = self.commands.send(Command::Restart);
    }

    /// Follows `config`'s supervisor section (same upstream, still a
    /// process): settings apply at once; a changed process spec (command,
    /// args, env, cwd) restarts the child with it.
    fn reconfigure(&self, settings: Settings) {
        let _ = self.commands.send(Command::Reconfigure(Box::new(settings)));
    }

    /// Stops the child (stop signal, then SIGKILL after its grace) and
    /// waits until it is gone.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Marks the process ready or not for the data plane, and keeps the
    /// outage books for MTTR and availability.
    fn set_readiness(&self, plane: &DataPlane, readiness: Readiness) {
        // The books first, then the gate: whoever sees traffic flow again
        // also sees the recovery counted.
        let was = self.gate.readiness();
        let now = Instant::now();
        plane
            .metrics
            .upstream_up
            .with_label_values(&[&self.upstream])
            .set(i64::from(readiness == Readiness::Ready));
        let (was_ready, ready) = (was == Readiness::Ready, readiness == Readiness::Ready);
        self.update(|status| match (was_ready, ready) {
            // Down before it ever served is the first start, not an outage.
            (true, false) if status.serving_since_first.is_some() => status.down_since = Some(now),
            (false, true) => match (status.serving_since_first, status.down_since.take()) {
                (None, _) => status.serving_since_first = Some(now),
                // A recovery: time from going down to serving again.
                (Some(_), Some(since)) => {
                    let outage = now.saturating_duration_since(since);
                    status.downtime += outage;
                    status.recoveries += 1;
                    status.recovery_time += outage;
                }
                (Some(_), None) => {}
            },
            _ => {}
        });
        self.gate.set_readiness(readiness);
    }
}

/// The supervised process of the running config, if any: what the admin
/// port and the reload path reach it through.
#[derive(Default)]
pub struct Supervisors {
    current: Mutex<Option<Arc<Supervisor>>>,
}

impl Supervisors {
    /// Starts supervising `config`'s process, if it has one.
    pub fn start(&self, plane: &Arc<DataPlane>, config: &Config) {
        *self.slot() = Supervisor::spawn(plane, config);
    }

    /// The running supervisor, if any.
    pub fn get(&self) -> Option<Arc<Supervisor>> {
        self.slot().clone()
    }

    /// The supervisor of upstream `name`, if one serves it.
    pub fn of_upstream(&self, name: &str) -> Option<Arc<Supervisor>> {
        self.get().filter(|supervisor| supervisor.upstream == name)
    }

    /// Follows a reloaded config: the same upstream's supervisor takes the
    /// new settings; a process added, removed or moved to another upstream
    /// starts or stops one.
    pub async fn apply(&self, plane: &Arc<DataPlane>, config: &Config) {
        let current = self.get();
        match (current, settings_of(config), upstream_of(config)) {
            (Some(running), Some(settings), Some(upstream)) if running.upstream == upstream => {
                running.reconfigure(settings);
            }
            (current, _, _) => {
                if let Some(old) = current {
                    old.stop().await;
                    // Its upstream is no longer behind a supervised process.
                    old.gate.set_readiness(Readiness::Ready);
                }
                self.start(plane, config);
            }
        }
    }

    /// Stops the running supervisor's child and waits for it.
    pub async fn stop(&self) {
        if let Some(supervisor) = self.get() {
            supervisor.stop().await;
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Supervisor>>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn upstream_of(config: &Config) -> Option<String> {
    config
        .supervisor
        .upstream
        .clone()
        .or_else(|| config.upstreams.first().map(|u| u.name.clone()))
}

fn settings_of(config: &Config) -> Option<Settings> {
    let process = config.supervisor.process.clone()?;
    let upstream = upstream_of(config)?;
    let probe_address = config.upstream(&upstream)?.endpoints.first()?.clone();
    Some(Settings {
        process,
        section: config.supervisor.clone(),
        probe_address,
    })
}

/// `value` rounded to `places` decimals, for numbers people read in
/// `/status` (`0.999982`, not `0.9999817264`; `0`, not `1.5e-8`).
fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The command as people read it: its file name and arguments.
fn describe_command(process: &Process) -> String {
    describe_command_of(&spec_of(process))
}

/// [`describe_command`] of a bare spec.
fn describe_command_of(spec: &ProcessSpec) -> String {
    let name = std::path::Path::new(&spec.command).file_name().map_or_else(
        || spec.command.clone(),
        |name| name.to_string_lossy().into_owned(),
    );
    std::iter::once(name)
        .chain(spec.args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spec_of(process: &Process) -> ProcessSpec {
    ProcessSpec {
        command: process.command.clone(),
        args: process.args.clone(),
        env: process.env.clone(),
        cwd: process.cwd.clone(),
    }
}

fn restart_settings(process: &Process) -> RestartSettings {
    RestartSettings {
        policy: process.restart,
        initial: process.backoff.initial,
        max: process.backoff.max,
        multiplier: process.backoff.multiplier,
        jitter: process.backoff.jitter,
        max_restarts: process.crash_loop.max_restarts,
        window: process.crash_loop.window,
        reset_after: process.backoff.reset_after,
    }
}

fn ladder_config(section: &crate::config::Supervisor) -> LadderConfig {
    LadderConfig {
        ladder: section.recovery.ladder.clone(),
        max_attempts: section.recovery.max_attempts,
        cooldown: section.recovery.cooldown,
        stable_for: section.recovery.stable_for,
    }
}

fn stop_signal(process: &Process) -> i32 {
    process.stop_signal.number()
}

struct Task {
    supervisor: Arc<Supervisor>,
    plane: Arc<DataPlane>,
    name: String,
    settings: Settings,
    commands: mpsc::UnboundedReceiver<Command>,
    /// When the current run became ready, if it did.
    ready_at: Option<Instant>,
}

/// Samples of the gate's try counters, for the error-rate trigger.
type TrySamples = VecDeque<(Instant, u64, u64)>;

/// How one run of the process ended.
enum Ended {
    /// It exited by itself.
    Exited(Exit),
    /// It is to be restarted now (a trigger, an operator, a new spec), for
    /// `reason`.
    Restart(&'static str),
    /// breakwater is shutting down.
    Stop,
}

/// What ends a halt.
enum Resume {
    Start,
    Stop,
}

/// How often the triggers are sampled while the process runs.
const MONITOR_EVERY: Duration = Duration::from_millis(250);

/// How often the readiness probe connects while the process starts.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// The task's decision state, kept across runs of the process.
struct Memory {
    tracker: RestartTracker,
    ladder: Ladder,
    log_matches: mpsc::Receiver<Action>,
    log_watch: Option<LogWatch>,
    /// The dependency checks.
    monitor: Monitor,
    /// The drill under way, if any.
    drill: Option<ActiveDrill>,
    /// A changed spec under watch for rollback.
    deploy: Option<Deploy>,
    /// The last spec that ran ready for the rollback's `stable_for`.
    last_stable: Option<Process>,
    /// A spec rolled back: not tried again until the config changes it.
    refused: Option<ProcessSpec>,
    /// Whether the current hold (a dependency down) was announced.
    hold_announced: bool,
}

impl Task {
    async fn run(mut self) {
        let (matches_tx, log_matches) = mpsc::channel(16);
        let monitor = Monitor::start(
            &self.settings.section.dependencies,
            &self.name,
            &self.plane.events,
        );
        self.supervisor.set_monitor_view(monitor.view());
        let mut memory = Memory {
            tracker: RestartTracker::new(restart_settings(&self.settings.process)),
            ladder: Ladder::new(ladder_config(&self.settings.section)),
            log_matches,
            log_watch: None,
            monitor,
            drill: None,
            deploy: None,
            last_stable: None,
            refused: None,
            hold_announced: false,
        };
        memory.log_watch = self.log_watch(&matches_tx);
        self.supervisor
            .set_readiness(&self.plane, Readiness::Starting);
        loop {
            // Nothing starts before what it needs is up.
            if let Resume::Stop = self.await_dependencies(&mut memory, &matches_tx).await {
                break;
            }
            let spec = spec_of(&self.settings.process);
            let mut running = match process::spawn(&spec, &self.name, memory.log_watch.clone()) {
                Ok(running) => running,
                Err(error) => {
                    let resolved = process::resolve(&spec).map_or_else(
                        || "not found on PATH".to_owned(),
                        |path| path.display().to_string(),
                    );
                    let why = format!("cannot start {} ({resolved}): {error}", spec.command);
                    tracing::error!(process = %self.name, command = %spec.command, resolved = %resolved, %error, "Cannot start the supervised process.");
                    self.plane.events.emit(
                        "process_start_failed",
                        &self.name,
                        Severity::Critical,
                        &why,
                    );
                    if self.roll_back(&mut memory, &why, &matches_tx) {
                        continue;
                    }
                    match self
                        .halt("needs_intervention", why, &mut memory, &matches_tx)
                        .await
                    {
                        Resume::Start => continue,
                        Resume::Stop => break,
                    }
                }
            };
            let started = Instant::now();
            self.ready_at = None;
            let pid = running.pid;
            let command = describe_command(&self.settings.process);
            self.supervisor.update(|status| {
                status.state = "starting";
                status.command = command.clone();
                status.pid = Some(pid);
                status.started_at = Some(started);
                status.next_start_at = None;
                status.halted_because = None;
                status.held_because = None;
            });
            self.plane.events.emit(
                "process_start",
                &self.name,
                Severity::Info,
                &format!("pid {pid}: {command}"),
            );

            let ended = self
                .watch(&mut running, pid, &mut memory, &matches_tx)
                .await;
            self.supervisor
                .set_readiness(&self.plane, Readiness::Starting);
            let exit = match ended {
                Ended::Exited(exit) => exit,
                Ended::Restart(reason) => {
                    let exit = self.stop_child(&mut running, &memory).await;
                    self.record_end(exit);
                    // `operator_reset` has counted an operator's restart.
                    if reason != "admin" {
                        self.count_restart(reason);
                    }
                    self.plane.events.emit(
                        "process_restart",
                        &self.name,
                        Severity::Warning,
                        &format!("pid {pid}: restarted ({reason}); {}", describe(exit)),
                    );
                    continue;
                }
                Ended::Stop => {
                    let exit = self.stop_child(&mut running, &memory).await;
                    self.record_end(exit);
                    self.interrupt_drill(&mut memory);
                    self.supervisor.update(|status| status.state = "stopped");
                    self.plane.events.emit(
                        "process_stop",
                        &self.name,
                        Severity::Info,
                        &format!("pid {pid}: {}", describe(exit)),
                    );
                    break;
                }
            };
            let now = Instant::now();
            self.drill_detected(&mut memory, "exit", now);
            self.record_end(exit);
            let ready_at = self.ready_at.take();
            let reset_after = self.settings.process.backoff.reset_after;
            let failed_start =
                ready_at.is_none_or(|at| now.saturating_duration_since(at) < reset_after);
            if failed_start {
                let when = if ready_at.is_none() {
                    "before it was ready"
                } else {
                    "soon after it was ready"
                };
                let why = format!("pid {pid} exited {when} ({})", describe(exit));
                if self.roll_back(&mut memory, &why, &matches_tx) {
                    continue;
                }
            }
            if self.supervisor.gate.in_maintenance() {
                // Hands off: the operator is working on it.
                self.plane.events.emit(
                    "process_exit",
                    &self.name,
                    Severity::Warning,
                    &format!(
                        "pid {pid}: {}; not restarted while the upstream is in maintenance",
                        describe(exit)
                    ),
                );
                match self.hold_for_maintenance(&mut memory, &matches_tx).await {
                    Resume::Start => continue,
                    Resume::Stop => break,
                }
            }
            let decision = memory
                .tracker
                .on_exit(exit, started, ready_at, now, rand::random());
            let why = match decision {
                Decision::Restart { after } => {
                    let reason = if matches!(exit, Exit::Signal(_)) {
                        "signal"
                    } else {
                        "exit"
                    };
                    self.count_restart(reason);
                    if let depends::Verdict::Hold { waiting_for } = memory.monitor.verdict() {
                        // A restart cannot fix a missing dependency: the
                        // loop's top waits for it.
                        self.plane.events.emit(
                            "process_exit",
                            &self.name,
                            Severity::Warning,
                            &format!(
                                "pid {pid}: {}; restart waits for {}",
                                describe(exit),
                                waiting_for.join(", ")
                            ),
                        );
                        continue;
                    }
                    self.plane.events.emit(
                        "process_exit",
                        &self.name,
                        Severity::Warning,
                        &format!(
                            "pid {pid}: {}; restarting in {}",
                            describe(exit),
                            crate::units::format_duration_rounded(after)
                        ),
                    );
                    self.supervisor.update(|status| {
                        status.state = "backoff";
                        status.next_start_at = Some(now + after);
                    });
                    match self.back_off(after, &mut memory, &matches_tx).await {
                        Resume::Start => continue,
                        Resume::Stop => break,
                    }
                }
                Decision::Stop => {
                    let why = format!(
                        "pid {pid}: {}; not restarting (restart: {})",
                        describe(exit),
                        policy_name(self.settings.process.restart)
                    );
                    self.plane
                        .events
                        .emit("process_exit", &self.name, Severity::Warning, &why);
                    (why, "stopped")
                }
                Decision::Escalate { restarts } => {
                    let why = format!(
                        "crash loop: {restarts} restarts within {}; needs intervention",
                        crate::units::format_duration(self.settings.process.crash_loop.window)
                    );
                    self.plane
                        .events
                        .emit("escalation", &self.name, Severity::Critical, &why);
                    (why, "needs_intervention")
                }
            };
            let (why, state) = why;
            match self.halt(state, why, &mut memory, &matches_tx).await {
                Resume::Start => continue,
                Resume::Stop => break,
            }
        }
    }

    /// Stops the running child (stop signal, SIGKILL after the grace); a
    /// child a drill hung is continued first, so it can honour the signal.
    async fn stop_child(&self, running: &mut Running, memory: &Memory) -> Exit {
        if memory
            .drill
            .as_ref()
            .is_some_and(|drill| drill.action == DrillAction::Hang && drill.pid == running.pid)
        {
            running.signal(libc::SIGCONT);
        }
        let signal = stop_signal(&self.settings.process);
        running.stop(signal, self.settings.process.stop_grace).await
    }

    fn log_watch(&self, matches: &mpsc::Sender<Action>) -> Option<LogWatch> {
        let patterns: Vec<(regex::Regex, Action)> = self
            .settings
            .process
            .log_patterns
            .iter()
            .filter_map(|pattern| Some((pattern.regex()?.clone(), pattern.action)))
            .collect();
        (!patterns.is_empty()).then(|| LogWatch {
            patterns: Arc::new(patterns),
            matches: matches.clone(),
        })
    }

    /// Takes new settings. Returns whether the process spec changed (then
    /// the child must be restarted with the new one). A spec that was
    /// rolled back is not taken again until the config changes it.
    fn reconfigure(
        &mut self,
        mut settings: Settings,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> bool {
        let wanted = spec_of(&settings.process);
        let refused = memory.refused.as_ref() == Some(&wanted);
        if refused {
            // The config still names the spec that was rolled back.
            settings.process = self.settings.process.clone();
        } else if memory.refused.take().is_some() {
            self.supervisor.update(|status| status.refused_spec = None);
        }
        let spec_changed = spec_of(&settings.process) != spec_of(&self.settings.process);
        memory
            .tracker
            .reconfigure(restart_settings(&settings.process));
        memory.ladder.reconfigure(ladder_config(&settings.section));
        if settings.section.dependencies != memory.monitor.dependencies() {
            memory.monitor = Monitor::start(
                &settings.section.dependencies,
                &self.name,
                &self.plane.events,
            );
            self.supervisor.set_monitor_view(memory.monitor.view());
        }
        if spec_changed {
            memory.deploy = match (&settings.section.rollback, &memory.last_stable) {
                (Some(rollback), Some(good)) if spec_of(good) != wanted => Some(Deploy {
                    good: good.clone(),
                    started: Instant::now(),
                    settings: rollback.clone(),
                    tries_at_start: self.supervisor.gate.try_counts(),
                }),
                _ => None,
            };
        }
        self.settings = settings;
        memory.log_watch = self.log_watch(matches);
        if spec_changed {
            self.plane.events.emit(
                "config_reload",
                &self.name,
                Severity::Info,
                &format!(
                    "new process spec: {}",
                    describe_command(&self.settings.process)
                ),
            );
        } else if refused {
            self.plane.events.emit(
                "config_reload",
                &self.name,
                Severity::Warning,
                &format!(
                    "process spec {} was rolled back; it is not tried again until the config changes it",
                    describe_command_of(&wanted)
                ),
            );
        }
        spec_changed
    }

    /// Restores the last stable spec when a changed one fails within its
    /// rollback window; true when it did (start the restored spec now).
    fn roll_back(
        &mut self,
        memory: &mut Memory,
        reason: &str,
        matches: &mpsc::Sender<Action>,
    ) -> bool {
        let Some(deploy) = memory.deploy.take() else {
            return false;
        };
        if deploy.accepted(Instant::now()) {
            return false;
        }
        let bad = std::mem::replace(&mut self.settings.process, deploy.good);
        let (from, to) = (
            describe_command(&bad),
            describe_command(&self.settings.process),
        );
        memory.refused = Some(spec_of(&bad));
        memory
            .tracker
            .reconfigure(restart_settings(&self.settings.process));
        memory.tracker.reset();
        memory.log_watch = self.log_watch(matches);
        self.plane
            .metrics
            .rollbacks
            .with_label_values(&["process"])
            .inc();
        self.plane.events.emit(
            "rollback",
            &self.name,
            Severity::Critical,
            &format!(
                "process spec {from} rolled back to {to}: {reason}; {from} is not tried again until the config changes it"
            ),
        );
        let status = RollbackStatus {
            from: from.clone(),
            to,
            reason: reason.to_owned(),
            at: crate::events::rfc3339::now(),
        };
        self.supervisor.update(|s| {
            s.rollback = Some(status);
            s.refused_spec = Some(from);
        });
        true
    }

    /// Waits until every required dependency is up. Past `startup_timeout`
    /// the upstream says it needs intervention (and a critical event says
    /// why), but the process still starts as soon as they are up.
    async fn await_dependencies(
        &mut self,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> Resume {
        let started = Instant::now();
        let mut gave_up = false;
        loop {
            let depends::Verdict::Hold { waiting_for } = memory.monitor.verdict() else {
                if gave_up {
                    self.supervisor
                        .set_readiness(&self.plane, Readiness::Starting);
                }
                return Resume::Start;
            };
            let waiting = format!("waiting for dependencies: {}", waiting_for.join(", "));
            self.supervisor.update(|status| {
                if status.held_because.as_deref() != Some(waiting.as_str()) {
                    status.held_because = Some(waiting.clone());
                }
                if !gave_up {
                    status.state = "waiting";
                }
                status.pid = None;
            });
            let deadline = started + self.settings.section.startup_timeout;
            tokio::select! {
                _ = memory.monitor.changed() => {}
                _ = tokio::time::sleep_until(deadline), if !gave_up => {
                    gave_up = true;
                    let why = format!(
                        "required dependencies still down after {}: {}; the process starts when they are up",
                        crate::units::format_duration(self.settings.section.startup_timeout),
                        waiting_for.join(", ")
                    );
                    self.plane.events.emit("startup_timeout", &self.name, Severity::Critical, &why);
                    self.supervisor.set_readiness(&self.plane, Readiness::NeedsIntervention);
                    self.supervisor.update(|status| {
                        status.state = "needs_intervention";
                        status.halted_because = Some(why);
                    });
                }
                command = self.commands.recv() => match command {
                    // An operator's restart clears the history, but a missing
                    // dependency is not the supervisor's to skip.
                    Some(Command::Restart) => self.operator_reset(memory),
                    Some(Command::Reconfigure(settings)) => {
                        let _ = self.reconfigure(*settings, memory, matches);
                    }
                    Some(Command::Drill(_, reply)) => {
                        let _ = reply.send(Err("no process is running: it waits for its dependencies".to_owned()));
                    }
                    Some(Command::Stop) | None => {
                        self.supervisor.update(|status| status.state = "stopped");
                        return Resume::Stop;
                    }
                },
            }
        }
    }

    /// The process exited while the upstream is in maintenance: it is not
    /// restarted until the maintenance ends (by the admin port or its TTL),
    /// an operator restarts it, or a reload changes its spec.
    async fn hold_for_maintenance(
        &mut self,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> Resume {
        let gate = self.supervisor.gate.clone();
        let mut maintenance = gate.watch_maintenance();
        self.supervisor.update(|status| {
            status.state = "maintenance";
            status.pid = None;
            status.next_start_at = None;
            status.held_because = Some("the upstream is in maintenance".to_owned());
        });
        loop {
            if !gate.in_maintenance() {
                self.plane.events.emit(
                    "process_restart",
                    &self.name,
                    Severity::Info,
                    "maintenance ended; starting the process",
                );
                return Resume::Start;
            }
            tokio::select! {
                changed = maintenance.changed() => {
                    if changed.is_err() {
                        return Resume::Start;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Restart) => {
                        self.operator_reset(memory);
                        return Resume::Start;
                    }
                    Some(Command::Reconfigure(settings)) => {
                        if self.reconfigure(*settings, memory, matches) {
                            return Resume::Start;
                        }
                    }
                    Some(Command::Drill(_, reply)) => {
                        let _ = reply.send(Err("the upstream is in maintenance".to_owned()));
                    }
                    Some(Command::Stop) | None => {
                        self.supervisor.update(|status| status.state = "stopped");
                        return Resume::Stop;
                    }
                },
            }
        }
    }

    /// Waits out a restart backoff; an operator's restart or a new spec
    /// starts the process at once.
    async fn back_off(
        &mut self,
        after: Duration,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> Resume {
        let wake = tokio::time::sleep(after);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = wake.as_mut() => {
                    if self.supervisor.gate.in_maintenance() {
                        return self.hold_for_maintenance(memory, matches).await;
                    }
                    return Resume::Start;
                }
                command = self.commands.recv() => match command {
                    Some(Command::Restart) => {
                        self.operator_reset(memory);
                        return Resume::Start;
                    }
                    Some(Command::Reconfigure(settings)) => {
                        if self.reconfigure(*settings, memory, matches) {
                            return Resume::Start;
                        }
                    }
                    Some(Command::Drill(_, reply)) => {
                        let _ = reply.send(Err("no process is running: it is backing off".to_owned()));
                    }
                    Some(Command::Stop) | None => {
                        self.supervisor.update(|status| status.state = "stopped");
                        return Resume::Stop;
                    }
                },
            }
        }
    }

    /// The supervisor has stopped trying: traffic gets `needs_intervention`
    /// until an operator restarts the process or a reload changes its spec.
    async fn halt(
        &mut self,
        state: &'static str,
        why: String,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> Resume {
        self.supervisor
            .set_readiness(&self.plane, Readiness::NeedsIntervention);
        self.supervisor.update(|status| {
            status.state = state;
            status.pid = None;
            status.next_start_at = None;
            status.halted_because = Some(why);
        });
        loop {
            match self.commands.recv().await {
                Some(Command::Restart) => {
                    self.operator_reset(memory);
                    self.supervisor
                        .set_readiness(&self.plane, Readiness::Starting);
                    return Resume::Start;
                }
                Some(Command::Reconfigure(settings)) => {
                    if self.reconfigure(*settings, memory, matches) {
                        self.supervisor
                            .set_readiness(&self.plane, Readiness::Starting);
                        return Resume::Start;
                    }
                }
                Some(Command::Drill(_, reply)) => {
                    let _ = reply.send(Err("no process is running".to_owned()));
                }
                Some(Command::Stop) | None => {
                    self.supervisor.update(|status| status.state = "stopped");
                    return Resume::Stop;
                }
            }
        }
    }

    /// An operator restarted the process: the crash loop and the ladder
    /// start over (the operator says the cause is dealt with).
    fn operator_reset(&self, memory: &mut Memory) {
        memory.tracker.reset();
        memory.ladder.reset();
        self.interrupt_drill(memory);
        self.supervisor.update(|status| {
            status.escalated = false;
            status.halted_because = None;
        });
        self.count_restart("admin");
        self.plane.events.emit(
            "process_restart",
            &self.name,
            Severity::Warning,
            "restart requested by an operator; crash-loop history and recovery ladder reset",
        );
    }

    /// Starts a drill on the running child.
    fn start_drill(
        &self,
        action: DrillAction,
        running: &Running,
        memory: &mut Memory,
    ) -> Result<u32, String> {
        if self.supervisor.gate.in_maintenance() {
            return Err(
                "the upstream is in maintenance: the supervisor takes no action".to_owned(),
            );
        }
        if memory.drill.is_some() {
            return Err("a drill is already under way".to_owned());
        }
        if self.ready_at.is_none() {
            return Err("the process is not serving yet".to_owned());
        }
        let drill = ActiveDrill {
            action,
            pid: running.pid,
            started: Instant::now(),
            detected: None,
        };
        running.signal(action.signal());
        let status = drill.status();
        self.supervisor.update(|s| s.last_drill = Some(status));
        self.plane.events.emit(
            "drill",
            &self.name,
            Severity::Warning,
            &format!(
                "{}: sent {} to pid {}",
                action.as_str(),
                if action == DrillAction::Kill {
                    "SIGKILL"
                } else {
                    "SIGSTOP"
                },
                running.pid
            ),
        );
        memory.drill = Some(drill);
        Ok(running.pid)
    }

    /// The drill's trouble was seen `by` an exit or a trigger at `now`.
    fn drill_detected(&self, memory: &mut Memory, by: &'static str, now: Instant) {
        let Some(drill) = memory.drill.as_mut() else {
            return;
        };
        if drill.detect(by, now) {
            let seconds = now.saturating_duration_since(drill.started).as_secs_f64();
            self.supervisor.update(|status| {
                if let Some(last) = status.last_drill.as_mut() {
                    last.detected_by = Some(by);
                    last.detection_seconds = Some(seconds);
                }
            });
        }
    }

    /// The upstream serves again: the drill under way, if any, is done.
    /// A hung child still running (the recovery was a failover) is
    /// continued.
    fn drill_recovered(&self, memory: &mut Memory, running: &Running, now: Instant) {
        let Some(drill) = memory.drill.take() else {
            return;
        };
        if drill.action == DrillAction::Hang && drill.pid == running.pid {
            running.signal(libc::SIGCONT);
        }
        let (detection, recovery) = drill.times(now);
        let by = drill.detected.map_or("recovery", |(_, by)| by);
        self.plane
            .metrics
            .drill_recovery
            .with_label_values(&[drill.action.as_str()])
            .observe(recovery);
        self.supervisor.update(|status| {
            if let Some(last) = status.last_drill.as_mut() {
                last.state = "recovered";
                last.detected_by = Some(by);
                last.detection_seconds = Some(detection);
                last.recovery_seconds = Some(recovery);
            }
        });
        self.plane.events.emit(
            "drill",
            &self.name,
            Severity::Info,
            &format!(
                "{} of pid {}: detected by {by} after {detection:.3}s; serving again after {recovery:.3}s",
                drill.action.as_str(),
                drill.pid
            ),
        );
    }

    /// The drill under way will not finish (an operator stepped in, or
    /// breakwater stops).
    fn interrupt_drill(&self, memory: &mut Memory) {
        if memory.drill.take().is_some() {
            self.supervisor.update(|status| {
                if let Some(last) = status.last_drill.as_mut() {
                    last.state = "interrupted";
                }
            });
        }
    }

    /// Whether the supervisor holds instead of acting on a trigger: the
    /// upstream is in maintenance, or a required dependency is down (a
    /// restart cannot fix it). Announces a dependency hold once.
    fn holds(&self, memory: &mut Memory, reason: &str) -> bool {
        if self.supervisor.gate.in_maintenance() {
            return true;
        }
        match memory.monitor.verdict() {
            depends::Verdict::Proceed => {
                if memory.hold_announced {
                    memory.hold_announced = false;
                    self.supervisor.update(|status| status.held_because = None);
                }
                false
            }
            depends::Verdict::Hold { waiting_for } => {
                if !memory.hold_announced {
                    memory.hold_announced = true;
                    let why = format!("{} down", waiting_for.join(", "));
                    self.plane.events.emit(
                        "recovery_held",
                        &self.name,
                        Severity::Warning,
                        &format!("{reason}: no action while {why}; a restart cannot fix it"),
                    );
                    self.supervisor
                        .update(|status| status.held_because = Some(why));
                }
                true
            }
        }
    }

    /// A dependency hold announced earlier is over once every required
    /// dependency is up again.
    fn release_hold(&self, memory: &mut Memory) {
        if memory.hold_announced && !memory.monitor.verdict().holds() {
            memory.hold_announced = false;
            self.supervisor.update(|status| status.held_because = None);
        }
    }

    /// Waits for the process to accept connections (`startup_timeout`
    /// expiring is a trigger for the ladder), then watches it: its exit,
    /// commands, log pattern matches, and the triggers sampled every
    /// [`MONITOR_EVERY`], acting on the recovery ladder's decisions — or
    /// holding (maintenance, a dependency down), or rolling a new spec
    /// back.
    async fn watch(
        &mut self,
        running: &mut Running,
        pid: u32,
        memory: &mut Memory,
        matches: &mpsc::Sender<Action>,
    ) -> Ended {
        let started = Instant::now();
        let mut ready = false;
        let mut startup_timed_out = false;
        let mut probe = tokio::time::interval(PROBE_EVERY);
        let mut ticks = tokio::time::interval(MONITOR_EVERY);
        let mut breaker_open_since: Option<Instant> = None;
        let mut healthy_since: Option<Instant> = None;
        let mut samples = TrySamples::new();
        loop {
            let (action, reason) = tokio::select! {
                exit = running.wait() => return Ended::Exited(exit),
                command = self.commands.recv() => match command {
                    Some(Command::Restart) => {
                        self.operator_reset(memory);
                        return Ended::Restart("admin");
                    }
                    Some(Command::Reconfigure(settings)) => {
                        if self.reconfigure(*settings, memory, matches) {
                            return Ended::Restart("config");
                        }
                        (None, "")
                    }
                    Some(Command::Drill(action, reply)) => {
                        let _ = reply.send(self.start_drill(action, running, memory));
                        (None, "")
                    }
                    Some(Command::Stop) | None => return Ended::Stop,
                },
                Some(action) = memory.log_matches.recv() => {
                    self.drill_detected(memory, "log_pattern", Instant::now());
                    if self.holds(memory, "log_pattern") {
                        (None, "")
                    } else {
                        (Some(action), "log_pattern")
                    }
                }
                _ = probe.tick(), if !ready => {
                    let address = &self.settings.probe_address;
                    if tokio::net::TcpStream::connect(address).await.is_ok() {
                        ready = true;
                        let now = Instant::now();
                        self.ready_at = Some(now);
                        self.supervisor.set_readiness(&self.plane, Readiness::Ready);
                        self.supervisor.update(|status| status.state = "running");
                        self.plane.events.emit("process_ready", &self.name, Severity::Info, &format!("pid {pid}"));
                        self.drill_recovered(memory, running, now);
                        (None, "")
                    } else if !startup_timed_out
                        && started.elapsed() >= self.settings.section.startup_timeout
                    {
                        startup_timed_out = true;
                        let why = format!(
                            "pid {pid} did not accept connections within {}",
                            crate::units::format_duration(self.settings.section.startup_timeout)
                        );
                        self.plane.events.emit("startup_timeout", &self.name, Severity::Warning, &why);
                        self.drill_detected(memory, "startup_timeout", Instant::now());
                        if self.roll_back(memory, &why, matches) {
                            return Ended::Restart("rollback");
                        }
                        if self.holds(memory, "startup_timeout") {
                            (None, "")
                        } else {
                            (memory.ladder.on_trigger(Instant::now()), "startup_timeout")
                        }
                    } else {
                        (None, "")
                    }
                }
                _ = ticks.tick(), if ready => {
                    let now = Instant::now();
                    if self.supervisor.gate.in_maintenance() {
                        // Hands off: no trigger acts, no healthy time counts.
                        healthy_since = None;
                        continue;
                    }
                    if let Some(why) = memory.deploy.as_ref().and_then(|deploy| {
                        let (tries, failed) = self.supervisor.gate.try_counts();
                        deploy.error_rate_crossed(tries, failed)
                    }) {
                        if self.roll_back(memory, &why, matches) {
                            return Ended::Restart("rollback");
                        }
                    }
                    match self.trigger(pid, now, &mut breaker_open_since, &mut samples) {
                        Some(reason) => {
                            healthy_since = None;
                            self.drill_detected(memory, reason, now);
                            if reason == "health_check"
                                && self.roll_back(memory, &format!("pid {pid} failed its health check"), matches)
                            {
                                return Ended::Restart("rollback");
                            }
                            if self.holds(memory, reason) {
                                (None, "")
                            } else {
                                (memory.ladder.on_trigger(now), reason)
                            }
                        }
                        None => {
                            self.release_hold(memory);
                            self.note_stable(memory, now);
                            let since = *healthy_since.get_or_insert(now);
                            if now.saturating_duration_since(since) >= self.settings.section.failback.stable_for
                                && self.failback_after_ladder()
                            {
                                self.plane.events.emit("failback", &self.name, Severity::Info, &format!(
                                    "primary healthy for {}",
                                    crate::units::format_duration(self.settings.section.failback.stable_for)
                                ));
                            }
                            if memory.ladder.on_healthy(now) {
                                self.supervisor.update(|status| {
                                    status.escalated = false;
                                    status.halted_because = None;
                                    status.state = "running";
                                });
                                self.plane.events.emit("recovery_reset", &self.name, Severity::Info, &format!(
                                    "healthy for {}",
                                    crate::units::format_duration(self.settings.section.recovery.stable_for)
                                ));
                            }
                            (None, "")
                        }
                    }
                }
            };
            let Some(action) = action else { continue };
            let ended = self.act(action, reason, memory).await;
            if action == Action::Failover && self.supervisor.gate.is_failed_over() {
                // Serving again, from the backups.
                self.drill_recovered(memory, running, Instant::now());
            }
            if let Some(ended) = ended {
                return ended;
            }
        }
    }

    /// A run ready for `stable_for` with no deploy under watch is the spec
    /// a later rollback restores; a deploy past its window is kept.
    fn note_stable(&self, memory: &mut Memory, now: Instant) {
        if memory
            .deploy
            .as_ref()
            .is_some_and(|deploy| deploy.accepted(now))
        {
            memory.deploy = None;
        }
        if memory.deploy.is_some() {
            return;
        }
        let stable_for = self
            .settings
            .section
            .rollback
            .as_ref()
            .map_or(rollback::DEFAULT_STABLE_FOR, |rollback| rollback.stable_for);
        let stable = self
            .ready_at
            .is_some_and(|at| now.saturating_duration_since(at) >= stable_for);
        if stable && memory.last_stable.as_ref() != Some(&self.settings.process) {
            memory.last_stable = Some(self.settings.process.clone());
        }
    }

    /// Takes one rung of the ladder; `Some` when the run ends with it.
    async fn act(
        &self,
        action: Action,
        reason: &'static str,
        memory: &mut Memory,
    ) -> Option<Ended> {
        self.supervisor.update(|status| {
            status.recovery_attempts += 1;
            status.ladder_rung = Some(action);
        });
        self.plane.events.emit(
            "recovery",
            &self.name,
            Severity::Warning,
            &format!("{reason}: {}", action.as_str()),
        );
        let started = Instant::now();
        let result = match action {
            Action::Restart => {
                self.record_attempt(action, "started", started);
                memory.ladder.on_done();
                return Some(Ended::Restart(reason));
            }
            Action::Failover => match self.plane.snapshot().upstream(&self.name) {
                Some(pool) if !pool.backup().is_empty() => {
                    self.supervisor.gate.set_failed_over(true);
                    self.supervisor
                        .update(|status| status.failed_over_by_ladder = true);
                    self.plane.events.emit(
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
                self.plane.events.emit(
                    "escalation",
                    &self.name,
                    Severity::Critical,
                    &format!("recovery ladder exhausted ({reason}); needs intervention"),
                );
                // The process keeps running (and serving what it can);
                // the supervisor stops acting until the ladder resets.
                self.supervisor.update(|status| {
                    status.escalated = true;
                    status.state = "needs_intervention";
                    status.halted_because = Some(format!("recovery ladder exhausted ({reason})"));
                });
                "escalated"
            }
        };
        self.record_attempt(action, result, started);
        memory.ladder.on_done();
        None
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
        self.plane
            .metrics
            .supervisor_restarts
            .with_label_values(&[reason])
            .inc();
        self.supervisor.update(|status| status.restarts += 1);
    }

    fn record_attempt(&self, action: Action, result: &str, started: Instant) {
        let metrics = &self.plane.metrics;
        metrics
            .recovery_attempts
            .with_label_values(&[action.as_str(), result])
            .inc();
        metrics
            .recovery_duration
            .with_label_values(&[action.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Undoes a failover the ladder made, once the primary is stable.
    fn failback_after_ladder(&self) -> bool {
        let mut was = false;
        self.supervisor.update(|status| {
            was = status.failed_over_by_ladder;
            status.failed_over_by_ladder = false;
        });
        was && self.supervisor.gate.set_failed_over(false)
    }

    /// Runs `recovery.exec` with a bound of `cooldown` (at most 60s).
    async fn exec(&self) -> &'static str {
        let recovery = &self.settings.section.recovery;
        let Some((program, args)) = recovery.exec.split_first() else {
            return "no_command";
        };
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let limit = recovery
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
        if let Some(limit) = self.settings.process.memory_limit {
            if crate::sys::rss_of(&pid.to_string()).is_some_and(|rss| rss > limit.0) {
                return Some("memory_limit");
            }
        }
        let snapshot = self.plane.snapshot();
        let pool = snapshot.upstream(&self.name)?;
        // A process just started is judged by the checks made since: the
        // endpoint may still be marked unhealthy from the run before, until
        // `healthy_threshold` probes of this one have passed.
        let judged = pool.config.health_check.as_ref().is_some_and(|check| {
            let grace = check.interval * check.healthy_threshold + check.timeout;
            self.ready_at
                .is_some_and(|ready| now.saturating_duration_since(ready) >= grace)
        });
        if judged
            && !pool.endpoints().is_empty()
            && pool
                .endpoints()
                .iter()
                .all(|endpoint| !endpoint.is_healthy())
        {
            return Some("health_check");
        }
        if let Some(error_rate) = &self.settings.section.triggers.error_rate {
            let (tries, failed) = self.supervisor.gate.try_counts();
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
            .filter(|route| route.config.upstream() == self.name)
            .any(|route| {
                route.breaker.as_ref().is_some_and(|breaker| {
                    matches!(breaker.state(), BreakerState::Open | BreakerState::HalfOpen)
                })
            });
        match (breaker_open, *breaker_open_since) {
            (false, _) => *breaker_open_since = None,
            (true, None) => *breaker_open_since = Some(now),
            (true, Some(since))
                if now.saturating_duration_since(since)
                    >= self.settings.section.triggers.breaker_open_for =>
            {
                *breaker_open_since = None;
                return Some("breaker_open");
            }
            (true, Some(_)) => {}
        }
        None
    }
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
