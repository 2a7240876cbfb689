//! `supervisor:` config (SPEC §5): the process breakwater runs as its
//! upstream, how it restarts it, what a sustained failure triggers, and how
//! it starts and stops.
//!
//! The value types the supervisor acts on ([`RestartPolicy`],
//! [`RecoveryAction`], [`Signal`]) live here, where they are written: the
//! supervisor uses them, and config depends on nothing of the supervisor's.

use std::time::Duration;

use serde_json::{json, Value as Json};

use super::checks::{above_zero, at_least, fraction, non_empty};
use super::decode::{ByteSize, ConfigValue, Cx, Keys};
use super::docs::pattern;
use super::ops::{Dependency, Rollback};
use super::yaml::{Node, Value};

section! {
    /// `supervisor:` (SPEC §5) — drain on shutdown, and the process
    /// breakwater runs as its upstream, if any.
    pub struct Supervisor {
        /// On SIGTERM/SIGINT, how long in-flight requests have to finish
        /// before the child is stopped.
        drain_timeout: Duration = Duration::from_secs(20),
        /// The upstream the process serves; needed when there are several.
        #[default_text = "the only upstream"]
        upstream: Option<String> = None,
        /// The process to run, if any; `breakwater run -- CMD ARGS…` sets it
        /// from the command line.
        process: Option<Process> = None,
        /// After a (re)start, traffic gets 503 `starting` until the upstream
        /// accepts connections, for at most this long.
        #[check(above_zero())]
        startup_timeout: Duration = Duration::from_secs(60),
        /// Sustained-failure triggers besides the process exiting.
        triggers: Triggers = Triggers::default(),
        /// What to try when a trigger fires.
        recovery: Recovery = Recovery::default(),
        /// When to return from a ladder failover.
        failback: Failback = Failback::default(),
        /// What the process needs before it starts; while a required one
        /// is down, recovery holds.
        dependencies: Vec<Dependency> = Vec::new(),
        /// Deploy auto-rollback of a changed process spec; off unless set.
        rollback: Option<Rollback> = None,
    }
    later: ["hold", "on_exit", "watchdog"],
    validate: check_supervisor,
}

fn check_supervisor(supervisor: &mut Supervisor, keys: &Keys<'_>, cx: &mut Cx) {
    let mut seen = std::collections::HashSet::new();
    for dependency in &supervisor.dependencies {
        if !seen.insert(dependency.name.as_str()) {
            keys.error(
                cx,
                "dependencies",
                format!("dependency name {:?} is used twice", dependency.name),
            );
        }
    }
}

section! {
    /// `supervisor.triggers:` — besides the process exiting, the health
    /// check failing (`unhealthy_threshold` in a row), RSS over
    /// `memory_limit` and `log_patterns` are triggers whenever configured;
    /// these add traffic-based ones.
    pub struct Triggers {
        /// A breaker of a route to this upstream open longer than this.
        breaker_open_for: Duration = Duration::from_secs(30),
        /// Failed tries over a window; off unless set.
        error_rate: Option<ErrorRate> = None,
    }
}

section! {
    /// `supervisor.triggers.error_rate:`
    pub struct ErrorRate {
        /// Failed tries / tries at or above this trips.
        #[check(super::checks::ratio())]
        threshold: f64,
        /// Over this much recent time.
        #[check(at_least(Duration::from_secs(1)))]
        window: Duration = Duration::from_secs(30),
        /// Not before the window holds this many tries.
        min_requests: u64 = 20,
    }
}

section! {
    /// `supervisor.failback:`
    pub struct Failback {
        /// A failover by the ladder is undone once the primary has been
        /// healthy this long.
        stable_for: Duration = Duration::from_secs(30),
    }
}

section! {
    /// `supervisor.recovery:` (SPEC §5.3) — the ladder: each rung is tried
    /// `max_attempts` times, at least `cooldown` apart, before the next.
    pub struct Recovery {
        /// Rungs in order.
        #[check(non_empty("at least one rung"))]
        ladder: Vec<RecoveryAction> = vec![
            RecoveryAction::Restart,
            RecoveryAction::Failover,
            RecoveryAction::Escalate,
        ],
        /// Attempts per rung before climbing.
        #[check(at_least(1))]
        max_attempts: u32 = 3,
        /// Least time between attempts.
        cooldown: Duration = Duration::from_secs(30),
        /// Healthy this long and the ladder resets (and a ladder failover
        /// fails back).
        stable_for: Duration = Duration::from_secs(60),
        /// The command the `exec` rung runs; its exit status is the result.
        exec: Vec<String> = Vec::new(),
    }
    validate: check_recovery,
}

fn check_recovery(recovery: &mut Recovery, keys: &Keys<'_>, cx: &mut Cx) {
    if recovery.ladder.contains(&RecoveryAction::Exec) && recovery.exec.is_empty() {
        let line = keys.line("ladder").or(keys.line("exec"));
        cx.error_at(
            "exec",
            line,
            "the ladder has an exec rung: give the command as recovery.exec",
        );
    }
}

words! {
    /// One rung of `supervisor.recovery.ladder`, and what a log pattern does.
    pub enum RecoveryAction {
        /// Restart the supervised process.
        Restart = "restart",
        /// Send traffic to the backup endpoints.
        Failover = "failover",
        /// Run the configured command.
        Exec = "exec",
        /// Give up and call for a human.
        Escalate = "escalate",
    }
}

section! {
    /// `supervisor.process:` — the service, run as breakwater's child in its
    /// own process group; it dies with breakwater.
    pub struct Process {
        /// Program to run.
        #[check(non_empty("a program"))]
        command: String,
        /// Its arguments.
        args: Vec<String> = Vec::new(),
        /// Extra environment variables, in file order.
        env: Vec<(String, String)> = Vec::new(),
        /// Working directory.
        #[default_text = "breakwater's"]
        cwd: Option<String> = None,
        /// When an exit is followed by a restart.
        restart: RestartPolicy = RestartPolicy::OnFailure,
        /// Signal that asks it to stop; SIGKILL follows after `stop_grace`.
        stop_signal: Signal = Signal::TERM,
        /// Time between the stop signal and SIGKILL.
        stop_grace: Duration = Duration::from_secs(10),
        /// Delay between restarts.
        backoff: RestartBackoff = RestartBackoff::default(),
        /// When restarting is a crash loop: stop, and escalate.
        crash_loop: CrashLoop = CrashLoop::default(),
        /// The process's resident memory limit: above it is a trigger.
        memory_limit: Option<ByteSize> = None,
        /// Output lines that act (lines are capped at 16KiB).
        log_patterns: Vec<LogPattern> = Vec::new(),
    }
}

impl Process {
    /// A process with every default, for `run -- CMD ARGS`.
    pub fn from_command(command: &[String]) -> Option<Process> {
        let node = command_node(command, 1)?;
        let mut cx = Cx::default();
        let process = Process::decode(&mut cx, &node)?;
        cx.issues.is_empty().then_some(process)
    }
}

/// `{command: CMD, args: [ARGS…]}` as a tree, every value a string: how
/// `-- CMD ARGS…` is written into the config before it is read.
pub(crate) fn command_node(command: &[String], line: usize) -> Option<Node> {
    let (program, args) = command.split_first()?;
    let args = args.iter().map(|arg| Node::string(arg.as_str(), line));
    Some(Node {
        value: Value::Map(vec![
            (
                Node::string("command", line),
                Node::string(program.as_str(), line),
            ),
            (
                Node::string("args", line),
                Node {
                    value: Value::Seq(args.collect()),
                    line,
                    from_env: false,
                },
            ),
        ]),
        line,
        from_env: false,
    })
}

words! {
    /// `supervisor.process.restart`: when an exit is followed by a restart.
    pub enum RestartPolicy {
        /// Restart on any exit.
        Always = "always",
        /// Restart unless it exited with status 0.
        OnFailure = "on-failure",
        /// Never restart.
        Never = "never",
    }
}

section! {
    /// `supervisor.process.backoff:` — the delay before restart n is
    /// `initial × multiplierⁿ`, capped at `max`, ± `jitter`, where n counts
    /// failed starts in a row: exits before the process is ready or within
    /// `reset_after` of it. A process that served for `reset_after` is
    /// restarted after `initial` (the crash-loop limit still applies).
    pub struct RestartBackoff {
        /// First delay.
        initial: Duration = Duration::from_millis(250),
        /// Longest delay; at least `initial`.
        #[default_text = "30s, or initial if longer"]
        max: Duration = Duration::from_secs(30),
        /// Growth per restart.
        #[check(at_least(1.0))]
        multiplier: f64 = 2.0,
        /// ± this fraction of randomness.
        #[check(fraction())]
        jitter: f64 = 0.2,
        /// Ready this long and the next exit is a crash after a healthy
        /// run, not a failed start: the backoff starts again at `initial`.
        #[check(above_zero())]
        reset_after: Duration = Duration::from_secs(10),
    }
    validate: check_restart_backoff,
}

fn check_restart_backoff(backoff: &mut RestartBackoff, keys: &Keys<'_>, cx: &mut Cx) {
    if !keys.has("max") {
        backoff.max = backoff.max.max(backoff.initial);
    } else if backoff.max < backoff.initial {
        keys.error(cx, "max", "must be at least initial");
    }
}

section! {
    /// `supervisor.process.crash_loop:`
    pub struct CrashLoop {
        /// Restarts within `window` that stop the restarting.
        #[check(at_least(1))]
        max_restarts: u32 = 5,
        /// The crash-loop window.
        #[check(above_zero())]
        window: Duration = Duration::from_secs(60),
    }
}

/// `supervisor.process.log_patterns[]:`
#[derive(Debug, Clone)]
pub struct LogPattern {
    /// A `regex` crate pattern (linear time), matched against each line.
    pub source: String,
    /// What a match does.
    pub action: RecoveryAction,
    regex: Option<regex::Regex>,
}

impl PartialEq for LogPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.action == other.action
    }
}

impl LogPattern {
    /// The compiled pattern.
    pub fn regex(&self) -> Option<&regex::Regex> {
        self.regex.as_ref()
    }
}

section! {
    /// `supervisor.process.log_patterns[]:` — an output line that matches
    /// `regex` acts.
    pub(crate) struct LogPatternKeys {
        /// A `regex` crate pattern (linear time, at most 1MiB compiled).
        regex: String,
        /// What a match does.
        action: RecoveryAction = RecoveryAction::Restart,
    }
}

fn pattern_from_keys(cx: &mut Cx, node: &Node, keys: LogPatternKeys) -> Option<LogPattern> {
    match regex::RegexBuilder::new(&keys.regex)
        .size_limit(1 << 20)
        .build()
    {
        Ok(regex) => Some(LogPattern {
            source: keys.regex,
            action: keys.action,
            regex: Some(regex),
        }),
        Err(error) => {
            cx.error_at(
                "regex",
                node.key_line("regex"),
                format!("invalid pattern: {error}"),
            );
            None
        }
    }
}

fn pattern_to_keys(pattern: &LogPattern) -> LogPatternKeys {
    LogPatternKeys {
        regex: pattern.source.clone(),
        action: pattern.action,
    }
}

via_keys!(LogPattern => LogPatternKeys, decode: pattern_from_keys, encode: pattern_to_keys);

/// `supervisor.process.stop_signal`: a signal by name or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(i32);

/// The signals config knows by name.
const SIGNALS: [(&str, i32); 7] = [
    ("TERM", libc::SIGTERM),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("HUP", libc::SIGHUP),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

impl Signal {
    /// SIGTERM, the default stop signal.
    pub const TERM: Signal = Signal(libc::SIGTERM);

    /// Parses `SIGTERM`, `TERM` or `15`.
    pub fn parse(text: &str) -> Result<Signal, String> {
        let name = text.trim();
        let name = name.strip_prefix("SIG").unwrap_or(name);
        if let Some((_, number)) = SIGNALS.iter().find(|(known, _)| *known == name) {
            return Ok(Signal(*number));
        }
        match name.parse::<i32>() {
            Ok(number) if (1..=64).contains(&number) => Ok(Signal(number)),
            _ => Err(format!(
                "expected a signal like SIGTERM, TERM or 15, found {text:?}"
            )),
        }
    }

    /// The signal number, for `kill(2)`.
    pub fn number(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match SIGNALS.iter().find(|(_, number)| *number == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// `SIGTERM`, `TERM` or a number from 1 to 64; printed as `SIGTERM`.
impl ConfigValue for Signal {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        super::decode::parse_with(cx, node, "a signal like SIGTERM", Signal::parse)
    }
    fn to_json(&self) -> Json {
        match SIGNALS.iter().any(|(_, number)| *number == self.0) {
            true => Json::from(self.to_string()),
            false => Json::from(self.0),
        }
    }
    fn schema() -> Json {
        let names: Vec<&str> = SIGNALS.iter().map(|(name, _)| *name).collect();
        json!({
            "type": ["string", "integer"],
            "pattern": pattern(&format!("(SIG)?({})|[0-9]+", names.join("|"))),
            "minimum": 1,
            "maximum": 64,
        })
    }
    fn type_name() -> String {
        "signal: `SIGTERM`, `TERM` or a number".to_owned()
    }
}

serialize_as_json!(Signal);
