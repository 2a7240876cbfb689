//! The validated config: the only config types the rest of breakwater sees.
//!
//! Each type's [`Decode`] impl reads its YAML mapping key by key, fills in
//! the SPEC §8.4 defaults and checks value ranges; [`super::validate`] then
//! checks what spans several sections (names unique, references resolve).
//! Field docs double as the config reference; `config/breakwater.yaml` is
//! the annotated example.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::decode::{one_of, parse_with, ser_duration, ByteSize, Cx, Decode, Fields};
use super::policy::{
    self, Bulkhead, CircuitBreaker, HealthCheck, OutlierDetection, RateLimit, Retry, Toggle,
};
use super::yaml::Node;
use crate::events::{Severity, WebhookFormat};

fn ser_opt_duration<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => ser_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Worker threads and the like.
    pub runtime: Runtime,
    /// The operator port.
    pub admin: Admin,
    /// Global defaults for the hostile-input limits; listeners may override.
    pub limits: Limits,
    /// Where traffic comes in, and its routes.
    pub listeners: Vec<Listener>,
    /// Where traffic goes.
    pub upstreams: Vec<Upstream>,
    /// Supervisor settings (this build: drain only).
    pub supervisor: Supervisor,
    /// The memory watermark ladder.
    pub overload: Overload,
    /// Where events are sent.
    pub alerts: Alerts,
}

/// `alerts:` (SPEC §5.6).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Alerts {
    /// Each receives every event at or above its `min_severity`.
    pub webhooks: Vec<Webhook>,
}

/// `alerts.webhooks[]:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    /// `http://host:port/path`. Never printed: a Slack URL is a secret.
    pub url: Secret,
    /// `json` (the event) or `slack` (`{"text": …}`). Default json.
    #[serde(serialize_with = "ser_format")]
    pub format: WebhookFormat,
    /// `info`, `warning` (default) or `critical`.
    pub min_severity: Severity,
}

fn ser_format<S: serde::Serializer>(
    format: &WebhookFormat,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(match format {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
    })
}

impl Webhook {
    /// The events module's validated webhook, if this one is valid.
    pub fn to_config(&self) -> Option<crate::events::WebhookConfig> {
        crate::events::WebhookConfig::new(self.url.0.clone(), self.format, self.min_severity).ok()
    }
}

impl Decode for Webhook {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let url: Option<String> = fields.req(cx, "url");
        let format = fields
            .opt_with(cx, "format", |cx, node| {
                one_of(
                    cx,
                    node,
                    &[
                        ("json", WebhookFormat::Json),
                        ("slack", WebhookFormat::Slack),
                    ],
                )
            })
            .unwrap_or(WebhookFormat::Json);
        let min_severity = fields
            .opt_with(cx, "min_severity", |cx, node| {
                one_of(
                    cx,
                    node,
                    &[
                        ("info", Severity::Info),
                        ("warning", Severity::Warning),
                        ("critical", Severity::Critical),
                    ],
                )
            })
            .unwrap_or(Severity::Warning);
        if let Some(url) = &url {
            if let Err(error) = crate::events::WebhookConfig::new(
                url.clone(),
                crate::events::WebhookFormat::Json,
                crate::events::Severity::Info,
            ) {
                cx.error_at("url", fields.key_line("url"), error.to_string());
            }
        }
        let complete = fields.finish(cx, &["url", "format", "min_severity"], &["headers"]);
        complete.then_some(Webhook {
            url: Secret(url?),
            format,
            min_severity,
        })
    }
}

/// `overload:` (SPEC §11).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overload {
    /// breakwater's own RSS limit: at 85% keep-alive stops, at 95% new
    /// requests are shed (503 overload); each step is left 5 points lower.
    /// Default 256MiB.
    pub memory: ByteSize,
}

/// `runtime:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runtime {
    /// Worker threads; `None` means as many as the CPUs the process may use
    /// (which honours a cgroup CPU quota).
    pub threads: Option<usize>,
}

/// `admin:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    /// Address of the admin server. Default `127.0.0.1:15000`.
    pub listen: SocketAddr,
    /// Bearer token required by mutating calls, from `token` or the
    /// environment variable named by `token_env`. Never printed.
    pub token: Option<Secret>,
}

/// A value that must not be printed: serializes as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// `limits:` (SPEC §11), globally and per listener.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Longest request line. Default 8KiB. → 414.
    pub max_request_line: ByteSize,
    /// Largest request header block. Default 60KiB. → 431.
    pub max_header_bytes: ByteSize,
    /// Most header fields in one request. Default 100.
    pub max_headers: usize,
    /// Open downstream connections per listener; beyond it new connections
    /// are closed at once. Default 20000.
    pub max_connections: usize,
    /// Time a client has to send a complete request head. Default 10s.
    #[serde(serialize_with = "ser_duration")]
    pub header_read: Duration,
    /// Idle keep-alive connections are closed after this. Default 60s.
    #[serde(serialize_with = "ser_duration")]
    pub idle: Duration,
    /// Longest pause while a client sends a request body. Default 30s.
    #[serde(serialize_with = "ser_duration")]
    pub body_read_idle: Duration,
    /// Largest request body; `None` (the default) streams any size. A
    /// declared length over it gets 413 before anything is forwarded; a
    /// chunked body that grows past it ends the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// HTTP/2 limits.
    pub h2: H2Limits,
}

/// `limits.h2:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct H2Limits {
    /// Concurrent streams per connection. Default 100.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: ByteSize(8 * 1024),
            max_header_bytes: ByteSize(60 * 1024),
            max_headers: 100,
            max_connections: 20_000,
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body_read_idle: Duration::from_secs(30),
            max_body_bytes: None,
            h2: H2Limits {
                max_concurrent_streams: 100,
            },
        }
    }
}

const LIMIT_KEYS: &[&str] = &[
    "max_request_line",
    "body_read_idle",
    "max_body_bytes",
    "max_header_bytes",
    "max_headers",
    "max_connections",
    "header_read",
    "idle",
    "h2",
];

impl Limits {
    /// Reads a `limits:` mapping over `base`: absent keys keep base's value.
    fn decode_over(cx: &mut Cx, node: &Node, base: &Limits) -> Option<Limits> {
        let mut fields = Fields::new(cx, node)?;
        let mut limits = base.clone();
        if let Some(size) = fields.opt::<ByteSize>(cx, "max_header_bytes") {
            if size.0 < 1024 || size.0 > 1 << 20 {
                cx.error_at(
                    "max_header_bytes",
                    fields.key_line("max_header_bytes"),
                    "must be between 1KiB and 1MiB",
                );
            }
            limits.max_header_bytes = size;
        }
        if let Some(size) = fields.opt::<ByteSize>(cx, "max_request_line") {
            if size.0 < 256 || size.0 > 64 * 1024 {
                cx.error_at(
                    "max_request_line",
                    fields.key_line("max_request_line"),
                    "must be between 256B and 64KiB",
                );
            }
            limits.max_request_line = size;
        }
        if let Some(size) = fields.opt::<ByteSize>(cx, "max_body_bytes") {
            limits.max_body_bytes = Some(size);
        }
        if let Some(d) = fields.opt::<Duration>(cx, "body_read_idle") {
            positive(cx, &fields, "body_read_idle", d);
            limits.body_read_idle = d;
        }
        if let Some(n) = fields.opt::<usize>(cx, "max_headers") {
            if n == 0 || n > 10_000 {
                cx.error_at(
                    "max_headers",
                    fields.key_line("max_headers"),
                    "must be between 1 and 10000",
                );
            }
            limits.max_headers = n;
        }
        if let Some(n) = fields.opt::<usize>(cx, "max_connections") {
            if n == 0 {
                cx.error_at(
                    "max_connections",
                    fields.key_line("max_connections"),
                    "must be at least 1",
                );
            }
            limits.max_connections = n;
        }
        if let Some(d) = fields.opt::<Duration>(cx, "header_read") {
            positive(cx, &fields, "header_read", d);
            limits.header_read = d;
        }
        if let Some(d) = fields.opt::<Duration>(cx, "idle") {
            positive(cx, &fields, "idle", d);
            limits.idle = d;
        }
        if let Some(h2) = fields.opt_with(cx, "h2", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let streams = fields.or(cx, "max_concurrent_streams", base.h2.max_concurrent_streams);
            if streams == 0 {
                cx.error_at(
                    "max_concurrent_streams",
                    fields.key_line("max_concurrent_streams"),
                    "must be at least 1",
                );
            }
            fields
                .finish(cx, &["max_concurrent_streams"], &["max_header_list_size"])
                .then_some(H2Limits {
                    max_concurrent_streams: streams,
                })
        }) {
            limits.h2 = h2;
        }
        fields.finish(cx, LIMIT_KEYS, &[]).then_some(limits)
    }
}

fn positive(cx: &mut Cx, fields: &Fields<'_>, key: &str, duration: Duration) {
    if duration.is_zero() {
        cx.error_at(key, fields.key_line(key), "must be greater than 0");
    }
}

/// `listeners[]:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Address to accept on.
    pub listen: SocketAddr,
    /// Effective limits: the global ones with this listener's overrides.
    pub limits: Limits,
    /// Keep `x-forwarded-proto`/`-host` from downstream instead of
    /// overwriting them. Default false: clients' headers are not trusted.
    pub trust_forwarded: bool,
    /// Routes, tried in order; the first match wins.
    pub routes: Vec<Route>,
}

/// `listeners[].routes[]:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Unique name across all listeners (a metrics label).
    pub name: String,
    /// When this route applies.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Name of the upstream that serves it.
    pub upstream: String,
    /// Request timeouts.
    pub timeouts: RouteTimeouts,
    /// Token bucket; none unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The circuit breaker (on by default).
    pub circuit_breaker: Toggle<CircuitBreaker>,
    /// The bulkhead (on by default).
    pub bulkhead: Toggle<Bulkhead>,
    /// Retries (default: one attempt, i.e. none).
    pub retry: Retry,
}

/// `routes[].match:` — every given condition must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RouteMatch {
    /// `Host` (or `:authority`) without port, compared case-insensitively.
    /// A leading `*.` matches any subdomain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Path equals this (query string excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    /// Allowed methods; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers that must be present with exactly these values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// `routes[].timeouts:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteTimeouts {
    /// Time until the upstream's response headers. Default 15s. → 504.
    #[serde(serialize_with = "ser_duration")]
    pub request: Duration,
    /// Time for each try when retries are on; at most `request`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub per_try: Option<Duration>,
}

/// `upstreams[]:`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    /// Unique name, referenced by routes.
    pub name: String,
    /// `host:port` of each primary endpoint; requests go round robin.
    pub endpoints: Vec<String>,
    /// `host:port` of backup endpoints, used after a failover.
    pub backup: Vec<String>,
    /// Protocol spoken to the endpoints.
    pub protocol: Protocol,
    /// Time allowed to open a TCP connection. Default 1s. → 502.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Passive health from live traffic (on by default).
    pub outlier_detection: Toggle<OutlierDetection>,
    /// Active probes of each endpoint; none unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// `upstreams[].protocol`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (default).
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// The downstream request's own version.
    Auto,
}

pub use super::supervisor::{
    CrashLoop, ErrorRate, Failback, LogPattern, Process, Recovery, RecoveryAction, RestartBackoff,
    RestartPolicy, Signal, Supervisor, Triggers,
};

// === impl Decode ===

const ROOT_KEYS: &[&str] = &[
    "runtime",
    "admin",
    "limits",
    "listeners",
    "upstreams",
    "supervisor",
    "overload",
    "alerts",
];
const ROOT_LATER: &[&str] = &["degradation", "config_rollback"];

impl Decode for Config {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let runtime = fields.opt_with(cx, "runtime", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let threads: Option<usize> = fields.opt(cx, "threads");
            if threads == Some(0) || threads.is_some_and(|n| n > 1024) {
                cx.error_at(
                    "threads",
                    fields.key_line("threads"),
                    "must be between 1 and 1024",
                );
            }
            fields
                .finish(cx, &["threads"], &[])
                .then_some(Runtime { threads })
        });
        let admin = fields.opt_with(cx, "admin", decode_admin);
        let limits = fields
            .opt_with(cx, "limits", |cx, node| {
                Limits::decode_over(cx, node, &Limits::default())
            })
            .unwrap_or_default();
        let listeners = fields.req_with(cx, "listeners", |cx, node| {
            decode_list(cx, node, |cx, node| decode_listener(cx, node, &limits))
        });
        let upstreams: Option<Vec<Upstream>> = fields.req(cx, "upstreams");
        let supervisor: Option<Supervisor> = fields.opt(cx, "supervisor");
        let overload = fields.opt_with(cx, "overload", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let memory = fields.or(cx, "memory", ByteSize(256 << 20));
            if memory.0 < 1 << 20 {
                cx.error_at("memory", fields.key_line("memory"), "must be at least 1MiB");
            }
            fields
                .finish(cx, &["memory"], &[])
                .then_some(Overload { memory })
        });
        let alerts = fields.opt_with(cx, "alerts", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let webhooks = fields.opt(cx, "webhooks").unwrap_or_default();
            fields
                .finish(cx, &["webhooks"], &[])
                .then_some(Alerts { webhooks })
        });
        let complete = fields.finish(cx, ROOT_KEYS, ROOT_LATER);
        let config = Config {
            runtime: runtime.unwrap_or(Runtime { threads: None }),
            admin: admin.unwrap_or(Admin {
                listen: default_admin(),
                token: None,
            }),
            limits,
            listeners: listeners?,
            upstreams: upstreams?,
            supervisor: supervisor.unwrap_or_default(),
            alerts: alerts.unwrap_or_default(),
            overload: overload.unwrap_or(Overload {
                memory: ByteSize(256 << 20),
            }),
        };
        complete.then_some(config)
    }
}

/// The SPEC's admin address.
pub fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

fn decode_list<T>(
    cx: &mut Cx,
    node: &Node,
    item: impl Fn(&mut Cx, &Node) -> Option<T>,
) -> Option<Vec<T>> {
    let Some(items) = (match &node.value {
        super::yaml::Value::Seq(items) => Some(items),
        _ => None,
    }) else {
        cx.expected(node, "a list");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, node) in items.iter().enumerate() {
        match cx.at_index(index, |cx| item(cx, node)) {
            Some(value) => out.push(value),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_admin(cx: &mut Cx, node: &Node) -> Option<Admin> {
    let mut fields = Fields::new(cx, node)?;
    let listen = fields.or(cx, "listen", default_admin());
    let token: Option<String> = fields.opt(cx, "token");
    let token_env: Option<String> = fields.opt(cx, "token_env");
    let token = match (token, token_env) {
        (Some(_), Some(_)) => {
            cx.error_at(
                "token_env",
                fields.key_line("token_env"),
                "give either token or token_env, not both",
            );
            None
        }
        (Some(token), None) => Some(token),
        (None, Some(name)) => match std::env::var(&name) {
            Ok(value) => Some(value),
            Err(_) => {
                cx.error_at(
                    "token_env",
                    fields.key_line("token_env"),
                    format!("environment variable {name:?} is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if token.as_deref() == Some("") {
        cx.error_at(
            "token",
            fields.key_line("token").or(fields.key_line("token_env")),
            "the admin token must not be empty",
        );
    }
    fields
        .finish(cx, &["listen", "token", "token_env"], &[])
        .then_some(Admin {
            listen,
            token: token.map(Secret),
        })
}

fn decode_listener(cx: &mut Cx, node: &Node, global: &Limits) -> Option<Listener> {
    let mut fields = Fields::new(cx, node)?;
    let name: Option<String> = fields.req(cx, "name");
    let listen: Option<SocketAddr> = fields.req(cx, "listen");
    let limits = fields.opt_with(cx, "limits", |cx, node| {
        Limits::decode_over(cx, node, global)
    });
    let trust_forwarded = fields.or(cx, "trust_forwarded", false);
    let routes: Option<Vec<Route>> = fields.req(cx, "routes");
    if let Some(routes) = &routes {
        if routes.is_empty() {
            cx.error_at(
                "routes",
                fields.key_line("routes"),
                "a listener needs at least one route",
            );
        }
    }
    let complete = fields.finish(
        cx,
        &["name", "listen", "limits", "trust_forwarded", "routes"],
        &["tls", "transparent"],
    );
    let listener = Listener {
        name: name?,
        listen: listen?,
        limits: limits.unwrap_or_else(|| global.clone()),
        trust_forwarded,
        routes: routes?,
    };
    complete.then_some(listener)
}

const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "upstream",
    "timeouts",
    "rate_limit",
    "circuit_breaker",
    "bulkhead",
    "retry",
];
const ROUTE_LATER: &[&str] = &[
    "priority",
    "fallback",
    "stale_if_error",
    "fault",
    "hedge",
    "hold",
];

impl Decode for Route {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let name: Option<String> = fields.req(cx, "name");
        if let Some(name) = &name {
            check_name(cx, &fields, "name", name);
        }
        let matcher = fields.opt(cx, "match").unwrap_or_default();
        let upstream: Option<String> = fields.req(cx, "upstream");
        let timeouts = fields.opt_with(cx, "timeouts", |cx, node| {
            let mut fields = Fields::new(cx, node)?;
            let request = fields.or(cx, "request", Duration::from_secs(15));
            positive(cx, &fields, "request", request);
            let per_try: Option<Duration> = fields.opt(cx, "per_try");
            if per_try.is_some_and(|per_try| per_try.is_zero() || per_try > request) {
                cx.error_at(
                    "per_try",
                    fields.key_line("per_try"),
                    "must be above 0 and at most timeouts.request",
                );
            }
            fields
                .finish(
                    cx,
                    &["request", "per_try"],
                    &["connect", "idle", "header_read"],
                )
                .then_some(RouteTimeouts { request, per_try })
        });
        let rate_limit = fields.opt(cx, "rate_limit");
        let circuit_breaker = fields
            .opt_with(cx, "circuit_breaker", policy::decode_breaker)
            .unwrap_or_else(|| Toggle::On(CircuitBreaker::default()));
        let bulkhead = fields
            .opt_with(cx, "bulkhead", policy::decode_bulkhead)
            .unwrap_or_else(|| Toggle::On(Bulkhead::default()));
        let retry = fields.opt(cx, "retry").unwrap_or_default();
        let complete = fields.finish(cx, ROUTE_KEYS, ROUTE_LATER);
        let route = Route {
            name: name?,
            matcher,
            upstream: upstream?,
            timeouts: timeouts.unwrap_or(RouteTimeouts {
                request: Duration::from_secs(15),
                per_try: None,
            }),
            rate_limit,
            circuit_breaker,
            bulkhead,
            retry,
        };
        complete.then_some(route)
    }
}

/// Names become metric labels and URL path segments: keep them plain.
fn check_name(cx: &mut Cx, fields: &Fields<'_>, key: &str, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid {
        cx.error_at(
            key,
            fields.key_line(key),
            format!("names are 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'; found {name:?}"),
        );
    }
}

impl Decode for RouteMatch {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let host: Option<String> = fields.opt(cx, "host");
        let path_prefix: Option<String> = fields.opt(cx, "path_prefix");
        let path_exact: Option<String> = fields.opt(cx, "path_exact");
        for (key, value) in [("path_prefix", &path_prefix), ("path_exact", &path_exact)] {
            if value.as_ref().is_some_and(|path| !path.starts_with('/')) {
                cx.error_at(key, fields.key_line(key), "a path must start with '/'");
            }
        }
        if path_prefix.is_some() && path_exact.is_some() {
            cx.error_at(
                "path_exact",
                fields.key_line("path_exact"),
                "give path_prefix or path_exact, not both",
            );
        }
        let methods = fields
            .opt_with(cx, "methods", |cx, node| {
                Vec::<String>::decode(cx, node).and_then(|methods| {
                    let bad: Vec<&String> = methods
                        .iter()
                        .filter(|method| {
                            http::Method::from_bytes(method.as_bytes()).is_err()
                                || method.bytes().any(|b| b.is_ascii_lowercase())
                        })
                        .collect();
                    if bad.is_empty() {
                        Some(methods)
                    } else {
                        cx.error(
                            node.line,
                            format!(
                                "expected HTTP methods in capitals like GET, POST; found {bad:?}"
                            ),
                        );
                        None
                    }
                })
            })
            .unwrap_or_default();
        let headers = fields
            .opt_with(cx, "headers", |cx, node| {
                let mut out = Vec::new();
                let super::yaml::Value::Map(entries) = &node.value else {
                    cx.expected(node, "a mapping of header name to value");
                    return None;
                };
                for (key, value) in entries {
                    let name = parse_with(cx, key, "a header name", |text| {
                        http::HeaderName::from_bytes(text.as_bytes())
                            .map(|name| name.as_str().to_owned())
                            .map_err(|_| format!("{text:?} is not a valid header name"))
                    });
                    let value = String::decode(cx, value);
                    if let (Some(name), Some(value)) = (name, value) {
                        if http::HeaderValue::from_str(&value).is_err() {
                            cx.error(key.line, format!("{value:?} is not a valid header value"));
                        }
                        out.push((name, value));
                    }
                }
                Some(out)
            })
            .unwrap_or_default();
        let complete = fields.finish(
            cx,
            &["host", "path_prefix", "path_exact", "methods", "headers"],
            &["port"],
        );
        complete.then_some(RouteMatch {
            host: host.map(|host| host.to_ascii_lowercase()),
            path_prefix,
            path_exact,
            methods,
            headers,
        })
    }
}

impl Decode for Upstream {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        let mut fields = Fields::new(cx, node)?;
        let name: Option<String> = fields.req(cx, "name");
        if let Some(name) = &name {
            check_name(cx, &fields, "name", name);
        }
        let endpoints = fields.req_with(cx, "endpoints", decode_endpoints);
        if endpoints.as_ref().is_some_and(Vec::is_empty) {
            cx.error_at(
                "endpoints",
                fields.key_line("endpoints"),
                "an upstream needs at least one endpoint",
            );
        }
        let backup = fields
            .opt_with(cx, "backup", decode_endpoints)
            .unwrap_or_default();
        let protocol = fields
            .opt_with(cx, "protocol", |cx, node| {
                one_of(
                    cx,
                    node,
                    &[
                        ("http1", Protocol::Http1),
                        ("http2", Protocol::Http2),
                        ("auto", Protocol::Auto),
                    ],
                )
            })
            .unwrap_or(Protocol::Http1);
        let connect_timeout = fields.or(cx, "connect_timeout", Duration::from_secs(1));
        positive(cx, &fields, "connect_timeout", connect_timeout);
        let outlier_detection = fields
            .opt_with(cx, "outlier_detection", policy::decode_outlier)
            .unwrap_or_else(|| Toggle::On(OutlierDetection::default()));
        let health_check = fields.opt(cx, "health_check");
        let complete = fields.finish(
            cx,
            &[
                "name",
                "endpoints",
                "backup",
                "protocol",
                "connect_timeout",
                "outlier_detection",
                "health_check",
            ],
            &["tls", "slow_start"],
        );
        let upstream = Upstream {
            name: name?,
            endpoints: endpoints?,
            backup,
            protocol,
            connect_timeout,
            outlier_detection,
            health_check,
        };
        complete.then_some(upstream)
    }
}

fn decode_endpoints(cx: &mut Cx, node: &Node) -> Option<Vec<String>> {
    let endpoints = Vec::<String>::decode(cx, node)?;
    let mut ok = true;
    for (index, endpoint) in endpoints.iter().enumerate() {
        let valid = endpoint
            .parse::<http::uri::Authority>()
            .ok()
            .filter(|authority| {
                authority.port_u16().is_some_and(|port| port != 0) && !endpoint.contains('@')
            });
        if valid.is_none() {
            let line = match &node.value {
                super::yaml::Value::Seq(items) => items.get(index).map(|item| item.line),
                _ => None,
            };
            cx.error_at(
                &format!("[{index}]"),
                line,
                format!("expected host:port like 127.0.0.1:8080, found {endpoint:?}"),
            );
            ok = false;
        }
    }
    ok.then_some(endpoints)
}
