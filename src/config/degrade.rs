//! Graceful degradation config (SPEC §4): what a route answers when its
//! upstream cannot — `fallback:` and `stale_if_error:` — which routes give
//! way first (`priority:`), and the process-wide `degradation:` level.

use std::time::Duration;

use bytes::Bytes;

use super::checks::{above_zero, at_least, between, header_fields};
use super::decode::{ByteSize, Cx, Keys};
use super::policy::GrpcCode;
use super::yaml::Node;

/// Largest fallback body, inline or from `body_file`.
pub const MAX_FALLBACK_BODY: u64 = 1 << 20;

/// `routes[].priority`: which routes give way first when breakwater
/// degrades (`critical`, `normal`, `best_effort`).
pub use crate::policy::degradation::Priority;

impl_words!(Priority {
    Critical = "critical",
    Normal = "normal",
    BestEffort = "best_effort",
});

words! {
    /// `routes[].fallback.when[]`: what the fallback answers for.
    pub enum FallbackWhen {
        /// The breaker is open.
        BreakerOpen = "breaker_open",
        /// The bulkhead, the connection queue or the overload ladder shed it.
        Shed = "shed",
        /// The route's rate limit refused it.
        RateLimited = "rate_limited",
        /// No answer within the request timeout.
        Timeout = "timeout",
        /// The upstream failed after the retries: unreachable, reset, or a
        /// status in `failure_statuses`.
        UpstreamFailure = "upstream_failure",
        /// The degradation level sheds the route's priority.
        Degraded = "degraded",
        /// The supervised process is starting or needs intervention.
        Unavailable = "unavailable",
        /// The upstream is in maintenance (`PUT /maintenance`).
        Maintenance = "maintenance",
    }
}

section! {
    /// `routes[].fallback:` (SPEC §4.1) — a canned reply for when the
    /// upstream cannot answer. It carries `x-breakwater-degraded: fallback`
    /// and the usual `x-breakwater-reason`.
    pub(crate) struct FallbackKeys {
        /// The reply's status.
        #[check(between(100u16, 599u16))]
        status: u16 = 503,
        /// The reply's body.
        body: Option<String> = None,
        /// A file whose content is the reply's body, read when the config
        /// loads (at most 1MiB); a reload reads it again.
        body_file: Option<String> = None,
        /// The reply's `content-type`.
        content_type: String = "text/plain; charset=utf-8".to_owned(),
        /// More headers on the reply.
        #[check(header_fields())]
        headers: Vec<(String, String)> = Vec::new(),
        /// What it answers for.
        when: Vec<FallbackWhen> = FallbackWhen::ALL.to_vec(),
        /// The `grpc-status` of the reply to a gRPC call (`content-type:
        /// application/grpc…`). With `ok`, the body — one serialized
        /// protobuf response message — is sent as the call's one message;
        /// with another status the reply is trailers-only. A fallback
        /// without it leaves gRPC calls to breakwater's own gRPC reply.
        grpc_status: Option<GrpcCode> = None,
    }
}

/// `routes[].fallback:`, its body loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The reply's status.
    pub status: u16,
    /// The body as written (`body`), if inline.
    pub body_text: Option<String>,
    /// The file the body came from (`body_file`), if any.
    pub body_file: Option<String>,
    /// The body's bytes.
    pub body: Bytes,
    /// The reply's `content-type`.
    pub content_type: String,
    /// More headers on the reply.
    pub headers: Vec<(String, String)>,
    /// What it answers for.
    pub when: Vec<FallbackWhen>,
    /// The `grpc-status` of the reply to a gRPC call, if it answers them.
    pub grpc_status: Option<GrpcCode>,
}

impl Fallback {
    /// Whether the fallback answers for `why`.
    pub fn answers(&self, why: FallbackWhen) -> bool {
        self.when.contains(&why)
    }
}

fn fallback_from_keys(cx: &mut Cx, node: &Node, keys: FallbackKeys) -> Option<Fallback> {
    let body = match (&keys.body, &keys.body_file) {
        (Some(_), Some(_)) => {
            cx.error_at(
                "body_file",
                node.key_line("body_file"),
                "give body or body_file, not both",
            );
            return None;
        }
        (Some(text), None) => Bytes::from(text.clone()),
        (None, Some(path)) => match read_body_file(path) {
            Ok(bytes) => bytes,
            Err(message) => {
                cx.error_at("body_file", node.key_line("body_file"), message);
                return None;
            }
        },
        (None, None) => Bytes::new(),
    };
    if body.len() as u64 > MAX_FALLBACK_BODY {
        cx.error_at(
            "body",
            node.key_line("body"),
            "a fallback body is at most 1MiB",
        );
        return None;
    }
    Some(Fallback {
        status: keys.status,
        body_text: keys.body,
        body_file: keys.body_file,
        body,
        content_type: keys.content_type,
        headers: keys.headers,
        when: keys.when,
        grpc_status: keys.grpc_status,
    })
}

fn read_body_file(path: &str) -> Result<Bytes, String> {
    let meta = std::fs::metadata(path).map_err(|error| format!("cannot read {path:?}: {error}"))?;
    if meta.len() > MAX_FALLBACK_BODY {
        return Err(format!(
            "{path:?} is {} bytes; a fallback body is at most 1MiB",
            meta.len()
        ));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|error| format!("cannot read {path:?}: {error}"))
}

fn fallback_to_keys(fallback: &Fallback) -> FallbackKeys {
    FallbackKeys {
        status: fallback.status,
        body: fallback.body_text.clone(),
        body_file: fallback.body_file.clone(),
        content_type: fallback.content_type.clone(),
        headers: fallback.headers.clone(),
        when: fallback.when.clone(),
        grpc_status: fallback.grpc_status,
    }
}

via_keys!(Fallback => FallbackKeys, decode: fallback_from_keys, encode: fallback_to_keys);

section! {
    /// `routes[].stale_if_error:` (SPEC §4.2) — keep the last good answer
    /// to each GET/HEAD and serve it, with `age` and
    /// `x-breakwater-degraded: stale`, when the upstream fails, times out
    /// or the breaker is open. Answers with `cache-control: no-store` or
    /// `private` are never kept, nor answers to requests with
    /// `authorization` unless `public`.
    pub struct StaleIfError {
        /// Answers kept, at most.
        #[check(at_least(1))]
        max_entries: usize = 10_000,
        /// Bytes kept (bodies and headers), at most.
        #[check(above_zero())]
        max_bytes: ByteSize = ByteSize(64 << 20),
        /// Largest single answer kept; a larger one is passed on, not kept.
        #[check(above_zero())]
        max_entry_bytes: ByteSize = ByteSize(1 << 20),
        /// An answer older than this is not served.
        #[check(above_zero())]
        max_stale: Duration = Duration::from_secs(600),
    }
    validate: check_stale,
}

fn check_stale(stale: &mut StaleIfError, keys: &Keys<'_>, cx: &mut Cx) {
    if stale.max_entry_bytes.0 > stale.max_bytes.0 {
        keys.error(cx, "max_entry_bytes", "must not be above max_bytes");
    }
}

words! {
    /// `degradation.level`: a fixed level, or `auto`.
    pub enum DegradationSetting {
        /// From signals: shed rate, open breakers, unavailable upstreams,
        /// recovery in progress.
        Auto = "auto",
        /// Nothing gives way.
        Normal = "normal",
        /// Best-effort routes stop retrying.
        Minimal = "minimal",
        /// Best-effort routes get their fallback (or 503 `degraded`).
        Moderate = "moderate",
        /// Normal routes too.
        Severe = "severe",
        /// Only critical routes reach the upstream.
        Emergency = "emergency",
    }
}

section! {
    /// `degradation:` (SPEC §4.3) — when breakwater sheds routes by
    /// priority. `PUT /degradation` on the admin port overrides the level
    /// until `{"level": "auto"}` hands control back.
    pub struct Degradation {
        /// The level, or `auto`.
        level: DegradationSetting = DegradationSetting::Auto,
        /// `auto` rises once its signals have called for a higher level
        /// this long.
        #[check(above_zero())]
        raise_after: Duration = Duration::from_secs(2),
        /// `auto` falls one step each time its signals have called for a
        /// lower level this long; a route that has served no degraded
        /// reply this long has stopped degrading.
        #[check(above_zero())]
        lower_after: Duration = Duration::from_secs(15),
    }
}

impl DegradationSetting {
    /// The fixed level, or `None` for `auto`.
    pub fn level(self) -> Option<crate::policy::degradation::Level> {
        crate::policy::degradation::Level::from_word(self.as_str())
    }
}
