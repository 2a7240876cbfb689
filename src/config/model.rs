//! The validated config: the only config types the rest of breakwater sees.
//!
//! Each section is declared once with `section!` (see [`super::declare`]):
//! its keys, their defaults (SPEC §8.4), their value checks and their docs.
//! The decoder, `Default`, the `breakwater check` printout, the JSON Schema
//! and `docs/CONFIG.md` all come from these declarations; a `validate:`
//! hook holds what spans keys. [`super::validate`] checks what spans
//! sections (names unique, references resolve).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value as Json;

use super::checks::{
    above_zero, at_least, between, header_fields, host_ports, non_empty, plain_name, url_path,
    Check, Checked, Fault,
};
use super::declare::child;
use super::decode::{ByteSize, ConfigValue, Cx, Keys};
use super::degrade::{Degradation, Fallback, Priority, StaleIfError};
use super::ops::{ConfigRollback, FaultInjection};
use super::policy::{
    Bulkhead, CircuitBreaker, HealthCheck, OutlierDetection, RateLimit, Retry, Toggle,
};
use super::yaml::Node;
use crate::events::{Severity, WebhookFormat};

pub use super::supervisor::{
    CrashLoop, ErrorRate, Failback, LogPattern, Process, Recovery, RecoveryAction, RestartBackoff,
    RestartPolicy, Signal, Supervisor, Triggers,
};

// === the file ===

section! {
    /// The whole config file.
    pub struct Config {
        /// Worker threads.
        runtime: Runtime = Runtime::default(),
        /// The operator port.
        admin: Admin = Admin::default(),
        /// Global defaults for the hostile-input limits; each listener may
        /// override any of them.
        limits: Limits = Limits::default(),
        /// Where traffic comes in, and its routes.
        listeners: Vec<Listener>,
        /// Where traffic goes. May be left out when every route is on a
        /// transparent listener and forwards to the original destination.
        upstreams: Vec<Upstream> = Vec::new(),
        /// The embedded supervisor.
        supervisor: Supervisor = Supervisor::default(),
        /// The memory watermark ladder.
        overload: Overload = Overload::default(),
        /// Where events are sent.
        alerts: Alerts = Alerts::default(),
        /// When breakwater sheds routes by priority.
        degradation: Degradation = Degradation::default(),
        /// Restore the previous config when a reload brings errors; off
        /// unless set.
        config_rollback: Option<ConfigRollback> = None,
    }
    validate: finish_config,
}

/// The name of the built-in upstream of routes on a transparent listener
/// that name none: it forwards to `127.0.0.1:<original port>`.
pub const ORIGINAL_DST_UPSTREAM: &str = "original-dst";

fn finish_config(config: &mut Config, keys: &Keys<'_>, cx: &mut Cx) {
    inherit_limits(config, keys, cx);
    add_original_dst_upstream(config);
}

/// Routes on transparent listeners that name no upstream go to
/// [`ORIGINAL_DST_UPSTREAM`]; unless the file defines an upstream by that
/// name (to tune its settings), the built-in one is added with defaults, so
/// the effective config shows where such routes go.
fn add_original_dst_upstream(config: &mut Config) {
    let mut used = false;
    for listener in config.listeners.iter_mut().filter(|l| l.transparent) {
        for route in &mut listener.routes {
            if route.upstream.is_none() {
                route.upstream = Some(ORIGINAL_DST_UPSTREAM.to_owned());
            }
            used |= route.upstream() == ORIGINAL_DST_UPSTREAM;
        }
    }
    if used && config.upstream(ORIGINAL_DST_UPSTREAM).is_none() {
        config.upstreams.push(Upstream::original_dst());
    }
}

/// A listener's `limits:` start from the global `limits:`, key by key: a
/// key the listener does not write keeps the global value.
fn inherit_limits(config: &mut Config, keys: &Keys<'_>, cx: &mut Cx) {
    let listeners = keys.get("listeners");
    for (index, listener) in config.listeners.iter_mut().enumerate() {
        let source = cx.source_index("listeners", index);
        let limits = listeners
            .and_then(|node| match &node.value {
                super::yaml::Value::Seq(items) => items.get(source),
                _ => None,
            })
            .and_then(|node| child(node, "limits"));
        match limits {
            Some(node) => listener.limits.inherit(&config.limits, node),
            None => listener.limits = config.limits.clone(),
        }
    }
}

impl Config {
    /// Finds an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|upstream| upstream.name == name)
    }
}

section! {
    /// `runtime:` — settings fixed at start (a reload that changes them is
    /// refused).
    pub struct Runtime {
        /// Worker threads; when unset, as many as the CPUs the process may
        /// use (which honours a cgroup CPU quota). One thread runs a
        /// single-threaded scheduler, which serves many busy connections
        /// more fairly.
        #[check(between(1, 1024))]
        #[default_text = "the CPUs the process may use"]
        threads: Option<usize> = None,
    }
}

// === admin ===

/// `admin:` (SPEC §6) — the operator port; read through `AdminKeys`,
/// where `token_env` becomes the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Address of the admin server.
    pub listen: SocketAddr,
    /// Bearer token required by mutating calls, from `token` or the
    /// environment variable named by `token_env`. Never printed.
    pub token: Option<Secret>,
}

section! {
    /// `admin:` (SPEC §6) — the operator port. Mutating calls need the
    /// token when one is set; a non-loopback address without a token is
    /// refused.
    pub(crate) struct AdminKeys {
        /// Address of the admin server.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 15000)),
        /// Bearer token for mutating calls. Never printed.
        #[check(non_empty("a non-empty token"))]
        token: Option<Secret> = None,
        /// Or: the environment variable that holds the token.
        token_env: Option<String> = None,
    }
    validate: resolve_token_env,
}

fn resolve_token_env(admin: &mut AdminKeys, keys: &Keys<'_>, cx: &mut Cx) {
    let Some(name) = admin.token_env.take() else {
        return;
    };
    if admin.token.is_some() {
        keys.error(cx, "token_env", "give either token or token_env, not both");
        return;
    }
    match std::env::var(&name) {
        Ok(value) if value.is_empty() => {
            keys.error(cx, "token_env", "the admin token must not be empty")
        }
        Ok(value) => admin.token = Some(Secret(value)),
        Err(_) => keys.error(
            cx,
            "token_env",
            format!("environment variable {name:?} is not set"),
        ),
    }
}

impl From<AdminKeys> for Admin {
    fn from(keys: AdminKeys) -> Self {
        Admin {
            listen: keys.listen,
            token: keys.token,
        }
    }
}

fn admin_from_keys(_: &mut Cx, _: &Node, keys: AdminKeys) -> Option<Admin> {
    Some(keys.into())
}

fn admin_to_keys(admin: &Admin) -> AdminKeys {
    AdminKeys {
        listen: admin.listen,
        token: admin.token.clone(),
        token_env: None,
    }
}

via_keys!(Admin => AdminKeys, decode: admin_from_keys, encode: admin_to_keys);

impl Default for Admin {
    fn default() -> Self {
        AdminKeys::default().into()
    }
}

/// A value that must not be printed: shows as `<redacted>` in the
/// effective config and in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ConfigValue for Secret {
    fn decode(cx: &mut Cx, node: &Node) -> Option<Self> {
        String::decode(cx, node).map(Secret)
    }
    fn to_json(&self) -> Json {
        Json::from("<redacted>")
    }
    fn schema() -> Json {
        String::schema()
    }
    fn type_name() -> String {
        "string (secret: printed as `<redacted>`)".to_owned()
    }
}

serialize_as_json!(Secret);

impl Checked for Secret {
    type Item = String;
    fn item(&self) -> Option<&String> {
        Some(&self.0)
    }
}

// === limits ===

section! {
    /// `limits:` (SPEC §11) — the hostile-input limits (docs/SECURITY.md
    /// gives the reason for each). Globally, and per listener, where each
    /// key written overrides the global one.
    pub struct Limits {
        /// Longest request line. → 414.
        #[check(between(ByteSize(256), ByteSize(64 << 10)))]
        max_request_line: ByteSize = ByteSize(8 << 10),
        /// Largest request header block. → 431.
        #[check(between(ByteSize(1 << 10), ByteSize(1 << 20)))]
        max_header_bytes: ByteSize = ByteSize(60 << 10),
        /// Most header fields in one request. → 431.
        #[check(between(1, 10_000))]
        max_headers: usize = 100,
        /// Open downstream connections per listener; beyond it new
        /// connections are closed at once.
        #[check(at_least(1))]
        max_connections: usize = 20_000,
        /// Time a client has to send a complete request head (the first
        /// request: from accept). → 408, close.
        #[check(above_zero())]
        header_read: Duration = Duration::from_secs(10),
        /// Idle keep-alive connections are closed after this.
        #[check(above_zero())]
        idle: Duration = Duration::from_secs(60),
        /// Longest pause while a client sends a request body. → close.
        #[check(above_zero())]
        body_read_idle: Duration = Duration::from_secs(30),
        /// Largest request body; unset, any size streams. A declared length
        /// over it gets 413 before anything is forwarded; a chunked body
        /// that grows past it ends the connection.
        #[default_text = "unlimited"]
        max_body_bytes: Option<ByteSize> = None,
        /// HTTP/2 limits.
        h2: H2Limits = H2Limits::default(),
    }
}

section! {
    /// `limits.h2:`
    pub struct H2Limits {
        /// Concurrent streams per connection.
        #[check(at_least(1))]
        max_concurrent_streams: u32 = 100,
    }
    later: ["max_header_list_size"],
}

// === listeners and routes ===

section! {
    /// `listeners[]:` — an address breakwater accepts on (HTTP/1.1 and h2c
    /// on the same port, or both over TLS with `tls`) and its routes.
    /// Adding, removing or moving a listener needs a restart.
    pub struct Listener {
        /// Unique name, used in metrics and logs.
        name: String,
        /// Address to accept on.
        listen: SocketAddr,
        /// Overrides of the global `limits:`; each key not written here
        /// keeps the global value.
        #[default_text = "the global limits"]
        limits: Limits = Limits::default(),
        /// Keep `x-forwarded-proto`/`-host` from downstream instead of
        /// overwriting them; clients' headers are not trusted unless set.
        trust_forwarded: bool = false,
        /// Terminate TLS here (HTTP/1.1 and HTTP/2 chosen by ALPN); none
        /// unless set. The files are read again on every reload and when
        /// their content changes (checked every second): new handshakes
        /// get the new certificate, open connections keep theirs.
        tls: Option<ListenerTls> = None,
        /// Accept connections redirected here by `breakwater iptables
        /// install` (iptables `REDIRECT`): each connection's original
        /// destination is read from the socket (`SO_ORIGINAL_DST`), routes
        /// may match its port (`match.port`), and routes that name no
        /// upstream forward to `127.0.0.1:<original port>` (the built-in
        /// `original-dst` upstream). A connection that was not redirected
        /// (made to this address directly) has no original destination:
        /// `original_dst` upstreams refuse it with 508 `loop`.
        transparent: bool = false,
        /// Routes, tried in order; the first match wins; no match → 404.
        #[check(non_empty("at least one route"))]
        routes: Vec<Route>,
    }
}

section! {
    /// `listeners[].tls:` — TLS termination. ALPN offers `h2` and
    /// `http/1.1`; the framing guard and every `limits:` key apply to the
    /// decrypted bytes exactly as on plain TCP, and the TLS handshake must
    /// finish within `limits.header_read`. Paths are relative to the
    /// working directory. Requests get `x-forwarded-proto: https`.
    pub struct ListenerTls {
        /// PEM file with the certificate chain, leaf first.
        cert: String,
        /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or
        /// SEC1).
        key: String,
        /// PEM bundle of the CAs that sign client certificates. When set,
        /// every client must present a certificate signed by one of them
        /// (mTLS); a handshake without one fails.
        client_ca: Option<String> = None,
    }
    validate: check_listener_tls,
}

fn check_listener_tls(tls: &mut ListenerTls, keys: &Keys<'_>, cx: &mut Cx) {
    use std::path::Path;
    let mut usable = true;
    if let Err(error) = crate::tls::read_certs(Path::new(&tls.cert)) {
        keys.error(cx, "cert", error.to_string());
        usable = false;
    }
    if let Err(error) = crate::tls::read_key(Path::new(&tls.key)) {
        keys.error(cx, "key", error.to_string());
        usable = false;
    }
    if let Some(ca) = &tls.client_ca {
        if let Err(error) = crate::tls::read_roots(Path::new(ca)) {
            keys.error(cx, "client_ca", error.to_string());
            usable = false;
        }
    }
    if usable {
        let built = crate::tls::server_config(
            Path::new(&tls.cert),
            Path::new(&tls.key),
            tls.client_ca.as_deref().map(Path::new),
        );
        if let Err(error) = built {
            keys.error(cx, "key", error.to_string());
        }
    }
}

section! {
    /// `listeners[].routes[]:` (SPEC §3) — which requests go where, and the
    /// policies on the way.
    pub struct Route {
        /// Unique name across all listeners (a metrics label).
        #[check(plain_name())]
        name: String,
        /// When this route applies; every condition given must hold.
        #[key = "match"]
        matcher: RouteMatch = RouteMatch::default(),
        /// Name of the upstream that serves it. On a transparent listener
        /// it may be left out: the route then goes to `original-dst`, a
        /// built-in upstream with default settings that forwards to
        /// `127.0.0.1:<original port>` (define an upstream named
        /// `original-dst` with `original_dst: loopback` to tune it).
        /// Required elsewhere.
        upstream: Option<String> = None,
        /// Request timeouts.
        timeouts: RouteTimeouts = RouteTimeouts::default(),
        /// A token bucket; none unless set.
        rate_limit: Option<RateLimit> = None,
        /// The circuit breaker: on unless `false`.
        #[default_text = "on"]
        circuit_breaker: Toggle<CircuitBreaker> = Toggle::On(CircuitBreaker::default()),
        /// The bulkhead: on unless `false`.
        #[default_text = "on"]
        bulkhead: Toggle<Bulkhead> = Toggle::On(Bulkhead::default()),
        /// Retries (by default one attempt, i.e. none).
        retry: Retry = Retry::default(),
        /// Which routes give way first when breakwater degrades.
        priority: Priority = Priority::Normal,
        /// A canned reply for when the upstream cannot answer; none unless
        /// set.
        fallback: Option<Fallback> = None,
        /// Serve the last good answer to a GET/HEAD when the upstream
        /// fails; off unless set.
        stale_if_error: Option<StaleIfError> = None,
        /// Faults injected into the route's traffic; none unless set.
        fault: Option<FaultInjection> = None,
    }
    later: ["hedge", "hold"],
}

section! {
    /// `routes[].match:` — every condition given must hold; none matches
    /// every request.
    pub struct RouteMatch {
        /// `Host` (or `:authority`) without port, compared
        /// case-insensitively. A leading `*.` matches any subdomain.
        host: Option<String> = None,
        /// Path starts with this.
        #[check(url_path())]
        path_prefix: Option<String> = None,
        /// Path equals this (query string excluded).
        #[check(url_path())]
        path_exact: Option<String> = None,
        /// Allowed methods; empty means any.
        #[check(http_methods())]
        methods: Vec<String> = Vec::new(),
        /// Headers that must be present with exactly these values.
        #[check(header_fields())]
        headers: Vec<(String, String)> = Vec::new(),
        /// The port the client connected to: on a transparent listener the
        /// original destination's port (before the iptables redirect),
        /// elsewhere the listener's own port.
        #[check(between(1, 65535))]
        port: Option<u16> = None,
    }
    validate: check_match,
}

impl Route {
    /// The name of the upstream that serves the route. Always written
    /// after loading: a transparent listener's route without one gets
    /// [`ORIGINAL_DST_UPSTREAM`], and anywhere else its absence is an error.
    pub fn upstream(&self) -> &str {
        self.upstream.as_deref().unwrap_or(ORIGINAL_DST_UPSTREAM)
    }
}

fn check_match(matcher: &mut RouteMatch, keys: &Keys<'_>, cx: &mut Cx) {
    if keys.has("path_prefix") && keys.has("path_exact") {
        keys.error(cx, "path_exact", "give path_prefix or path_exact, not both");
    }
    if let Some(host) = &mut matcher.host {
        host.make_ascii_lowercase();
    }
    for (name, _) in &mut matcher.headers {
        name.make_ascii_lowercase();
    }
}

/// HTTP methods, written in capitals.
fn http_methods() -> Check<Vec<String>> {
    Check::each(
        "HTTP methods in capitals",
        serde_json::json!({"items": {"pattern": "^[A-Z0-9!#$%&'*+.^_`|~-]+$"}}),
        |method: &String| {
            let valid = http::Method::from_bytes(method.as_bytes()).is_ok()
                && !method.bytes().any(|b| b.is_ascii_lowercase());
            if valid {
                Ok(())
            } else {
                Err(format!(
                    "expected an HTTP method in capitals like GET or POST, found {method:?}"
                ))
            }
        },
    )
}

section! {
    /// `routes[].timeouts:` (SPEC §3.3) — how long a request may take.
    pub struct RouteTimeouts {
        /// Time until the upstream's response headers, all tries included.
        /// → 504.
        #[check(above_zero())]
        request: Duration = Duration::from_secs(15),
        /// Time for each try when retries are on; at most `request`.
        #[check(above_zero())]
        per_try: Option<Duration> = None,
    }
    later: ["connect", "idle", "header_read"],
    validate: check_timeouts,
}

fn check_timeouts(timeouts: &mut RouteTimeouts, keys: &Keys<'_>, cx: &mut Cx) {
    if timeouts
        .per_try
        .is_some_and(|per_try| per_try > timeouts.request)
    {
        keys.error(cx, "per_try", "must be at most timeouts.request");
    }
}

// === upstreams ===

section! {
    /// `upstreams[]:` — a service breakwater forwards to.
    pub struct Upstream {
        /// Unique name, referenced by routes.
        #[check(plain_name())]
        name: String,
        /// `host:port` of each primary endpoint; requests go round robin,
        /// over keep-alive pools.
        /// Required unless `original_dst` is set.
        #[check(host_ports())]
        endpoints: Vec<String> = Vec::new(),
        /// Instead of `endpoints`: send each request where its connection
        /// was going before a transparent listener took it. `loopback`:
        /// `127.0.0.1:<original port>` (inbound interception: the service
        /// beside breakwater); `address`: the original address itself
        /// (outbound interception). Only routes on transparent listeners
        /// may use such an upstream; a target that is one of breakwater's
        /// own listeners or its admin port is refused with 508 `loop`.
        original_dst: Option<OriginalDst> = None,
        /// `host:port` of backup endpoints, used after a failover (by the
        /// supervisor's ladder or `POST /upstreams/{name}/failover`).
        #[check(host_ports())]
        backup: Vec<String> = Vec::new(),
        /// Protocol spoken to the endpoints.
        protocol: Protocol = Protocol::Http1,
        /// Time allowed to open a TCP connection. Above Linux's first SYN
        /// retransmission (1s), so a SYN the service's full accept queue
        /// dropped gets its second chance; a timeout while the endpoint
        /// answers other requests is congestion, not counted against it.
        /// → 502 `upstream-unavailable` when the endpoint answers nothing.
        #[check(above_zero())]
        connect_timeout: Duration = Duration::from_secs(2),
        /// Each endpoint's HTTP/1 connection limits and queue.
        connections: Connections = Connections::default(),
        /// Passive health from live traffic: on unless `false`.
        #[default_text = "on"]
        outlier_detection: Toggle<OutlierDetection> = Toggle::On(OutlierDetection::default()),
        /// Active probes of each endpoint; none unless set.
        health_check: Option<HealthCheck> = None,
        /// Speak TLS to the endpoints; plain TCP unless set. ALPN offers
        /// `h2` or `http/1.1` to match `protocol`.
        tls: Option<UpstreamTls> = None,
    }
    later: ["slow_start"],
    validate: check_upstream,
}

impl Upstream {
    /// The built-in upstream of routes on a transparent listener that name
    /// none: default settings, to `127.0.0.1:<original port>`.
    pub fn original_dst() -> Upstream {
        Upstream {
            name: ORIGINAL_DST_UPSTREAM.to_owned(),
            endpoints: Vec::new(),
            original_dst: Some(OriginalDst::Loopback),
            backup: Vec::new(),
            protocol: Protocol::Http1,
            connect_timeout: Duration::from_secs(2),
            connections: Connections::default(),
            outlier_detection: Toggle::On(OutlierDetection::default()),
            health_check: None,
            tls: None,
        }
    }
}

fn check_upstream(upstream: &mut Upstream, keys: &Keys<'_>, cx: &mut Cx) {
    // Items that failed to decode were reported already: an empty list
    // is only worth a word when nothing was written.
    let written = |key: &str| {
        keys.get(key).is_some_and(
            |node| !matches!(&node.value, super::yaml::Value::Seq(items) if items.is_empty()),
        )
    };
    if upstream.original_dst.is_some() {
        for key in ["endpoints", "backup"] {
            if written(key) {
                keys.error(cx, key, "give endpoints or original_dst, not both");
            }
        }
        if upstream.health_check.is_some() {
            keys.error(
                cx,
                "health_check",
                "an original_dst upstream has no fixed address to probe",
            );
        }
    } else if !written("endpoints") {
        keys.error(
            cx,
            "endpoints",
            "needs at least one endpoint (or original_dst)",
        );
    }
    let grpc_probe = upstream
        .health_check
        .as_ref()
        .is_some_and(|check| matches!(check.probe, super::policy::Probe::Grpc { .. }));
    if grpc_probe && upstream.protocol == Protocol::Http1 {
        keys.error(
            cx,
            "health_check",
            "a grpc health check speaks HTTP/2: set protocol to http2 or auto",
        );
    }
}

words! {
    /// `upstreams[].original_dst`
    pub enum OriginalDst {
        /// `127.0.0.1:<original port>`.
        Loopback = "loopback",
        /// The original destination address and port.
        Address = "address",
    }
}

section! {
    /// `upstreams[].tls:` — TLS to the endpoints, verified against `ca` or
    /// the system trust store. Paths are relative to the working
    /// directory; the files are read again on every reload and when their
    /// content changes.
    pub struct UpstreamTls {
        /// Server name sent (SNI) and verified in the certificate; a DNS
        /// name or an IP address.
        #[default_text = "each endpoint's host"]
        sni: Option<String> = None,
        /// PEM bundle of the CAs to trust for the upstream's certificate.
        #[default_text = "the system trust store"]
        ca: Option<String> = None,
        /// PEM client certificate chain, for upstreams that require mTLS;
        /// needs `client_key`.
        client_cert: Option<String> = None,
        /// PEM private key of `client_cert`.
        client_key: Option<String> = None,
    }
    validate: check_upstream_tls,
}

fn check_upstream_tls(tls: &mut UpstreamTls, keys: &Keys<'_>, cx: &mut Cx) {
    use std::path::Path;
    if let Some(sni) = &tls.sni {
        if let Err(message) = crate::tls::server_name(sni) {
            keys.error(cx, "sni", message);
        }
    }
    if let Some(ca) = &tls.ca {
        if let Err(error) = crate::tls::read_roots(Path::new(ca)) {
            keys.error(cx, "ca", error.to_string());
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let cert_ok = crate::tls::read_certs(Path::new(cert))
                .map_err(|error| keys.error(cx, "client_cert", error.to_string()))
                .is_ok();
            let key_ok = crate::tls::read_key(Path::new(key))
                .map_err(|error| keys.error(cx, "client_key", error.to_string()))
                .is_ok();
            if cert_ok && key_ok {
                let built = crate::tls::client_config(
                    crate::tls::ClientFiles {
                        ca: None,
                        identity: Some((Path::new(cert), Path::new(key))),
                    },
                    &[],
                );
                if let Err(error) = built {
                    keys.error(cx, "client_key", error.to_string());
                }
            }
        }
        (Some(_), None) => keys.error(cx, "client_key", "client_cert needs client_key"),
        (None, Some(_)) => keys.error(cx, "client_cert", "client_key needs client_cert"),
        (None, None) => {}
    }
}

section! {
    /// `upstreams[].connections:` — how many HTTP/1 connections breakwater
    /// keeps to each endpoint, and how requests wait for one (HAProxy's
    /// `maxconn` and server queue, Envoy's `max_connections` and
    /// `max_pending_requests`).
    pub struct Connections {
        /// Connections to one endpoint, open, in use or being dialled.
        #[check(at_least(1))]
        max_connections: usize = 1024,
        /// Connections to one endpoint being dialled at once, so a burst
        /// does not overflow a small service's accept queue.
        #[check(at_least(1))]
        max_connecting: usize = 4,
        /// Requests waiting for a connection to one endpoint; more are shed
        /// with 503 `upstream-queue-full`.
        max_pending: usize = 1024,
        /// Longest wait for a connection; then 503 `upstream-queue-timeout`.
        #[check(above_zero())]
        pending_timeout: Duration = Duration::from_secs(5),
    }
}

words! {
    /// `upstreams[].protocol`
    pub enum Protocol {
        /// HTTP/1.1.
        Http1 = "http1",
        /// HTTP/2 with prior knowledge (h2c).
        Http2 = "http2",
        /// The downstream request's own version.
        Auto = "auto",
    }
}

// === overload and alerts ===

section! {
    /// `overload:` (SPEC §11) — breakwater's own memory watermarks.
    pub struct Overload {
        /// breakwater's own RSS limit: at 85% keep-alive stops, at 95% new
        /// requests are shed (503 overload); each step is left 5 points
        /// lower.
        #[check(at_least(ByteSize(1 << 20)))]
        memory: ByteSize = ByteSize(256 << 20),
    }
}

section! {
    /// `alerts:` (SPEC §5.6) — where events are sent.
    pub struct Alerts {
        /// Each receives every event at or above its `min_severity`.
        webhooks: Vec<Webhook> = Vec::new(),
    }
}

section! {
    /// `alerts.webhooks[]:`
    pub struct Webhook {
        /// `http://` or `https://host:port/path`. Never printed: a Slack URL
        /// is a secret. `https://` is verified against `ca` or the system
        /// trust store.
        #[check(webhook_url())]
        url: Secret,
        /// PEM bundle of the CAs to trust for an `https://` receiver with a
        /// private CA; read again at each delivery when its content changed.
        #[default_text = "the system trust store"]
        ca: Option<String> = None,
        /// `json` (the event) or `slack` (`{"text": …}`).
        format: WebhookFormat = WebhookFormat::Json,
        /// The least severity sent.
        min_severity: Severity = Severity::Warning,
    }
    later: ["headers"],
    validate: check_webhook,
}

fn check_webhook(webhook: &mut Webhook, keys: &Keys<'_>, cx: &mut Cx) {
    if let Some(ca) = &webhook.ca {
        if let Err(error) = crate::tls::read_roots(std::path::Path::new(ca)) {
            keys.error(cx, "ca", error.to_string());
        }
    }
}

impl_words!(WebhookFormat {
    Json = "json",
    Slack = "slack"
});

impl_words!(Severity {
    Info = "info",
    Warning = "warning",
    Critical = "critical"
});

/// A URL the webhook sender accepts.
fn webhook_url() -> Check<Secret> {
    Check::new(
        "an http:// or https:// URL",
        serde_json::json!({}),
        |url: &Secret| {
            crate::events::WebhookConfig::new(url.0.clone(), WebhookFormat::Json, Severity::Info)
                .map(|_| ())
                .map_err(|error| Fault::from(error.to_string()))
        },
    )
}

impl Webhook {
    /// The events module's validated webhook, if this one is valid.
    pub fn to_config(&self) -> Option<crate::events::WebhookConfig> {
        crate::events::WebhookConfig::new(self.url.0.clone(), self.format, self.min_severity)
            .ok()
            .map(|config| config.with_ca(self.ca.as_deref().map(std::path::PathBuf::from)))
    }
}
