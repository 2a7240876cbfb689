//! The rescue step at the top of every route stack: whatever failed below
//! — a policy's refusal, an upstream that could not answer, or one that
//! answered with a failure status — becomes the best reply the route can
//! still give (SPEC §4), decided here and nowhere else:
//!
//! 1. the last good answer to the same GET/HEAD, when the route keeps
//!    them (`stale_if_error`), with `age` and `x-breakwater-degraded: stale`;
//! 2. the route's `fallback`, if it answers for what went wrong, with
//!    `x-breakwater-degraded: fallback` (for a gRPC call, only a fallback
//!    with a `grpc_status`: an HTTP body is no answer to a gRPC client);
//! 3. breakwater's own reply for the refusal (`reject::reply`).
//!
//! Each carries `x-breakwater-reason` and its outcome in its body, so the
//! access log and metrics count it like any response. The same layer hands
//! a good GET answer's body a [`Capture`](crate::proxy::stale::Capture) for
//! the store. A request's context is taken before it goes down the stack.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{HeaderName, HeaderValue, AGE, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::config::policy::GrpcCode;
use crate::config::{Fallback, FallbackWhen};
use crate::grpc;
use crate::proxy::body::Body;
use crate::proxy::outcome::{CallError, Outcome};
use crate::proxy::reject::{self, Rejection, ReplyCx, StackError, REASON_HEADER};
use crate::proxy::report::RouteReport;
use crate::proxy::stale::{self, StaleEntry, StaleKey, StaleStore};

/// Header saying a reply is not the upstream's live answer.
pub const DEGRADED_HEADER: &str = "x-breakwater-degraded";

/// What one route can still answer with when its upstream cannot.
pub struct RouteRescue {
    /// The route's fallback, if it has one.
    pub fallback: Option<Fallback>,
    /// The route's stale-if-error store, if it keeps one.
    pub stale: Option<Arc<StaleStore>>,
    /// Where degraded replies are counted.
    pub report: Arc<RouteReport>,
    /// Requests shed by breakwater's own limits, process-wide (a signal of
    /// the automatic degradation level).
    pub sheds: Arc<AtomicU64>,
}

/// Turns the stack's failures into the best reply the route can give.
#[derive(Clone)]
pub struct RescueLayer {
    rescue: Arc<RouteRescue>,
}

impl RescueLayer {
    /// Rescues with `rescue`'s means.
    pub fn new(rescue: Arc<RouteRescue>) -> Self {
        RescueLayer { rescue }
    }
}

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue {
            inner,
            rescue: self.rescue.clone(),
        }
    }
}

/// See [`RescueLayer`].
#[derive(Clone)]
pub struct Rescue<S> {
    inner: S,
    rescue: Arc<RouteRescue>,
}

/// A GET/HEAD on a route that keeps stale copies: its key, the copy kept
/// for it now, and the request headers a new copy would be kept under.
struct StaleCx {
    key: StaleKey,
    kept: Option<Arc<StaleEntry>>,
    headers: HeaderMap,
}

impl<S> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The layers below are always ready (they decide per call).
        let _ = ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let stale = self.rescue.stale.as_ref().and_then(|store| {
            let key = StaleStore::key_of(&request)?;
            let kept = store.lookup(&key, request.headers(), Instant::now());
            Some(Box::new(StaleCx {
                key,
                kept,
                headers: request.headers().clone(),
            }))
        });
        RescueFuture {
            reply: ReplyCx::of(&request),
            inner: self.inner.call(request),
            rescue: self.rescue.clone(),
            stale,
        }
    }
}

pin_project! {
    /// Response future of [`Rescue`].
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        reply: ReplyCx,
        rescue: Arc<RouteRescue>,
        stale: Option<Box<StaleCx>>,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let rescue = &**this.rescue;
        let stale = this.stale.take();
        Poll::Ready(Ok(match result {
            Ok(response) => rescue.answered(response, *this.reply, stale),
            Err(error) => rescue.failed(error, *this.reply, stale),
        }))
    }
}

// === impl RouteRescue ===

impl RouteRescue {
    /// The upstream answered: keep a good answer, replace a failed one.
    fn answered(
        &self,
        mut response: Response<Body>,
        reply: ReplyCx,
        stale: Option<Box<StaleCx>>,
    ) -> Response<Body> {
        let outcome = response.body().outcome();
        if matches!(outcome, Outcome::Http5xx | Outcome::GrpcError) {
            let kept = stale.and_then(|stale| stale.kept);
            let reason = "upstream-error";
            if let Some(entry) = kept {
                return self.stale_reply(&entry, reply, reason, outcome);
            }
            if let Some(fallback) = self.fallback_for(FallbackWhen::UpstreamFailure, reply) {
                return self.fallback_reply(fallback, reply, reason, outcome);
            }
            return response;
        }
        if let (Some(stale), Some(store)) = (stale, &self.stale) {
            let stale = *stale;
            if let Some(capture) = store.capture(stale.key, &stale.headers, &response) {
                response.body_mut().capture_into(capture);
            }
        }
        response
    }

    /// Nothing came back: the stale copy, the fallback, or breakwater's
    /// own reply.
    fn failed(
        &self,
        error: StackError,
        reply: ReplyCx,
        stale: Option<Box<StaleCx>>,
    ) -> Response<Body> {
        let outcome = match error {
            StackError::Rejected(_) => Outcome::Rejected,
            StackError::Upstream(error) => error.outcome(),
        };
        let rejection = error.rejection();
        if matches!(
            rejection,
            Rejection::Shed
                | Rejection::Overload
                | Rejection::UpstreamQueueFull
                | Rejection::UpstreamQueueTimeout
        ) {
            self.sheds.fetch_add(1, Ordering::Relaxed);
        }
        let (_, reason) = rejection.status_and_reason();
        if let Some(why) = fallback_when(error) {
            let kept = stale.and_then(|stale| stale.kept);
            if let (Some(entry), true) = (kept, why != FallbackWhen::RateLimited) {
                return self.stale_reply(&entry, reply, reason, outcome);
            }
            if let Some(fallback) = self.fallback_for(why, reply) {
                return self.fallback_reply(fallback, reply, reason, outcome);
            }
        }
        if rejection == Rejection::Degraded {
            self.report.degraded("level");
        }
        let mut response = reject::reply(rejection, reply);
        response.body_mut().classify(outcome, None);
        response
    }

    /// The route's fallback, if it answers for `why` — and, for a gRPC
    /// call, has a `grpc_status` to answer with.
    fn fallback_for(&self, why: FallbackWhen, reply: ReplyCx) -> Option<&Fallback> {
        self.fallback
            .as_ref()
            .filter(|fallback| fallback.answers(why))
            .filter(|fallback| !reply.grpc || fallback.grpc_status.is_some())
    }

    fn fallback_reply(
        &self,
        fallback: &Fallback,
        reply: ReplyCx,
        reason: &'static str,
        outcome: Outcome,
    ) -> Response<Body> {
        self.report.degraded("fallback");
        if let (true, Some(code)) = (reply.grpc, fallback.grpc_status) {
            return grpc_fallback(fallback, code, reason, outcome);
        }
        let mut response = Response::new(if reply.head {
            Body::empty()
        } else {
            Body::full(fallback.body.clone())
        });
        *response.status_mut() =
            StatusCode::from_u16(fallback.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let headers = response.headers_mut();
        for (name, value) in &fallback.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        if let Ok(content_type) = HeaderValue::from_str(&fallback.content_type) {
            headers.insert(CONTENT_TYPE, content_type);
        }
        if reply.head {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(fallback.body.len()));
        }
        headers.insert(DEGRADED_HEADER, HeaderValue::from_static("fallback"));
        headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
        response.body_mut().classify(outcome, None);
        response
    }

    fn stale_reply(
        &self,
        entry: &StaleEntry,
        reply: ReplyCx,
        reason: &'static str,
        outcome: Outcome,
    ) -> Response<Body> {
        self.report.degraded("stale");
        let mut response = Response::new(if reply.head {
            Body::empty()
        } else {
            Body::full(entry.body.clone())
        });
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        let headers = response.headers_mut();
        headers.insert(
            AGE,
            HeaderValue::from(stale::age(entry, Instant::now()).as_secs()),
        );
        headers.insert(DEGRADED_HEADER, HeaderValue::from_static("stale"));
        headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
        response.body_mut().classify(outcome, None);
        response
    }
}

/// A gRPC call's fallback: `code` trailers-only, or with `ok` the
/// fallback's body as the call's one message and `grpc-status: 0` in the
/// trailers.
fn grpc_fallback(
    fallback: &Fallback,
    code: GrpcCode,
    reason: &'static str,
    outcome: Outcome,
) -> Response<Body> {
    let mut response = if code == GrpcCode::OK {
        let mut trailers = HeaderMap::new();
        trailers.insert(grpc::GRPC_STATUS.clone(), HeaderValue::from_static("0"));
        let mut response =
            Response::new(Body::with_trailers(grpc::frame(&fallback.body), trailers));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        response
    } else {
        reject::grpc_reply(code, reason)
    };
    let headers = response.headers_mut();
    for (name, value) in &fallback.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(DEGRADED_HEADER, HeaderValue::from_static("fallback"));
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
    let body = response.body_mut();
    body.classify(outcome, None);
    body.set_grpc_status(code);
    response
}

/// What a failure is, in the words a fallback answers for; `None` for the
/// client's own failures, which get no stand-in.
fn fallback_when(error: StackError) -> Option<FallbackWhen> {
    Some(match error {
        StackError::Rejected(rejection) => match rejection {
            Rejection::BreakerOpen { .. } => FallbackWhen::BreakerOpen,
            Rejection::Shed
            | Rejection::Overload
            | Rejection::UpstreamQueueFull
            | Rejection::UpstreamQueueTimeout => FallbackWhen::Shed,
            Rejection::RateLimited { .. } => FallbackWhen::RateLimited,
            Rejection::Degraded => FallbackWhen::Degraded,
            Rejection::Starting | Rejection::NeedsIntervention => FallbackWhen::Unavailable,
            Rejection::Maintenance => FallbackWhen::Maintenance,
            Rejection::Timeout => FallbackWhen::Timeout,
            Rejection::UpstreamUnavailable | Rejection::UpstreamReset => {
                FallbackWhen::UpstreamFailure
            }
            // An injected abort is meant to reach the caller as it is.
            Rejection::FaultAbort { .. }
            | Rejection::Loop
            | Rejection::NoRoute
            | Rejection::BadRequestBody
            | Rejection::ClientGone
            | Rejection::Internal => return None,
        },
        StackError::Upstream(error) => match error {
            CallError::Timeout => FallbackWhen::Timeout,
            CallError::Connect | CallError::ConnectTimeout | CallError::Reset => {
                FallbackWhen::UpstreamFailure
            }
            CallError::QueueFull | CallError::QueueTimeout => FallbackWhen::Shed,
            // The client's own failure or deadline: no stand-in helps.
            CallError::ClientGone | CallError::ClientMalformed | CallError::Deadline => {
                return None
            }
        },
    })
}

/// breakwater's own reply for a failed stack call, without the route's
/// stand-ins (for a request that has no route's stack).
pub fn rescue(error: StackError, reply: ReplyCx) -> Response<Body> {
    let outcome = match error {
        StackError::Rejected(_) => Outcome::Rejected,
        StackError::Upstream(error) => error.outcome(),
    };
    let mut response = reject::reply(error.rejection(), reply);
    response.body_mut().classify(outcome, None);
    response
}
