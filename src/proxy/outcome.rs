//! How an exchange with the upstream ended: the one place that classifies it.
//!
//! Each try is classified once, where it ends ([`super::upstream::balance`]):
//! a response by the route's [`Classifier`] (its `failure_statuses`, and
//! `slow_call_duration` against *that try's* time to response headers — not
//! time queued in the bulkhead, not earlier tries or backoff), an error by
//! its [`CallError`]. The classification rides in the response body
//! (`Body::outcome`) and is refined once when the body ends (an upstream
//! that breaks the stream mid-body is a `reset`). Breakers, retries, outlier
//! detection, the supervisor's error-rate trigger, metrics and the access
//! log all read that one value, so they can never disagree about whether a
//! request failed.
//!
//! The client's own failures are not the upstream's: a request body the
//! client cut short, or framed badly, ends the exchange with
//! [`CallError::ClientGone`] or [`CallError::ClientMalformed`], which no
//! policy counts against the upstream.
//!
//! A gRPC call's outcome is its `grpc-status`, which comes in the trailers
//! at the end of the stream — or in the headers of a trailers-only
//! response, when the upstream refused the call before any message. The
//! classifier reads it from the headers when it is there; otherwise the
//! body waits for the trailers ([`GrpcHead::Pending`]) and refines the
//! outcome then: a status in `grpc_failure_statuses` is `grpc_error`, and
//! a call the client abandoned before its status arrived says nothing.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::grpc::{self, Code, CodeSet};

/// The outcome classes of SPEC §3, and the ones breakwater adds for
/// exchanges that say nothing about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A response that is not in `failure_statuses` (a 4xx counts here).
    Success,
    /// A response whose status is in `failure_statuses`.
    Http5xx,
    /// The TCP connection was refused or failed.
    ConnectError,
    /// The TCP connection did not open within `connect_timeout`.
    ConnectTimeout,
    /// No response headers within the request timeout.
    Timeout,
    /// The connection broke after the request was (partly) sent, or the
    /// upstream broke its response body.
    Reset,
    /// A success slower than `slow_call_duration`.
    Slow,
    /// breakwater answered itself without contacting the upstream (no
    /// route, or a policy refused the request).
    Rejected,
    /// The client went away, or cut its request body short (logged as
    /// 499, like nginx). Never the upstream's failure.
    Cancelled,
    /// The client's request body was malformed (400). Never the
    /// upstream's failure.
    ClientError,
    /// A gRPC call that ended with a `grpc-status` in
    /// `grpc_failure_statuses`, whatever its HTTP status said.
    GrpcError,
    /// The client's own gRPC deadline ran out before the route's timeout,
    /// and it was shorter than `slow_call_duration`: the client asked for
    /// less than the route calls slow, so it says nothing about the
    /// upstream.
    DeadlineExceeded,
}

impl Outcome {
    /// The label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Http5xx => "http_5xx",
            Outcome::ConnectError => "connect_error",
            Outcome::ConnectTimeout => "connect_timeout",
            Outcome::Timeout => "timeout",
            Outcome::Reset => "reset",
            Outcome::Slow => "slow",
            Outcome::Rejected => "rejected",
            Outcome::Cancelled => "cancelled",
            Outcome::ClientError => "client_error",
            Outcome::GrpcError => "grpc_error",
            Outcome::DeadlineExceeded => "deadline_exceeded",
        }
    }

    /// What the upstream's health learns from this outcome: `Some(true)`
    /// for a failure of the upstream, `Some(false)` for a success (slow
    /// included), `None` when it says nothing about the upstream (refused
    /// locally, or the client's own failure).
    pub fn upstream_failed(self) -> Option<bool> {
        match self {
            Outcome::Success | Outcome::Slow => Some(false),
            Outcome::Http5xx
            | Outcome::ConnectError
            | Outcome::ConnectTimeout
            | Outcome::Timeout
            | Outcome::Reset
            | Outcome::GrpcError => Some(true),
            Outcome::Rejected
            | Outcome::Cancelled
            | Outcome::ClientError
            | Outcome::DeadlineExceeded => None,
        }
    }
}

/// A route's rule for classifying its responses: which statuses are
/// failures and when a success is slow. Built once per route from its
/// `circuit_breaker` settings (or their defaults when the breaker is off).
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Statuses that count as failures.
    pub failure_statuses: Vec<u16>,
    /// gRPC statuses that count as failures.
    pub grpc_failure_statuses: CodeSet,
    /// A success slower than this is slow.
    pub slow_call_duration: Duration,
}

/// What the response headers say about a gRPC call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcHead {
    /// Not a gRPC response.
    None,
    /// A trailers-only response: the call ended with this status.
    Ended(Code),
    /// The status comes in the trailers; these codes will be failures.
    Pending(CodeSet),
}

impl Classifier {
    /// Whether `status` is one of the route's failure statuses.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }

    /// The outcome of a try answered with `status` after `elapsed` (the
    /// try's own time to response headers).
    pub fn response(&self, status: u16, elapsed: Duration) -> Outcome {
        if self.is_failure_status(status) {
            Outcome::Http5xx
        } else {
            self.success(elapsed)
        }
    }

    /// The outcome of a try answered with `status` and `headers` after
    /// `elapsed`, and what is still to come for a gRPC call: a gRPC call
    /// answered 200 is judged by its `grpc-status`, now if the headers
    /// carry it (trailers-only), else when the trailers arrive.
    pub fn head(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        elapsed: Duration,
    ) -> (Outcome, GrpcHead) {
        if status != StatusCode::OK || !grpc::is_grpc(headers) {
            return (self.response(status.as_u16(), elapsed), GrpcHead::None);
        }
        match grpc::status(headers) {
            Some(code) => (self.grpc(code, elapsed), GrpcHead::Ended(code)),
            None => (
                self.success(elapsed),
                GrpcHead::Pending(self.grpc_failure_statuses),
            ),
        }
    }

    /// The outcome of a gRPC call that ended with `code`.
    pub fn grpc(&self, code: Code, elapsed: Duration) -> Outcome {
        if self.grpc_failure_statuses.contains(code) {
            Outcome::GrpcError
        } else {
            self.success(elapsed)
        }
    }

    fn success(&self, elapsed: Duration) -> Outcome {
        if elapsed > self.slow_call_duration {
            Outcome::Slow
        } else {
            Outcome::Success
        }
    }
}

/// Why an exchange with the upstream produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Could not connect; nothing was sent.
    #[error("upstream connection failed")]
    Connect,
    /// The connect attempt timed out; nothing was sent.
    #[error("upstream connect timed out")]
    ConnectTimeout,
    /// No response headers within the request timeout.
    #[error("upstream did not answer in time")]
    Timeout,
    /// The connection failed after the request started to go out.
    #[error("upstream connection reset")]
    Reset,
    /// The client went away or cut its request body short.
    #[error("the client went away before its request was sent")]
    ClientGone,
    /// The client's request body was malformed.
    #[error("the client's request body was malformed")]
    ClientMalformed,
    /// Every connection to the endpoint was busy and its queue was full:
    /// breakwater's own congestion.
    #[error("the endpoint's connection queue was full")]
    QueueFull,
    /// The request waited for a connection to the endpoint longer than
    /// `pending_timeout`: breakwater's own congestion.
    #[error("no connection to the endpoint came free in time")]
    QueueTimeout,
    /// The client's own gRPC deadline, shorter than the route's timeout
    /// and than `slow_call_duration`, ran out first.
    #[error("the client's deadline ran out")]
    Deadline,
}

impl CallError {
    /// The outcome class of this error.
    pub fn outcome(self) -> Outcome {
        match self {
            CallError::Connect => Outcome::ConnectError,
            CallError::ConnectTimeout => Outcome::ConnectTimeout,
            CallError::Timeout => Outcome::Timeout,
            CallError::Reset => Outcome::Reset,
            CallError::ClientGone => Outcome::Cancelled,
            CallError::ClientMalformed => Outcome::ClientError,
            CallError::QueueFull | CallError::QueueTimeout => Outcome::Rejected,
            CallError::Deadline => Outcome::DeadlineExceeded,
        }
    }

    /// Whether no byte of the request reached the upstream, so any method
    /// may be retried.
    pub fn nothing_sent(self) -> bool {
        matches!(
            self,
            CallError::Connect
                | CallError::ConnectTimeout
                | CallError::QueueFull
                | CallError::QueueTimeout
        )
    }

    /// Whether the exchange ended on breakwater's side of it — the
    /// client's failure or deadline, or breakwater's own congestion — so
    /// it says nothing about the upstream and is not retried.
    pub fn is_local(self) -> bool {
        self.is_client_fault()
            || matches!(
                self,
                CallError::QueueFull | CallError::QueueTimeout | CallError::Deadline
            )
    }

    /// Whether the failure was the client's (never counted against the
    /// upstream, never retried).
    pub fn is_client_fault(self) -> bool {
        matches!(self, CallError::ClientGone | CallError::ClientMalformed)
    }
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// All of it was sent.
    Complete,
    /// The stream failed part way (the upstream broke it).
    Error,
    /// It was dropped before the end (the client went away, or a retry
    /// discarded the response).
    Dropped,
}

/// How an exchange ended, as every tail hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The final outcome: the classification made at the headers, a
    /// `reset` if the upstream broke the body.
    pub outcome: Outcome,
    /// How the body ended.
    pub reason: EndReason,
    /// The final try's time to response headers, for an upstream response.
    pub upstream_elapsed: Option<Duration>,
    /// The `grpc-status` the client got, for a gRPC call that ended with one.
    pub grpc_status: Option<Code>,
}

/// Whether `error`, or an error it was caused by, is an I/O error of `kind`.
pub fn caused_by(error: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = source {
        if error
            .downcast_ref::<io::Error>()
            .is_some_and(|io_error| io_error.kind() == kind)
        {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_failures_say_nothing_about_the_upstream() {
        for error in [CallError::ClientGone, CallError::ClientMalformed] {
            assert!(error.is_client_fault());
            assert_eq!(error.outcome().upstream_failed(), None);
        }
        for error in [CallError::QueueFull, CallError::QueueTimeout] {
            assert!(error.is_local() && !error.is_client_fault());
            assert_eq!(error.outcome().upstream_failed(), None);
        }
        for error in [
            CallError::Connect,
            CallError::ConnectTimeout,
            CallError::Timeout,
            CallError::Reset,
        ] {
            assert_eq!(error.outcome().upstream_failed(), Some(true));
        }
        assert_eq!(Outcome::Slow.upstream_failed(), Some(false));
        assert_eq!(Outcome::Rejected.upstream_failed(), None);
        assert!(CallError::Deadline.is_local());
        assert_eq!(CallError::Deadline.outcome().upstream_failed(), None);
    }

    #[test]
    fn a_grpc_call_is_judged_by_its_grpc_status() {
        let classifier = Classifier {
            failure_statuses: vec![503],
            grpc_failure_statuses: [Code::UNAVAILABLE].into_iter().collect(),
            slow_call_duration: Duration::from_millis(100),
        };
        let fast = Duration::from_millis(5);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let (outcome, grpc) = classifier.head(StatusCode::OK, &headers, fast);
        assert_eq!(outcome, Outcome::Success);
        assert!(matches!(grpc, GrpcHead::Pending(set) if set.contains(Code::UNAVAILABLE)));
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(
            classifier.head(StatusCode::OK, &headers, fast),
            (Outcome::GrpcError, GrpcHead::Ended(Code::UNAVAILABLE))
        );
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(
            classifier.head(StatusCode::OK, &headers, fast).0,
            Outcome::Success
        );
        // Not 200, or not gRPC: the HTTP status decides.
        assert_eq!(
            classifier.head(StatusCode::SERVICE_UNAVAILABLE, &headers, fast),
            (Outcome::Http5xx, GrpcHead::None)
        );
        assert_eq!(
            classifier.head(StatusCode::OK, &HeaderMap::new(), fast),
            (Outcome::Success, GrpcHead::None)
        );
    }

    #[test]
    fn slow_is_judged_on_the_tries_own_time() {
        let classifier = Classifier {
            failure_statuses: vec![503],
            grpc_failure_statuses: CodeSet::default(),
            slow_call_duration: Duration::from_millis(100),
        };
        assert_eq!(
            classifier.response(200, Duration::from_millis(50)),
            Outcome::Success
        );
        assert_eq!(
            classifier.response(200, Duration::from_millis(150)),
            Outcome::Slow
        );
        assert_eq!(
            classifier.response(503, Duration::from_millis(150)),
            Outcome::Http5xx
        );
    }
}
