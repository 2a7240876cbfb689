//! Config of the per-request policies (SPEC §3): `circuit_breaker`,
//! `bulkhead`, `retry`, `rate_limit` on routes; `outlier_detection` and
//! `health_check` on upstreams.
//!
//! Every route gets a breaker and a bulkhead with the SPEC defaults unless
//! it says `circuit_breaker: false` / `bulkhead: false`, and every upstream
//! gets outlier detection unless `outlier_detection: false` — a sidecar
//! that protects only when asked protects nobody. Values are range-checked
//! here; [`crate::policy`] builds its types from these.

use std::time::Duration;

use serde::Serialize;

use super::decode::{one_of, parse_with, ser_duration, Cx, Decode, Fields};
use super::yaml::{Node, Value};

/// A policy that is on (with settings) or turned off with `false`.
#[derive(Debug, Clone, PartialEq)]
pub enum Toggle<T> {
    /// `key: false`.
    Off,
    /// On, with these settings (`key: true` means the defaults).
    On(T),
}

impl<T> Toggle<T> {
    /// The settings when on.
    pub fn on(&self) -> Option<&T> {
        match self {
            Toggle::On(settings) => Some(settings),
            Toggle::Off => None,
        }
    }
}

impl<T: Serialize> Serialize for Toggle<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Toggle::Off => serializer.serialize_bool(false),
            Toggle::On(settings) => settings.serialize(serializer),
        }
    }
}

/// Reads `true`, `false`, or a mapping decoded by `decode` (absent → on
/// with defaults, handled by the caller).
fn toggle<T>(
    cx: &mut Cx,
    node: &Node,
    decode: impl FnOnce(&mut Cx, &Node) -> Option<T>,
) -> Option<Toggle<T>> {
    match &node.value {
        Value::Scalar {
            text,
            quoted: false,
        } if text == "false" => Some(Toggle::Off),
        Value::Scalar {
            text,
            quoted: false,
        } if text == "true" => {
            let empty = Node {
                value: Value::Null,
                line: node.line,
                from_env: false,
            };
            decode(cx, &empty).map(Toggle::On)
        }
        _ => decode(cx, node).map(Toggle::On),
    }
}

fn range_error(cx: &mut Cx, fields: &Fields<'_>, key: &str, message: &str) {
    cx.error_at(key, fields.key_line(key), message);
}

// === circuit_breaker ===

/// `circuit_breaker:` (SPEC §3.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreaker {
    /// Failures in a row that open the breaker. Default 5.
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens it. Default 0.5.
    pub failure_rate: f64,
    /// Slow-call rate over the window that opens it; off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<f64>,
    /// A success slower than this is a slow call. Default 1s.
    #[serde(serialize_with = "ser_duration")]
    pub slow_call_duration: Duration,
    /// The sliding window the rates are computed over.
    pub window: BreakerWindow,
    /// Calls the window must hold before a rate can trip. Default 20.
    pub minimum_calls: u32,
    /// First open period. Default 5s.
    #[serde(serialize_with = "ser_duration")]
    pub open_duration: Duration,
    /// Growth of the open period on each re-trip. Default 2.
    pub open_backoff: f64,
    /// Longest open period. Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub max_open_duration: Duration,
    /// Concurrent probes while half-open. Default 3.
    pub half_open_max_calls: u32,
    /// Probe successes that close it. Default 3.
    pub half_open_successes: u32,
    /// Upstream statuses that count as failures. Default [500, 502, 503, 504].
    pub failure_statuses: Vec<u16>,
}

/// `circuit_breaker.window:`
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerWindow {
    /// The last `size` calls.
    Count(u32),
    /// The calls of the last `size` of time.
    Time(Duration),
}

impl Serialize for BreakerWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        match self {
            BreakerWindow::Count(size) => {
                map.serialize_entry("type", "count")?;
                map.serialize_entry("size", size)?;
            }
            BreakerWindow::Time(size) => {
                map.serialize_entry("type", "time")?;
                map.serialize_entry("size", &crate::units::format_duration(*size))?;
            }
        }
        map.end()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            consecutive_failures: 5,
            failure_rate: 0.5,
            slow_call_rate: None,
            slow_call_duration: Duration::from_secs(1),
            window: BreakerWindow::Count(100),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(60),
            half_open_max_calls: 3,
            half_open_successes: 3,
            failure_statuses: vec![500, 502, 503, 504],
        }
    }
}

const BREAKER_KEYS: &[&str] = &[
    "consecutive_failures",
    "failure_rate",
    "slow_call_rate",
    "slow_call_duration",
    "window",
    "minimum_calls",
    "open_duration",
    "open_backoff",
    "max_open_duration",
    "half_open_max_calls",
    "half_open_successes",
    "failure_statuses",
];

fn decode_rate(cx: &mut Cx, fields: &mut Fields<'_>, key: &str) -> Option<f64> {
    let rate: f64 = fields.opt(cx, key)?;
    if !(rate > 0.0 && rate <= 1.0) {
        range_error(
            cx,
            fields,
            key,
            &format!("must be above 0 and at most 1, found {rate}"),
        );
    }
    Some(rate)
}

fn at_least_one(cx: &mut Cx, fields: &Fields<'_>, key: &str, value: u32) {
    if value == 0 {
        range_error(cx, fields, key, "must be at least 1");
    }
}

/// Reads `circuit_breaker:` (absent → on, defaults).
pub fn decode_breaker(cx: &mut Cx, node: &Node) -> Option<Toggle<CircuitBreaker>> {
    toggle(cx, node, |cx, node| {
        let mut fields = Fields::new(cx, node)?;
        let d = CircuitBreaker::default();
        let consecutive_failures = fields.or(cx, "consecutive_failures", d.consecutive_failures);
        let failure_rate = decode_rate(cx, &mut fields, "failure_rate").unwrap_or(d.failure_rate);
        let slow_call_rate = decode_rate(cx, &mut fields, "slow_call_rate");
        let slow_call_duration = fields.or(cx, "slow_call_duration", d.slow_call_duration);
        let window = fields
            .opt_with(cx, "window", decode_window)
            .unwrap_or(d.window);
        let minimum_calls = fields.or(cx, "minimum_calls", d.minimum_calls);
        at_least_one(cx, &fields, "minimum_calls", minimum_calls);
        let open_duration: Duration = fields.or(cx, "open_duration", d.open_duration);
        if open_duration.is_zero() {
            range_error(cx, &fields, "open_duration", "must be greater than 0");
        }
        let open_backoff: f64 = fields.or(cx, "open_backoff", d.open_backoff);
        if open_backoff < 1.0 {
            range_error(
                cx,
                &fields,
                "open_backoff",
                &format!("must be at least 1, found {open_backoff}"),
            );
        }
        let max_open_duration = fields.or(
            cx,
            "max_open_duration",
            d.max_open_duration.max(open_duration),
        );
        if max_open_duration < open_duration {
            range_error(
                cx,
                &fields,
                "max_open_duration",
                "must not be shorter than open_duration",
            );
        }
        let half_open_max_calls = fields.or(cx, "half_open_max_calls", d.half_open_max_calls);
        at_least_one(cx, &fields, "half_open_max_calls", half_open_max_calls);
        let half_open_successes = fields.or(cx, "half_open_successes", d.half_open_successes);
        at_least_one(cx, &fields, "half_open_successes", half_open_successes);
        let failure_statuses = fields
            .opt_with(cx, "failure_statuses", decode_statuses)
            .unwrap_or(d.failure_statuses);
        fields
            .finish(cx, BREAKER_KEYS, &["grpc_failure_statuses"])
            .then_some(CircuitBreaker {
                consecutive_failures,
                failure_rate,
                slow_call_rate,
                slow_call_duration,
                window,
                minimum_calls,
                open_duration,
                open_backoff,
                max_open_duration,
                half_open_max_calls,
                half_open_successes,
                failure_statuses,
            })
    })
}

fn decode_window(cx: &mut Cx, node: &Node) -> Option<BreakerWindow> {
    #[derive(Clone, Copy)]
    enum Kind {
        Count,
        Time,
    }
    let mut fields = Fields::new(cx, node)?;
    let kind = fields.opt_with(cx, "type", |cx, node| {
        one_of(cx, node, &[("count", Kind::Count), ("time", Kind::Time)])
    });
    let window = match kind {
        Some(Kind::Time) => {
            let size: Duration = fields.or(cx, "size", Duration::from_secs(10));
            if size < Duration::from_secs(1) {
                range_error(cx, &fields, "size", "a time window must be at least 1s");
            }
            Some(BreakerWindow::Time(size))
        }
        Some(Kind::Count) | None => {
            let size: u32 = fields.or(cx, "size", 100);
            if size == 0 || size > 100_000 {
                range_error(
                    cx,
                    &fields,
                    "size",
                    "a count window holds 1 to 100000 calls",
                );
            }
            Some(BreakerWindow::Count(size))
        }
    };
    fields.finish(cx, &["type", "size"], &[]).then_some(window?)
}

fn decode_statuses(cx: &mut Cx, node: &Node) -> Option<Vec<u16>> {
    let statuses = Vec::<u16>::decode(cx, node)?;
    if let Some(bad) = statuses
        .iter()
        .find(|status| !(100..=599).contains(*status))
    {
        cx.error(
            node.line,
            format!("HTTP statuses are 100 to 599, found {bad}"),
        );
        return None;
    }
    Some(statuses)
}

// === bulkhead ===

/// `bulkhead:` (SPEC §3.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bulkhead {
    /// Requests in flight to the upstream. Default 1024.
    pub max_concurrent: usize,
    /// Requests waiting for a slot, first in first out. Default 1024.
    pub max_queue: usize,
    /// Longest wait in the queue before being shed. Default 1s.
    #[serde(serialize_with = "ser_duration")]
    pub queue_timeout: Duration,
}

impl Default for Bulkhead {
    fn default() -> Self {
        Bulkhead {
            max_concurrent: 1024,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

/// Reads `bulkhead:` (absent → on, defaults).
pub fn decode_bulkhead(cx: &mut Cx, node: &Node) -> Option<Toggle<Bulkhead>> {
    toggle(cx, node, |cx, node| {
        let mut fields = Fields::new(cx, node)?;
        let d = Bulkhead::default();
        let has_limit = fields.key_line("max_concurrent").is_some();
        let max_concurrent: usize = fields.or(cx, "max_concurrent", d.max_concurrent);
        if max_concurrent == 0 {
            range_error(cx, &fields, "max_concurrent", "must be at least 1");
        }
        let max_queue: usize = fields.or(cx, "max_queue", if has_limit { 0 } else { d.max_queue });
        if !has_limit && fields.key_line("max_queue").is_some() {
            range_error(
                cx,
                &fields,
                "max_queue",
                "a queue needs a limit: set bulkhead.max_concurrent too",
            );
        }
        let queue_timeout: Duration = fields.or(cx, "queue_timeout", d.queue_timeout);
        if max_queue > 0 && queue_timeout.is_zero() {
            range_error(
                cx,
                &fields,
                "queue_timeout",
                "must be greater than 0 when max_queue is set",
            );
        }
        fields
            .finish(
                cx,
                &["max_concurrent", "max_queue", "queue_timeout"],
                &["adaptive", "min_concurrent"],
            )
            .then_some(Bulkhead {
                max_concurrent,
                max_queue,
                queue_timeout,
            })
    })
}

// === retry ===

pub use crate::policy::retry::RetryOn;

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::ConnectError => serializer.serialize_str("connect_error"),
            RetryOn::ConnectTimeout => serializer.serialize_str("connect_timeout"),
            RetryOn::Reset => serializer.serialize_str("reset"),
            RetryOn::Timeout => serializer.serialize_str("timeout"),
            RetryOn::Http5xx => serializer.serialize_str("http_5xx"),
            RetryOn::Status(status) => serializer.serialize_u16(*status),
        }
    }
}

impl Decode for RetryOn {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let what =
            "one of connect_error, connect_timeout, reset, timeout, http_5xx, or a status like 503";
        parse_with(cx, node, what, |text| match text {
            "connect_error" => Ok(RetryOn::ConnectError),
            "connect_timeout" => Ok(RetryOn::ConnectTimeout),
            "reset" => Ok(RetryOn::Reset),
            "timeout" => Ok(RetryOn::Timeout),
            "http_5xx" => Ok(RetryOn::Http5xx),
            other => match other.parse::<u16>() {
                Ok(status) if (100..=599).contains(&status) => Ok(RetryOn::Status(status)),
                _ => Err(format!("expected {what}, found {other:?}")),
            },
        })
    }
}

/// `retry:` (SPEC §3.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retry {
    /// Tries in all, the first included. Default 1 (no retry).
    pub attempts: u32,
    /// What may be retried. Default `[connect_error]`.
    pub retry_on: Vec<RetryOn>,
    /// The retry budget.
    pub budget: RetryBudget,
    /// Backoff between tries.
    pub backoff: Backoff,
}

/// `retry.budget:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Retries may add this fraction of recent requests. Default 0.2.
    pub ratio: f64,
    /// Plus this many retries per second. Default 10.
    pub min_per_sec: u32,
}

/// `retry.backoff:` — full jitter in [0, min(max, base·2^n)].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backoff {
    /// Default 25ms.
    #[serde(serialize_with = "ser_duration")]
    pub base: Duration,
    /// Default 250ms.
    #[serde(serialize_with = "ser_duration")]
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 1,
            retry_on: vec![RetryOn::ConnectError],
            budget: RetryBudget {
                ratio: 0.2,
                min_per_sec: 10,
            },
            backoff: Backoff {
                base: Duration::from_millis(25),
                max: Duration::from_millis(250),
            },
        }
    }
}

impl Decode for Retry {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let d = Retry::default();
        let attempts: u32 = fields.or(cx, "attempts", d.attempts);
        if attempts == 0 || attempts > 10 {
            range_error(
                cx,
                &fields,
                "attempts",
                "must be between 1 and 10 (1 means no retry)",
            );
        }
        let retry_on = fields.opt(cx, "retry_on").unwrap_or(d.retry_on);
        let budget = fields
            .opt_with(cx, "budget", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let ratio: f64 = fields.or(cx, "ratio", 0.2);
                if !(0.0..=1.0).contains(&ratio) {
                    range_error(
                        cx,
                        &fields,
                        "ratio",
                        &format!("must be between 0 and 1, found {ratio}"),
                    );
                }
                let min_per_sec = fields.or(cx, "min_per_sec", 10);
                fields
                    .finish(cx, &["ratio", "min_per_sec"], &[])
                    .then_some(RetryBudget { ratio, min_per_sec })
            })
            .unwrap_or(d.budget);
        let backoff = fields
            .opt_with(cx, "backoff", |cx, node| {
                let mut fields = Fields::new(cx, node)?;
                let base: Duration = fields.or(cx, "base", Duration::from_millis(25));
                let max: Duration = fields.or(cx, "max", Duration::from_millis(250).max(base));
                if base.is_zero() || max < base {
                    range_error(
                        cx,
                        &fields,
                        "max",
                        "base must be above 0 and max at least base",
                    );
                }
                fields
                    .finish(cx, &["base", "max"], &[])
                    .then_some(Backoff { base, max })
            })
            .unwrap_or(d.backoff);
        fields
            .finish(cx, &["attempts", "retry_on", "budget", "backoff"], &[])
            .then_some(Retry {
                attempts,
                retry_on,
                budget,
                backoff,
            })
    }
}

// === rate_limit ===

/// `rate_limit:` (SPEC §3.5): a token bucket per route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub rps: f64,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Decode for RateLimit {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let rps: Option<f64> = fields.req(cx, "rps");
        if rps.is_some_and(|rps| rps <= 0.0 || rps > 10_000_000.0) {
            range_error(cx, &fields, "rps", "must be above 0 (and at most 10000000)");
        }
        let burst: u32 = fields.or(cx, "burst", rps.map_or(1, |rps| rps.ceil().max(1.0) as u32));
        at_least_one(cx, &fields, "burst", burst);
        let complete = fields.finish(cx, &["rps", "burst"], &[]);
        complete.then_some(RateLimit { rps: rps?, burst })
    }
}

// === outlier_detection ===

/// `outlier_detection:` (SPEC §3.6).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// Ejection time, times the number of ejections so far. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection_time: Duration,
    /// Never eject more than this share of the primary endpoints. Default 50.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

/// Reads `outlier_detection:` (absent → on, defaults).
pub fn decode_outlier(cx: &mut Cx, node: &Node) -> Option<Toggle<OutlierDetection>> {
    toggle(cx, node, |cx, node| {
        let mut fields = Fields::new(cx, node)?;
        let d = OutlierDetection::default();
        let consecutive_failures = fields.or(cx, "consecutive_failures", d.consecutive_failures);
        at_least_one(cx, &fields, "consecutive_failures", consecutive_failures);
        let base_ejection_time: Duration =
            fields.or(cx, "base_ejection_time", d.base_ejection_time);
        if base_ejection_time.is_zero() {
            range_error(cx, &fields, "base_ejection_time", "must be greater than 0");
        }
        let max_ejection_percent: u32 =
            fields.or(cx, "max_ejection_percent", d.max_ejection_percent);
        if max_ejection_percent > 100 {
            range_error(
                cx,
                &fields,
                "max_ejection_percent",
                "must be between 0 and 100",
            );
        }
        fields
            .finish(
                cx,
                &[
                    "consecutive_failures",
                    "base_ejection_time",
                    "max_ejection_percent",
                ],
                &[],
            )
            .then_some(OutlierDetection {
                consecutive_failures,
                base_ejection_time,
                max_ejection_percent,
            })
    })
}

// === health_check ===

/// `health_check:` — an active probe of each endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    /// What a probe does.
    #[serde(flatten)]
    pub probe: Probe,
    /// Time between probes. Default 2s.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Time a probe may take. Default 1s.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Failed probes in a row that mark an endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again. Default 2.
    pub healthy_threshold: u32,
}

/// The kind of probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `http: {path, expect_status}`: a GET that must answer one of the statuses.
    Http {
        /// Path to GET. Default `/healthz`.
        path: String,
        /// Acceptable statuses. Default `[200]`.
        expect_status: Vec<u16>,
    },
    /// `tcp: {}`: a connect that must succeed.
    Tcp {},
    /// `exec: [cmd, args…]`: a command that must exit 0 (`{endpoint}` in an
    /// argument is replaced by the endpoint's host:port).
    Exec(Vec<String>),
}

impl Decode for HealthCheck {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let http = fields.opt_with(cx, "http", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let path: String = fields.or(cx, "path", "/healthz".to_owned());
            if !path.starts_with('/') {
                range_error(cx, &fields, "path", "a path must start with '/'");
            }
            let expect_status = fields
                .opt_with(cx, "expect_status", decode_statuses)
                .unwrap_or_else(|| vec![200]);
            fields
                .finish(cx, &["path", "expect_status"], &[])
                .then_some(Probe::Http {
                    path,
                    expect_status,
                })
        });
        let tcp = fields.opt_with(cx, "tcp", |cx, node| {
            let fields = Fields::new(cx, node)?;
            fields.finish(cx, &[], &[]).then_some(Probe::Tcp {})
        });
        let exec = fields.opt_with(cx, "exec", |cx, node| {
            let command = Vec::<String>::decode(cx, node)?;
            if command.is_empty() {
                cx.error(node.line, "expected a command and its arguments");
                return None;
            }
            Some(Probe::Exec(command))
        });
        let probes: Vec<Probe> = [http, tcp, exec].into_iter().flatten().collect();
        if probes.len() != 1 {
            cx.error(node.line, "give exactly one of http, tcp or exec");
        }
        let interval: Duration = fields.or(cx, "interval", Duration::from_secs(2));
        let timeout: Duration = fields.or(cx, "timeout", Duration::from_secs(1));
        if interval.is_zero() || timeout.is_zero() || timeout > interval {
            range_error(
                cx,
                &fields,
                "timeout",
                "interval and timeout must be above 0, and timeout at most interval",
            );
        }
        let unhealthy_threshold = fields.or(cx, "unhealthy_threshold", 3);
        at_least_one(cx, &fields, "unhealthy_threshold", unhealthy_threshold);
        let healthy_threshold = fields.or(cx, "healthy_threshold", 2);
        at_least_one(cx, &fields, "healthy_threshold", healthy_threshold);
        let complete = fields.finish(
            cx,
            &[
                "http",
                "tcp",
                "exec",
                "interval",
                "timeout",
                "unhealthy_threshold",
                "healthy_threshold",
            ],
            &["grpc"],
        );
        let probe = probes.into_iter().next()?;
        complete.then_some(HealthCheck {
            probe,
            interval,
            timeout,
            unhealthy_threshold,
            healthy_threshold,
        })
    }
}
