//! breakwater's own answers: every [`Rejection`] becomes a response here and
//! nowhere else.
//!
//! Policies decide; this module maps a decision to a status, the
//! `x-breakwater-reason` header, `retry-after` where waiting helps, and a
//! small JSON body. Part 4 adds fallbacks and gRPC trailers-only replies at
//! this one spot.

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::body::Body;

/// Header naming why breakwater answered itself.
pub const REASON_HEADER: &str = "x-breakwater-reason";

/// A request breakwater answers without (successfully) reaching the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No route matched. 404.
    NoRoute,
    /// The upstream refused or did not accept the connection. 502.
    UpstreamUnavailable,
    /// The upstream broke the connection mid-request. 502.
    UpstreamReset,
    /// No response headers within the request timeout. 504.
    Timeout,
    /// breakwater's own memory is past the shed watermark. 503.
    Overload,
}

impl Rejection {
    /// Status code and `x-breakwater-reason` value.
    pub fn status_and_reason(self) -> (StatusCode, &'static str) {
        match self {
            Rejection::NoRoute => (StatusCode::NOT_FOUND, "no-route"),
            Rejection::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream-unavailable"),
            Rejection::UpstreamReset => (StatusCode::BAD_GATEWAY, "upstream-reset"),
            Rejection::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Rejection::Overload => (StatusCode::SERVICE_UNAVAILABLE, "overload"),
        }
    }

    /// Seconds a client should wait before trying again, when that helps.
    fn retry_after(self) -> Option<u64> {
        match self {
            Rejection::Overload | Rejection::UpstreamUnavailable => Some(1),
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

impl From<super::outcome::UpstreamError> for Rejection {
    fn from(error: super::outcome::UpstreamError) -> Self {
        use super::outcome::UpstreamError as E;
        match error {
            E::Connect | E::ConnectTimeout => Rejection::UpstreamUnavailable,
            E::Timeout => Rejection::Timeout,
            E::Reset => Rejection::UpstreamReset,
        }
    }
}
