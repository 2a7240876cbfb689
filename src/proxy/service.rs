//! The life of one request, step by step (SPEC §2–§3).
//!
//! [`handle`] is called by hyper for every request on a downstream
//! connection. It loads the current snapshot once, routes, cleans headers,
//! runs the route's tower stack (policies, timeout, forward), and turns the
//! result into a response whose body reports back when it really ends —
//! that is when the access-log line is written and the duration observed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::{Body, Completion, EndReason};
use super::headers::{self, Downstream, REQUEST_ID};
use super::outcome::Outcome;
use super::reject::{Rejection, StackError};
use super::route::{self, RequestFacts};
use crate::metrics::RouteMetrics;
use crate::overload::Level;
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
    /// Set by the guard when it stopped framing this HTTP/1 connection
    /// after an upgrade request: unless the upgrade happens, the
    /// connection must close after the response.
    pub framing_stopped: std::sync::atomic::AtomicBool,
    /// Set when this HTTP/1 connection must end after the current
    /// response: the client asked for it, breakwater answered
    /// `connection: close`, or the connection is being upgraded. Such a
    /// connection is never parked.
    pub close_after: std::sync::atomic::AtomicBool,
    /// Set while the connection loop parks an idle HTTP/1 connection: the
    /// guard then keeps the socket open when hyper shuts its side down.
    pub parking: std::sync::atomic::AtomicBool,
}

/// Counts requests on one connection so an idle one can be closed, and
/// wakes the connection loop when the last one in flight ends.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Bumped at every request start and end.
    generation: AtomicU64,
    quiet: tokio::sync::Notify,
}

impl Activity {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        if before == 1 {
            self.quiet.notify_one();
        }
    }

    /// Resolves after the last request in flight ended (at once if that
    /// happened since the previous call).
    pub async fn quiet(&self) {
        self.quiet.notified().await;
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

/// Serves one downstream request. A panic anywhere in it is caught here:
/// logged with the request id, counted, answered with a 500, and the
/// connection and process keep serving.
pub async fn handle(
    context: Arc<ConnContext>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id =
        headers::client_request_id(request.headers()).unwrap_or_else(headers::new_request_id);
    // After an HTTP/1 upgrade request the guard stops framing the
    // connection, so unless the upgrade happens the connection must end.
    let http1 = request.version() <= Version::HTTP_11;
    let upgrade = headers::is_upgrade(request.headers());
    let http1_upgrade = http1 && upgrade;
    let client_closes = http1 && !headers::keeps_alive(request.version(), request.headers());
    let served = CatchUnwind {
        inner: serve(context.clone(), request, request_id.clone(), upgrade),
    }
    .await;
    let mut response = match served {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            context.state.metrics.panics_total.inc();
            tracing::error!(request_id = request_id.to_str().unwrap_or(""), panic = %message, "Panic while serving a request; answered 500.");
            let mut response =
                Response::new(Body::full("{\"error\":\"internal\",\"status\":500}\n"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(
                super::reject::REASON_HEADER,
                HeaderValue::from_static("internal"),
            );
            response
                .headers_mut()
                .insert(REQUEST_ID.clone(), request_id);
            response
        }
    };
    // Past the first overload watermark, HTTP/1 connections close after
    // each response so idle clients give their buffers back.
    let stop_keep_alive = context.state.overload.level() >= Level::StopKeepAlive;
    let unframed = http1_upgrade || context.framing_stopped.load(Ordering::Acquire);
    let refused_upgrade = unframed && response.status() != StatusCode::SWITCHING_PROTOCOLS;
    if http1 && (stop_keep_alive || refused_upgrade) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if http1 && (client_closes || stop_keep_alive || unframed) {
        context.close_after.store(true, Ordering::Relaxed);
    }
    Ok(response)
}

async fn serve(
    context: Arc<ConnContext>,
    request: Request<Incoming>,
    request_id: HeaderValue,
    upgrade: bool,
) -> Response<Body> {
    let start = Instant::now();
    context.activity.begin();
    context.state.in_flight.fetch_add(1, Ordering::Relaxed);
    context.state.requests.fetch_add(1, Ordering::Relaxed);
    let snapshot = context.state.snapshot();
    let (mut parts, body) = request.into_parts();
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
        done: false,
    };
    if context.state.fault_panic_path.as_deref() == Some(parts.uri.path()) {
        panic!("fault injection: BREAKWATER_FAULT_PANIC_PATH matched");
    }

    if context.state.overload.level() == Level::Shed {
        return log.reject(Rejection::Overload);
    }

    let listener = snapshot.listener(&context.listener);
    let chosen = listener.and_then(|listener| {
        let facts = RequestFacts::new(&parts.method, &parts.uri, &parts.headers);
        route::select(&listener.matchers, &facts).and_then(|index| listener.routes.get(index))
    });
    let (Some(listener), Some(route)) = (listener, chosen) else {
        return log.reject(Rejection::NoRoute);
    };
    let mut log = log;
    log.metrics = route.metrics.clone();
    // While the supervised process (re)starts, its routes wait with 503
    // starting — unless a backup can take the request.
    if let Some(supervisor) = context.state.supervisor.get() {
        let down = !supervisor.ready.load(std::sync::atomic::Ordering::Acquire);
        if down
            && supervisor.upstream == route.config.upstream
            && !route.upstream.has_available_backup(start)
        {
            return log.reject(Rejection::Starting);
        }
    }

    // Headers: the upstream sees a clean, attributed request.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
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
    log.upstream_seconds = Some(upstream_seconds);

    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            log.outcome = match error {
                StackError::Upstream(error) => error.outcome(),
                StackError::Rejected(_) => Outcome::Rejected,
            };
            return log.reject(error.rejection());
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
                log.outcome = Outcome::Reset;
                return log.reject(Rejection::UpstreamReset);
            }
        }
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), request_id);
    log.status = status;
    log.outcome = route
        .classifier
        .response(status.as_u16(), Duration::from_secs_f64(upstream_seconds));
    response.map(|body| body.with_completion(log.into_completion()))
}

pin_project_lite::pin_project! {
    /// Runs a future, turning a panic inside it into an `Err`.
    struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
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
    /// Set once finished, so a log dropped on any path (even a panic)
    /// still balances the in-flight counters exactly once.
    done: bool,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before any response existed: the request panicked
            // (`handle` answers it with a 500), or the client went away.
            if std::thread::panicking() {
                self.status = StatusCode::INTERNAL_SERVER_ERROR;
                self.outcome = Outcome::Rejected;
            } else {
                self.status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
                self.outcome = Outcome::Cancelled;
            }
        }
        self.finish(EndReason::Dropped);
    }
}

impl RequestLog {
    /// breakwater's own answer for `rejection`, logged like any response.
    fn reject(mut self, rejection: Rejection) -> Response<Body> {
        let mut response = rejection.into_response();
        response
            .headers_mut()
            .insert(REQUEST_ID.clone(), self.request_id.clone());
        self.status = response.status();
        response.map(|body| body.with_completion(self.into_completion()))
    }

    fn into_completion(self) -> Completion {
        let mut log = self;
        Completion::new(move |reason| log.finish(reason))
    }

    fn finish(&mut self, reason: EndReason) {
        if self.done {
            return;
        }
        self.done = true;
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
