//! Fault injection (SPEC §12): chaos for the route's callers.
//!
//! While the route has a fault on ([`RouteFault`], set from config or the
//! admin port, always with an end), each request is aborted with the
//! fault's share — refused with [`Rejection::FaultAbort`], which
//! `reject.rs` turns into the reply with `x-breakwater-fault: abort` like
//! every reply breakwater makes (so a gRPC-shaped reply there covers
//! injected aborts too) — or else delayed with the delay's share, then
//! sent on, its response marked `x-breakwater-fault: delay`. The dice are
//! breakwater's own: no request header can trigger or steer a fault.
//!
//! Where it sits: after the rate limit and the degradation gate, before
//! the circuit breaker. After the rate limit, so an experiment does not
//! let callers past their quota and a refused request is not also
//! faulted; before the breaker, so an injected abort never reaches the
//! breaker's window, the retries, outlier detection or the supervisor's
//! error rate — they all live below — and an injected delay is spent
//! before the request takes a bulkhead slot or starts its request timeout
//! (the upstream's latency, which the breaker judges, is not inflated).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::proxy::body::Body;
use crate::proxy::faults::RouteFault;
use crate::proxy::reject::{Rejection, StackError, FAULT_HEADER};

/// What the layer needs: the route's fault slot and its counters.
#[derive(Clone)]
pub struct FaultLayer {
    fault: Arc<RouteFault>,
    delayed: IntCounter,
    aborted: IntCounter,
    injected_5xx: Arc<AtomicU64>,
}

impl FaultLayer {
    /// Injects `fault`'s faults, counting them in `delayed` and `aborted`
    /// (and 5xx aborts in `injected_5xx`).
    pub fn new(
        fault: Arc<RouteFault>,
        delayed: IntCounter,
        aborted: IntCounter,
        injected_5xx: Arc<AtomicU64>,
    ) -> Self {
        FaultLayer {
            fault,
            delayed,
            aborted,
            injected_5xx,
        }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultGate<S>;
    fn layer(&self, inner: S) -> FaultGate<S> {
        FaultGate {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`FaultLayer`].
#[derive(Clone)]
pub struct FaultGate<S> {
    inner: S,
    layer: FaultLayer,
}

/// A delayed request: the sleep, then the rest of the stack.
type Delayed = Pin<Box<dyn Future<Output = Result<Response<Body>, StackError>> + Send>>;

/// Whether a `percent` chance came up.
fn roll(percent: f64) -> bool {
    percent > 0.0 && rand::random::<f64>() * 100.0 < percent
}

impl<S> Service<Request<Body>> for FaultGate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = FaultFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(fault) = self.layer.fault.active(Instant::now()) else {
            return FaultFuture::Pass {
                inner: self.inner.call(request),
            };
        };
        if let Some(abort) = fault.spec.abort.as_ref().filter(|a| roll(a.percent)) {
            self.layer.aborted.inc();
            let status =
                StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            if status.is_server_error() {
                self.layer.injected_5xx.fetch_add(1, Ordering::Relaxed);
            }
            return FaultFuture::Aborted {
                rejection: Some(Rejection::FaultAbort {
                    status,
                    grpc_status: abort.grpc_status,
                }),
            };
        }
        if let Some(delay) = fault.spec.delay.as_ref().filter(|d| roll(d.percent)) {
            self.layer.delayed.inc();
            let duration = delay.duration;
            // The request goes on through a clone of the stack below, made
            // ready again after the sleep; only delayed requests allocate.
            let inner = self.inner.clone();
            return FaultFuture::Delayed {
                delayed: Box::pin(async move {
                    tokio::time::sleep(duration).await;
                    let mut response = inner.oneshot(request).await?;
                    response
                        .headers_mut()
                        .insert(FAULT_HEADER, HeaderValue::from_static("delay"));
                    Ok(response)
                }),
            };
        }
        FaultFuture::Pass {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The fault layer's future.
    #[project = FaultProject]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    pub enum FaultFuture<F> {
        /// No fault this time: the stack below runs.
        Pass { #[pin] inner: F },
        /// Aborted (the refusal is taken when polled).
        Aborted { rejection: Option<Rejection> },
        /// Delayed, then the stack below.
        Delayed { delayed: Delayed },
    }
}

impl<F> Future for FaultFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FaultProject::Pass { inner } => inner.poll(cx),
            FaultProject::Aborted { rejection } => Poll::Ready(Err(StackError::Rejected(
                rejection.take().unwrap_or(Rejection::Internal),
            ))),
            FaultProject::Delayed { delayed } => delayed.as_mut().poll(cx),
        }
    }
}
