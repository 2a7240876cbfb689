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

use serde_json::{json, Value as Json};

use super::checks::{
    above_zero, at_least, at_most, between, fraction, non_empty, ratio, statuses, url_path,
};
use super::decode::{parse_with, ConfigValue, Cx, Keys};
use super::docs::pattern;
use super::yaml::{Node, Value};

pub use crate::grpc::Code as GrpcCode;
pub use crate::policy::retry::RetryOn;

// === Toggle ===

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

/// `false`, `true` (the defaults) or a mapping of settings.
impl<T: ConfigValue> ConfigValue for Toggle<T> {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        match &node.value {
            Value::Scalar {
                text,
                quoted: false,
            } if text == "false" => Some(Toggle::Off),
            Value::Scalar {
                text,
                quoted: false,
            } if text == "true" => {
                let defaults = Node {
                    value: Value::Null,
                    line: node.line,
                    from_env: false,
                };
                T::decode(cx, &defaults).map(Toggle::On)
            }
            Value::Map(_) => T::decode(cx, node).map(Toggle::On),
            _ => {
                cx.expected(node, "true, false or a mapping");
                None
            }
        }
    }
    fn to_json(&self) -> Json {
        match self {
            Toggle::Off => Json::Bool(false),
            Toggle::On(settings) => settings.to_json(),
        }
    }
    fn schema() -> Json {
        json!({"anyOf": [{"type": "boolean"}, T::schema()]})
    }
    fn type_name() -> String {
        format!("`false`, `true` or {}", T::type_name())
    }
    fn sections(path: &str, out: &mut Vec<super::docs::SectionDoc>) {
        T::sections(path, out);
    }
}

impl<T: ConfigValue> serde::Serialize for Toggle<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.to_json(), serializer)
    }
}

// === circuit_breaker ===

section! {
    /// `circuit_breaker:` (SPEC §3.1) — on every route unless `false`.
    /// Open, it refuses requests (503 `breaker-open`, with `retry-after`);
    /// after `open_duration` it lets a few probes through (half-open), and
    /// closes when enough succeed.
    pub struct CircuitBreaker {
        /// Failures in a row that open the breaker; 0 turns this trigger off.
        consecutive_failures: u32 = 5,
        /// Failure rate over the window that opens it, once the window holds
        /// `minimum_calls`.
        #[check(ratio())]
        failure_rate: f64 = 0.5,
        /// Slow-call rate over the window that opens it; off unless set.
        #[check(ratio())]
        slow_call_rate: Option<f64> = None,
        /// A success slower than this is a slow call.
        slow_call_duration: Duration = Duration::from_secs(1),
        /// The sliding window the rates are computed over: the last `size`
        /// calls, or the calls of the last `size` of time.
        window: BreakerWindow = BreakerWindow::Count(100),
        /// Calls the window must hold before a rate can trip.
        #[check(at_least(1))]
        minimum_calls: u32 = 20,
        /// First open period.
        #[check(above_zero())]
        open_duration: Duration = Duration::from_secs(5),
        /// Growth of the open period on each re-trip.
        #[check(at_least(1.0))]
        open_backoff: f64 = 2.0,
        /// Longest open period; at least `open_duration`.
        #[default_text = "60s, or open_duration if longer"]
        max_open_duration: Duration = Duration::from_secs(60),
        /// Concurrent probes while half-open.
        #[check(at_least(1))]
        half_open_max_calls: u32 = 3,
        /// Probe successes that close it (one failure re-opens it).
        #[check(at_least(1))]
        half_open_successes: u32 = 3,
        /// Upstream statuses that count as failures (a 4xx never does).
        #[check(statuses())]
        failure_statuses: Vec<u16> = vec![500, 502, 503, 504],
        /// gRPC statuses that count as failures, read from a gRPC call's
        /// `grpc-status` when it ends (by name, `unavailable`, or number).
        #[default_text = "[unavailable, internal, unknown, deadline_exceeded]"]
        grpc_failure_statuses: Vec<GrpcCode> = vec![
            GrpcCode::UNAVAILABLE,
            GrpcCode::INTERNAL,
            GrpcCode::UNKNOWN,
            GrpcCode::DEADLINE_EXCEEDED,
        ],
    }
    validate: check_breaker,
}

fn check_breaker(breaker: &mut CircuitBreaker, keys: &Keys<'_>, cx: &mut Cx) {
    if !keys.has("max_open_duration") {
        breaker.max_open_duration = breaker.max_open_duration.max(breaker.open_duration);
    } else if breaker.max_open_duration < breaker.open_duration {
        keys.error(
            cx,
            "max_open_duration",
            "must not be shorter than open_duration",
        );
    }
}

/// `circuit_breaker.window:`
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerWindow {
    /// The last `size` calls.
    Count(u32),
    /// The calls of the last `size` of time.
    Time(Duration),
}

#[derive(Clone, Copy)]
enum WindowKind {
    Count,
    Time,
}

impl_words!(WindowKind {
    Count = "count",
    Time = "time"
});

/// `{type: count, size: 100}` or `{type: time, size: 10s}`.
impl ConfigValue for BreakerWindow {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut keys = Keys::new(cx, node)?;
        let kind = keys.read(cx, "type", &[], Some(WindowKind::Count));
        let window = match kind {
            Some(WindowKind::Time) => {
                let checks = [at_least(Duration::from_secs(1))];
                let size = keys.read(cx, "size", &checks, Some(Duration::from_secs(10)));
                size.map(BreakerWindow::Time)
            }
            Some(WindowKind::Count) | None => {
                let size = keys.read(cx, "size", &[between(1, 100_000)], Some(100));
                size.map(BreakerWindow::Count)
            }
        };
        keys.finish(cx, &["type", "size"], &[]);
        window
    }
    fn to_json(&self) -> Json {
        match self {
            BreakerWindow::Count(size) => json!({"type": "count", "size": size}),
            BreakerWindow::Time(size) => json!({"type": "time", "size": size.to_json()}),
        }
    }
    fn schema() -> Json {
        json!({
            "type": "object",
            "properties": {
                "type": {"enum": ["count", "time"], "default": "count"},
                "size": {"anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 100_000},
                    Duration::schema(),
                ]},
            },
            "additionalProperties": false,
        })
    }
    fn type_name() -> String {
        "`{type: count, size: N}` (1 to 100000 calls, default 100) or `{type: time, size: DURATION}` (at least 1s, default 10s)".to_owned()
    }
}

serialize_as_json!(BreakerWindow);

// === bulkhead ===

section! {
    /// `bulkhead:` (SPEC §3.2) — on every route unless `false`: a limit on
    /// requests in flight to the upstream, with a FIFO queue in front;
    /// beyond both, 503 `shed` with `retry-after: 1`.
    pub struct Bulkhead {
        /// Requests in flight to the upstream.
        #[check(at_least(1))]
        max_concurrent: usize = 1024,
        /// Requests waiting for a slot, first in first out; needs
        /// `max_concurrent`.
        #[default_text = "1024; 0 when max_concurrent is set"]
        max_queue: usize = 1024,
        /// Longest wait in the queue before being shed.
        queue_timeout: Duration = Duration::from_secs(1),
        /// Let the limit follow the upstream's latency, between
        /// `min_concurrent` and `max_concurrent`: it settles near the
        /// upstream's own concurrency, where latency stays within a
        /// quarter of the unloaded latency measured every 30s.
        adaptive: bool = false,
        /// The least the adaptive limit goes to, and the concurrency it
        /// measures the unloaded latency at (unused without `adaptive`).
        #[check(at_least(1))]
        min_concurrent: usize = 1,
    }
    validate: check_bulkhead,
}

fn check_bulkhead(bulkhead: &mut Bulkhead, keys: &Keys<'_>, cx: &mut Cx) {
    let has_limit = keys.has("max_concurrent");
    if !keys.has("max_queue") && has_limit {
        bulkhead.max_queue = 0;
    }
    if keys.has("max_queue") && !has_limit {
        keys.error(
            cx,
            "max_queue",
            "a queue needs a limit: set bulkhead.max_concurrent too",
        );
    }
    if bulkhead.min_concurrent > bulkhead.max_concurrent {
        keys.error(cx, "min_concurrent", "must not be above max_concurrent");
    }
    if bulkhead.max_queue > 0 && bulkhead.queue_timeout.is_zero() {
        keys.error(
            cx,
            "queue_timeout",
            "must be greater than 0 when max_queue is set",
        );
    }
}

// === retry ===

/// A gRPC status code by name (`unavailable`) or number (`14`); printed
/// by name.
impl ConfigValue for GrpcCode {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let what = "a gRPC status code like unavailable or 14";
        parse_with(cx, node, what, |text| {
            GrpcCode::from_name(text)
                .or_else(|| text.parse().ok().and_then(GrpcCode::new))
                .ok_or_else(|| format!("expected {what}, found {text:?}"))
        })
    }
    fn to_json(&self) -> Json {
        json!(self.name())
    }
    fn schema() -> Json {
        let names: Vec<&str> = GrpcCode::all().map(GrpcCode::name).collect();
        json!({"anyOf": [
            {"enum": names},
            {"type": "integer", "minimum": 0, "maximum": 16},
        ]})
    }
    fn type_name() -> String {
        "gRPC status code: a name like `unavailable` or a number 0 to 16".to_owned()
    }
}

serialize_as_json!(GrpcCode);

/// `connect_error | connect_timeout | reset | timeout | http_5xx | STATUS |
/// GRPC_CODE_NAME`.
impl ConfigValue for RetryOn {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let what = "one of connect_error, connect_timeout, reset, timeout, http_5xx, a status like 503, or a gRPC status like unavailable";
        parse_with(cx, node, what, |text| match text {
            "connect_error" => Ok(RetryOn::ConnectError),
            "connect_timeout" => Ok(RetryOn::ConnectTimeout),
            "reset" => Ok(RetryOn::Reset),
            "timeout" => Ok(RetryOn::Timeout),
            "http_5xx" => Ok(RetryOn::Http5xx),
            other => match (other.parse::<u16>(), GrpcCode::from_name(other)) {
                (Ok(status), _) if (100..=599).contains(&status) => Ok(RetryOn::Status(status)),
                (_, Some(code)) if code != GrpcCode::OK => Ok(RetryOn::Grpc(code)),
                _ => Err(format!("expected {what}, found {other:?}")),
            },
        })
    }
    fn to_json(&self) -> Json {
        match self {
            RetryOn::ConnectError => json!("connect_error"),
            RetryOn::ConnectTimeout => json!("connect_timeout"),
            RetryOn::Reset => json!("reset"),
            RetryOn::Timeout => json!("timeout"),
            RetryOn::Http5xx => json!("http_5xx"),
            RetryOn::Status(status) => json!(status),
            RetryOn::Grpc(code) => json!(code.name()),
        }
    }
    fn schema() -> Json {
        let codes: Vec<&str> = GrpcCode::all()
            .filter(|code| *code != GrpcCode::OK)
            .map(GrpcCode::name)
            .collect();
        json!({"anyOf": [
            {"enum": ["connect_error", "connect_timeout", "reset", "timeout", "http_5xx"]},
            {"enum": codes},
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"type": "string", "pattern": pattern("[1-5][0-9][0-9]")},
        ]})
    }
    fn type_name() -> String {
        "`connect_error`, `connect_timeout`, `reset`, `timeout`, `http_5xx`, a status, or a gRPC status name like `unavailable`".to_owned()
    }
}

serialize_as_json!(RetryOn);

section! {
    /// `retry:` (SPEC §3.4) — only idempotent methods are retried, unless
    /// nothing was sent (connect failures); a body is replayed only when it
    /// is at most 64KiB with a declared length; another endpoint is
    /// preferred.
    pub struct Retry {
        /// Tries in all, the first included: 1 means no retry.
        #[check(between(1, 10))]
        attempts: u32 = 1,
        /// What may be retried. A gRPC status name (`unavailable`) retries
        /// a gRPC call the upstream refused with that status before sending
        /// any message, whatever the method: listing it says the call is
        /// safe to repeat, as in gRPC's own retry policy.
        retry_on: Vec<RetryOn> = vec![RetryOn::ConnectError],
        /// The retry budget: beyond it, failures are not retried.
        budget: RetryBudget = RetryBudget::default(),
        /// Backoff between tries: full jitter in [0, min(max, base·2ⁿ)].
        backoff: Backoff = Backoff::default(),
    }
}

section! {
    /// `retry.budget:` — retries may add `ratio` of recent requests plus
    /// `min_per_sec` per second.
    pub struct RetryBudget {
        /// Retries as a share of recent requests.
        #[check(fraction())]
        ratio: f64 = 0.2,
        /// Plus this many retries per second.
        min_per_sec: u32 = 10,
    }
}

section! {
    /// `retry.backoff:`
    pub struct Backoff {
        /// The first delay's ceiling.
        #[check(above_zero())]
        base: Duration = Duration::from_millis(25),
        /// The longest delay; at least `base`.
        #[default_text = "250ms, or base if longer"]
        max: Duration = Duration::from_millis(250),
    }
    validate: check_backoff,
}

fn check_backoff(backoff: &mut Backoff, keys: &Keys<'_>, cx: &mut Cx) {
    if !keys.has("max") {
        backoff.max = backoff.max.max(backoff.base);
    } else if backoff.max < backoff.base {
        keys.error(cx, "max", "must be at least base");
    }
}

// === rate_limit ===

section! {
    /// `rate_limit:` (SPEC §3.5) — a token bucket per route; beyond it,
    /// 429 `rate-limited` with `retry-after`.
    pub struct RateLimit {
        /// Sustained requests per second.
        #[check(above_zero(), at_most(10_000_000.0))]
        rps: f64,
        /// Requests allowed at once above the sustained rate.
        #[check(at_least(1))]
        #[default_text = "rps, rounded up"]
        burst: u32 = 0,
    }
    validate: default_burst,
}

fn default_burst(limit: &mut RateLimit, keys: &Keys<'_>, _: &mut Cx) {
    if !keys.has("burst") {
        limit.burst = limit.rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    }
}

// === outlier_detection ===

section! {
    /// `outlier_detection:` (SPEC §3.6) — passive health from live traffic,
    /// on every upstream unless `false`.
    pub struct OutlierDetection {
        /// Failed tries in a row that eject an endpoint.
        #[check(at_least(1))]
        consecutive_failures: u32 = 5,
        /// Ejection time, times the number of ejections so far.
        #[check(above_zero())]
        base_ejection_time: Duration = Duration::from_secs(30),
        /// Never eject more than this share (%) of the primary endpoints.
        #[check(at_most(100))]
        max_ejection_percent: u32 = 50,
    }
}

// === health_check ===

/// `health_check:` — an active probe of each endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// What a probe does.
    pub probe: Probe,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Failed probes in a row that mark an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again.
    pub healthy_threshold: u32,
}

/// The kind of probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `http: {path, expect_status}`: a GET that must answer one of the statuses.
    Http {
        /// Path to GET.
        path: String,
        /// Acceptable statuses.
        expect_status: Vec<u16>,
    },
    /// `tcp: {}`: a connect that must succeed.
    Tcp {},
    /// `exec: [cmd, args…]`: a command that must exit 0 (`{endpoint}` in an
    /// argument is replaced by the endpoint's host:port).
    Exec(Vec<String>),
    /// `grpc: {service}`: `grpc.health.v1.Health/Check` for `service`
    /// (`""`: the whole server) that must answer `SERVING`.
    Grpc {
        /// The service asked about.
        service: String,
    },
}

section! {
    /// `upstreams[].health_check:` — active probes of each endpoint; give
    /// exactly one of `http`, `tcp`, `exec` or `grpc`. An endpoint that fails
    /// `unhealthy_threshold` probes in a row gets no traffic until it
    /// passes `healthy_threshold` in a row.
    pub(crate) struct HealthCheckKeys {
        /// A GET that must answer one of the statuses.
        http: Option<HttpProbe> = None,
        /// A TCP connect that must succeed: `tcp: {}`.
        tcp: Option<TcpProbe> = None,
        /// A command and its arguments that must exit 0; `{endpoint}` in an
        /// argument becomes the endpoint's host:port.
        #[check(non_empty("a command"))]
        exec: Option<Vec<String>> = None,
        /// The standard gRPC health check, `grpc.health.v1.Health/Check`,
        /// that must answer `SERVING`; needs `protocol: http2` or `auto`.
        grpc: Option<GrpcProbe> = None,
        /// Time between probes.
        #[check(above_zero())]
        interval: Duration = Duration::from_secs(2),
        /// Time a probe may take; at most `interval`.
        #[check(above_zero())]
        timeout: Duration = Duration::from_secs(1),
        /// Failed probes in a row that mark an endpoint unhealthy.
        #[check(at_least(1))]
        unhealthy_threshold: u32 = 3,
        /// Passed probes in a row that mark it healthy again.
        #[check(at_least(1))]
        healthy_threshold: u32 = 2,
    }
    validate: check_health,
}

section! {
    /// `health_check.http:`
    pub(crate) struct HttpProbe {
        /// Path to GET.
        #[check(url_path())]
        path: String = "/healthz".to_owned(),
        /// Statuses that pass.
        #[check(statuses())]
        expect_status: Vec<u16> = vec![200],
    }
}

section! {
    /// `health_check.tcp:` — no settings: `tcp: {}`.
    pub(crate) struct TcpProbe {}
}

section! {
    /// `health_check.grpc:`
    pub(crate) struct GrpcProbe {
        /// The service asked about; `""` asks about the whole server.
        service: String = String::new(),
    }
}

fn check_health(health: &mut HealthCheckKeys, keys: &Keys<'_>, cx: &mut Cx) {
    let probes = ["http", "tcp", "exec", "grpc"]
        .iter()
        .filter(|key| keys.has(key))
        .count();
    if probes != 1 {
        keys.error(cx, "", "give exactly one of http, tcp, exec or grpc");
    }
    if health.timeout > health.interval {
        keys.error(cx, "timeout", "must be at most interval");
    }
}

fn health_from_keys(_: &mut Cx, _: &Node, keys: HealthCheckKeys) -> Option<HealthCheck> {
    let probe = match (keys.http, keys.tcp, keys.exec, keys.grpc) {
        (Some(http), ..) => Probe::Http {
            path: http.path,
            expect_status: http.expect_status,
        },
        (None, Some(TcpProbe {}), ..) => Probe::Tcp {},
        (None, None, Some(command), _) => Probe::Exec(command),
        (None, None, None, Some(grpc)) => Probe::Grpc {
            service: grpc.service,
        },
        (None, None, None, None) => return None,
    };
    Some(HealthCheck {
        probe,
        interval: keys.interval,
        timeout: keys.timeout,
        unhealthy_threshold: keys.unhealthy_threshold,
        healthy_threshold: keys.healthy_threshold,
    })
}

fn health_to_keys(health: &HealthCheck) -> HealthCheckKeys {
    let (mut http, mut tcp, mut exec, mut grpc) = (None, None, None, None);
    match &health.probe {
        Probe::Http {
            path,
            expect_status,
        } => {
            http = Some(HttpProbe {
                path: path.clone(),
                expect_status: expect_status.clone(),
            });
        }
        Probe::Tcp {} => tcp = Some(TcpProbe {}),
        Probe::Exec(command) => exec = Some(command.clone()),
        Probe::Grpc { service } => {
            grpc = Some(GrpcProbe {
                service: service.clone(),
            });
        }
    }
    HealthCheckKeys {
        http,
        tcp,
        exec,
        grpc,
        interval: health.interval,
        timeout: health.timeout,
        unhealthy_threshold: health.unhealthy_threshold,
        healthy_threshold: health.healthy_threshold,
    }
}

/// Exactly one probe kind.
fn one_probe(schema: &mut Json) {
    schema["oneOf"] = json!([
        {"required": ["http"]},
        {"required": ["tcp"]},
        {"required": ["exec"]},
        {"required": ["grpc"]},
    ]);
    schema["type"] = json!("object");
}

via_keys!(HealthCheck => HealthCheckKeys,
    decode: health_from_keys,
    encode: health_to_keys,
    schema: one_probe,
);
