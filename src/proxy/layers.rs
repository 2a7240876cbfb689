//! The SPEC §3 policies as tower layers, outermost first:
//!
//! | layer | policy type | refuses with |
//! | --- | --- | --- |
//! | [`RateLimitLayer`] | `policy::rate_limit::RateLimiter` | 429 `rate-limited` |
//! | [`BreakerLayer`] | `policy::breaker::Breaker` | 503 `breaker-open` |
//! | [`BulkheadLayer`] | `policy::bulkhead::Bulkhead` | 503 `shed` |
//!
//! Each is a thin adapter: read the clock once, ask the policy, and either
//! refuse with a [`Rejection`] or call the next layer. Decisions live in
//! `policy/`; what a decision means on the wire lives in `reject.rs`;
//! metrics and events for transitions go through [`RouteReport`]. Under
//! them sits the upstream call (`upstream.rs`: per-try timeout, retries).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus::{IntCounter, IntCounterVec};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::body::Body;
use super::outcome::{Classifier, Outcome};
use super::reject::{Rejection, StackError};
use crate::events::{EventBus, Severity};
use crate::policy::breaker::{Breaker, BreakerTicket, CallResult, Transition};
use crate::policy::bulkhead::{Bulkhead, Shed};
use crate::policy::rate_limit::RateLimiter;

/// What the layers of one route report to: its name, metric handles and
/// the event counter.
pub struct RouteReport {
    /// Route name.
    pub route: Arc<str>,
    /// `breakwater_circuit_breaker_transitions_total{route,to}`.
    pub transitions: IntCounterVec,
    /// `breakwater_shed_total{route,reason}`.
    pub shed: IntCounterVec,
    /// Where events go.
    pub events: Arc<EventBus>,
    /// `breakwater_retries_total{route}`.
    pub retries: IntCounter,
    /// `breakwater_retry_budget_exhausted_total`.
    pub budget_exhausted: IntCounter,
}

impl RouteReport {
    /// Counts and announces a breaker transition.
    pub fn transition(&self, transition: Transition) {
        self.transitions
            .with_label_values(&[&*self.route, transition.to.as_str()])
            .inc();
        let severity = match transition.to.as_str() {
            "open" | "forced_open" => Severity::Warning,
            _ => Severity::Info,
        };
        self.events.emit(
            "breaker",
            &self.route,
            severity,
            &format!(
                "{} -> {} ({:?})",
                transition.from.as_str(),
                transition.to.as_str(),
                transition.reason
            ),
        );
    }

    fn shed(&self, reason: &str) {
        self.shed.with_label_values(&[&*self.route, reason]).inc();
    }
}

/// The breaker's view of a call's end, from the route's [`Classifier`].
fn call_result(
    classifier: &Classifier,
    result: &Result<Response<Body>, StackError>,
    elapsed: Duration,
) -> CallResult {
    match result {
        Ok(response) => match classifier.response(response.status().as_u16(), elapsed) {
            Outcome::Success => CallResult::Success,
            Outcome::Slow => CallResult::Slow,
            _ => CallResult::Failure,
        },
        Err(StackError::Upstream(_)) => CallResult::Failure,
        // Refused further in (shed): says nothing about the upstream.
        Err(StackError::Rejected(_)) => CallResult::Ignored,
    }
}

pin_project! {
    /// A layer's future: refused at once (the refusal is taken when
    /// polled), or the next layer's call running.
    #[project = DecidedProject]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    pub enum Decided<F> {
        /// Refused without calling the inner service.
        Refused { rejection: Option<Rejection> },
        /// The inner call.
        Running { #[pin] inner: F },
    }
}

impl<F> Future for Decided<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DecidedProject::Refused { rejection } => Poll::Ready(Err(StackError::Rejected(
                rejection.take().unwrap_or(Rejection::Shed),
            ))),
            DecidedProject::Running { inner } => inner.poll(cx),
        }
    }
}

// === rate limit ===

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
                return Decided::Refused {
                    rejection: Some(Rejection::RateLimited { retry_after }),
                };
            }
        }
        Decided::Running {
            inner: self.inner.call(request),
        }
    }
}

// === circuit breaker ===

/// Applies a route's circuit breaker.
#[derive(Clone)]
pub struct BreakerLayer {
    breaker: Option<(Arc<Breaker>, Arc<Classifier>)>,
    report: Arc<RouteReport>,
}

impl BreakerLayer {
    /// `breaker` is `None` when the route has `circuit_breaker: false`.
    pub fn new(breaker: Option<(Arc<Breaker>, Arc<Classifier>)>, report: Arc<RouteReport>) -> Self {
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
    breaker: Option<(Arc<Breaker>, Arc<Classifier>)>,
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
        let Some((breaker, classifier)) = &self.breaker else {
            return BreakerFuture {
                inner: Decided::Running {
                    inner: self.inner.call(request),
                },
                ticket: None,
            };
        };
        let now = Instant::now();
        match breaker.try_acquire(now) {
            Err(rejected) => {
                if let Some(transition) = breaker.advance(now) {
                    self.report.transition(transition);
                }
                self.report.shed("breaker_open");
                let rejection = Rejection::BreakerOpen {
                    retry_after: rejected.retry_after,
                };
                BreakerFuture {
                    inner: Decided::Refused {
                        rejection: Some(rejection),
                    },
                    ticket: None,
                }
            }
            Ok(ticket) => {
                if let Some(transition) = ticket.transition() {
                    self.report.transition(transition);
                }
                let pending = Ticket {
                    ticket,
                    classifier: classifier.clone(),
                    report: self.report.clone(),
                    start: now,
                };
                BreakerFuture {
                    inner: Decided::Running {
                        inner: self.inner.call(request),
                    },
                    ticket: Some(pending),
                }
            }
        }
    }
}

/// A breaker ticket waiting for its call's outcome.
struct Ticket {
    ticket: BreakerTicket,
    classifier: Arc<Classifier>,
    report: Arc<RouteReport>,
    start: Instant,
}

pin_project! {
    /// Response future of [`BreakerService`]: records the outcome. If it is
    /// dropped first (the client went away), the ticket is dropped unused,
    /// which frees its half-open probe slot without counting anything.
    pub struct BreakerFuture<F> {
        #[pin]
        inner: Decided<F>,
        ticket: Option<Ticket>,
    }
}

impl<F> Future for BreakerFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        if let Some(pending) = this.ticket.take() {
            let now = Instant::now();
            let outcome = call_result(
                &pending.classifier,
                &result,
                now.saturating_duration_since(pending.start),
            );
            if let Some(transition) = pending.ticket.record(outcome, now) {
                pending.report.transition(transition);
            }
        }
        Poll::Ready(result)
    }
}

// === bulkhead ===

/// Applies a route's bulkhead: a slot is taken before the upstream call
/// and held by the response body until the response is over.
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
    // pin_project_lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    #[project = BulkheadProj]
    pub enum BulkheadFuture<F> {
        /// No bulkhead, or the permit was taken at once (held until the
        /// response, then moved into its body).
        Direct { #[pin] call: F, permit: Option<crate::policy::bulkhead::BulkheadPermit> },
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
            BulkheadProj::Direct { call, permit } => {
                let result = std::task::ready!(call.poll(cx));
                Poll::Ready(result.map(|response| match permit.take() {
                    Some(permit) => response.map(|body| body.with_permit(permit)),
                    None => response,
                }))
            }
            BulkheadProj::Boxed { future } => future.as_mut().poll(cx),
        }
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
        let acquired = bulkhead.try_acquire();
        let report = self.report.clone();
        let waiting = match acquired {
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
                    let response = inner.call(request).await?;
                    Ok(response.map(|body| body.with_permit(permit)))
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
