//! `supervisor:` config (SPEC §5): the process breakwater runs as its
//! upstream, how it restarts it, and how it starts and stops.

use std::time::Duration;

use serde::Serialize;

use super::decode::{one_of, parse_with, ser_duration, ByteSize, Cx, Decode, Fields};
use super::yaml::{Node, Value};

/// `supervisor.process.restart`: when an exit is followed by a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart on any exit.
    Always,
    /// Restart unless it exited with status 0.
    OnFailure,
    /// Never restart.
    Never,
}

/// One rung of `supervisor.recovery.ladder`, and what a log pattern does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// Restart the supervised process.
    Restart,
    /// Send traffic to the backup endpoints.
    Failover,
    /// Run the configured command.
    Exec,
    /// Give up and call for a human.
    Escalate,
}

impl RecoveryAction {
    /// Label for config, metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryAction::Restart => "restart",
            RecoveryAction::Failover => "failover",
            RecoveryAction::Exec => "exec",
            RecoveryAction::Escalate => "escalate",
        }
    }
}

type Action = RecoveryAction;

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

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// `supervisor:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Supervisor {
    /// On SIGTERM/SIGINT, how long in-flight requests have to finish
    /// before the child is stopped. Default 20s.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// The upstream the process serves; defaults to the only upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The process to run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// Longest wait for the process to become ready after a (re)start.
    /// Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub startup_timeout: Duration,
    /// Sustained-failure triggers besides the process exiting.
    pub triggers: Triggers,
    /// What to try when a trigger fires.
    pub recovery: Recovery,
    /// When to return from a ladder failover.
    pub failback: Failback,
}

/// `supervisor.triggers:` — the health check failing (`unhealthy_threshold`
/// in a row), RSS over `memory_limit` and log patterns are always on when
/// configured; these add traffic-based ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Triggers {
    /// A breaker of a route to this upstream open longer than this. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub breaker_open_for: Duration,
    /// Failed tries over a window, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
}

/// `supervisor.triggers.error_rate:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRate {
    /// Failed tries / tries at or above this trips. 0 < threshold ≤ 1.
    pub threshold: f64,
    /// Over this much recent time.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
    /// Not before the window holds this many tries.
    pub min_requests: u64,
}

/// `supervisor.failback:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failback {
    /// A failover by the ladder is undone once the primary has been healthy
    /// this long. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub stable_for: Duration,
}

/// `supervisor.recovery:` (SPEC §5.3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// Rungs in order. Default [restart, failover, escalate].
    pub ladder: Vec<Action>,
    /// Attempts per rung before climbing. Default 3.
    pub max_attempts: u32,
    /// Least time between attempts. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub cooldown: Duration,
    /// Healthy this long and the ladder resets (and a ladder failover
    /// fails back). Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub stable_for: Duration,
    /// The command the `exec` rung runs; its exit status is the result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            ladder: vec![Action::Restart, Action::Failover, Action::Escalate],
            max_attempts: 3,
            cooldown: Duration::from_secs(30),
            stable_for: Duration::from_secs(60),
            exec: Vec::new(),
        }
    }
}

fn decode_action(cx: &mut Cx, node: &Node) -> Option<Action> {
    one_of(
        cx,
        node,
        &[
            ("restart", Action::Restart),
            ("failover", Action::Failover),
            ("exec", Action::Exec),
            ("escalate", Action::Escalate),
        ],
    )
}

impl Decode for Recovery {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let d = Recovery::default();
        let ladder = fields
            .opt_with(cx, "ladder", |cx, node| {
                let Value::Seq(items) = &node.value else {
                    cx.expected(node, "a list of restart, failover, exec, escalate");
                    return None;
                };
                let actions: Vec<Option<Action>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| cx.at_index(i, |cx| decode_action(cx, item)))
                    .collect();
                actions.into_iter().collect::<Option<Vec<Action>>>()
            })
            .unwrap_or(d.ladder);
        if ladder.is_empty() {
            cx.error_at(
                "ladder",
                fields.key_line("ladder"),
                "needs at least one rung",
            );
        }
        let max_attempts: u32 = fields.or(cx, "max_attempts", d.max_attempts);
        if max_attempts == 0 {
            cx.error_at(
                "max_attempts",
                fields.key_line("max_attempts"),
                "must be at least 1",
            );
        }
        let cooldown = fields.or(cx, "cooldown", d.cooldown);
        let stable_for = fields.or(cx, "stable_for", d.stable_for);
        let exec: Vec<String> = fields.opt(cx, "exec").unwrap_or_default();
        if ladder.contains(&Action::Exec) && exec.is_empty() {
            cx.error_at(
                "exec",
                fields.key_line("ladder"),
                "the ladder has an exec rung: give the command as recovery.exec",
            );
        }
        fields
            .finish(
                cx,
                &["ladder", "max_attempts", "cooldown", "stable_for", "exec"],
                &[],
            )
            .then_some(Recovery {
                ladder,
                max_attempts,
                cooldown,
                stable_for,
                exec,
            })
    }
}

/// `supervisor.process.log_patterns[]:`
#[derive(Debug, Clone, Serialize)]
pub struct LogPattern {
    /// A `regex` crate pattern (linear time), matched against each line.
    #[serde(rename = "regex")]
    pub source: String,
    /// What a match does: restart, failover, exec or escalate.
    pub action: Action,
    #[serde(skip)]
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

impl Decode for LogPattern {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let source: Option<String> = fields.req(cx, "regex");
        let regex = source.as_deref().and_then(|source| {
            match regex::RegexBuilder::new(source).size_limit(1 << 20).build() {
                Ok(regex) => Some(regex),
                Err(error) => {
                    cx.error_at(
                        "regex",
                        fields.key_line("regex"),
                        format!("invalid pattern: {error}"),
                    );
                    None
                }
            }
        });
        let action = fields
            .opt_with(cx, "action", decode_action)
            .unwrap_or(Action::Restart);
        let complete = fields.finish(cx, &["regex", "action"], &[]);
        complete.then_some(LogPattern {
            source: source?,
            action,
            regex: Some(regex?),
        })
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            drain_timeout: Duration::from_secs(20),
            upstream: None,
            process: None,
            startup_timeout: Duration::from_secs(60),
            triggers: Triggers {
                breaker_open_for: Duration::from_secs(30),
                error_rate: None,
            },
            recovery: Recovery::default(),
            failback: Failback {
                stable_for: Duration::from_secs(30),
            },
        }
    }
}

/// `supervisor.process:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// Program to run.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_env")]
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `always`, `on-failure` (default) or `never`.
    pub restart: RestartPolicy,
    /// Signal that asks it to stop. Default SIGTERM.
    pub stop_signal: Signal,
    /// Time between the stop signal and SIGKILL. Default 10s.
    #[serde(serialize_with = "ser_duration")]
    pub stop_grace: Duration,
    /// Delay between restarts.
    pub backoff: RestartBackoff,
    /// When restarting is a crash loop.
    pub crash_loop: CrashLoop,
    /// The process's resident memory limit: above it is a trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// Log lines that act.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log_patterns: Vec<LogPattern>,
}

fn ser_env<S: serde::Serializer>(
    env: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(env.len()))?;
    for (key, value) in env {
        map.serialize_entry(key, value)?;
    }
    map.end()
}

/// `supervisor.process.backoff:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartBackoff {
    /// First delay. Default 250ms.
    #[serde(serialize_with = "ser_duration")]
    pub initial: Duration,
    /// Longest delay. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub max: Duration,
    /// Growth per restart. Default 2.
    pub multiplier: f64,
    /// ± fraction of randomness. Default 0.2.
    pub jitter: f64,
}

/// `supervisor.process.crash_loop:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrashLoop {
    /// Restarts within `window` that stop the restarting. Default 5.
    pub max_restarts: u32,
    /// Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
}

impl Process {
    /// A process with every default, for `run -- CMD ARGS`.
    pub fn from_command(command: &[String]) -> Option<Process> {
        let (program, args) = command.split_first()?;
        Some(Process {
            command: program.clone(),
            args: args.to_vec(),
            env: Vec::new(),
            cwd: None,
            restart: RestartPolicy::OnFailure,
            stop_signal: Signal::TERM,
            stop_grace: Duration::from_secs(10),
            backoff: RestartBackoff {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.2,
            },
            crash_loop: CrashLoop {
                max_restarts: 5,
                window: Duration::from_secs(60),
            },
            memory_limit: None,
            log_patterns: Vec::new(),
        })
    }
}

const LATER: &[&str] = &["dependencies", "hold", "on_exit", "watchdog", "rollback"];

impl Decode for Supervisor {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let d = Supervisor::default();
        let drain_timeout = fields.or(cx, "drain_timeout", d.drain_timeout);
        let upstream = fields.opt(cx, "upstream");
        let process = fields.opt(cx, "process");
        let startup_timeout: Duration = fields.or(cx, "startup_timeout", d.startup_timeout);
        let triggers = fields
            .opt_with(cx, "triggers", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let breaker_open_for = fields.or(cx, "breaker_open_for", Duration::from_secs(30));
                let error_rate = fields.opt_with(cx, "error_rate", |cx, node| {
                    let mut fields = Fields::new(cx, node)?;
                    let threshold: Option<f64> = fields.req(cx, "threshold");
                    if threshold.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
                        cx.error_at(
                            "threshold",
                            fields.key_line("threshold"),
                            "must be above 0 and at most 1",
                        );
                    }
                    let window: Duration = fields.or(cx, "window", Duration::from_secs(30));
                    if window < Duration::from_secs(1) {
                        cx.error_at("window", fields.key_line("window"), "must be at least 1s");
                    }
                    let min_requests = fields.or(cx, "min_requests", 20);
                    let complete = fields.finish(cx, &["threshold", "window", "min_requests"], &[]);
                    complete.then_some(ErrorRate {
                        threshold: threshold?,
                        window,
                        min_requests,
                    })
                });
                fields
                    .finish(cx, &["breaker_open_for", "error_rate"], &[])
                    .then_some(Triggers {
                        breaker_open_for,
                        error_rate,
                    })
            })
            .unwrap_or(d.triggers);
        let recovery = fields.opt(cx, "recovery").unwrap_or(d.recovery);
        let failback = fields
            .opt_with(cx, "failback", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let stable_for = fields.or(cx, "stable_for", Duration::from_secs(30));
                fields
                    .finish(cx, &["stable_for"], &[])
                    .then_some(Failback { stable_for })
            })
            .unwrap_or(d.failback);
        if startup_timeout.is_zero() {
            cx.error_at(
                "startup_timeout",
                fields.key_line("startup_timeout"),
                "must be greater than 0",
            );
        }
        fields
            .finish(
                cx,
                &[
                    "drain_timeout",
                    "upstream",
                    "process",
                    "startup_timeout",
                    "triggers",
                    "recovery",
                    "failback",
                ],
                LATER,
            )
            .then_some(Supervisor {
                drain_timeout,
                upstream,
                process,
                startup_timeout,
                triggers,
                recovery,
                failback,
            })
    }
}

impl Decode for Process {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let command: Option<String> = fields.req(cx, "command");
        if command.as_deref() == Some("") {
            cx.error_at("command", fields.key_line("command"), "must not be empty");
        }
        let defaults = Process::from_command(&["x".to_owned()])?;
        let args = fields.opt(cx, "args").unwrap_or_default();
        let env = fields
            .opt_with(cx, "env", |cx, node| {
                let Value::Map(entries) = &node.value else {
                    cx.expected(node, "a mapping of variable name to value");
                    return None;
                };
                let mut env = Vec::new();
                for (key, value) in entries {
                    let (Some(key), Some(value)) =
                        (String::decode(cx, key), String::decode(cx, value))
                    else {
                        continue;
                    };
                    env.push((key, value));
                }
                Some(env)
            })
            .unwrap_or_default();
        let cwd = fields.opt(cx, "cwd");
        let restart = fields
            .opt_with(cx, "restart", |cx, node| {
                one_of(
                    cx,
                    node,
                    &[
                        ("always", RestartPolicy::Always),
                        ("on-failure", RestartPolicy::OnFailure),
                        ("never", RestartPolicy::Never),
                    ],
                )
            })
            .unwrap_or(defaults.restart);
        let stop_signal = fields
            .opt_with(cx, "stop_signal", |cx, node| {
                parse_with(cx, node, "a signal like SIGTERM", Signal::parse)
            })
            .unwrap_or(defaults.stop_signal);
        let stop_grace = fields.or(cx, "stop_grace", defaults.stop_grace);
        let backoff = fields
            .opt_with(cx, "backoff", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let d = &defaults.backoff;
                let initial: Duration = fields.or(cx, "initial", d.initial);
                let max: Duration = fields.or(cx, "max", d.max.max(initial));
                let multiplier: f64 = fields.or(cx, "multiplier", d.multiplier);
                let jitter: f64 = fields.or(cx, "jitter", d.jitter);
                if max < initial || multiplier < 1.0 || !(0.0..=1.0).contains(&jitter) {
                    cx.error(
                        node.line,
                        "needs initial ≤ max, multiplier ≥ 1 and jitter between 0 and 1",
                    );
                }
                fields
                    .finish(cx, &["initial", "max", "multiplier", "jitter"], &[])
                    .then_some(RestartBackoff {
                        initial,
                        max,
                        multiplier,
                        jitter,
                    })
            })
            .unwrap_or(defaults.backoff);
        let crash_loop = fields
            .opt_with(cx, "crash_loop", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let max_restarts: u32 = fields.or(cx, "max_restarts", 5);
                let window: Duration = fields.or(cx, "window", Duration::from_secs(60));
                if max_restarts == 0 || window.is_zero() {
                    cx.error(node.line, "max_restarts and window must be above 0");
                }
                fields
                    .finish(cx, &["max_restarts", "window"], &[])
                    .then_some(CrashLoop {
                        max_restarts,
                        window,
                    })
            })
            .unwrap_or(defaults.crash_loop);
        let memory_limit: Option<ByteSize> = fields.opt(cx, "memory_limit");
        let log_patterns = fields.opt(cx, "log_patterns").unwrap_or_default();
        let complete = fields.finish(
            cx,
            &[
                "command",
                "args",
                "env",
                "cwd",
                "restart",
                "stop_signal",
                "stop_grace",
                "backoff",
                "crash_loop",
                "memory_limit",
                "log_patterns",
            ],
            &[],
        );
        let process = Process {
            command: command?,
            args,
            env,
            cwd,
            restart,
            stop_signal,
            stop_grace,
            backoff,
            crash_loop,
            memory_limit,
            log_patterns,
        };
        complete.then_some(process)
    }
}
