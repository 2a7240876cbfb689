//! breakwater's own answers: every [`Rejection`] becomes a response here and
//! nowhere else.
//!
//! Policies decide; this module maps a decision to a status, the
//! `x-breakwater-reason` header, an honest `retry-after` where waiting
//! helps, and a small JSON body. Part 4 adds fallbacks and gRPC
//! trailers-only replies at this one spot.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::Body;
use super::outcome::UpstreamError;

/// Header naming why breakwater answered itself.
pub const REASON_HEADER: &str = "x-breakwater-reason";

/// A request breakwater answers without (successfully) reaching the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No route matched. 404.
    NoRoute,
    /// The route's token bucket is empty. 429.
    RateLimited {
        /// Until a token is back.
        retry_after: Duration,
    },
    /// The route's circuit breaker is open. 503.
    BreakerOpen {
        /// Until the breaker lets a probe through.
        retry_after: Duration,
    },
    /// The bulkhead and its queue are full, or the queue wait ran out. 503.
    Shed,
    /// The upstream refused or did not accept the connection. 502.
    UpstreamUnavailable,
    /// The upstream broke the connection mid-request. 502.
    UpstreamReset,
    /// No response headers within the request timeout. 504.
    Timeout,
    /// breakwater's own memory is past the shed watermark. 503.
    Overload,
    /// The supervised process is starting or restarting. 503.
    Starting,
}

/// Why the route stack produced no upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// A policy refused the request before the upstream was tried.
    Rejected(Rejection),
    /// The upstream was tried and failed.
    Upstream(UpstreamError),
}

impl From<UpstreamError> for StackError {
    fn from(error: UpstreamError) -> Self {
        StackError::Upstream(error)
    }
}

impl From<Rejection> for StackError {
    fn from(rejection: Rejection) -> Self {
        StackError::Rejected(rejection)
    }
}

impl StackError {
    /// The response-level rejection for this error.
    pub fn rejection(self) -> Rejection {
        match self {
            StackError::Rejected(rejection) => rejection,
            StackError::Upstream(error) => Rejection::from(error),
        }
    }
}

impl Rejection {
    /// Status code and `x-breakwater-reason` value.
    pub fn status_and_reason(self) -> (StatusCode, &'static str) {
        match self {
            Rejection::NoRoute => (StatusCode::NOT_FOUND, "no-route"),
            Rejection::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Rejection::BreakerOpen { .. } => (StatusCode::SERVICE_UNAVAILABLE, "breaker-open"),
            Rejection::Shed => (StatusCode::SERVICE_UNAVAILABLE, "shed"),
            Rejection::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream-unavailable"),
            Rejection::UpstreamReset => (StatusCode::BAD_GATEWAY, "upstream-reset"),
            Rejection::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Rejection::Overload => (StatusCode::SERVICE_UNAVAILABLE, "overload"),
            Rejection::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        }
    }

    /// Whole seconds a client should wait before trying again, rounded up
    /// so that a client that honours it never comes back too early.
    fn retry_after(self) -> Option<u64> {
        let seconds = |wait: Duration| wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        match self {
            Rejection::RateLimited { retry_after } | Rejection::BreakerOpen { retry_after } => {
                Some(seconds(retry_after).max(1))
            }
            Rejection::Shed
            | Rejection::Overload
            | Rejection::Starting
            | Rejection::UpstreamUnavailable => Some(1),
            _ => None,
        }
    }

    /// The response sent downstream.
    pub fn into_response(self) -> Response<Body> {
        let (status, reason) = self.status_and_reason();
        let body = format!(
            "{{\"error\":\"{reason}\",\"status\":{}}}\n",
            status.as_u16()
        );
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<UpstreamError> for Rejection {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Connect | UpstreamError::ConnectTimeout => {
                Rejection::UpstreamUnavailable
            }
            UpstreamError::Timeout => Rejection::Timeout,
            UpstreamError::Reset => Rejection::UpstreamReset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up_and_at_least_one_second() {
        let open = Rejection::BreakerOpen {
            retry_after: Duration::from_millis(4200),
        }
        .into_response();
        assert_eq!(open.status(), 503);
        assert_eq!(open.headers()[RETRY_AFTER], "5");
        assert_eq!(open.headers()[REASON_HEADER], "breaker-open");
        let limited = Rejection::RateLimited {
            retry_after: Duration::from_millis(3),
        }
        .into_response();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[RETRY_AFTER], "1");
        assert_eq!(Rejection::Shed.into_response().headers()[RETRY_AFTER], "1");
        assert!(Rejection::Timeout
            .into_response()
            .headers()
            .get(RETRY_AFTER)
            .is_none());
    }
}
