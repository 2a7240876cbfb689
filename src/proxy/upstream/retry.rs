//! Retries with a budget (SPEC §3.4), as a tower layer over the try.
//!
//! A failed try is repeated only if `policy::retry::may_retry` allows it
//! (its outcome is listed in `retry_on`; the method is idempotent, or
//! nothing was sent), attempts remain, and the route's retry budget has
//! room — then after a full-jitter backoff, on another endpoint when one
//! is available (the try below reads the [`TryContext`] this layer puts on
//! each retried request). A request body is replayed only if it is empty
//! or at most [`MAX_REPLAY_BYTES`] with a declared length; a larger or
//! streamed body gets exactly one try. The client's own failure is never
//! retried.
//!
//! Routes without retries (`attempts: 1`) pass straight through, with no
//! allocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::endpoint::OriginalTarget;

use crate::policy::backoff::Backoff;
use crate::policy::retry::{may_retry, RetryOn, TryOutcome};
use crate::policy::retry_budget::RetryBudget;
use crate::proxy::body::Body;
use crate::proxy::outcome::{CallError, Outcome};
use crate::proxy::reject::StackError;
use crate::proxy::report::RouteReport;

/// Largest request body kept for replay on retry.
pub const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// A route's retry settings, built from `retry:`.
pub struct RetryPlan {
    /// Tries in all (more than one).
    pub attempts: u32,
    /// What may be retried.
    pub retry_on: Vec<RetryOn>,
    /// Shared by every request of the route.
    pub budget: Arc<RetryBudget>,
    /// Delay between tries.
    pub backoff: Backoff,
}

/// Which endpoint the previous try of a request went to, so the next one
/// goes elsewhere. Carried in each retried try's request extensions.
#[derive(Clone, Debug, Default)]
pub struct TryContext(Arc<AtomicUsize>);

const NO_ENDPOINT: usize = usize::MAX;

impl TryContext {
    fn new() -> Self {
        TryContext(Arc::new(AtomicUsize::new(NO_ENDPOINT)))
    }

    /// The endpoint the previous try went to.
    pub fn last_endpoint(&self) -> Option<usize> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&index| index != NO_ENDPOINT)
    }

    /// Notes the endpoint this try goes to.
    pub fn set_last_endpoint(&self, index: usize) {
        self.0.store(index, Ordering::Relaxed);
    }
}

/// Applies a route's [`RetryPlan`], if it has one.
#[derive(Clone)]
pub struct RetryLayer {
    plan: Option<Arc<RetryPlan>>,
    report: Arc<RouteReport>,
}

impl RetryLayer {
    /// `plan` is `None` when the route does not retry.
    pub fn new(plan: Option<Arc<RetryPlan>>, report: Arc<RouteReport>) -> Self {
        RetryLayer { plan, report }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            plan: self.plan.clone(),
            report: self.report.clone(),
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    plan: Option<Arc<RetryPlan>>,
    report: Arc<RouteReport>,
}

type BoxResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, StackError>> + Send>>;

pin_project! {
    /// Response future of [`Retry`]: the one try of a route without
    /// retries, or the retry loop.
    #[project = RetryProject]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    pub enum RetryFuture<F> {
        /// No retries: the try itself.
        Once { #[pin] inner: F },
        /// Tries until one is kept.
        Looping { future: BoxResponseFuture },
    }
}

impl<F> Future for RetryFuture<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RetryProject::Once { inner } => inner.poll(cx),
            RetryProject::Looping { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S> Service<Request<Body>> for Retry<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = RetryFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match &self.plan {
            None => RetryFuture::Once {
                inner: self.inner.call(request),
            },
            Some(plan) => RetryFuture::Looping {
                future: Box::pin(retry(
                    self.inner.clone(),
                    plan.clone(),
                    self.report.clone(),
                    request,
                )),
            },
        }
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn retry<S>(
    inner: S,
    plan: Arc<RetryPlan>,
    report: Arc<RouteReport>,
    request: Request<Body>,
) -> Result<Response<Body>, StackError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError> + Clone,
{
    plan.budget.record_request(Instant::now());
    let (parts, body) = request.into_parts();
    let replay = match replayable(body).await {
        Replay::Bytes(bytes) => bytes,
        Replay::Once(body) => return inner.oneshot(Request::from_parts(parts, body)).await,
        Replay::ClientFailed(error) => return Err(StackError::Upstream(error)),
    };
    let idempotent = is_idempotent(&parts.method);
    let context = TryContext::new();
    let mut attempt = 1;
    loop {
        let mut request = Request::new(Body::full(replay.clone()));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request.extensions_mut().insert(context.clone());
        if let Some(target) = parts.extensions.get::<OriginalTarget>() {
            request.extensions_mut().insert(*target);
        }
        let result = inner.clone().oneshot(request).await;
        let outcome = match &result {
            Ok(response) => TryOutcome::Status {
                code: response.status().as_u16(),
                is_failure: response.body().outcome() == Outcome::Http5xx,
            },
            Err(StackError::Upstream(error)) if !error.is_local() => try_outcome(*error),
            Err(_) => return result,
        };
        if attempt >= plan.attempts || !may_retry(outcome, idempotent, &plan.retry_on) {
            return result;
        }
        if !plan.budget.try_withdraw(Instant::now()) {
            report.budget_exhausted.inc();
            return result;
        }
        report.retries.inc();
        drop(result);
        let delay = plan.backoff.delay(attempt - 1, rand::random());
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

fn try_outcome(error: CallError) -> TryOutcome {
    match error {
        CallError::Connect => TryOutcome::ConnectError,
        CallError::ConnectTimeout => TryOutcome::ConnectTimeout,
        CallError::Timeout => TryOutcome::Timeout,
        CallError::Reset => TryOutcome::Reset,
        // Not retried (`is_local`); listed for completeness.
        CallError::ClientGone
        | CallError::ClientMalformed
        | CallError::QueueFull
        | CallError::QueueTimeout => TryOutcome::Reset,
    }
}

/// What can be done with a request body for retries.
enum Replay {
    /// Held whole: every try sends these bytes.
    Bytes(Bytes),
    /// Too large, or streamed: one try, with the body as it is.
    Once(Body),
    /// The client broke its body while it was being read.
    ClientFailed(CallError),
}

/// The whole body, if it is small enough to replay.
async fn replayable(mut body: Body) -> Replay {
    if body.is_end_stream() {
        return Replay::Bytes(Bytes::new());
    }
    match body.size_hint().exact() {
        Some(length) if length <= MAX_REPLAY_BYTES => {
            let fault = body.watch_client();
            match body.collect().await {
                Ok(collected) => Replay::Bytes(collected.to_bytes()),
                Err(_) => Replay::ClientFailed(
                    fault
                        .and_then(|fault| fault.get())
                        .unwrap_or(CallError::ClientGone),
                ),
            }
        }
        _ => Replay::Once(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&method));
        }
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[tokio::test]
    async fn only_small_declared_bodies_are_replayable() {
        assert!(matches!(replayable(Body::empty()).await, Replay::Bytes(b) if b.is_empty()));
        assert!(matches!(replayable(Body::full("abc")).await, Replay::Bytes(b) if b == "abc"));
        let big = Body::full(vec![0u8; MAX_REPLAY_BYTES as usize + 1]);
        assert!(matches!(replayable(big).await, Replay::Once(_)));
    }

    #[test]
    fn the_try_context_remembers_the_last_endpoint() {
        let context = TryContext::new();
        assert_eq!(context.last_endpoint(), None);
        context.clone().set_last_endpoint(2);
        assert_eq!(context.last_endpoint(), Some(2));
    }
}
