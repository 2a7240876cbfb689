//! The life of one request, step by step (SPEC §2–§3).
//!
//! [`handle`] is called by hyper for every request on a downstream
//! connection. It loads the current snapshot once, routes, cleans headers,
//! runs the route's tower stack (policies, timeout, forward), and turns the
//! result into a response whose body reports back when it really ends —
//! that is when the access-log line is written and the duration observed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::{Body, Completion, EndReason};
use super::headers::{self, Downstream, REQUEST_ID};
use super::outcome::Outcome;
use super::reject::Rejection;
use super::route::{self, RequestFacts};
use crate::metrics::RouteMetrics;
use crate::state::State;

/// Per-connection context shared by the requests on it.
pub struct ConnContext {
    /// Process state.
    pub state: Arc<State>,
    /// Name of the listener that accepted the connection.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Request activity, read by the idle-timeout watcher.
    pub activity: Activity,
}

/// Counts requests on one connection so an idle one can be closed.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Bumped at every request start and end.
    generation: AtomicU64,
}

impl Activity {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A token that changes whenever a request starts or ends, and whether
    /// the connection has no request in flight.
    pub fn observe(&self) -> (u64, bool) {
        (
            self.generation.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed) == 0,
        )
    }
}

/// Serves one downstream request.
pub async fn handle(
    context: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    context.activity.begin();
    context.state.in_flight.fetch_add(1, Ordering::Relaxed);
    let snapshot = context.state.snapshot();
    let (mut parts, body) = request.into_parts();
    let request_id =
        headers::client_request_id(&parts.headers).unwrap_or_else(headers::new_request_id);
    let log = RequestLog {
        context: context.clone(),
        start,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        request_id: request_id.clone(),
        metrics: snapshot.no_route_metrics.clone(),
        status: StatusCode::OK,
        outcome: Outcome::Rejected,
        upstream_seconds: None,
    };

    let listener = snapshot.listener(&context.listener);
    let chosen = listener.and_then(|listener| {
        let facts = RequestFacts::new(&parts.method, &parts.uri, &parts.headers);
        route::select(&listener.matchers, &facts).and_then(|index| listener.routes.get(index))
    });
    let (Some(listener), Some(route)) = (listener, chosen) else {
        return Ok(log.reject(Rejection::NoRoute));
    };
    let log = RequestLog {
        metrics: route.metrics.clone(),
        ..log
    };

    // Headers: the upstream sees a clean, attributed request.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    let upgrade = headers::is_upgrade(&parts.headers);
    let downstream = Downstream {
        peer: context.peer.ip(),
        proto: context.proto,
        host: host.as_ref(),
        trust_forwarded: listener.trust_forwarded,
    };
    headers::sanitize_request(&mut parts.headers, upgrade, downstream);
    if let Some(host) = host {
        parts.headers.entry(HOST).or_insert(host);
    }
    parts.headers.insert(REQUEST_ID.clone(), request_id.clone());
    let downstream_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };

    let sent_at = Instant::now();
    let result = route
        .stack
        .clone()
        .oneshot(Request::from_parts(parts, Body::incoming(body)))
        .await;
    let upstream_seconds = sent_at.elapsed().as_secs_f64();

    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            let log = RequestLog {
                outcome: error.outcome(),
                upstream_seconds: Some(upstream_seconds),
                ..log
            };
            return Ok(log.reject(Rejection::from(error)));
        }
    };
    route.metrics.upstream_duration.observe(upstream_seconds);
    let status = response.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match (
            downstream_upgrade,
            response.extensions_mut().remove::<OnUpgrade>(),
        ) {
            (Some(downstream), Some(upstream)) => {
                tokio::spawn(tunnel(downstream, upstream, log.request_id.clone()));
            }
            _ => {
                let log = RequestLog {
                    outcome: Outcome::Reset,
                    ..log
                };
                return Ok(log.reject(Rejection::UpstreamReset));
            }
        }
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id);
    let log = RequestLog {
        status,
        outcome: Outcome::of_status(status.as_u16()),
        upstream_seconds: Some(upstream_seconds),
        ..log
    };
    Ok(response.map(|body| Body::incoming(body).with_completion(log.into_completion())))
}

/// Copies bytes both ways between an upgraded client and upstream
/// connection until either side closes.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, request_id: HeaderValue) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, request_id = ?request_id, "Upgrade failed.");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(%error, request_id = ?request_id, "Upgraded connection ended with an error.");
    }
}

/// Everything the access log and metrics need once a response is over.
struct RequestLog {
    context: Arc<ConnContext>,
    start: Instant,
    method: Method,
    uri: Uri,
    request_id: HeaderValue,
    metrics: Arc<RouteMetrics>,
    status: StatusCode,
    outcome: Outcome,
    upstream_seconds: Option<f64>,
}

impl RequestLog {
    /// breakwater's own answer for `rejection`, logged like any response.
    fn reject(self, rejection: Rejection) -> Response<Body> {
        let mut response = rejection.into_response();
        response
            .headers_mut()
            .insert(REQUEST_ID.clone(), self.request_id.clone());
        let log = RequestLog {
            status: response.status(),
            ..self
        };
        response.map(|body| body.with_completion(log.into_completion()))
    }

    fn into_completion(self) -> Completion {
        Completion::new(move |reason| self.finish(reason))
    }

    fn finish(self, reason: EndReason) {
        let seconds = self.start.elapsed().as_secs_f64();
        let outcome = match (reason, self.outcome) {
            (EndReason::Error, Outcome::Success | Outcome::Http5xx) => Outcome::Reset,
            (_, outcome) => outcome,
        };
        self.metrics.requests(self.status, outcome.as_str()).inc();
        self.metrics.request_duration.observe(seconds);
        tracing::info!(
            target: "breakwater::access",
            listener = &*self.context.listener,
            route = self.metrics.route.as_str(),
            method = self.method.as_str(),
            path = self.uri.path(),
            status = self.status.as_u16(),
            outcome = outcome.as_str(),
            duration_ms = seconds * 1e3,
            upstream_ms = self.upstream_seconds.map(|s| s * 1e3),
            client_closed = reason == EndReason::Dropped,
            request_id = self.request_id.to_str().unwrap_or(""),
            peer = %self.context.peer,
        );
        self.context.activity.end();
        self.context.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
