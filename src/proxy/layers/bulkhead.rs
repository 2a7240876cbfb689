//! A route's bulkhead (SPEC §3.2) as a layer: a slot is taken before the
//! upstream call and moved into the response body, which frees it when the
//! response is over — or when the client goes away. Full, with a full
//! queue or after `queue_timeout` → 503 `shed`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::policy::bulkhead::{Bulkhead, BulkheadPermit, Shed};
use crate::proxy::body::Body;
use crate::proxy::outcome::CallError;
use crate::proxy::reject::{Rejection, StackError};
use crate::proxy::report::RouteReport;

/// Applies a route's bulkhead.
#[derive(Clone)]
pub struct BulkheadLayer {
    bulkhead: Option<Arc<Bulkhead>>,
    report: Arc<RouteReport>,
}

impl BulkheadLayer {
    /// `bulkhead` is `None` when the route has `bulkhead: false`.
    pub fn new(bulkhead: Option<Arc<Bulkhead>>, report: Arc<RouteReport>) -> Self {
        BulkheadLayer { bulkhead, report }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> BulkheadService<S> {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            report: self.report.clone(),
        }
    }
}

/// See [`BulkheadLayer`].
#[derive(Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Option<Arc<Bulkhead>>,
    report: Arc<RouteReport>,
}

type BoxResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, StackError>> + Send>>;

pin_project! {
    /// Response future of [`BulkheadService`]: the common cases (no
    /// bulkhead, or a permit at once) without an allocation; waiting in
    /// the queue, or shed, boxed.
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    #[project = BulkheadProject]
    pub enum BulkheadFuture<F> {
        /// No bulkhead, or the permit was taken at once (held until the
        /// response, then moved into its body).
        Direct { #[pin] call: F, permit: Option<BulkheadPermit> },
        /// Queued or shed.
        Boxed { future: BoxResponseFuture },
    }
}

impl<F> Future for BulkheadFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BulkheadProject::Direct { call, permit } => {
                let mut result = std::task::ready!(call.poll(cx));
                if let Some(permit) = permit.take() {
                    settle(&mut result, permit);
                }
                Poll::Ready(result)
            }
            BulkheadProject::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}

/// Moves the permit into the response body (freed when the response
/// ends), or frees it now; a timeout tells an adaptive limit how long the
/// upstream kept the request.
fn settle(result: &mut Result<Response<Body>, StackError>, permit: BulkheadPermit) {
    match result {
        Ok(response) => response.body_mut().hold_permit(permit),
        Err(StackError::Upstream(CallError::Timeout)) => permit.timed_out(),
        Err(_) => {}
    }
}

impl<S> Service<Request<Body>> for BulkheadService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = BulkheadFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(bulkhead) = &self.bulkhead else {
            return BulkheadFuture::Direct {
                call: self.inner.call(request),
                permit: None,
            };
        };
        let report = self.report.clone();
        let waiting = match bulkhead.try_acquire() {
            Ok(permit) => {
                return BulkheadFuture::Direct {
                    call: self.inner.call(request),
                    permit: Some(permit),
                };
            }
            Err(Shed::Full) if bulkhead.max_queue() > 0 => bulkhead.acquire(),
            Err(shed) => {
                report.shed(shed.as_str());
                return BulkheadFuture::Boxed {
                    future: Box::pin(std::future::ready(Err(StackError::Rejected(
                        Rejection::Shed,
                    )))),
                };
            }
        };
        let mut inner = self.inner.clone();
        let future = Box::pin(async move {
            match waiting.await {
                Ok(permit) => {
                    let mut result = inner.call(request).await;
                    settle(&mut result, permit);
                    result
                }
                Err(shed) => {
                    report.shed(shed.as_str());
                    Err(StackError::Rejected(Rejection::Shed))
                }
            }
        });
        BulkheadFuture::Boxed { future }
    }
}
