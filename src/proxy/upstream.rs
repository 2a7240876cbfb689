//! The bottom of every route stack: the upstream call, with per-try
//! timeouts and retries (SPEC §3.3–3.4).
//!
//! One try picks an endpoint ([`UpstreamPool::pick`]), sends, and counts
//! the result against that endpoint (outlier detection). When retries are
//! on, a failed try is repeated only if `policy::retry::may_retry` allows
//! it (listed in `retry_on`; idempotent, or nothing was sent), attempts
//! remain, and the route's retry budget has room — then after a full-jitter
//! backoff, on another endpoint when one is available. A request body is
//! replayed only if it is empty or at most [`MAX_REPLAY_BYTES`] with a
//! declared length; a larger or streamed body gets exactly one try.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::Service;

use super::body::Body;
use super::forward::UpstreamPool;
use super::layers::RouteReport;
use super::outcome::{Classifier, UpstreamError};
use super::reject::StackError;
use crate::events::Severity;
use crate::policy::backoff::Backoff;
use crate::policy::retry::{may_retry, RetryOn, TryOutcome};
use crate::policy::retry_budget::RetryBudget;

/// Largest request body kept for replay on retry.
pub const MAX_REPLAY_BYTES: u64 = 64 * 1024;

/// A route's retry settings, built from `retry:`.
pub struct RetryPlan {
    /// Tries in all.
    pub attempts: u32,
    /// What may be retried.
    pub retry_on: Vec<RetryOn>,
    /// Shared by every request of the route.
    pub budget: Arc<RetryBudget>,
    /// Delay between tries.
    pub backoff: Backoff,
}

/// What the upstream call of one route needs.
pub struct CallPlan {
    /// `timeouts.per_try`, when set.
    pub per_try: Option<Duration>,
    /// Retries, when `attempts > 1`.
    pub retry: Option<RetryPlan>,
    /// The route's classifier (failure statuses for retries and outlier
    /// detection).
    pub classifier: Arc<Classifier>,
    /// Where metrics and events go.
    pub report: Arc<RouteReport>,
}

/// The tower service at the bottom of a route stack.
#[derive(Clone)]
pub struct UpstreamCall {
    pool: Arc<UpstreamPool>,
    plan: Arc<CallPlan>,
}

impl UpstreamCall {
    /// Calls `pool`'s endpoints under `plan`.
    pub fn new(pool: Arc<UpstreamPool>, plan: Arc<CallPlan>) -> Self {
        UpstreamCall { pool, plan }
    }
}

type CallFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, StackError>> + Send>>;

impl Service<Request<Body>> for UpstreamCall {
    type Response = Response<Body>;
    type Error = StackError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> CallFuture {
        Box::pin(call(self.pool.clone(), self.plan.clone(), request))
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

async fn call(
    pool: Arc<UpstreamPool>,
    plan: Arc<CallPlan>,
    request: Request<Body>,
) -> Result<Response<Body>, StackError> {
    let Some(retry) = plan.retry.as_ref() else {
        return try_once(&pool, &plan, None, request).await.1;
    };
    retry.budget.record_request(Instant::now());
    let (parts, body) = request.into_parts();
    let replay = match replayable(body).await {
        Ok(bytes) => bytes,
        Err(body) => {
            return try_once(&pool, &plan, None, Request::from_parts(parts, body))
                .await
                .1
        }
    };
    let idempotent = is_idempotent(&parts.method);
    let mut avoid = None;
    let mut attempt = 1;
    loop {
        let mut request = Request::new(Body::full(replay.clone()));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        let (endpoint, result) = try_once(&pool, &plan, avoid, request).await;
        let outcome = match &result {
            Ok(response) => {
                let code = response.status().as_u16();
                TryOutcome::Status {
                    code,
                    is_failure: plan.classifier.is_failure_status(code),
                }
            }
            Err(StackError::Upstream(error)) => try_outcome(*error),
            Err(StackError::Rejected(_)) => return result,
        };
        if attempt >= retry.attempts || !may_retry(outcome, idempotent, &retry.retry_on) {
            return result;
        }
        if !retry.budget.try_withdraw(Instant::now()) {
            plan.report.budget_exhausted.inc();
            return result;
        }
        plan.report.retries.inc();
        drop(result);
        let delay = retry.backoff.delay(attempt - 1, rand::random());
        tokio::time::sleep(delay).await;
        avoid = endpoint;
        attempt += 1;
    }
}

fn try_outcome(error: UpstreamError) -> TryOutcome {
    match error {
        UpstreamError::Connect => TryOutcome::ConnectError,
        UpstreamError::ConnectTimeout => TryOutcome::ConnectTimeout,
        UpstreamError::Reset => TryOutcome::Reset,
        UpstreamError::Timeout => TryOutcome::Timeout,
    }
}

/// The whole body, if it is small enough to replay; else the body back.
async fn replayable(body: Body) -> Result<Bytes, Body> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match body.size_hint().exact() {
        Some(length) if length <= MAX_REPLAY_BYTES => match body.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            // The client's body broke: one try with what remains (nothing).
            Err(_) => Err(Body::empty()),
        },
        _ => Err(body),
    }
}

/// One try: pick, send (within `per_try`), count against the endpoint.
async fn try_once(
    pool: &UpstreamPool,
    plan: &CallPlan,
    avoid: Option<usize>,
    request: Request<Body>,
) -> (Option<usize>, Result<Response<Body>, StackError>) {
    let Some(index) = pool.pick(avoid, Instant::now()) else {
        return (None, Err(StackError::Upstream(UpstreamError::Connect)));
    };
    let sent = pool.send(index, request);
    let result = match plan.per_try {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        },
        None => sent.await,
    };
    let failure = match &result {
        Ok(response) => plan
            .classifier
            .is_failure_status(response.status().as_u16()),
        Err(_) => true,
    };
    if let Some(ejection) = pool.record(index, failure, Instant::now()) {
        let endpoint = pool
            .endpoints()
            .get(index)
            .map(|e| e.authority.as_str())
            .unwrap_or("?");
        plan.report.events.emit(
            "ejection",
            endpoint,
            Severity::Warning,
            &format!(
                "upstream {}: ejected for {:?} (time {})",
                pool.config.name, ejection.duration, ejection.times_ejected
            ),
        );
    }
    let result = result.map_err(StackError::Upstream);
    (Some(index), result)
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
        assert_eq!(replayable(Body::empty()).await.ok(), Some(Bytes::new()));
        assert_eq!(
            replayable(Body::full("abc")).await.ok(),
            Some(Bytes::from("abc"))
        );
        let big = Body::full(vec![0u8; MAX_REPLAY_BYTES as usize + 1]);
        assert!(replayable(big).await.is_err());
    }
}
