//! One try: choose an endpoint, send, classify, and account for it.
//!
//! [`UpstreamPool`] is one upstream as the data plane sees it for one
//! config version: its primary and backup [`Endpoint`]s, their passive
//! health, and its [`UpstreamGate`] (readiness and failover, which outlive
//! reloads). [`UpstreamPool::pick`] chooses round robin among the
//! available primaries, avoiding the endpoint a retry just failed on when
//! another is available. When no primary is available — ejected,
//! unhealthy, or its supervised process down — or the upstream is failed
//! over (SPEC §5.4), the backups take the traffic; with none available
//! either it falls back to all primaries, since refusing every request is
//! worse than trying a doubtful endpoint (Envoy's "panic threshold").
//! Endpoint indices run over the primaries first, then the backups.
//!
//! [`Balance`] is the service at the bottom of every route stack: one try
//! per call, within the route's `per_try` timeout. It classifies the try
//! once — by status (a gRPC call by its `grpc-status`, now or when its
//! trailers come) and the try's own time to response headers — and
//! hands the response body a [`TryRecord`] so the try is counted when the
//! body ends; a try without a response is counted at once. A gRPC call
//! with a deadline tells the upstream, in its `grpc-timeout`, the time the
//! client has left at the moment this try goes out. When the
//! client broke its own request body, the try ends as the client's
//! failure, which nothing counts against the endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

use super::connect::{Connect, UpstreamTls};
use super::endpoint::Endpoint;
use super::http1::PoolLimits;
use super::passive::{PassiveHealth, TryRecord};
use crate::config::{OriginalDst, Upstream};
use crate::events::EventBus;
use crate::grpc;
use crate::policy::outlier::{OutlierConfig, OutlierDetector};
use crate::proxy::body::Body;
use crate::proxy::gate::UpstreamGate;
use crate::proxy::layers::timeout::Deadline;
use crate::proxy::outcome::{CallError, Classifier, GrpcHead};
use crate::proxy::reject::StackError;
use crate::proxy::report::RouteReport;

/// Endpoints, their health and the gate of one upstream.
pub struct UpstreamPool {
    /// The config this pool was built from; a reload reuses the pool (with
    /// its warm connections and endpoint health) when the new config is equal.
    pub config: Upstream,
    endpoints: Vec<Endpoint>,
    backup: Vec<Endpoint>,
    /// The TLS client every endpoint dials with, when `tls:` is set.
    tls: Option<Arc<UpstreamTls>>,
    next: AtomicUsize,
    gate: Arc<UpstreamGate>,
    health: Arc<PassiveHealth>,
}

// === impl UpstreamPool ===

impl UpstreamPool {
    /// Builds the pool for `config`. The endpoints were validated by the
    /// config loader; one that does not parse is an error here.
    pub fn new(
        config: &Upstream,
        gate: Arc<UpstreamGate>,
        events: Arc<EventBus>,
    ) -> Result<Self, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|endpoint| {
                    endpoint.parse::<Authority>().map_err(|_| {
                        format!(
                            "upstream {}: endpoint {endpoint:?} is not host:port",
                            config.name
                        )
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let mut primaries = parse(&config.endpoints)?;
        if config.original_dst.is_some() {
            primaries = vec![Authority::from_static(crate::config::ORIGINAL_DST_UPSTREAM)];
        }
        let backups = parse(&config.backup)?;
        let tls = config
            .tls
            .as_ref()
            .map(|tls| {
                UpstreamTls::load(tls)
                    .map(Arc::new)
                    .map_err(|error| format!("upstream {}: tls: {error}", config.name))
            })
            .transpose()?;
        let mut connect = Connect::new(config.connect_timeout);
        if let Some(tls) = &tls {
            connect = connect.with_tls(tls.clone());
        }
        let outlier = config.outlier_detection.on().map(|outlier| {
            OutlierDetector::with_spare(
                OutlierConfig {
                    consecutive_failures: outlier.consecutive_failures,
                    base_ejection_time: outlier.base_ejection_time,
                    max_ejection_percent: outlier.max_ejection_percent,
                },
                primaries.len(),
                // With backups, even the last failing primary may be
                // ejected: its traffic spills to the backups instead of
                // retrying a dead endpoint.
                !backups.is_empty(),
            )
        });
        let health = Arc::new(PassiveHealth::new(
            &config.name,
            primaries.clone(),
            outlier,
            gate.clone(),
            events,
        ));
        let limits = pool_limits(config);
        let endpoint = |authority: Authority| Endpoint::new(authority, &connect, limits);
        let endpoints = match config.original_dst {
            Some(_) => vec![Endpoint::original_dst(&connect, limits)],
            None => primaries.into_iter().map(endpoint).collect(),
        };
        Ok(UpstreamPool {
            config: config.clone(),
            endpoints,
            backup: backups.into_iter().map(endpoint).collect(),
            tls,
            next: AtomicUsize::new(0),
            gate,
            health,
        })
    }

    /// Where requests go when the upstream has `original_dst`: each to
    /// where its connection was going, mapped by this mode.
    pub fn original_dst(&self) -> Option<OriginalDst> {
        self.config.original_dst
    }

    /// Reads the upstream's TLS files again for the next dial (a reload
    /// that kept this pool); connections already open keep theirs.
    pub fn reload_tls(&self) -> Result<(), String> {
        match (&self.tls, &self.config.tls) {
            (Some(client), Some(config)) => client
                .reload(config)
                .map_err(|error| format!("upstream {}: tls: {error}", self.config.name)),
            _ => Ok(()),
        }
    }

    /// The upstream's gate (readiness, failover, try counts).
    pub fn gate(&self) -> &Arc<UpstreamGate> {
        &self.gate
    }

    /// The upstream's passive health.
    pub fn health(&self) -> &Arc<PassiveHealth> {
        &self.health
    }

    /// The endpoint at `index` (primaries first, then backups).
    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.endpoints
            .get(index)
            .or_else(|| self.backup.get(index.checked_sub(self.endpoints.len())?))
    }

    /// Primary endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Backup endpoints.
    pub fn backup(&self) -> &[Endpoint] {
        &self.backup
    }

    /// Every endpoint, primaries first, with its index.
    pub fn all_endpoints(&self) -> impl Iterator<Item = (usize, &Endpoint)> {
        self.endpoints.iter().chain(&self.backup).enumerate()
    }

    /// Whether endpoint `index` may take traffic now.
    pub fn is_available(&self, index: usize, now: Instant) -> bool {
        let Some(endpoint) = self.endpoint(index) else {
            return false;
        };
        if !endpoint.is_healthy() {
            return false;
        }
        if index < self.endpoints.len() {
            self.gate.is_ready() && self.health.is_available(index, now)
        } else {
            true
        }
    }

    /// Whether endpoint `index` is a primary ejected by outlier detection.
    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        index < self.endpoints.len() && !self.health.is_available(index, now)
    }

    /// Whether some backup endpoint could take traffic now.
    pub fn has_available_backup(&self, now: Instant) -> bool {
        (0..self.backup.len()).any(|offset| self.is_available(self.endpoints.len() + offset, now))
    }

    /// The next endpoint: round robin over available primaries (or backups
    /// when failed over or no primary is available), avoiding `avoid` when
    /// another is available.
    pub fn pick(&self, avoid: Option<usize>, now: Instant) -> Option<usize> {
        let n_primary = self.endpoints.len();
        let n_backup = self.backup.len();
        if n_primary == 1 && n_backup == 0 {
            return Some(0);
        }
        // A retry takes the endpoint after the one that failed, leaving the
        // shared counter alone, so retries do not fall into step with the
        // rotation and land every request's first try on the same endpoint.
        let start = match avoid {
            Some(failed) => failed + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let primaries =
            move || (0..n_primary).map(move |offset| (start + offset) % n_primary.max(1));
        let backups =
            move || (0..n_backup).map(move |offset| n_primary + (start + offset) % n_backup.max(1));
        let usable = |index: &usize| Some(*index) != avoid && self.is_available(*index, now);
        if !self.gate.is_failed_over() {
            if let Some(index) = primaries().find(usable) {
                return Some(index);
            }
        }
        backups()
            .find(usable)
            .or_else(|| primaries().find(usable))
            .or_else(|| {
                backups()
                    .chain(primaries())
                    .find(|&index| self.is_available(index, now))
            })
            .or_else(|| primaries().find(|&index| Some(index) != avoid))
            .or_else(|| primaries().next())
            .or_else(|| backups().next())
    }

    /// Sends `request` to endpoint `index`.
    pub async fn send(
        &self,
        index: usize,
        request: Request<Body>,
    ) -> Result<Response<Body>, CallError> {
        let endpoint = self.endpoint(index).ok_or(CallError::Connect)?;
        endpoint.send(request, self.config.protocol).await
    }

    /// A plain GET of `path` with no body, for the active health check.
    pub async fn probe(&self, index: usize, path: &str) -> Result<Response<Body>, CallError> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = path.parse().map_err(|_| CallError::Connect)?;
        if let Some(endpoint) = self.endpoint(index) {
            if let Ok(host) = http::HeaderValue::from_str(endpoint.authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        self.send(index, request).await
    }
}

/// Each endpoint's connection limits from `upstreams[].connections`.
fn pool_limits(config: &Upstream) -> PoolLimits {
    let connections = &config.connections;
    PoolLimits {
        max_connections: connections.max_connections,
        max_connecting: connections.max_connecting,
        max_pending: connections.max_pending,
        pending_timeout: connections.pending_timeout,
    }
}

/// Which endpoint the previous try of a request went to, so the next one
/// goes elsewhere. Carried in each retried try's request extensions.
#[derive(Clone, Debug, Default)]
pub struct TryContext(Arc<AtomicUsize>);

const NO_ENDPOINT: usize = usize::MAX;

impl TryContext {
    /// A context for a request's first try.
    pub fn new() -> Self {
        TryContext(Arc::new(AtomicUsize::new(NO_ENDPOINT)))
    }

    /// The endpoint the previous try went to.
    pub fn last_endpoint(&self) -> Option<usize> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&index| index != NO_ENDPOINT)
    }

    /// Notes the endpoint this try goes to.
    pub fn set_last_endpoint(&self, index: usize) {
        self.0.store(index, Ordering::Relaxed);
    }
}

/// The bottom of a route stack: one try at one endpoint.
#[derive(Clone)]
pub struct Balance {
    pool: Arc<UpstreamPool>,
    classifier: Arc<Classifier>,
    per_try: Option<Duration>,
    report: Arc<RouteReport>,
}

impl Balance {
    /// Tries `pool`'s endpoints, classifying with `classifier`, each try
    /// within `per_try` when set; sheds are counted in `report`.
    pub fn new(
        pool: Arc<UpstreamPool>,
        classifier: Arc<Classifier>,
        per_try: Option<Duration>,
        report: Arc<RouteReport>,
    ) -> Self {
        Balance {
            pool,
            classifier,
            per_try,
            report,
        }
    }
}

type TryFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, StackError>> + Send>>;

impl Service<Request<Body>> for Balance {
    type Response = Response<Body>;
    type Error = StackError;
    type Future = TryFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> TryFuture {
        Box::pin(try_once(self.clone(), request))
    }
}

async fn try_once(
    balance: Balance,
    mut request: Request<Body>,
) -> Result<Response<Body>, StackError> {
    let Balance {
        pool,
        classifier,
        per_try,
        report,
    } = balance;
    let context = request.extensions_mut().remove::<TryContext>();
    let avoid = context.as_ref().and_then(TryContext::last_endpoint);
    let start = Instant::now();
    let Some(index) = pool.pick(avoid, start) else {
        return Err(StackError::Upstream(CallError::Connect));
    };
    if let Some(context) = &context {
        context.set_last_endpoint(index);
    }
    if let Some(deadline) = request.extensions().get::<Deadline>().copied() {
        let remaining = deadline.remaining(start);
        if remaining.is_zero() {
            return Err(StackError::Upstream(deadline.expired));
        }
        request
            .headers_mut()
            .insert(grpc::GRPC_TIMEOUT.clone(), grpc::encode_timeout(remaining));
    }
    let client = request.body_mut().watch_client();
    let sent = pool.send(index, request);
    let result = match per_try {
        Some(limit) => tokio::time::timeout(limit, sent)
            .await
            .unwrap_or(Err(CallError::Timeout)),
        None => sent.await,
    };
    let end = Instant::now();
    let elapsed = end.saturating_duration_since(start);
    match result {
        Ok(mut response) => {
            let (outcome, grpc) = classifier.head(response.status(), response.headers(), elapsed);
            let body = response.body_mut();
            body.classify(outcome, Some(elapsed));
            match grpc {
                GrpcHead::None => {}
                GrpcHead::Ended(code) => body.set_grpc_status(code),
                GrpcHead::Pending(failures) => body.await_grpc_status(failures),
            }
            body.record_try(TryRecord::new(pool.health.clone(), index));
            if let Some(client) = client {
                body.watch_request(client);
            }
            Ok(response)
        }
        Err(error) => {
            // The client breaking its own body ends the try as its failure.
            let error = client.and_then(|fault| fault.get()).unwrap_or(error);
            match error {
                CallError::QueueFull => report.shed("upstream_queue_full"),
                CallError::QueueTimeout => report.shed("upstream_queue_timeout"),
                _ => {}
            }
            pool.health.record(index, error.outcome(), end);
            Err(StackError::Upstream(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_try_context_remembers_the_last_endpoint() {
        let context = TryContext::new();
        assert_eq!(context.last_endpoint(), None);
        context.clone().set_last_endpoint(2);
        assert_eq!(context.last_endpoint(), Some(2));
    }
}
