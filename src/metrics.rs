//! Every Prometheus family breakwater exports (SPEC §7), registered once.
//!
//! Label values come only from config names and fixed sets — never from
//! request data — so the series count is bounded by the config. Hot-path
//! handles that depend only on the route are resolved once per snapshot
//! ([`RouteMetrics`]), so a request does no label lookup for them.
//!
//! Every series whose labels are known in advance is exported at zero
//! before its first event, so a dashboard or an alert (`increase(…) > 0`)
//! sees it from the start: the fixed sets ([`known`]) when the registry
//! is made, the config's routes, listeners and upstreams when a snapshot
//! is built ([`Metrics::prime`]). A `requests_total` series is primed for
//! each answer breakwater makes itself (status and outcome both fixed);
//! the upstream's own statuses appear when they happen. The registry also
//! holds `breakwater_build_info` and the standard `process_*` collector.

use crate::config::{Config, Protocol, Route};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from sub-millisecond proxying to slow calls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The fixed label values of each family, exported at zero from start-up.
/// Keep each list in step with the code that counts it (named per list).
pub mod known {
    /// `config_reloads_total{result}` (`reload.rs`).
    pub const RELOAD_RESULTS: &[&str] = &["success", "error"];
    /// `events_total{kind}`: every kind an event is emitted with.
    pub const EVENT_KINDS: &[&str] = &[
        "breaker",
        "ejection",
        "health",
        "overload",
        "config_reload",
        "config_reload_failed",
        "process_start",
        "process_start_failed",
        "process_ready",
        "process_exit",
        "process_restart",
        "process_stop",
        "startup_timeout",
        "recovery",
        "recovery_reset",
        "failover",
        "failback",
        "escalation",
        "degradation",
        "degraded",
        "dependency_down",
        "dependency_up",
        "recovery_held",
        "drill",
        "fault",
        "maintenance",
        "rollback",
    ];
    /// `supervisor_restarts_total{reason}`: an exit or a signal, an
    /// operator, a new process spec, or the trigger that climbed the
    /// ladder to a restart (`supervisor/mod.rs`).
    pub const RESTART_REASONS: &[&str] = &[
        "exit",
        "signal",
        "admin",
        "config",
        "startup_timeout",
        "log_pattern",
        "memory_limit",
        "health_check",
        "error_rate",
        "breaker_open",
    ];
    /// `recovery_attempts_total{action,result}`: each ladder action with
    /// the results it can have (`supervisor/mod.rs`, `Task::act`).
    pub const RECOVERY_RESULTS: &[(&str, &[&str])] = &[
        ("restart", &["started"]),
        ("failover", &["ok", "no_backup"]),
        (
            "exec",
            &["ok", "failed", "not_started", "timeout", "no_command"],
        ),
        ("escalate", &["escalated"]),
    ];
    /// `circuit_breaker_transitions_total{to}` (`policy::breaker`).
    pub const BREAKER_STATES: &[&str] = &[
        "closed",
        "open",
        "half_open",
        "forced_open",
        "forced_closed",
    ];
    /// `shed_total{reason}` from the bulkhead (`policy::bulkhead::Shed`).
    pub const BULKHEAD_SHEDS: &[&str] = &["full", "queue_timeout"];
    /// `shed_total{reason}` from the upstream's connection queue
    /// (`proxy/upstream/balance.rs`), on every route.
    pub const QUEUE_SHEDS: &[&str] = &["upstream_queue_full", "upstream_queue_timeout"];
    /// `requests_total{code,outcome}` of the answers breakwater makes
    /// itself on any route (`proxy/reject.rs`, `layers/rescue.rs`): 503
    /// refusals (breaker, bulkhead, overload, starting, queues), failed
    /// calls, the client's own failures, a caught panic.
    pub const OWN_ANSWERS: &[(&str, &str)] = &[
        ("503", "rejected"),
        ("502", "connect_error"),
        ("502", "connect_timeout"),
        ("504", "timeout"),
        ("502", "reset"),
        ("400", "client_error"),
        ("499", "cancelled"),
        ("500", "rejected"),
    ];
    /// The rate limit's answer, on routes that have one.
    pub const RATE_LIMITED: (&str, &str) = ("429", "rejected");
    /// The answer to a request no route takes, counted under route `""`.
    pub const NO_ROUTE: (&str, &str) = ("404", "rejected");
}

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    /// `breakwater_requests_total{route,code,outcome}`.
    pub requests_total: IntCounterVec,
    /// `breakwater_request_duration_seconds{route}`: until the response ends.
    pub request_duration: HistogramVec,
    /// `breakwater_upstream_duration_seconds{route}`: until upstream headers.
    pub upstream_duration: HistogramVec,
    /// `breakwater_config_reloads_total{result}`.
    pub config_reloads_total: IntCounterVec,
    /// `breakwater_rejected_total{listener,reason}`: connections or requests
    /// refused before routing (SPEC §11).
    pub rejected_total: IntCounterVec,
    /// `breakwater_downstream_connections{listener}`: open client connections.
    pub downstream_connections: IntGaugeVec,
    /// `breakwater_events_total{kind}`.
    pub events_total: IntCounterVec,
    /// `breakwater_panics_total`: panics caught while serving.
    pub panics_total: IntCounter,
    /// `breakwater_overload_level`: 0 normal, 1 keep-alive stopped, 2 shedding.
    pub overload_level: IntGauge,
    /// `breakwater_circuit_breaker_state{route}`: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// `breakwater_circuit_breaker_transitions_total{route,to}`.
    pub breaker_transitions: IntCounterVec,
    /// `breakwater_bulkhead_in_flight{route}`.
    pub bulkhead_in_flight: IntGaugeVec,
    /// `breakwater_bulkhead_queued{route}`.
    pub bulkhead_queued: IntGaugeVec,
    /// `breakwater_bulkhead_limit{route}`: the limit now (it moves when
    /// adaptive).
    pub bulkhead_limit: IntGaugeVec,
    /// `breakwater_degraded_total{route,kind}`: replies that were not the
    /// upstream's live answer (`fallback`, `stale`, `level`).
    pub degraded_total: IntCounterVec,
    /// `breakwater_degradation_level`: 0 normal … 4 emergency.
    pub degradation_level: IntGauge,
    /// `breakwater_shed_total{route,reason}`: requests refused by a policy.
    pub shed_total: IntCounterVec,
    /// `breakwater_retries_total{route}`.
    pub retries_total: IntCounterVec,
    /// `breakwater_retry_budget_exhausted_total`: retries not made for lack of budget.
    pub retry_budget_exhausted: IntCounter,
    /// `breakwater_endpoint_healthy{upstream,endpoint}`: 1 when taking traffic.
    pub endpoint_healthy: IntGaugeVec,
    /// `breakwater_supervisor_restarts_total{reason}` (`exit`, `signal`, `admin`).
    pub supervisor_restarts: IntCounterVec,
    /// `breakwater_webhook_dropped_total`: events dropped from a full webhook queue.
    pub webhook_dropped: IntCounter,
    /// `breakwater_upstream_up{upstream}`: 1 while the supervised process serves.
    pub upstream_up: IntGaugeVec,
    /// `breakwater_recovery_attempts_total{action,result}`.
    pub recovery_attempts: IntCounterVec,
    /// `breakwater_recovery_duration_seconds{action}`: how long an action took.
    pub recovery_duration: HistogramVec,
    /// `breakwater_upstream_connections{upstream,state}`: HTTP/1 connections
    /// to an upstream's endpoints, by state (`idle`, `active`, `connecting`).
    pub upstream_connections: IntGaugeVec,
    /// `breakwater_upstream_pending{upstream}`: requests waiting for a
    /// connection to one of an upstream's endpoints.
    pub upstream_pending: IntGaugeVec,
    /// `breakwater_grpc_responses_total{route,grpc_status}`: gRPC calls by
    /// the `grpc-status` (`0`…`16`) their client got, breakwater's own
    /// replies included.
    pub grpc_responses_total: IntCounterVec,
    /// `breakwater_build_info{version,commit}`: always 1.
    pub build_info: IntGaugeVec,
    /// `breakwater_faults_injected_total{route,kind}`: requests delayed or
    /// aborted by fault injection (`delay`, `abort`).
    pub faults_injected: IntCounterVec,
    /// `breakwater_drill_recovery_seconds{action}`: a drill's time from the
    /// signal to serving again (`kill`, `hang`).
    pub drill_recovery: HistogramVec,
    /// `breakwater_rollbacks_total{kind}`: rollbacks (`process`, `config`).
    pub rollbacks: IntCounterVec,
}

/// Handles for one route, resolved when a snapshot is built.
pub struct RouteMetrics {
    /// Route name.
    pub route: String,
    /// `request_duration_seconds{route}`.
    pub request_duration: Histogram,
    /// `upstream_duration_seconds{route}`.
    pub upstream_duration: Histogram,
    requests_total: IntCounterVec,
    grpc_responses_total: IntCounterVec,
}

impl RouteMetrics {
    /// The `grpc_responses_total` counter for this route and `code`.
    pub fn grpc(&self, code: crate::grpc::Code) -> IntCounter {
        self.grpc_responses_total
            .with_label_values(&[self.route.as_str(), code.label()])
    }

    /// The `requests_total` counter for this route, status and outcome.
    pub fn requests(&self, code: http::StatusCode, outcome: &str) -> IntCounter {
        let mut buffer = itoa_status(code);
        self.requests_total.with_label_values(&[
            self.route.as_str(),
            status_str(&mut buffer),
            outcome,
        ])
    }
}

fn itoa_status(code: http::StatusCode) -> [u8; 3] {
    let n = code.as_u16();
    [
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

fn status_str(buffer: &mut [u8; 3]) -> &str {
    std::str::from_utf8(buffer).unwrap_or("000")
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let vec =
                    IntCounterVec::new(Opts::new(name, help).namespace("breakwater"), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let histogram = |name: &str, help: &str| -> Result<HistogramVec, prometheus::Error> {
            let opts = HistogramOpts::new(name, help)
                .namespace("breakwater")
                .buckets(LATENCY_BUCKETS.to_vec());
            let vec = HistogramVec::new(opts, &["route"])?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        };
        let requests_total = counter(
            "requests_total",
            "Requests by route, status code and outcome class.",
            &["route", "code", "outcome"],
        )?;
        let grpc_responses_total = counter(
            "grpc_responses_total",
            "gRPC calls by route and the grpc-status their client got.",
            &["route", "grpc_status"],
        )?;
        let request_duration = histogram(
            "request_duration_seconds",
            "Time from request start until the response body ended, by route.",
        )?;
        let upstream_duration = histogram(
            "upstream_duration_seconds",
            "Time from sending upstream until the upstream's response headers, by route.",
        )?;
        let config_reloads_total = counter(
            "config_reloads_total",
            "Config reload attempts by result (success, error).",
            &["result"],
        )?;
        let rejected_total = counter(
            "rejected_total",
            "Connections or requests refused before routing, by listener and reason.",
            &["listener", "reason"],
        )?;
        let events_total = counter("events_total", "Events emitted, by kind.", &["kind"])?;
        let downstream_connections = IntGaugeVec::new(
            Opts::new(
                "downstream_connections",
                "Open downstream connections by listener.",
            )
            .namespace("breakwater"),
            &["listener"],
        )?;
        registry.register(Box::new(downstream_connections.clone()))?;
        let panics_total = IntCounter::with_opts(
            Opts::new(
                "panics_total",
                "Panics caught while serving; each was answered and isolated.",
            )
            .namespace("breakwater"),
        )?;
        registry.register(Box::new(panics_total.clone()))?;
        let overload_level = IntGauge::with_opts(
            Opts::new(
                "overload_level",
                "Overload ladder: 0 normal, 1 keep-alive stopped, 2 shedding new requests.",
            )
            .namespace("breakwater"),
        )?;
        registry.register(Box::new(overload_level.clone()))?;
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let vec = IntGaugeVec::new(Opts::new(name, help).namespace("breakwater"), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let breaker_state = gauge(
            "circuit_breaker_state",
            "Circuit breaker state by route: 0 closed, 1 half-open, 2 open.",
            &["route"],
        )?;
        let breaker_transitions = counter(
            "circuit_breaker_transitions_total",
            "Circuit breaker transitions by route and new state.",
            &["route", "to"],
        )?;
        let bulkhead_in_flight = gauge(
            "bulkhead_in_flight",
            "Requests holding a bulkhead slot, by route.",
            &["route"],
        )?;
        let bulkhead_queued = gauge(
            "bulkhead_queued",
            "Requests waiting for a bulkhead slot, by route.",
            &["route"],
        )?;
        let bulkhead_limit = gauge(
            "bulkhead_limit",
            "The bulkhead's limit of requests in flight, by route (it moves when adaptive).",
            &["route"],
        )?;
        let degraded_total = counter(
            "degraded_total",
            "Replies that were not the upstream's live answer, by route and kind (fallback, stale, level).",
            &["route", "kind"],
        )?;
        let degradation_level = IntGauge::with_opts(
            Opts::new(
                "degradation_level",
                "Degradation level: 0 normal, 1 minimal, 2 moderate, 3 severe, 4 emergency.",
            )
            .namespace("breakwater"),
        )?;
        registry.register(Box::new(degradation_level.clone()))?;
        let shed_total = counter(
            "shed_total",
            "Requests refused by a policy, by route and reason (full, queue_timeout, breaker_open, rate_limited).",
            &["route", "reason"],
        )?;
        let retries_total = counter("retries_total", "Retries made, by route.", &["route"])?;
        let retry_budget_exhausted = IntCounter::with_opts(
            Opts::new(
                "retry_budget_exhausted_total",
                "Retries not made because the retry budget was spent.",
            )
            .namespace("breakwater"),
        )?;
        registry.register(Box::new(retry_budget_exhausted.clone()))?;
        let upstream_up = gauge(
            "upstream_up",
            "1 while the supervised process behind an upstream is ready.",
            &["upstream"],
        )?;
        let recovery_attempts = counter(
            "recovery_attempts_total",
            "Recovery ladder actions by action and result.",
            &["action", "result"],
        )?;
        let recovery_duration = {
            let opts = HistogramOpts::new(
                "recovery_duration_seconds",
                "Time each recovery action took, by action.",
            )
            .namespace("breakwater")
            .buckets(LATENCY_BUCKETS.to_vec());
            let vec = HistogramVec::new(opts, &["action"])?;
            registry.register(Box::new(vec.clone()))?;
            vec
        };
        let webhook_dropped = IntCounter::with_opts(
            Opts::new(
                "webhook_dropped_total",
                "Events dropped because a webhook's queue was full.",
            )
            .namespace("breakwater"),
        )?;
        registry.register(Box::new(webhook_dropped.clone()))?;
        let supervisor_restarts = counter(
            "supervisor_restarts_total",
            "Restarts of the supervised process, by reason (exit, signal).",
            &["reason"],
        )?;
        let upstream_connections = gauge(
            "upstream_connections",
            "HTTP/1 connections to an upstream's endpoints, by state (idle, active, connecting).",
            &["upstream", "state"],
        )?;
        let upstream_pending = gauge(
            "upstream_pending",
            "Requests waiting for a connection to one of an upstream's endpoints.",
            &["upstream"],
        )?;
        let faults_injected = counter(
            "faults_injected_total",
            "Requests delayed or aborted by fault injection, by route and kind (delay, abort).",
            &["route", "kind"],
        )?;
        let drill_recovery = {
            let opts = HistogramOpts::new(
                "drill_recovery_seconds",
                "Drills: time from the signal to serving again, by action (kill, hang).",
            )
            .namespace("breakwater")
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]);
            let vec = HistogramVec::new(opts, &["action"])?;
            registry.register(Box::new(vec.clone()))?;
            vec
        };
        let rollbacks = counter(
            "rollbacks_total",
            "Automatic rollbacks, by kind (process: the supervised process's spec; config: breakwater's own config).",
            &["kind"],
        )?;
        let endpoint_healthy = gauge(
            "endpoint_healthy",
            "1 when an endpoint takes traffic (healthy and not ejected).",
            &["upstream", "endpoint"],
        )?;
        let build_info = gauge(
            "build_info",
            "Always 1; the labels say which build this is.",
            &["version", "commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::cli::COMMIT])
            .set(1);
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for result in known::RELOAD_RESULTS {
            config_reloads_total.with_label_values(&[result]);
        }
        for kind in known::EVENT_KINDS {
            events_total.with_label_values(&[kind]);
        }
        for reason in known::RESTART_REASONS {
            supervisor_restarts.with_label_values(&[reason]);
        }
        for (action, results) in known::RECOVERY_RESULTS {
            recovery_duration.with_label_values(&[action]);
            for result in *results {
                recovery_attempts.with_label_values(&[action, result]);
            }
        }
        let (code, outcome) = known::NO_ROUTE;
        requests_total.with_label_values(&["", code, outcome]);
        for action in ["kill", "hang"] {
            drill_recovery.with_label_values(&[action]);
        }
        for kind in ["process", "config"] {
            rollbacks.with_label_values(&[kind]);
        }
        Ok(Metrics {
            faults_injected,
            drill_recovery,
            rollbacks,
            bulkhead_limit,
            degraded_total,
            degradation_level,
            build_info,
            upstream_connections,
            upstream_pending,
            panics_total,
            overload_level,
            breaker_state,
            breaker_transitions,
            bulkhead_in_flight,
            bulkhead_queued,
            shed_total,
            retries_total,
            retry_budget_exhausted,
            endpoint_healthy,
            supervisor_restarts,
            webhook_dropped,
            recovery_attempts,
            upstream_up,
            recovery_duration,
            registry,
            requests_total,
            grpc_responses_total,
            request_duration,
            upstream_duration,
            config_reloads_total,
            rejected_total,
            downstream_connections,
            events_total,
        })
    }

    /// Resolves the per-route handles for `route`.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_owned(),
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
            requests_total: self.requests_total.clone(),
            grpc_responses_total: self.grpc_responses_total.clone(),
        }
    }

    /// Exports at zero every series `config` can produce, before its first
    /// event: per route its own answers, sheds, breaker transitions and
    /// policy gauges (for the policies it has), per listener its open
    /// connections. Called whenever a snapshot is built.
    pub fn prime(&self, config: &Config) {
        for listener in &config.listeners {
            self.downstream_connections
                .with_label_values(&[&listener.name]);
            for route in &listener.routes {
                self.prime_route(route);
                // A route to an HTTP/2 upstream may carry gRPC calls.
                let grpc = config.upstreams.iter().any(|upstream| {
                    upstream.name == route.upstream() && upstream.protocol != Protocol::Http1
                });
                if grpc {
                    for code in crate::grpc::Code::all() {
                        self.grpc_responses_total
                            .with_label_values(&[&route.name, code.label()]);
                    }
                }
            }
        }
    }

    fn prime_route(&self, route: &Route) {
        let name = route.name.as_str();
        let mut answers = known::OWN_ANSWERS.to_vec();
        let mut sheds = known::QUEUE_SHEDS.to_vec();
        if route.rate_limit.is_some() {
            answers.push(known::RATE_LIMITED);
            sheds.push("rate_limited");
        }
        for (code, outcome) in answers {
            self.requests_total
                .with_label_values(&[name, code, outcome]);
        }
        if route.circuit_breaker.on().is_some() {
            sheds.push("breaker_open");
            self.breaker_state.with_label_values(&[name]);
            for to in known::BREAKER_STATES {
                self.breaker_transitions.with_label_values(&[name, to]);
            }
        }
        if route.bulkhead.on().is_some() {
            sheds.extend_from_slice(known::BULKHEAD_SHEDS);
            self.bulkhead_in_flight.with_label_values(&[name]);
            self.bulkhead_queued.with_label_values(&[name]);
            self.bulkhead_limit.with_label_values(&[name]);
        }
        self.degraded_total.with_label_values(&[name, "level"]);
        if route.fallback.is_some() {
            self.degraded_total.with_label_values(&[name, "fallback"]);
        }
        if route.stale_if_error.is_some() {
            self.degraded_total.with_label_values(&[name, "stale"]);
        }
        for reason in sheds {
            self.shed_total.with_label_values(&[name, reason]);
        }
        self.retries_total.with_label_values(&[name]);
        self.request_duration.with_label_values(&[name]);
        self.upstream_duration.with_label_values(&[name]);
    }

    /// Replies counted so far in `requests_total`, and how many had a 5xx
    /// status (for `config_rollback`, which reads them once a second).
    pub fn replies_and_5xx(&self) -> (u64, u64) {
        use prometheus::core::Collector;
        let (mut replies, mut server_errors) = (0u64, 0u64);
        for family in self.requests_total.collect() {
            for metric in family.get_metric() {
                let count = metric.get_counter().get_value() as u64;
                replies += count;
                let server_error = metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == "code" && label.value().starts_with('5'));
                if server_error {
                    server_errors += count;
                }
            }
        }
        (replies, server_errors)
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "Failed to encode metrics.");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_server_errors_are_summed_over_routes() {
        let metrics = Metrics::new().unwrap();
        metrics
            .route("a")
            .requests(http::StatusCode::OK, "success")
            .inc_by(7);
        metrics
            .route("b")
            .requests(http::StatusCode::BAD_GATEWAY, "connect_error")
            .inc_by(2);
        metrics
            .route("b")
            .requests(http::StatusCode::SERVICE_UNAVAILABLE, "rejected")
            .inc();
        assert_eq!(metrics.replies_and_5xx(), (10, 3));
    }

    #[test]
    fn families_render_with_prefix() {
        let metrics = Metrics::new().unwrap();
        let route = metrics.route("checkout");
        route
            .requests(http::StatusCode::BAD_GATEWAY, "connect_error")
            .inc();
        route.request_duration.observe(0.002);
        let text = metrics.render();
        assert!(text.contains("breakwater_requests_total{code=\"502\",outcome=\"connect_error\",route=\"checkout\"} 1"), "{text}");
        assert!(
            text.contains(
                "breakwater_request_duration_seconds_bucket{route=\"checkout\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
    }
}
