//! The request timeout as a tower layer (SPEC §3.3): no response headers
//! within `timeouts.request` → [`CallError::Timeout`] → 504. It wraps
//! the upstream side, so it bounds all tries and backoffs together.
//!
//! The deadline covers connecting too: a request never waits longer than
//! its route allows, whatever the upstream does. When it fires the inner
//! future is dropped, which cancels the upstream request.
//!
//! A gRPC call's `grpc-timeout` caps it: the call gets the shorter of the
//! two, and the [`Deadline`] it carries down the stack lets each try tell
//! the upstream how much of the client's time is left, so deadlines shrink
//! hop by hop instead of starting over. When the client's deadline is the
//! one that runs out, it counts against the upstream only if it was at
//! least the route's `slow_call_duration`: a client that asks for less
//! than the route itself calls slow gets `DEADLINE_EXCEEDED`, but cannot
//! open the breaker for everyone else by asking for the impossible.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::grpc;
use crate::proxy::outcome::CallError;
use crate::proxy::reject::StackError;

/// The client's own deadline for a gRPC call, carried in the request's
/// extensions to every try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When the client stops waiting.
    pub at: Instant,
    /// What running out of it is: [`CallError::Timeout`] when it counts
    /// against the upstream, [`CallError::Deadline`] when it does not.
    pub expired: CallError,
}

impl Deadline {
    /// The time left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }
}

/// Applies a [`RequestTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
    slow_call_duration: Duration,
}

impl TimeoutLayer {
    /// A layer that fails requests whose response takes longer than
    /// `timeout`, or than a gRPC client's deadline; a client deadline
    /// shorter than `slow_call_duration` is the client's own.
    pub fn new(timeout: Duration, slow_call_duration: Duration) -> Self {
        TimeoutLayer {
            timeout,
            slow_call_duration,
        }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            layer: *self,
        }
    }
}

/// A service whose responses must arrive within a fixed time.
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    layer: TimeoutLayer,
}

impl<S, B> Service<Request<B>> for RequestTimeout<S>
where
    S: Service<Request<B>, Error = StackError>,
{
    type Response = S::Response;
    type Error = StackError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let now = Instant::now();
        let mut limit = self.layer.timeout;
        let mut expired = CallError::Timeout;
        if let Some(budget) = client_deadline(&request) {
            let deadline = Deadline {
                at: now + budget,
                expired: if budget >= self.layer.slow_call_duration {
                    CallError::Timeout
                } else {
                    CallError::Deadline
                },
            };
            if budget < limit {
                limit = budget;
                expired = deadline.expired;
            }
            request.extensions_mut().insert(deadline);
        }
        TimeoutFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep_until(now + limit),
            expired,
        }
    }
}

/// A gRPC call's `grpc-timeout`, if it has a valid one.
fn client_deadline<B>(request: &Request<B>) -> Option<Duration> {
    let value = request.headers().get(&grpc::GRPC_TIMEOUT)?;
    grpc::is_grpc(request.headers())
        .then(|| grpc::parse_timeout(value))
        .flatten()
}

pin_project! {
    /// Response future of [`RequestTimeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        expired: CallError,
    }
}

impl<F, T> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, StackError>>,
{
    type Output = Result<T, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(StackError::Upstream(*this.expired))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{service_fn, ServiceExt};

    use super::*;

    fn request(delay_ms: u64, grpc_timeout: Option<&str>) -> Request<u64> {
        let mut request = Request::new(delay_ms);
        if let Some(timeout) = grpc_timeout {
            let headers = request.headers_mut();
            headers.insert("content-type", "application/grpc".parse().unwrap());
            headers.insert("grpc-timeout", timeout.parse().unwrap());
        }
        request
    }

    fn layer() -> impl Service<
        Request<u64>,
        Response = Option<Deadline>,
        Error = StackError,
        Future = impl Future<Output = Result<Option<Deadline>, StackError>>,
    > + Clone {
        let slow = service_fn(|request: Request<u64>| async move {
            tokio::time::sleep(Duration::from_millis(*request.body())).await;
            Ok::<_, StackError>(request.extensions().get::<Deadline>().copied())
        });
        TimeoutLayer::new(Duration::from_secs(2), Duration::from_millis(500)).layer(slow)
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn slow_responses_time_out_and_fast_ones_pass() {
        let service = layer();
        assert_eq!(service.clone().oneshot(request(1000, None)).await, Ok(None));
        assert_eq!(
            service.oneshot(request(3000, None)).await,
            Err(StackError::Upstream(CallError::Timeout))
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_grpc_deadline_caps_the_timeout_and_rides_down_the_stack() {
        let service = layer();
        let start = Instant::now();
        let passed = service.clone().oneshot(request(100, Some("1S"))).await;
        let deadline = passed.unwrap().expect("the deadline is carried down");
        assert_eq!(deadline.at, start + Duration::from_secs(1));
        assert_eq!(deadline.expired, CallError::Timeout);
        // Past a deadline of at least slow_call_duration: a timeout.
        assert_eq!(
            service.clone().oneshot(request(1500, Some("1000m"))).await,
            Err(StackError::Upstream(CallError::Timeout))
        );
        // Past a shorter one: the client's own deadline.
        let start = Instant::now();
        assert_eq!(
            service.clone().oneshot(request(1500, Some("200m"))).await,
            Err(StackError::Upstream(CallError::Deadline))
        );
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        // A longer deadline leaves the route's timeout in charge.
        assert_eq!(
            service.clone().oneshot(request(3000, Some("1M"))).await,
            Err(StackError::Upstream(CallError::Timeout))
        );
        // A malformed one is ignored.
        assert_eq!(service.oneshot(request(1000, Some("soon"))).await, Ok(None));
    }
}
