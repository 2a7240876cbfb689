//! The rescue step at the top of every route stack: whatever failed below
//! — a policy's refusal, an upstream that could not answer — becomes
//! breakwater's own reply here, built by `reject::reply` with the
//! request's [`ReplyCx`]. The reply carries its outcome in its body
//! (`rejected`, or the failed call's class), so the access log and metrics
//! read it like any other response's.
//!
//! Fallback responses and stale copies (SPEC §4) will be chosen here: this
//! is the one place that knows both the request and why it failed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::proxy::body::Body;
use crate::proxy::outcome::Outcome;
use crate::proxy::reject::{self, ReplyCx, StackError};

/// Turns the stack's errors into replies.
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

/// See [`RescueLayer`].
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
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
        RescueFuture {
            reply: ReplyCx::of(&request),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`Rescue`].
    pub struct RescueFuture<F> {
        #[pin]
        inner: F,
        reply: ReplyCx,
    }
}

impl<F> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(Ok(match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => rescue(error, *this.reply),
        }))
    }
}

/// breakwater's reply for a failed stack call.
pub fn rescue(error: StackError, reply: ReplyCx) -> Response<Body> {
    let outcome = match error {
        StackError::Rejected(_) => Outcome::Rejected,
        StackError::Upstream(error) => error.outcome(),
    };
    let mut response = reject::reply(error.rejection(), reply);
    response.body_mut().classify(outcome, None);
    response
}
