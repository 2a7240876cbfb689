//! breakwater's own answers: every reply it makes itself is built here and
//! nowhere else.
//!
//! Policies decide; this module maps a decision — a [`Rejection`] — to a
//! status, the `x-breakwater-reason` header, an honest `retry-after` where
//! waiting helps, and a small JSON body. [`reply`] is the one rescue step:
//! the route stack's top layer (`layers::rescue`) calls it for every
//! refusal and failed upstream call, the request path calls it for
//! requests no route takes and for panics, and the framing guard writes
//! the same body for the requests it refuses before any parser sees them
//! ([`http1_refusal`]). A reply depends on the request only through
//! [`ReplyCx`], taken before the request went down the stack.
//!
//! A gRPC call (`content-type: application/grpc…`) gets a gRPC reply: a
//! trailers-only response — HTTP 200, `grpc-status` and `grpc-message` in
//! the headers, no body — so its client sees `UNAVAILABLE` for a breaker
//! that is open rather than an HTTP error it can only call `UNKNOWN`
//! ([`Rejection::grpc_code`] has the mapping, Envoy's and gRPC's own).
//! `x-breakwater-reason` is there as for any reply.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};

use super::body::Body;
use super::outcome::CallError;
use crate::grpc::{self, Code};

/// Header naming why breakwater answered itself.
pub const REASON_HEADER: &str = "x-breakwater-reason";

/// Header marking a reply shaped by fault injection: `delay` or `abort`.
pub const FAULT_HEADER: &str = "x-breakwater-fault";

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
        /// Until the breaker lets a probe through; `None` when an operator
        /// forced it open (it stays open until reset).
        retry_after: Option<Duration>,
    },
    /// The bulkhead and its queue are full, or the queue wait ran out. 503.
    Shed,
    /// Every connection to the endpoint is busy and its queue is full. 503.
    UpstreamQueueFull,
    /// No connection to the endpoint came free within `pending_timeout`. 503.
    UpstreamQueueTimeout,
    /// The upstream refused or did not accept the connection. 502.
    UpstreamUnavailable,
    /// The upstream broke the connection mid-request. 502.
    UpstreamReset,
    /// No response headers within the request timeout. 504.
    Timeout,
    /// breakwater's own memory is past the shed watermark. 503.
    Overload,
    /// The degradation level sheds the route's priority. 503.
    Degraded,
    /// The supervised process is starting or restarting. 503.
    Starting,
    /// The supervisor gave up on the process; an operator must act. 503.
    NeedsIntervention,
    /// An operator put the upstream in maintenance (`PUT /maintenance`). 503.
    Maintenance,
    /// Fault injection aborted the request (`routes[].fault.abort`), with
    /// the fault's status. The reply carries `x-breakwater-fault: abort`.
    FaultAbort {
        /// The status the fault gives.
        status: StatusCode,
        /// The `grpc-status` it gives a gRPC call, if the fault says.
        grpc_status: Option<Code>,
    },
    /// The client's request body was malformed. 400.
    BadRequestBody,
    /// The client went away (or cut its body short) before an answer. 499,
    /// which only the log sees.
    ClientGone,
    /// breakwater failed while serving the request (a caught panic). 500.
    Internal,
    /// The route forwards to the original destination, and that is one of
    /// breakwater's own addresses: the connection was not redirected (a
    /// client called the transparent listener directly), so forwarding it
    /// would come straight back. 508 Loop Detected (RFC 5842), never
    /// counted against the upstream.
    Loop,
}

/// Why the route stack produced no upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// A policy refused the request before the upstream was tried.
    Rejected(Rejection),
    /// The exchange with the upstream failed.
    Upstream(CallError),
}

impl From<CallError> for StackError {
    fn from(error: CallError) -> Self {
        StackError::Upstream(error)
    }
}

impl From<Rejection> for StackError {
    fn from(rejection: Rejection) -> Self {
        StackError::Rejected(rejection)
    }
}

impl StackError {
    /// The reply-level rejection for this error.
    pub fn rejection(self) -> Rejection {
        match self {
            StackError::Rejected(rejection) => rejection,
            StackError::Upstream(error) => Rejection::from(error),
        }
    }
}

impl From<CallError> for Rejection {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Connect | CallError::ConnectTimeout => Rejection::UpstreamUnavailable,
            CallError::Timeout => Rejection::Timeout,
            CallError::Reset => Rejection::UpstreamReset,
            CallError::ClientGone => Rejection::ClientGone,
            CallError::ClientMalformed => Rejection::BadRequestBody,
            CallError::QueueFull => Rejection::UpstreamQueueFull,
            CallError::QueueTimeout => Rejection::UpstreamQueueTimeout,
            CallError::Deadline => Rejection::Timeout,
        }
    }
}

/// What breakwater's reply depends on, taken from the request before it
/// goes down the stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyCx {
    /// A HEAD request: the reply has headers only.
    pub head: bool,
    /// A gRPC call: the reply is a gRPC status.
    pub grpc: bool,
}

impl ReplyCx {
    /// The context of `request`.
    pub fn of<B>(request: &Request<B>) -> Self {
        ReplyCx {
            head: request.method() == Method::HEAD,
            grpc: grpc::is_grpc(request.headers()),
        }
    }
}

// === impl Rejection ===

impl Rejection {
    /// Status code and `x-breakwater-reason` value.
    pub fn status_and_reason(self) -> (StatusCode, &'static str) {
        match self {
            Rejection::NoRoute => (StatusCode::NOT_FOUND, "no-route"),
            Rejection::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Rejection::BreakerOpen { .. } => (StatusCode::SERVICE_UNAVAILABLE, "breaker-open"),
            Rejection::Shed => (StatusCode::SERVICE_UNAVAILABLE, "shed"),
            Rejection::UpstreamQueueFull => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-queue-full")
            }
            Rejection::UpstreamQueueTimeout => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-queue-timeout")
            }
            Rejection::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream-unavailable"),
            Rejection::UpstreamReset => (StatusCode::BAD_GATEWAY, "upstream-reset"),
            Rejection::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Rejection::Overload => (StatusCode::SERVICE_UNAVAILABLE, "overload"),
            Rejection::Degraded => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
            Rejection::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
            Rejection::NeedsIntervention => (StatusCode::SERVICE_UNAVAILABLE, "needs-intervention"),
            Rejection::Maintenance => (StatusCode::SERVICE_UNAVAILABLE, "maintenance"),
            Rejection::FaultAbort { status, .. } => (status, "fault-injected"),
            Rejection::BadRequestBody => (StatusCode::BAD_REQUEST, "bad-request-body"),
            Rejection::ClientGone => (client_closed_request(), "client-gone"),
            Rejection::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Rejection::Loop => (StatusCode::LOOP_DETECTED, "loop"),
        }
    }

    /// The `grpc-status` a gRPC client gets for this rejection.
    pub fn grpc_code(self) -> Code {
        match self {
            Rejection::NoRoute => Code::UNIMPLEMENTED,
            Rejection::RateLimited { .. } => Code::RESOURCE_EXHAUSTED,
            Rejection::Timeout => Code::DEADLINE_EXCEEDED,
            Rejection::BreakerOpen { .. }
            | Rejection::Shed
            | Rejection::UpstreamQueueFull
            | Rejection::UpstreamQueueTimeout
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamReset
            | Rejection::Overload
            | Rejection::Degraded
            | Rejection::Starting
            | Rejection::NeedsIntervention => Code::UNAVAILABLE,
            // A loop is breakwater's own misconfiguration, not the service's.
            Rejection::BadRequestBody | Rejection::Internal | Rejection::Loop => Code::INTERNAL,
            Rejection::ClientGone => Code::CANCELLED,
            Rejection::Maintenance => Code::UNAVAILABLE,
            Rejection::FaultAbort {
                status,
                grpc_status,
            } => grpc_status.unwrap_or_else(|| grpc::from_http_status(status.as_u16())),
        }
    }

    /// Whole seconds a client should wait before trying again, rounded up
    /// so that a client that honours it never comes back too early; `None`
    /// when there is no honest value.
    fn retry_after(self) -> Option<u64> {
        let seconds = |wait: Duration| wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        match self {
            Rejection::RateLimited { retry_after }
            | Rejection::BreakerOpen {
                retry_after: Some(retry_after),
            } => Some(seconds(retry_after).max(1)),
            Rejection::Shed
            | Rejection::UpstreamQueueFull
            | Rejection::UpstreamQueueTimeout
            | Rejection::Overload
            | Rejection::Starting
            | Rejection::UpstreamUnavailable => Some(1),
            _ => None,
        }
    }
}

/// 499, nginx's "client closed request": logged, never sent.
fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The JSON body of every reply breakwater makes itself.
fn error_body(status: u16, reason: &str) -> String {
    format!("{{\"error\":\"{reason}\",\"status\":{status}}}\n")
}

/// breakwater's reply for `rejection` to a request with context `cx`.
pub fn reply(rejection: Rejection, cx: ReplyCx) -> Response<Body> {
    let (status, reason) = rejection.status_and_reason();
    if cx.grpc {
        let mut response = grpc_reply(rejection.grpc_code(), reason);
        let headers = response.headers_mut();
        if let Some(seconds) = rejection.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Rejection::FaultAbort { .. } = rejection {
            headers.insert(FAULT_HEADER, HeaderValue::from_static("abort"));
        }
        return response;
    }
    let body = error_body(status.as_u16(), reason);
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(if cx.head {
        Body::empty()
    } else {
        Body::full(body)
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if cx.head {
        headers.insert(CONTENT_LENGTH, length);
    }
    if let Some(seconds) = rejection.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Rejection::FaultAbort { .. } = rejection {
        headers.insert(FAULT_HEADER, HeaderValue::from_static("abort"));
    }
    response
}

/// A trailers-only gRPC reply: `code`, with `reason` as `grpc-message`
/// and `x-breakwater-reason`.
pub fn grpc_reply(code: Code, reason: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        grpc::GRPC_STATUS.clone(),
        HeaderValue::from_static(code.label()),
    );
    headers.insert(grpc::GRPC_MESSAGE.clone(), HeaderValue::from_static(reason));
    headers.insert(REASON_HEADER, HeaderValue::from_static(reason));
    response.body_mut().set_grpc_status(code);
    response
}

/// The complete bytes of an HTTP/1.1 refusal that closes the connection,
/// for the framing guard, which answers before any HTTP parser has run.
/// `reason` is a metric label (`bad_chunk`); the header says `bad-chunk`.
pub fn http1_refusal(status: u16, reason: &str) -> String {
    let phrase = StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Error");
    let header_reason = reason.replace('_', "-");
    let body = error_body(status, &header_reason);
    format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n{REASON_HEADER}: {header_reason}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn retry_after_is_rounded_up_and_at_least_one_second() {
        let open = reply(
            Rejection::BreakerOpen {
                retry_after: Some(Duration::from_millis(4200)),
            },
            ReplyCx::default(),
        );
        assert_eq!(open.status(), 503);
        assert_eq!(open.headers()[RETRY_AFTER], "5");
        assert_eq!(open.headers()[REASON_HEADER], "breaker-open");
        let limited = reply(
            Rejection::RateLimited {
                retry_after: Duration::from_millis(3),
            },
            ReplyCx::default(),
        );
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[RETRY_AFTER], "1");
        assert_eq!(
            reply(Rejection::Shed, ReplyCx::default()).headers()[RETRY_AFTER],
            "1"
        );
        assert!(reply(Rejection::Timeout, ReplyCx::default())
            .headers()
            .get(RETRY_AFTER)
            .is_none());
    }

    #[test]
    fn maintenance_and_injected_aborts_say_so() {
        let maintenance = reply(Rejection::Maintenance, ReplyCx::default());
        assert_eq!(maintenance.status(), 503);
        assert_eq!(maintenance.headers()[REASON_HEADER], "maintenance");
        assert!(maintenance.headers().get(FAULT_HEADER).is_none());
        let abort = reply(
            Rejection::FaultAbort {
                status: StatusCode::IM_A_TEAPOT,
                grpc_status: None,
            },
            ReplyCx::default(),
        );
        assert_eq!(abort.status(), 418);
        assert_eq!(abort.headers()[REASON_HEADER], "fault-injected");
        assert_eq!(abort.headers()[FAULT_HEADER], "abort");
        // A gRPC call gets the fault's grpc_status, or gRPC's reading of
        // its HTTP status.
        let grpc = ReplyCx {
            head: false,
            grpc: true,
        };
        for (grpc_status, expected) in [(Some(Code::new(10).unwrap()), "10"), (None, "14")] {
            let abort = reply(
                Rejection::FaultAbort {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    grpc_status,
                },
                grpc,
            );
            assert_eq!(abort.status(), 200);
            assert_eq!(abort.headers()["grpc-status"], expected);
            assert_eq!(abort.headers()[FAULT_HEADER], "abort");
        }
        let maintenance = reply(Rejection::Maintenance, grpc);
        assert_eq!(maintenance.headers()["grpc-status"], "14");
    }

    #[test]
    fn a_loop_is_508_and_waiting_would_not_help() {
        let looped = reply(Rejection::Loop, ReplyCx::default());
        assert_eq!(looped.status(), 508);
        assert_eq!(looped.headers()[REASON_HEADER], "loop");
        assert!(looped.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn a_forced_open_breaker_promises_no_retry_time() {
        let forced = reply(
            Rejection::BreakerOpen { retry_after: None },
            ReplyCx::default(),
        );
        assert_eq!(forced.status(), 503);
        assert!(forced.headers().get(RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_head_request_gets_headers_only() {
        let response = reply(
            Rejection::Shed,
            ReplyCx {
                head: true,
                grpc: false,
            },
        );
        let length: usize = response.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 0);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn a_grpc_call_gets_a_trailers_only_grpc_status() {
        let grpc = ReplyCx {
            head: false,
            grpc: true,
        };
        for (rejection, code, reason) in [
            (
                Rejection::BreakerOpen { retry_after: None },
                "14",
                "breaker-open",
            ),
            (Rejection::Shed, "14", "shed"),
            (Rejection::Degraded, "14", "degraded"),
            (Rejection::Overload, "14", "overload"),
            (Rejection::UpstreamUnavailable, "14", "upstream-unavailable"),
            (
                Rejection::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                "8",
                "rate-limited",
            ),
            (Rejection::Timeout, "4", "timeout"),
            (Rejection::NoRoute, "12", "no-route"),
        ] {
            let response = reply(rejection, grpc);
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert_eq!(headers[CONTENT_TYPE], "application/grpc");
            assert_eq!(headers["grpc-status"], code, "{rejection:?}");
            assert_eq!(headers["grpc-message"], reason);
            assert_eq!(headers[REASON_HEADER], reason);
            assert_eq!(response.body().grpc_status().map(Code::label), Some(code));
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty());
        }
    }

    #[tokio::test]
    async fn the_guards_refusals_carry_the_same_body() {
        let raw = http1_refusal(400, "content_length_with_transfer_encoding");
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(raw.contains("x-breakwater-reason: content-length-with-transfer-encoding\r\n"));
        assert!(raw.contains("connection: close\r\n"));
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            error_body(400, "content-length-with-transfer-encoding")
        );
        let same = reply(Rejection::NoRoute, ReplyCx::default());
        let bytes = same.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, error_body(404, "no-route"));
    }
}
