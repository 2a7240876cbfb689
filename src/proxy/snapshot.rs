//! A config snapshot compiled for the data plane: per listener its routes,
//! per route its stack of layers and the live state of its policies.
//!
//! A [`Snapshot`] is immutable. It is built on the side from a validated
//! [`Config`] and published with one `ArcSwap` store; a request loads it
//! once and keeps that `Arc` to its end, so a reload never changes the
//! rules under a request in flight.
//!
//! TLS files are read on every build: a listener's server config is made
//! anew (the next handshake uses it), and a kept upstream pool re-reads its
//! client files for its next dial.
//!
//! What a reload keeps: upstream pools whose config did not change (warm
//! connections, endpoint health, ejections), every upstream's gate
//! (readiness, failover: `gate.rs`), and per route each policy whose
//! settings did not change — breaker state, bulkhead slots in use,
//! rate-limit tokens, retry budget (SPEC §8.2).
//!
//! Building cannot half-succeed: a route naming an upstream the snapshot
//! does not have, or settings a policy cannot be built from, fail the
//! whole build (the config loader should have refused them first; this is
//! the backstop), and the running snapshot keeps serving.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceBuilder;

use super::faults::Faults;
use super::gate::Gates;
use super::layers::admission::{
    DegradationGate, DegradationLayer, DegradationState, MaintenanceGate, MaintenanceLayer,
    OverloadFlag, OverloadGate, OverloadLayer, ReadinessGate, ReadinessLayer,
};
use super::layers::breaker::{BreakerLayer, BreakerService};
use super::layers::bulkhead::{BulkheadLayer, BulkheadService};
use super::layers::fault::{FaultGate, FaultLayer};
use super::layers::rate_limit::{RateLimit, RateLimitLayer};
use super::layers::rescue::{Rescue, RescueLayer, RouteRescue};
use super::layers::timeout::{RequestTimeout, TimeoutLayer};
use super::outcome::Classifier;
use super::report::RouteReport;
use super::route::Matcher;
use super::stale::StaleStore;
use super::upstream::balance::{Balance, UpstreamPool};
use super::upstream::retry::{Retry, RetryLayer, RetryPlan};
use crate::config::policy::{BreakerWindow, CircuitBreaker};
use crate::config::{Config, Limits, Route};
use crate::events::EventBus;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::adaptive::AdaptiveConfig;
use crate::policy::backoff::Backoff;
use crate::policy::breaker::{Breaker, BreakerConfig};
use crate::policy::bulkhead::Bulkhead;
use crate::policy::rate_limit::RateLimiter;
use crate::policy::retry_budget::RetryBudget;
use crate::policy::window::WindowConfig;

/// The stack every route runs, outermost first, in SPEC §3 order:
/// rescue (stale copy, fallback or breakwater's own reply) → overload →
/// maintenance → readiness → rate limit → degradation → fault injection →
/// circuit breaker → bulkhead → request timeout → retries → one try.
pub type RouteStack = Rescue<
    OverloadGate<
        MaintenanceGate<
            ReadinessGate<
                RateLimit<
                    DegradationGate<
                        FaultGate<BreakerService<BulkheadService<RequestTimeout<Retry<Balance>>>>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// How long the retry budget remembers requests.
const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What a snapshot is built with besides the config: where metrics and
/// events go, and the process-wide state its stacks read.
pub struct Wiring<'a> {
    /// Metric families.
    pub metrics: &'a Metrics,
    /// The event bus.
    pub events: &'a Arc<EventBus>,
    /// Every upstream's gate.
    pub gates: &'a Gates,
    /// The overload ladder's level.
    pub overload: &'a Arc<OverloadFlag>,
    /// The degradation level.
    pub degradation: &'a Arc<DegradationState>,
    /// Requests shed by breakwater's own limits, process-wide.
    pub sheds: &'a Arc<std::sync::atomic::AtomicU64>,
    /// Every route's fault slot (it outlives the snapshot).
    pub faults: &'a Arc<Faults>,
}

/// Why a snapshot could not be built: each problem as a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub Vec<String>);

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for SnapshotError {}

/// One version of the running config.
pub struct Snapshot {
    /// Increments with each successful load, starting at 1.
    pub version: u64,
    /// The validated config this was built from.
    pub config: Arc<Config>,
    /// One plan per configured listener, in config order.
    pub listeners: Vec<ListenerPlan>,
    /// Pools by upstream, in config order.
    pub upstreams: Vec<Arc<UpstreamPool>>,
    /// Metric handles for requests that matched no route (`route=""`).
    pub no_route_metrics: Arc<RouteMetrics>,
    /// breakwater's own listening addresses (listeners and admin): an
    /// original destination among them would loop.
    pub own_addresses: Vec<SocketAddr>,
}

/// What one listener does with a request.
pub struct ListenerPlan {
    /// Listener name.
    pub name: String,
    /// Keep client `x-forwarded-proto`/`-host`.
    pub trust_forwarded: bool,
    /// TLS termination, for handshakes from now on.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Reads each connection's original destination.
    pub transparent: bool,
    /// Connection limits, applied to connections accepted from now on.
    pub limits: Limits,
    /// Routes in match order.
    pub routes: Vec<RoutePlan>,
    /// Matchers, parallel to `routes`, kept together for a tight scan.
    pub matchers: Vec<Matcher>,
}

/// A compiled route and the live state of its policies.
pub struct RoutePlan {
    /// Route name (a metrics label).
    pub name: Arc<str>,
    /// The route's config.
    pub config: Route,
    /// Upstream pool it sends to.
    pub upstream: Arc<UpstreamPool>,
    /// The stack of layers.
    pub stack: RouteStack,
    /// Pre-resolved metric handles.
    pub metrics: Arc<RouteMetrics>,
    /// Where policy metrics and events go.
    pub report: Arc<RouteReport>,
    /// The breaker, unless `circuit_breaker: false`.
    pub breaker: Option<Arc<Breaker>>,
    /// The bulkhead, unless `bulkhead: false`.
    pub bulkhead: Option<Arc<Bulkhead>>,
    /// The token bucket, when `rate_limit` is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The stale-if-error store, when `stale_if_error` is set.
    pub stale: Option<Arc<StaleStore>>,
    /// The route's fault slot (config or admin; it outlives the snapshot).
    pub fault: Arc<super::faults::RouteFault>,
    retry_budget: Option<Arc<RetryBudget>>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles `config`, reusing pools and policy state from `previous`
    /// where their settings are unchanged.
    pub fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        wiring: &Wiring<'_>,
    ) -> Result<Snapshot, SnapshotError> {
        let now = Instant::now();
        // Every series this config can produce is scraped from now on,
        // at zero until it happens.
        wiring.metrics.prime(&config);
        let mut problems = Vec::new();
        let mut upstreams: Vec<Arc<UpstreamPool>> = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            let kept = previous.and_then(|previous| {
                previous
                    .upstreams
                    .iter()
                    .find(|pool| pool.config == *upstream)
            });
            match kept {
                Some(pool) => {
                    if let Err(problem) = pool.reload_tls() {
                        problems.push(problem);
                    }
                    upstreams.push(pool.clone());
                }
                None => match UpstreamPool::new(
                    upstream,
                    wiring.gates.get(&upstream.name),
                    wiring.events.clone(),
                ) {
                    Ok(pool) => {
                        let pool = Arc::new(pool);
                        super::upstream::health::spawn(&pool, wiring.events);
                        upstreams.push(pool);
                    }
                    Err(problem) => problems.push(problem),
                },
            }
        }
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let mut routes = Vec::with_capacity(listener.routes.len());
            for route in &listener.routes {
                let Some(upstream) = upstreams
                    .iter()
                    .find(|pool| pool.config.name == route.upstream())
                else {
                    problems.push(format!(
                        "route {}: no upstream named {:?}",
                        route.name,
                        route.upstream()
                    ));
                    continue;
                };
                let old = previous.and_then(|previous| previous.route(&route.name));
                match RoutePlan::build(route, upstream.clone(), old, wiring, now) {
                    Ok(plan) => routes.push(plan),
                    Err(problem) => problems.push(problem),
                }
            }
            let matchers = routes
                .iter()
                .map(|route| Matcher::new(&route.config.matcher))
                .collect();
            let tls = listener.tls.as_ref().and_then(|tls| {
                crate::tls::server_config(
                    Path::new(&tls.cert),
                    Path::new(&tls.key),
                    tls.client_ca.as_deref().map(Path::new),
                )
                .map(Arc::new)
                .map_err(|error| {
                    problems.push(format!("listener {}: tls: {error}", listener.name));
                })
                .ok()
            });
            listeners.push(ListenerPlan {
                name: listener.name.clone(),
                trust_forwarded: listener.trust_forwarded,
                tls,
                transparent: listener.transparent,
                limits: listener.limits.clone(),
                routes,
                matchers,
            });
        }
        if !problems.is_empty() {
            return Err(SnapshotError(problems));
        }
        let own_addresses = config
            .listeners
            .iter()
            .map(|listener| listener.listen)
            .chain([config.admin.listen])
            .collect();
        Ok(Snapshot {
            own_addresses,
            version,
            config: Arc::new(config),
            listeners,
            upstreams,
            no_route_metrics: Arc::new(wiring.metrics.route("")),
        })
    }

    /// The plan of the listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerPlan> {
        self.listeners.iter().find(|listener| listener.name == name)
    }

    /// The route named `name`, on any listener.
    pub fn route(&self, name: &str) -> Option<&RoutePlan> {
        self.routes().find(|route| &*route.name == name)
    }

    /// Every route, listener by listener.
    pub fn routes(&self) -> impl Iterator<Item = &RoutePlan> {
        self.listeners
            .iter()
            .flat_map(|listener| listener.routes.iter())
    }

    /// Whether a connection to `target` would reach breakwater itself
    /// (one of [`Snapshot::own_addresses`]), for a connection accepted on
    /// `local`: the same address, or the same port of a wildcard listener
    /// on a loopback address or the connection's own local address.
    pub fn is_own_address(&self, target: SocketAddr, local: SocketAddr) -> bool {
        self.own_addresses.iter().any(|own| {
            own.port() == target.port()
                && (own.ip() == target.ip()
                    || (own.ip().is_unspecified()
                        && (target.ip().is_loopback() || target.ip() == local.ip())))
        })
    }

    /// The pool of the upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamPool>> {
        self.upstreams.iter().find(|pool| pool.config.name == name)
    }
}

/// The policy crate's breaker settings for a route's `circuit_breaker:`.
fn breaker_config(config: &CircuitBreaker) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: config.consecutive_failures,
        failure_rate: config.failure_rate,
        slow_call_rate: config.slow_call_rate,
        slow_call_duration: config.slow_call_duration,
        window: match config.window {
            BreakerWindow::Count(size) => WindowConfig::Count(size),
            BreakerWindow::Time(size) => WindowConfig::Time(size),
        },
        minimum_calls: config.minimum_calls,
        open_duration: config.open_duration,
        open_backoff: config.open_backoff,
        max_open_duration: config.max_open_duration,
        half_open_max_calls: config.half_open_max_calls,
        half_open_successes: config.half_open_successes,
    }
}

// === impl RoutePlan ===

impl RoutePlan {
    fn build(
        route: &Route,
        upstream: Arc<UpstreamPool>,
        old: Option<&RoutePlan>,
        wiring: &Wiring<'_>,
        now: Instant,
    ) -> Result<RoutePlan, String> {
        // Each policy keeps its live state when its own settings are unchanged.
        let breaker = route.circuit_breaker.on().map(|settings| {
            old.filter(|old| old.config.circuit_breaker == route.circuit_breaker)
                .and_then(|old| old.breaker.clone())
                .unwrap_or_else(|| Arc::new(Breaker::new(breaker_config(settings), now)))
        });
        let bulkhead = route.bulkhead.on().map(|settings| {
            old.filter(|old| old.config.bulkhead == route.bulkhead)
                .and_then(|old| old.bulkhead.clone())
                .unwrap_or_else(|| {
                    Arc::new(if settings.adaptive {
                        Bulkhead::adaptive(
                            AdaptiveConfig::new(settings.min_concurrent, settings.max_concurrent),
                            settings.max_queue,
                            settings.queue_timeout,
                            now,
                        )
                    } else {
                        Bulkhead::new(
                            settings.max_concurrent,
                            settings.max_queue,
                            settings.queue_timeout,
                        )
                    })
                })
        });
        let rate_limiter = route.rate_limit.as_ref().map(|settings| {
            old.filter(|old| old.config.rate_limit == route.rate_limit)
                .and_then(|old| old.rate_limiter.clone())
                .unwrap_or_else(|| Arc::new(RateLimiter::new(settings.rps, settings.burst, now)))
        });
        let retry = &route.retry;
        let retry_budget = (retry.attempts > 1).then(|| {
            old.filter(|old| old.config.retry.budget == retry.budget)
                .and_then(|old| old.retry_budget.clone())
                .unwrap_or_else(|| {
                    Arc::new(RetryBudget::new(
                        retry.budget.ratio,
                        retry.budget.min_per_sec,
                        RETRY_BUDGET_WINDOW,
                        now,
                    ))
                })
        });
        let retry_plan = match &retry_budget {
            None => None,
            Some(budget) => {
                let backoff = Backoff::try_new(retry.backoff.base, retry.backoff.max)
                    .map_err(|error| format!("route {}: retry.backoff: {error}", route.name))?;
                Some(Arc::new(RetryPlan {
                    attempts: retry.attempts,
                    retry_on: retry.retry_on.clone(),
                    budget: budget.clone(),
                    backoff,
                }))
            }
        };

        let defaults = CircuitBreaker::default();
        let breaker_settings = route.circuit_breaker.on().unwrap_or(&defaults);
        let classifier = Arc::new(Classifier {
            failure_statuses: breaker_settings.failure_statuses.clone(),
            grpc_failure_statuses: breaker_settings
                .grpc_failure_statuses
                .iter()
                .copied()
                .collect(),
            slow_call_duration: breaker_settings.slow_call_duration,
        });
        let stale = route.stale_if_error.as_ref().map(|settings| {
            old.filter(|old| old.config.stale_if_error == route.stale_if_error)
                .and_then(|old| old.stale.clone())
                .unwrap_or_else(|| Arc::new(StaleStore::new(settings)))
        });
        let report = Arc::new(RouteReport::new(
            wiring.metrics,
            &route.name,
            wiring.events.clone(),
        ));
        let rescue = Arc::new(RouteRescue {
            fallback: route.fallback.clone(),
            stale: stale.clone(),
            report: report.clone(),
            sheds: wiring.sheds.clone(),
        });
        let fault = wiring.faults.route(&route.name);
        let stack = ServiceBuilder::new()
            .layer(RescueLayer::new(rescue))
            .layer(OverloadLayer::new(wiring.overload.clone()))
            .layer(MaintenanceLayer::new(upstream.gate().clone()))
            .layer(ReadinessLayer::new(upstream.clone()))
            .layer(RateLimitLayer::new(rate_limiter.clone(), report.clone()))
            .layer(DegradationLayer::new(
                wiring.degradation.clone(),
                route.priority,
            ))
            .layer(FaultLayer::new(
                fault.clone(),
                wiring
                    .metrics
                    .faults_injected
                    .with_label_values(&[&route.name, "delay"]),
                wiring
                    .metrics
                    .faults_injected
                    .with_label_values(&[&route.name, "abort"]),
                wiring.faults.injected_5xx.clone(),
            ))
            .layer(BreakerLayer::new(breaker.clone(), report.clone()))
            .layer(BulkheadLayer::new(bulkhead.clone(), report.clone()))
            .layer(TimeoutLayer::new(
                route.timeouts.request,
                breaker_settings.slow_call_duration,
            ))
            .layer(RetryLayer::new(
                retry_plan,
                report.clone(),
                wiring.degradation.clone(),
                route.priority,
            ))
            .service(Balance::new(
                upstream.clone(),
                classifier,
                route.timeouts.per_try,
                report.clone(),
            ));
        Ok(RoutePlan {
            name: Arc::from(route.name.as_str()),
            config: route.clone(),
            upstream,
            stack,
            metrics: Arc::new(wiring.metrics.route(&route.name)),
            report,
            breaker,
            bulkhead,
            rate_limiter,
            stale,
            fault,
            retry_budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Overrides};

    fn config() -> Config {
        load_str(
            "listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - {name: main, upstream: app, retry: {attempts: 3}}
upstreams:
  - {name: app, endpoints: [127.0.0.1:8080]}
",
            "test.yaml",
            &Overrides::default(),
        )
        .unwrap()
    }

    fn build(config: Config) -> Result<Snapshot, SnapshotError> {
        let metrics = Metrics::new().unwrap();
        let events = EventBus::new(8, metrics.events_total.clone(), Vec::new());
        let gates = Gates::default();
        let overload = Arc::new(OverloadFlag::default());
        let degradation = Arc::new(DegradationState::default());
        let sheds = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        let wiring = Wiring {
            metrics: &metrics,
            events: &events,
            gates: &gates,
            overload: &overload,
            degradation: &degradation,
            sheds: &sheds,
            faults: &faults,
        };
        Snapshot::build(config, 1, None, &wiring)
    }

    #[tokio::test]
    async fn a_valid_config_builds_every_route() {
        let snapshot = build(config()).unwrap();
        assert!(snapshot.route("main").is_some());
        assert!(snapshot.upstream("app").is_some());
    }

    #[tokio::test]
    async fn a_route_without_its_upstream_fails_the_build_instead_of_vanishing() {
        let mut config = config();
        config.listeners[0].routes[0].upstream = Some("gone".to_owned());
        let error = build(config).err().expect("the build must fail");
        assert_eq!(error.0, ["route main: no upstream named \"gone\""]);
    }

    #[tokio::test]
    async fn retry_settings_that_cannot_be_built_fail_the_build_instead_of_disabling_retries() {
        let mut config = config();
        let backoff = &mut config.listeners[0].routes[0].retry.backoff;
        backoff.base = Duration::from_millis(500);
        backoff.max = Duration::from_millis(10);
        let error = build(config).err().expect("the build must fail");
        assert!(
            error.0[0].starts_with("route main: retry.backoff"),
            "{error}"
        );
    }
}
