//! The request timeout as a tower layer (SPEC §3.3): no response headers
//! within `timeouts.request` → [`CallError::Timeout`] → 504. It wraps
//! the upstream side, so it bounds all tries and backoffs together.
//!
//! The deadline covers connecting too: a request never waits longer than
//! its route allows, whatever the upstream does. When it fires the inner
//! future is dropped, which cancels the upstream request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::proxy::outcome::CallError;
use crate::proxy::reject::StackError;

/// Applies a [`RequestTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// A layer that fails requests whose response takes longer than `timeout`.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// A service whose responses must arrive within a fixed time.
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> Service<R> for RequestTimeout<S>
where
    S: Service<R, Error = StackError>,
{
    type Response = S::Response;
    type Error = StackError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        TimeoutFuture {
            inner: self.inner.call(request),
            sleep: tokio::time::sleep(self.timeout),
        }
    }
}

pin_project! {
    /// Response future of [`RequestTimeout`].
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
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
            Poll::Ready(()) => Poll::Ready(Err(StackError::Upstream(CallError::Timeout))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use tower::{service_fn, ServiceExt};

    use super::*;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn slow_responses_time_out_and_fast_ones_pass() {
        let slow = service_fn(|delay: Duration| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, StackError>("done")
        });
        let service = TimeoutLayer::new(Duration::from_secs(2)).layer(slow);
        assert_eq!(
            service.clone().oneshot(Duration::from_secs(1)).await,
            Ok("done")
        );
        assert_eq!(
            service.oneshot(Duration::from_secs(3)).await,
            Err(StackError::Upstream(CallError::Timeout))
        );
    }
}
