//! The life of one request, step by step (SPEC §2–§3).
//!
//! [`handle`] is called by hyper for every request on a downstream
//! connection. It loads the current snapshot once, routes, cleans headers,
//! runs the route's stack (whose top layer answers every refusal and
//! failure itself), and hands the response body the access log, which is
//! written — with the request's one classified outcome — when the body
//! really ends. A panic anywhere in it is caught here and answered 500.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONNECTION, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::{Body, Completion};
use super::headers::{self, Downstream, REQUEST_ID};
use super::layers::rescue::rescue;
use super::meta::{Conn, Flag};
use super::outcome::{CallError, End, EndReason, Outcome};
use super::reject::{self, Rejection, ReplyCx, StackError};
use super::route::{self, RequestFacts};
use super::upstream::endpoint::OriginalTarget;
use crate::config::OriginalDst;
use crate::metrics::RouteMetrics;
use crate::policy::overload::Level;

/// Serves one downstream request. A panic anywhere in it is caught here:
/// logged with the request id, counted, answered with a 500, and the
/// connection and process keep serving.
pub async fn handle(
    conn: Arc<Conn>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id =
        headers::client_request_id(request.headers()).unwrap_or_else(headers::new_request_id);
    // After an HTTP/1 upgrade request the guard stops framing the
    // connection, so unless the upgrade happens the connection must end.
    let version = request.version();
    let http1 = version <= Version::HTTP_11;
    let upgrade = headers::is_upgrade(request.headers());
    let http1_upgrade = http1 && upgrade;
    let client_closes = http1 && !headers::keeps_alive(request.version(), request.headers());
    let reply = ReplyCx::of(&request);
    let served = CatchUnwind {
        inner: serve(conn.clone(), request, request_id.clone(), upgrade, reply),
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
            conn.plane.metrics.panics_total.inc();
            tracing::error!(request_id = request_id.to_str().unwrap_or(""), panic = %message, "Panic while serving a request; answered 500.");
            let mut response = reject::reply(Rejection::Internal, reply);
            response
                .headers_mut()
                .insert(REQUEST_ID.clone(), request_id);
            response
        }
    };
    // The response speaks the client's connection's version, whatever the
    // upstream spoke (as nginx and Envoy do): an HTTP/1.0 upstream's
    // answer must not turn a keep-alive HTTP/1.1 client's connection into
    // an HTTP/1.0 one that closes. For HTTP/2 (h2c) hyper's server writes
    // frames and ignores the field; it is set for the log's sake.
    *response.version_mut() = version;
    // Past the first overload watermark, HTTP/1 connections close after
    // each response so idle clients give their buffers back.
    let stop_keep_alive = conn.plane.overload.level() >= Level::StopKeepAlive;
    let unframed = http1_upgrade || conn.flags.get(Flag::FramingStopped);
    let refused_upgrade = unframed && response.status() != StatusCode::SWITCHING_PROTOCOLS;
    if http1 && (stop_keep_alive || refused_upgrade) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if http1 && (client_closes || stop_keep_alive || unframed) {
        conn.flags.set(Flag::CloseAfter, true);
    }
    Ok(response)
}

async fn serve(
    conn: Arc<Conn>,
    request: Request<Incoming>,
    request_id: HeaderValue,
    upgrade: bool,
    reply: ReplyCx,
) -> Response<Body> {
    let start = Instant::now();
    let plane = &conn.plane;
    conn.activity.begin();
    plane.in_flight.fetch_add(1, Ordering::Relaxed);
    plane.requests.fetch_add(1, Ordering::Relaxed);
    let snapshot = plane.snapshot();
    let (mut parts, body) = request.into_parts();
    let mut log = RequestLog {
        conn: conn.clone(),
        start,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        request_id: request_id.clone(),
        metrics: snapshot.no_route_metrics.clone(),
        status: StatusCode::OK,
        done: false,
    };
    #[cfg(feature = "test-hooks")]
    test_hooks::maybe_panic(parts.uri.path());

    let listener = snapshot.listener(&conn.meta.listener);
    // The port the client connected to: the original destination's on a
    // transparent listener.
    let destination = conn.meta.original_dst.unwrap_or(conn.meta.local);
    let chosen = listener.and_then(|listener| {
        let facts = RequestFacts::new(&parts.method, &parts.uri, &parts.headers)
            .on_port(destination.port());
        route::select(&listener.matchers, &facts).and_then(|index| listener.routes.get(index))
    });
    let (Some(listener), Some(route)) = (listener, chosen) else {
        let mut response = reject::reply(Rejection::NoRoute, reply);
        response.body_mut().classify(Outcome::Rejected, None);
        return log.finish_with(response);
    };
    log.metrics = route.metrics.clone();
    if let Some(mode) = route.upstream.original_dst() {
        let target = match mode {
            OriginalDst::Loopback => SocketAddr::from((Ipv4Addr::LOCALHOST, destination.port())),
            OriginalDst::Address => destination,
        };
        if snapshot.is_own_address(target, conn.meta.local) {
            tracing::debug!(peer = %conn.meta.peer, %target, "Refused: the original destination is breakwater itself.");
            let mut response = reject::reply(Rejection::Loop, reply);
            response.body_mut().classify(Outcome::Rejected, None);
            return log.finish_with(response);
        }
        parts.extensions.insert(OriginalTarget(target));
    }

    // Headers: the upstream sees a clean, attributed request.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    let downstream = Downstream {
        peer: conn.meta.peer.ip(),
        proto: conn.meta.scheme,
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

    let served = route
        .stack
        .clone()
        .oneshot(Request::from_parts(parts, Body::downstream(body)))
        .await;
    let mut response = match served {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match (
            downstream_upgrade,
            response.extensions_mut().remove::<OnUpgrade>(),
        ) {
            (Some(downstream), Some(upstream)) => {
                tokio::spawn(tunnel(downstream, upstream, request_id));
            }
            _ => {
                response = rescue(StackError::Upstream(CallError::Reset), reply);
            }
        }
    }
    headers::strip_hop_by_hop(response.headers_mut(), switching);
    log.finish_with(response)
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    //! Fault injection for the tests of panic isolation, compiled only
    //! with the `test-hooks` feature: a request to exactly the path in
    //! `BREAKWATER_FAULT_PANIC_PATH` panics. Never in a release build.

    use std::sync::OnceLock;

    pub fn maybe_panic(path: &str) {
        static PATH: OnceLock<Option<String>> = OnceLock::new();
        let hooked = PATH.get_or_init(|| {
            std::env::var("BREAKWATER_FAULT_PANIC_PATH")
                .ok()
                .filter(|path| path.starts_with('/'))
        });
        if hooked.as_deref() == Some(path) {
            panic!("fault injection: BREAKWATER_FAULT_PANIC_PATH matched");
        }
    }
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
            tracing::debug!(%error, request_id = request_id.to_str().unwrap_or(""), "Upgrade failed.");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(error) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(%error, request_id = request_id.to_str().unwrap_or(""), "Upgraded connection ended with an error.");
    }
}

/// Everything the access log and metrics need once a response is over.
struct RequestLog {
    conn: Arc<Conn>,
    start: Instant,
    method: Method,
    uri: Uri,
    request_id: HeaderValue,
    metrics: Arc<RouteMetrics>,
    status: StatusCode,
    /// Set once finished, so a log dropped on any path (even a panic)
    /// still balances the in-flight counters exactly once.
    done: bool,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped before any response existed: the request panicked
        // (`handle` answers it with a 500), or the client went away.
        let outcome = if std::thread::panicking() {
            self.status = StatusCode::INTERNAL_SERVER_ERROR;
            Outcome::Rejected
        } else {
            self.status = Rejection::ClientGone.status_and_reason().0;
            Outcome::Cancelled
        };
        self.finish(&End {
            outcome,
            reason: EndReason::Dropped,
            upstream_elapsed: None,
            grpc_status: None,
        });
    }
}

impl RequestLog {
    /// Gives `response` the request id, and its body the log, to be
    /// written when it ends.
    fn finish_with(mut self, mut response: Response<Body>) -> Response<Body> {
        self.status = response.status();
        response
            .headers_mut()
            .insert(REQUEST_ID.clone(), self.request_id.clone());
        let mut log = self;
        response
            .body_mut()
            .complete_with(Completion::new(move |end| log.finish(end)));
        response
    }

    fn finish(&mut self, end: &End) {
        if self.done {
            return;
        }
        self.done = true;
        let seconds = self.start.elapsed().as_secs_f64();
        self.metrics
            .requests(self.status, end.outcome.as_str())
            .inc();
        if let Some(code) = end.grpc_status {
            self.metrics.grpc(code).inc();
        }
        self.metrics.request_duration.observe(seconds);
        if let Some(upstream) = end.upstream_elapsed {
            self.metrics
                .upstream_duration
                .observe(upstream.as_secs_f64());
        }
        tracing::info!(
            target: "breakwater::access",
            listener = &*self.conn.meta.listener,
            route = self.metrics.route.as_str(),
            method = self.method.as_str(),
            path = self.uri.path(),
            status = self.status.as_u16(),
            outcome = end.outcome.as_str(),
            grpc_status = end.grpc_status.map(crate::grpc::Code::number),
            duration_ms = millis(seconds),
            upstream_ms = end.upstream_elapsed.map(|d| millis(d.as_secs_f64())),
            client_closed = end.reason == EndReason::Dropped,
            request_id = self.request_id.to_str().unwrap_or(""),
            peer = %self.conn.meta.peer,
        );
        self.conn.activity.end();
        self.conn.plane.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Seconds as milliseconds with three decimals, for the log.
fn millis(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e3
}
