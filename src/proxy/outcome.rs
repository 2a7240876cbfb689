//! How an upstream attempt ended: the one place that classifies it.
//!
//! A response is classified by the route's [`Classifier`] (its
//! `failure_statuses` and `slow_call_duration`), an error by
//! [`UpstreamError::classify`]. Breakers, retries, outlier detection,
//! metrics and the access log all use these, so they can never disagree
//! about whether a request failed. An [`UpstreamError`] also records whether any of the
//! request was sent, which is what decides if a non-idempotent request may
//! be retried (SPEC §3.4).

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

/// The outcome classes of SPEC §3.
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
    /// The connection broke after the request was (partly) sent.
    Reset,
    /// A success slower than `slow_call_duration`.
    Slow,
    /// breakwater answered itself without contacting the upstream (no
    /// route, or a policy rejected the request).
    Rejected,
    /// The client went away before a response existed (logged as 499,
    /// like nginx).
    Cancelled,
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
    /// A success slower than this is slow.
    pub slow_call_duration: Duration,
}

impl Classifier {
    /// Whether `status` is one of the route's failure statuses.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }

    /// The outcome of a response with `status` whose headers took `elapsed`.
    pub fn response(&self, status: u16, elapsed: Duration) -> Outcome {
        if self.is_failure_status(status) {
            Outcome::Http5xx
        } else if elapsed > self.slow_call_duration {
            Outcome::Slow
        } else {
            Outcome::Success
        }
    }
}

/// Why an upstream attempt produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
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
}

impl UpstreamError {
    /// The outcome class of this error.
    pub fn outcome(self) -> Outcome {
        match self {
            UpstreamError::Connect => Outcome::ConnectError,
            UpstreamError::ConnectTimeout => Outcome::ConnectTimeout,
            UpstreamError::Timeout => Outcome::Timeout,
            UpstreamError::Reset => Outcome::Reset,
        }
    }

    /// Whether no byte of the request reached the upstream, so any method
    /// may be retried.
    pub fn nothing_sent(self) -> bool {
        matches!(self, UpstreamError::Connect | UpstreamError::ConnectTimeout)
    }

    /// Classifies an error from hyper-util's pooled client.
    pub fn classify(error: &hyper_util::client::legacy::Error) -> UpstreamError {
        if error.is_connect() {
            if caused_by_timeout(error) {
                UpstreamError::ConnectTimeout
            } else {
                UpstreamError::Connect
            }
        } else {
            UpstreamError::Reset
        }
    }
}

fn caused_by_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            if io_error.kind() == io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = error.source();
    }
    false
}
