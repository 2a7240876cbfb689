//! Whether a failed try may be tried again (SPEC §3.4).
//!
//! One pure decision, so the rule is stated once: a try may be repeated
//! when its outcome is in `retry_on`, and either nothing of the request
//! reached the upstream (a connect failure: any method is safe), the
//! method is idempotent, or the outcome is a gRPC status listed by name —
//! gRPC calls are all POSTs, and listing a status is the operator saying
//! the call is safe to repeat on it, as gRPC's own retry policy does. The budget and the attempt count are checked by
//! the caller around this.

use crate::grpc::Code;

/// How a try ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    /// The TCP connection could not be made; nothing was sent.
    ConnectError,
    /// The TCP connection timed out; nothing was sent.
    ConnectTimeout,
    /// The connection broke after the request went (partly) out.
    Reset,
    /// The try's time ran out.
    Timeout,
    /// The upstream answered with this status.
    Status {
        /// The status code.
        code: u16,
        /// Whether it is in the route's `failure_statuses`.
        is_failure: bool,
    },
    /// The upstream answered a gRPC call with this `grpc-status` before
    /// any message (a trailers-only response).
    Grpc(Code),
}

/// One `retry_on` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// [`TryOutcome::ConnectError`].
    ConnectError,
    /// [`TryOutcome::ConnectTimeout`].
    ConnectTimeout,
    /// [`TryOutcome::Reset`].
    Reset,
    /// [`TryOutcome::Timeout`].
    Timeout,
    /// A status in `failure_statuses`.
    Http5xx,
    /// This exact status.
    Status(u16),
    /// This gRPC status, in a trailers-only response.
    Grpc(Code),
}

impl TryOutcome {
    /// Whether no byte of the request reached the upstream.
    pub fn nothing_sent(self) -> bool {
        matches!(self, TryOutcome::ConnectError | TryOutcome::ConnectTimeout)
    }

    fn listed_in(self, retry_on: &[RetryOn]) -> bool {
        retry_on.iter().any(|condition| match (condition, self) {
            (RetryOn::ConnectError, TryOutcome::ConnectError)
            | (RetryOn::ConnectTimeout, TryOutcome::ConnectTimeout)
            | (RetryOn::Reset, TryOutcome::Reset)
            | (RetryOn::Timeout, TryOutcome::Timeout) => true,
            (RetryOn::Http5xx, TryOutcome::Status { is_failure, .. }) => is_failure,
            (RetryOn::Status(wanted), TryOutcome::Status { code, .. }) => *wanted == code,
            (RetryOn::Grpc(wanted), TryOutcome::Grpc(code)) => *wanted == code,
            _ => false,
        })
    }
}

/// Whether a try that ended in `outcome` may be repeated, before counting
/// attempts and budget. `idempotent` is the request method's property.
pub fn may_retry(outcome: TryOutcome, idempotent: bool, retry_on: &[RetryOn]) -> bool {
    let safe = idempotent || outcome.nothing_sent() || matches!(outcome, TryOutcome::Grpc(_));
    outcome.listed_in(retry_on) && safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_grpc_status_is_retried_whatever_the_method() {
        let on = [RetryOn::Grpc(Code::UNAVAILABLE)];
        assert!(may_retry(TryOutcome::Grpc(Code::UNAVAILABLE), false, &on));
        assert!(!may_retry(TryOutcome::Grpc(Code::INTERNAL), false, &on));
        assert!(!may_retry(
            TryOutcome::Grpc(Code::UNAVAILABLE),
            false,
            &[RetryOn::Http5xx]
        ));
    }

    #[test]
    fn only_listed_outcomes_are_retried() {
        let on = [RetryOn::ConnectError, RetryOn::Http5xx];
        assert!(may_retry(TryOutcome::ConnectError, true, &on));
        assert!(!may_retry(TryOutcome::Timeout, true, &on));
        assert!(may_retry(
            TryOutcome::Status {
                code: 503,
                is_failure: true
            },
            true,
            &on
        ));
        assert!(!may_retry(
            TryOutcome::Status {
                code: 404,
                is_failure: false
            },
            true,
            &on
        ));
        assert!(may_retry(
            TryOutcome::Status {
                code: 429,
                is_failure: false
            },
            true,
            &[RetryOn::Status(429)]
        ));
    }

    #[test]
    fn non_idempotent_requests_are_retried_only_when_nothing_was_sent() {
        let on = [
            RetryOn::ConnectError,
            RetryOn::ConnectTimeout,
            RetryOn::Reset,
            RetryOn::Http5xx,
        ];
        assert!(may_retry(TryOutcome::ConnectError, false, &on));
        assert!(may_retry(TryOutcome::ConnectTimeout, false, &on));
        assert!(!may_retry(TryOutcome::Reset, false, &on));
        assert!(!may_retry(
            TryOutcome::Status {
                code: 502,
                is_failure: true
            },
            false,
            &on
        ));
    }
}
