//! A config snapshot compiled for the data plane.
//!
//! A [`Snapshot`] is immutable. It is built on the side from a validated
//! [`Config`] and published with one `ArcSwap` store; a request loads it
//! once and keeps that `Arc` to its end, so a reload never changes the
//! rules under a request in flight.
//!
//! What a reload keeps: upstream pools whose config did not change (warm
//! connections, endpoint health, ejections), and per route each policy
//! whose settings did not change — breaker state, bulkhead slots in use,
//! rate-limit tokens, retry budget (SPEC §8.2).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::Layer;

use super::forward::UpstreamPool;
use super::layers::{
    BreakerLayer, BreakerService, BulkheadLayer, BulkheadService, RateLimit, RateLimitLayer,
    RouteReport,
};
use super::outcome::Classifier;
use super::route::Matcher;
use super::timeout::{RequestTimeout, RequestTimeoutLayer};
use super::upstream::{CallPlan, RetryPlan, UpstreamCall};
use crate::config::policy::{BreakerWindow, CircuitBreaker};
use crate::config::{Config, Limits, Route};
use crate::events::EventBus;
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::backoff::Backoff;
use crate::policy::breaker::{Breaker, BreakerConfig};
use crate::policy::bulkhead::Bulkhead;
use crate::policy::rate_limit::RateLimiter;
use crate::policy::retry_budget::RetryBudget;
use crate::policy::window::WindowConfig;

/// The tower stack every route runs, outermost first, in SPEC §3 order:
/// rate limit → circuit breaker → bulkhead → request timeout → upstream
/// call (per-try timeout, retries). Part 4's degradation gate goes
/// between the rate limit and the breaker.
pub type RouteStack = RateLimit<BreakerService<BulkheadService<RequestTimeout<UpstreamCall>>>>;

/// How long the retry budget remembers requests.
const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

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
}

/// What one listener does with a request.
pub struct ListenerPlan {
    /// Listener name.
    pub name: String,
    /// Keep client `x-forwarded-proto`/`-host`.
    pub trust_forwarded: bool,
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
    /// The policy stack.
    pub stack: RouteStack,
    /// Pre-resolved metric handles.
    pub metrics: Arc<RouteMetrics>,
    /// How responses are classified (failure statuses, slow calls).
    pub classifier: Arc<Classifier>,
    /// Where policy metrics and events go.
    pub report: Arc<RouteReport>,
    /// The breaker, unless `circuit_breaker: false`.
    pub breaker: Option<Arc<Breaker>>,
    /// The bulkhead, unless `bulkhead: false`.
    pub bulkhead: Option<Arc<Bulkhead>>,
    /// The token bucket, when `rate_limit` is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    retry_budget: Option<Arc<RetryBudget>>,
}

impl Snapshot {
    /// Compiles `config`, reusing pools and policy state from `previous`
    /// where their settings are unchanged.
    pub fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
        events: &Arc<EventBus>,
    ) -> Snapshot {
        let now = Instant::now();
        let upstreams: Vec<Arc<UpstreamPool>> = config
            .upstreams
            .iter()
            .map(|upstream| {
                previous
                    .and_then(|previous| {
                        previous
                            .upstreams
                            .iter()
                            .find(|pool| pool.config == *upstream)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        let pool = Arc::new(UpstreamPool::new(upstream));
                        super::health::spawn(&pool, events);
                        pool
                    })
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|listener| {
                let routes: Vec<RoutePlan> = listener
                    .routes
                    .iter()
                    .filter_map(|route| {
                        let position = config
                            .upstreams
                            .iter()
                            .position(|u| u.name == route.upstream)?;
                        let upstream = upstreams.get(position)?.clone();
                        let old = previous.and_then(|previous| previous.route(&route.name));
                        Some(RoutePlan::build(route, upstream, old, metrics, events, now))
                    })
                    .collect();
                let matchers = routes
                    .iter()
                    .map(|route| Matcher::new(&route.config.matcher))
                    .collect();
                ListenerPlan {
                    name: listener.name.clone(),
                    trust_forwarded: listener.trust_forwarded,
                    limits: listener.limits.clone(),
                    routes,
                    matchers,
                }
            })
            .collect();
        Snapshot {
            version,
            config: Arc::new(config),
            listeners,
            upstreams,
            no_route_metrics: Arc::new(metrics.route("")),
        }
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

impl RoutePlan {
    fn build(
        route: &Route,
        upstream: Arc<UpstreamPool>,
        old: Option<&RoutePlan>,
        metrics: &Metrics,
        events: &Arc<EventBus>,
        now: Instant,
    ) -> RoutePlan {
        let name: Arc<str> = Arc::from(route.name.as_str());
        // Each policy keeps its live state when its own settings are unchanged.
        let same =
            |pick: fn(&Route) -> String| old.is_some_and(|old| pick(&old.config) == pick(route));
        let breaker = route.circuit_breaker.on().map(|settings| {
            match old
                .and_then(|old| old.breaker.clone())
                .filter(|_| same(|r| format!("{:?}", r.circuit_breaker)))
            {
                Some(kept) => kept,
                None => Arc::new(Breaker::new(breaker_config(settings), now)),
            }
        });
        let bulkhead = route.bulkhead.on().map(|settings| {
            match old
                .and_then(|old| old.bulkhead.clone())
                .filter(|_| same(|r| format!("{:?}", r.bulkhead)))
            {
                Some(kept) => kept,
                None => Arc::new(Bulkhead::new(
                    settings.max_concurrent,
                    settings.max_queue,
                    settings.queue_timeout,
                )),
            }
        });
        let rate_limiter = route.rate_limit.as_ref().map(|settings| {
            match old
                .and_then(|old| old.rate_limiter.clone())
                .filter(|_| same(|r| format!("{:?}", r.rate_limit)))
            {
                Some(kept) => kept,
                None => Arc::new(RateLimiter::new(settings.rps, settings.burst, now)),
            }
        });
        let retry = &route.retry;
        let retry_budget = (retry.attempts > 1).then(|| {
            match old
                .and_then(|old| old.retry_budget.clone())
                .filter(|_| same(|r| format!("{:?}", r.retry.budget)))
            {
                Some(kept) => kept,
                None => Arc::new(RetryBudget::new(
                    retry.budget.ratio,
                    retry.budget.min_per_sec,
                    RETRY_BUDGET_WINDOW,
                    now,
                )),
            }
        });

        let defaults = CircuitBreaker::default();
        let breaker_settings = route.circuit_breaker.on().unwrap_or(&defaults);
        let classifier = Arc::new(Classifier {
            failure_statuses: breaker_settings.failure_statuses.clone(),
            slow_call_duration: breaker_settings.slow_call_duration,
        });
        let report = Arc::new(metrics.route_report(&route.name, events.clone()));
        let retry_plan = retry_budget.clone().and_then(|budget| {
            Some(RetryPlan {
                attempts: retry.attempts,
                retry_on: retry.retry_on.clone(),
                budget,
                backoff: Backoff::try_new(retry.backoff.base, retry.backoff.max).ok()?,
            })
        });
        let plan = Arc::new(CallPlan {
            per_try: route.timeouts.per_try,
            retry: retry_plan,
            classifier: classifier.clone(),
            report: report.clone(),
        });
        let call = UpstreamCall::new(upstream.clone(), plan);
        let timed = RequestTimeoutLayer::new(route.timeouts.request).layer(call);
        let bulkheaded = BulkheadLayer::new(bulkhead.clone(), report.clone()).layer(timed);
        let broken = BreakerLayer::new(
            breaker.clone().map(|b| (b, classifier.clone())),
            report.clone(),
        )
        .layer(bulkheaded);
        let stack = RateLimitLayer::new(rate_limiter.clone(), report.clone()).layer(broken);
        RoutePlan {
            name,
            config: route.clone(),
            upstream,
            stack,
            metrics: Arc::new(metrics.route(&route.name)),
            classifier,
            report,
            breaker,
            bulkhead,
            rate_limiter,
            retry_budget,
        }
    }
}
