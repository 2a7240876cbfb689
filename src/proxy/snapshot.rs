//! A config snapshot compiled for the data plane.
//!
//! A [`Snapshot`] is immutable. It is built on the side from a validated
//! [`Config`] and published with one `ArcSwap` store; a request loads it
//! once and keeps that `Arc` to its end, so a reload never changes the
//! rules under a request in flight. Upstream pools whose config did not
//! change are carried over, so a reload keeps warm connections.

use std::sync::Arc;

use tower::Layer;

use super::forward::{Forward, UpstreamPool};
use super::route::Matcher;
use super::timeout::{RequestTimeout, RequestTimeoutLayer};
use crate::config::{Config, Limits, Route};
use crate::metrics::{Metrics, RouteMetrics};

/// The tower stack every route runs, innermost last. Part 2 adds the SPEC
/// §3 policies here in order: rate limit → degradation gate → breaker →
/// bulkhead → (retries around) timeout → forward.
pub type RouteStack = RequestTimeout<Forward>;

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

/// A compiled route.
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
}

impl Snapshot {
    /// Compiles `config`, reusing pools from `previous` where unchanged.
    pub fn build(
        config: Config,
        version: u64,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Snapshot {
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
                    .unwrap_or_else(|| Arc::new(UpstreamPool::new(upstream)))
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
                        let stack = RequestTimeoutLayer::new(route.timeouts.request)
                            .layer(Forward::new(upstream.clone()));
                        Some(RoutePlan {
                            name: Arc::from(route.name.as_str()),
                            config: route.clone(),
                            upstream,
                            stack,
                            metrics: Arc::new(metrics.route(&route.name)),
                        })
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
}
