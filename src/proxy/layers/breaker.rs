//! A route's circuit breaker (SPEC §3.1) as a layer.
//!
//! Admission asks the breaker for a ticket; refused → 503 `breaker-open`
//! with `retry-after` (time until a probe may go; none while an operator
//! holds it forced open). An admitted call's ticket is recorded with the
//! call's one classification: when the call failed without a response, at
//! once; otherwise the ticket rides in the response body's tail
//! ([`BreakerRecord`]) and is recorded when the body ends, so a half-open
//! probe holds its slot until its response is really over and an upstream
//! that breaks a body mid-stream counts as failing. A ticket dropped
//! unrecorded (the client went away) frees its probe slot and counts
//! nothing; so does a call the client's own failure ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Decided;
use crate::policy::breaker::{Breaker, BreakerState};
use crate::proxy::body::Body;
use crate::proxy::reject::{Rejection, StackError};
use crate::proxy::report::{BreakerRecord, RouteReport};

/// Applies a route's circuit breaker.
#[derive(Clone)]
pub struct BreakerLayer {
    breaker: Option<Arc<Breaker>>,
    report: Arc<RouteReport>,
}

impl BreakerLayer {
    /// `breaker` is `None` when the route has `circuit_breaker: false`.
    pub fn new(breaker: Option<Arc<Breaker>>, report: Arc<RouteReport>) -> Self {
        BreakerLayer { breaker, report }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;
    fn layer(&self, inner: S) -> BreakerService<S> {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            report: self.report.clone(),
        }
    }
}

/// See [`BreakerLayer`].
#[derive(Clone)]
pub struct BreakerService<S> {
    inner: S,
    breaker: Option<Arc<Breaker>>,
    report: Arc<RouteReport>,
}

impl<S> Service<Request<Body>> for BreakerService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(breaker) = &self.breaker else {
            return BreakerFuture {
                inner: Decided::Running {
                    inner: self.inner.call(request),
                },
                record: None,
            };
        };
        let now = Instant::now();
        match breaker.try_acquire(now) {
            Err(rejected) => {
                if let Some(transition) = breaker.advance(now) {
                    self.report.transition(transition);
                }
                self.report.shed("breaker_open");
                let retry_after =
                    (rejected.state != BreakerState::ForcedOpen).then_some(rejected.retry_after);
                BreakerFuture {
                    inner: Decided::refuse(Rejection::BreakerOpen { retry_after }),
                    record: None,
                }
            }
            Ok(ticket) => {
                if let Some(transition) = ticket.transition() {
                    self.report.transition(transition);
                }
                BreakerFuture {
                    inner: Decided::Running {
                        inner: self.inner.call(request),
                    },
                    record: Some(BreakerRecord::new(ticket, self.report.clone())),
                }
            }
        }
    }
}

pin_project! {
    /// Response future of [`BreakerService`]: hands the ticket to the
    /// response body, or records a failed call at once.
    pub struct BreakerFuture<F> {
        #[pin]
        inner: Decided<F>,
        record: Option<BreakerRecord>,
    }
}

impl<F> Future for BreakerFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.inner.poll(cx));
        if let Some(record) = this.record.take() {
            match &mut result {
                Ok(response) => response.body_mut().record_breaker(record),
                Err(StackError::Upstream(error)) => record.record(error.outcome()),
                // Refused further in (shed): says nothing about the upstream.
                Err(StackError::Rejected(_)) => drop(record),
            }
        }
        Poll::Ready(result)
    }
}
