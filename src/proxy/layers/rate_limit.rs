//! A route's token bucket (SPEC §3.5) as a layer: a request that finds no
//! token gets 429 `rate-limited` with `retry-after` (until a token is back).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Decided;
use crate::policy::rate_limit::RateLimiter;
use crate::proxy::body::Body;
use crate::proxy::reject::{Rejection, StackError};
use crate::proxy::report::RouteReport;

/// Applies a route's token bucket.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<RateLimiter>>,
    report: Arc<RouteReport>,
}

impl RateLimitLayer {
    /// `limiter` is `None` when the route has no `rate_limit`.
    pub fn new(limiter: Option<Arc<RateLimiter>>, report: Arc<RouteReport>) -> Self {
        RateLimitLayer { limiter, report }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            report: self.report.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Option<Arc<RateLimiter>>,
    report: Arc<RouteReport>,
}

impl<S> Service<Request<Body>> for RateLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = Decided<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(limiter) = &self.limiter {
            if let Err(retry_after) = limiter.try_take(Instant::now()) {
                self.report.shed("rate_limited");
                return Decided::refuse(Rejection::RateLimited { retry_after });
            }
        }
        Decided::Running {
            inner: self.inner.call(request),
        }
    }
}
