//! Retries with a budget (SPEC §3.4), as a tower layer over the try.
//!
//! A failed try is repeated only if `policy::retry::may_retry` allows it
//! (its outcome is listed in `retry_on`; the method is idempotent, or
//! nothing was sent), attempts remain, and the route's retry budget has
//! room — then after a full-jitter backoff, on another endpoint when one
//! is available (the try below reads the [`TryContext`] this layer puts on
//! each retried request). A request body is replayed only if it is at
//! most [`MAX_REPLAY_BYTES`]: one with a declared length is read before
//! the first try; one of unknown length (HTTP/2, chunked — every gRPC
//! call) streams to the first try while a copy is kept, and goes again
//! only if that try read it whole within the limit. A larger or unfinished
//! body gets exactly one try, so a streaming call is never held back
//! waiting for a body that is still coming. The client's own failure is
//! never retried.
//!
//! Routes without retries (`attempts: 1`) pass straight through, with no
//! allocation; so do routes whose priority the degradation level has told
//! to stop retrying (the load they add shrinks before they give way).

use std::future::Future;
use std::pin::Pin;
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

use super::balance::TryContext;
use crate::policy::backoff::Backoff;
use crate::policy::degradation::Priority;
use crate::policy::retry::{may_retry, RetryOn, TryOutcome};
use crate::policy::retry_budget::RetryBudget;
use crate::proxy::body::{Body, Recording};
use crate::proxy::layers::admission::DegradationState;
use crate::proxy::layers::timeout::Deadline;
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

/// Applies a route's [`RetryPlan`], if it has one.
#[derive(Clone)]
pub struct RetryLayer {
    plan: Option<Arc<RetryPlan>>,
    report: Arc<RouteReport>,
    degradation: Arc<DegradationState>,
    priority: Priority,
}

impl RetryLayer {
    /// `plan` is `None` when the route does not retry. A route of
    /// `priority` stops retrying at the degradation levels that say so.
    pub fn new(
        plan: Option<Arc<RetryPlan>>,
        report: Arc<RouteReport>,
        degradation: Arc<DegradationState>,
        priority: Priority,
    ) -> Self {
        RetryLayer {
            plan,
            report,
            degradation,
            priority,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            plan: self.plan.clone(),
            report: self.report.clone(),
            degradation: self.degradation.clone(),
            priority: self.priority,
        }
    }
}

/// See [`RetryLayer`].
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    plan: Option<Arc<RetryPlan>>,
    report: Arc<RouteReport>,
    degradation: Arc<DegradationState>,
    priority: Priority,
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
        let retrying = self.degradation.level().retries(self.priority);
        match &self.plan {
            Some(plan) if retrying => RetryFuture::Looping {
                future: Box::pin(retry(
                    self.inner.clone(),
                    plan.clone(),
                    self.report.clone(),
                    request,
                )),
            },
            _ => RetryFuture::Once {
                inner: self.inner.call(request),
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
    // The body every try after the first sends: known up front for a small
    // declared body, or once the first try has streamed a small one.
    let (mut replay, mut first, recording) = match replayable(body).await {
        Replay::Bytes(bytes) => (Some(bytes), None, None),
        Replay::Streamed(body, recording) => (None, Some(body), Some(recording)),
        Replay::Once(body) => return inner.oneshot(Request::from_parts(parts, body)).await,
        Replay::ClientFailed(error) => return Err(StackError::Upstream(error)),
    };
    let idempotent = is_idempotent(&parts.method);
    let deadline = parts.extensions.get::<Deadline>().copied();
    let context = TryContext::new();
    let mut attempt = 1;
    loop {
        let body = match (first.take(), &replay) {
            (Some(body), _) => body,
            (None, Some(bytes)) => Body::full(bytes.clone()),
            (None, None) => Body::empty(),
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request.extensions_mut().insert(context.clone());
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(deadline);
        }
        if let Some(target) = parts.extensions.get::<OriginalTarget>() {
            request.extensions_mut().insert(*target);
        }
        let result = inner.clone().oneshot(request).await;
        let outcome = match &result {
            Ok(response) => match response.body().grpc_status() {
                Some(code) => TryOutcome::Grpc(code),
                None => TryOutcome::Status {
                    code: response.status().as_u16(),
                    is_failure: response.body().outcome() == Outcome::Http5xx,
                },
            },
            Err(StackError::Upstream(error)) if !error.is_local() => try_outcome(*error),
            Err(_) => return result,
        };
        if attempt >= plan.attempts || !may_retry(outcome, idempotent, &plan.retry_on) {
            return result;
        }
        if replay.is_none() {
            // A streamed body goes again only if the first try read it
            // whole and it was small.
            match recording.as_ref().and_then(|recording| recording.whole()) {
                Some(bytes) => replay = Some(bytes),
                None => return result,
            }
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
        | CallError::QueueTimeout
        | CallError::Deadline => TryOutcome::Reset,
    }
}

/// What can be done with a request body for retries.
enum Replay {
    /// Held whole: every try sends these bytes.
    Bytes(Bytes),
    /// Of unknown length (HTTP/2, chunked): streamed to the first try
    /// while a copy of at most [`MAX_REPLAY_BYTES`] is kept for the next.
    Streamed(Body, Arc<Recording>),
    /// Declared too large: one try, with the body as it is.
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
        Some(_) => Replay::Once(body),
        None => {
            let recording = Recording::new(MAX_REPLAY_BYTES);
            Replay::Streamed(Body::recorded(body, recording.clone()), recording)
        }
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
        let streamed = Body::with_trailers(Bytes::from_static(b"x"), http::HeaderMap::new());
        assert!(matches!(replayable(streamed).await, Replay::Streamed(..)));
    }
}
