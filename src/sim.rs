//! `breakwater sim`: a small, controllable HTTP upstream.
//!
//! Demos, integration tests, chaos drills and benches need an upstream that
//! misbehaves on demand: answers slowly, fails a fraction of requests, hangs,
//! fails its health check, crashes, starts slowly or leaks memory. This module
//! is that upstream. It serves HTTP/1.1 and h2c (prior knowledge) on one port
//! with keep-alive, and every behaviour set by a flag can also be changed at
//! runtime through the control endpoints below, so a test can break and heal
//! the upstream without restarting it.
//!
//! # Data endpoints
//!
//! - `GET /healthz`: `200 ok`; `503` with `--fail-health`; hangs in hang mode
//!   (a hung service fails its health check). Not counted as a request.
//! - `POST`/`PUT` on any path starting with `/echo`: streams the request body
//!   back as the response body (never buffered whole), with the request's
//!   `content-type`. Counted; obeys latency and hang, not the error rate.
//! - anything else: waits `latency`, then hangs in hang mode, else answers
//!   `error_status` with `sim error\n` for an `error_rate` fraction of
//!   requests, else `status` with `body` (`content-type: text/plain`).
//!   Counted.
//!
//! Every response carries `x-sim-name`, `x-sim-request-count` (the sequence
//! number of a counted request; the current total on other responses) and
//! echoes the request's `x-request-id` when present.
//!
//! # Control endpoints
//!
//! Answered at once even in hang mode, never counted, JSON in and out:
//!
//! - `GET /__sim/state`: the current settings.
//! - `POST /__sim/config`: applies any subset of `{"status": 503, "body":
//!   "…", "latency": "200ms", "error_rate": 0.5, "error_status": 502, "hang":
//!   true, "fail_health": true, "record": false}` and returns the new state;
//!   `400 {"error": "…", "field": "…"}` on a bad or unknown field (nothing is
//!   applied then). Body capped at 64 KiB.
//! - `POST /__sim/reset`: back to the startup settings; returns the state.
//! - `POST /__sim/crash[?code=N]`: answers `202`, then exits the process with
//!   code `N` (default 1) about 20 ms later.
//! - `POST /__sim/memory?mib=N`: allocates `N` MiB (at most 4096 per call),
//!   writes every page so RSS really grows, and keeps it forever; returns the
//!   total held.
//! - `POST /__sim/log[?stream=stderr]`: prints the request body (at most
//!   64 KiB) as one line, newlines replaced by spaces, to stdout (or stderr)
//!   and flushes.
//! - `GET /__sim/stats`: `{"requests", "in_flight", "memory_mib",
//!   "uptime_seconds", "last_request"}`; `last_request` (method, path, query,
//!   version, headers) is recorded only while `record` is on.
//!
//! # Process behaviour
//!
//! On listening it prints `sim {name} listening on {addr}` to stdout; on
//! SIGTERM or SIGINT it prints `sim {name} received SIGTERM, exiting` (or
//! `SIGINT`) and returns; `--crash-after` and `/__sim/crash` exit non-zero.
//!
//! The request path takes no lock: settings are atomics plus an
//! [`ArcSwap`] for the body; only `last_request` recording (on by default,
//! `--record false` for benches) takes a short mutex.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::units::{format_duration, parse_duration};

/// Largest body accepted by the control endpoints (`/__sim/config`, `/__sim/log`).
const CONTROL_BODY_LIMIT: usize = 64 * 1024;
/// Largest allocation a single `/__sim/memory` call makes, in MiB.
const MEMORY_CALL_LIMIT_MIB: u64 = 4096;
const MIB: usize = 1 << 20;
/// Delay between answering `/__sim/crash` and exiting, so the answer is written.
const CRASH_DELAY: Duration = Duration::from_millis(20);

const X_SIM_NAME: HeaderName = HeaderName::from_static("x-sim-name");
const X_SIM_REQUEST_COUNT: HeaderName = HeaderName::from_static("x-sim-request-count");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Command-line flags of `breakwater sim`.
///
/// Everything except `--listen`, `--name`, `--slow-start` and `--crash-after`
/// can also be changed at runtime with `POST /__sim/config`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on; HTTP/1.1 and h2c share the port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Name sent back in the `x-sim-name` header of every response.
    #[arg(long, default_value = "sim")]
    pub name: String,

    /// Body of a normal answer.
    #[arg(long, value_name = "TEXT", default_value = "hello from sim\n")]
    pub body: String,

    /// Status code of a normal answer (200-999).
    #[arg(long, value_name = "CODE", default_value_t = 200, value_parser = parse_status_arg)]
    pub status: u16,

    /// Delay before every answer (e.g. `200ms`); health checks are not delayed.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration_arg)]
    pub latency: Duration,

    /// Fraction of requests (0 to 1) answered with `--error-status`.
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_rate_arg)]
    pub error_rate: f64,

    /// Status code of the `--error-rate` failures (200-999).
    #[arg(long, value_name = "CODE", default_value_t = 500, value_parser = parse_status_arg)]
    pub error_status: u16,

    /// Accept requests and never answer them (until turned off at runtime).
    #[arg(long)]
    pub hang: bool,

    /// Wait this long before binding the port (a service that starts slowly).
    #[arg(long, value_name = "DUR", value_parser = parse_duration_arg)]
    pub slow_start: Option<Duration>,

    /// Exit with code 1 this long after start; `0s` exits before binding.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_arg)]
    pub crash_after: Option<Duration>,

    /// Answer `/healthz` with 503.
    #[arg(long)]
    pub fail_health: bool,

    /// Record the last request for `/__sim/stats` (`--record false` for benches).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub record: bool,

    /// Same as `--record false`.
    #[arg(long)]
    pub no_record: bool,
    /// Serve at most N requests at once; the rest wait for a worker, so
    /// latency grows with load like a service with a fixed worker pool.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

/// Why `breakwater sim` could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound (in use, not permitted, not resolvable).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The `--listen` address as given.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket did not report its local address.
    #[error("cannot read the local address of the listener")]
    LocalAddr(#[source] std::io::Error),
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signal(#[source] std::io::Error),
    /// `--name` cannot be sent in an HTTP header.
    #[error("--name {0:?} cannot be used as an HTTP header value")]
    InvalidName(String),
}

/// Runs the sim until SIGTERM or SIGINT, then returns `Ok`.
///
/// Prints `sim {name} listening on {addr}` once the port is bound. With
/// `--crash-after` the process exits with code 1 on its own.
pub async fn run(args: SimArgs) -> Result<(), SimError> {
    let settings = Settings::from_args(&args);
    let name = args.name.clone();
    // Validate the name before anything observable happens.
    HeaderValue::from_str(&name).map_err(|_| SimError::InvalidName(name.clone()))?;

    if let Some(after) = args.crash_after {
        if after.is_zero() {
            crash(&name, 1, "--crash-after 0s");
        }
        let name = name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            crash(
                &name,
                1,
                &format!("--crash-after {}", format_duration(after)),
            );
        });
    }

    let mut signals = Signals::install()?;

    if let Some(delay) = args.slow_start {
        tracing::info!(name = %name, delay = %format_duration(delay), "sim starting slowly");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            signal = signals.recv() => {
                say(&format!("sim {name} received {signal}, exiting"));
                return Ok(());
            }
        }
    }

    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(SimError::LocalAddr)?;
    let state = Arc::new(SimState::new(name.clone(), settings)?);
    say(&format!("sim {name} listening on {addr}"));

    tokio::select! {
        () = serve(listener, state, std::future::pending()) => Ok(()),
        signal = signals.recv() => {
            say(&format!("sim {name} received {signal}, exiting"));
            Ok(())
        }
    }
}

/// Accepts connections on `listener` and serves them until `shutdown`
/// resolves. Connections already accepted are left to finish (or to be
/// dropped with the runtime).
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
                    if !matches!(error.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
                        // Out of file descriptors or memory: back off instead of spinning.
                        tracing::warn!(%error, "sim accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            },
        };
        // Best effort: latency matters more than packet count here.
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), req));
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %error, "sim connection ended with an error");
            }
        });
    }
}

/// The behaviour settings: the startup values, and a snapshot for reset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) latency: Duration,
    pub(crate) error_rate: f64,
    pub(crate) error_status: u16,
    pub(crate) hang: bool,
    pub(crate) fail_health: bool,
    pub(crate) record: bool,
    pub(crate) workers: Option<usize>,
}

impl Settings {
    fn from_args(args: &SimArgs) -> Self {
        Settings {
            status: args.status,
            body: Bytes::from(args.body.clone()),
            latency: args.latency,
            error_rate: args.error_rate,
            error_status: args.error_status,
            hang: args.hang,
            fail_health: args.fail_health,
            record: args.record && !args.no_record,
            workers: args.workers.map(|n| n.max(1)),
        }
    }
}

/// The last counted request, as recorded for `/__sim/stats`.
struct LastRequest {
    seq: u64,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// Shared state of one sim: live settings (lock-free) and counters.
pub(crate) struct SimState {
    name: String,
    name_header: HeaderValue,
    startup: Settings,
    started: Instant,

    status: AtomicU16,
    body: ArcSwap<Bytes>,
    latency_nanos: AtomicU64,
    error_rate_bits: AtomicU64,
    error_status: AtomicU16,
    hang: AtomicBool,
    fail_health: AtomicBool,
    record: AtomicBool,

    requests: AtomicU64,
    in_flight: AtomicU64,
    last_request: Mutex<Option<LastRequest>>,
    leaked: Mutex<Vec<Box<[u8]>>>,
    leaked_mib: AtomicU64,
    /// `--workers`: requests being worked on at once.
    workers: Option<Arc<tokio::sync::Semaphore>>,
}

impl SimState {
    pub(crate) fn new(name: String, startup: Settings) -> Result<Self, SimError> {
        let name_header =
            HeaderValue::from_str(&name).map_err(|_| SimError::InvalidName(name.clone()))?;
        let workers = startup
            .workers
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let state = SimState {
            name,
            name_header,
            started: Instant::now(),
            status: AtomicU16::new(startup.status),
            body: ArcSwap::from_pointee(startup.body.clone()),
            latency_nanos: AtomicU64::new(duration_nanos(startup.latency)),
            error_rate_bits: AtomicU64::new(startup.error_rate.to_bits()),
            error_status: AtomicU16::new(startup.error_status),
            hang: AtomicBool::new(startup.hang),
            fail_health: AtomicBool::new(startup.fail_health),
            record: AtomicBool::new(startup.record),
            startup,
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            last_request: Mutex::new(None),
            leaked: Mutex::new(Vec::new()),
            workers,
            leaked_mib: AtomicU64::new(0),
        };
        Ok(state)
    }

    fn apply(&self, patch: &ConfigPatch) {
        if let Some(status) = patch.status {
            self.status.store(status, Relaxed);
        }
        if let Some(body) = &patch.body {
            self.body.store(Arc::new(body.clone()));
        }
        if let Some(latency) = patch.latency {
            self.latency_nanos.store(duration_nanos(latency), Relaxed);
        }
        if let Some(rate) = patch.error_rate {
            self.error_rate_bits.store(rate.to_bits(), Relaxed);
        }
        if let Some(status) = patch.error_status {
            self.error_status.store(status, Relaxed);
        }
        if let Some(hang) = patch.hang {
            self.hang.store(hang, Relaxed);
        }
        if let Some(fail) = patch.fail_health {
            self.fail_health.store(fail, Relaxed);
        }
        if let Some(record) = patch.record {
            self.record.store(record, Relaxed);
            if !record {
                *lock(&self.last_request) = None;
            }
        }
    }

    fn reset(&self) {
        let s = &self.startup;
        self.apply(&ConfigPatch {
            status: Some(s.status),
            body: Some(s.body.clone()),
            latency: Some(s.latency),
            error_rate: Some(s.error_rate),
            error_status: Some(s.error_status),
            hang: Some(s.hang),
            fail_health: Some(s.fail_health),
            record: Some(s.record),
        });
    }

    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Relaxed))
    }

    fn error_rate(&self) -> f64 {
        f64::from_bits(self.error_rate_bits.load(Relaxed))
    }

    fn state_json(&self) -> Value {
        let body = self.body.load();
        json!({
            "name": self.name,
            "status": self.status.load(Relaxed),
            "body": String::from_utf8_lossy(&body),
            "latency": format_duration(self.latency()),
            "error_rate": self.error_rate(),
            "error_status": self.error_status.load(Relaxed),
            "hang": self.hang.load(Relaxed),
            "fail_health": self.fail_health.load(Relaxed),
            "record": self.record.load(Relaxed),
        })
    }

    fn stats_json(&self) -> Value {
        let last = lock(&self.last_request).as_ref().map(|last| {
            let mut headers = Map::new();
            for name in last.headers.keys() {
                let joined = last
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ");
                headers.insert(name.as_str().to_owned(), Value::String(joined));
            }
            json!({
                "seq": last.seq,
                "method": last.method.as_str(),
                "path": last.uri.path(),
                "query": last.uri.query(),
                "version": format!("{:?}", last.version),
                "headers": headers,
            })
        });
        json!({
            "requests": self.requests.load(Relaxed),
            "in_flight": self.in_flight.load(Relaxed),
            "memory_mib": self.leaked_mib.load(Relaxed),
            "uptime_seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "last_request": last,
        })
    }

    fn record_request<B>(&self, seq: u64, req: &Request<B>) {
        let last = LastRequest {
            seq,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        };
        let old = lock(&self.last_request).replace(last);
        drop(old); // Free the previous record outside the lock.
    }
}

/// Counts a request as in flight until dropped (also when the client gives up).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Response body of the sim: a fixed buffer, or the request body streamed back.
pub(crate) enum SimBody {
    /// A whole body, yielded as one frame.
    Full(Option<Bytes>),
    /// The request body, frame by frame (echo).
    Echo(Incoming),
}

impl SimBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        SimBody::Full(Some(bytes.into()))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            SimBody::Echo(incoming) => Pin::new(incoming).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            SimBody::Echo(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            SimBody::Echo(incoming) => incoming.size_hint(),
        }
    }
}

/// Serves one request.
async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let request_id = req.headers().get(X_REQUEST_ID).cloned();
    let path = req.uri().path();
    let (mut response, count) = if let Some(rest) = path.strip_prefix("/__sim/") {
        let route = ControlRoute::parse(rest);
        (
            control(&state, route, req).await,
            state.requests.load(Relaxed),
        )
    } else if path == "/healthz" && req.method() == Method::GET {
        (health(&state).await, state.requests.load(Relaxed))
    } else {
        let seq = state.requests.fetch_add(1, Relaxed) + 1;
        (counted(&state, seq, req).await, seq)
    };
    let headers = response.headers_mut();
    headers.insert(X_SIM_NAME, state.name_header.clone());
    headers.insert(X_SIM_REQUEST_COUNT, HeaderValue::from(count));
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID, id);
    }
    Ok(response)
}

async fn health(state: &SimState) -> Response<SimBody> {
    if state.hang.load(Relaxed) {
        std::future::pending::<()>().await;
    }
    if state.fail_health.load(Relaxed) {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"unhealthy\n"),
        )
    } else {
        text(StatusCode::OK, Bytes::from_static(b"ok"))
    }
}

/// Echo and normal answers: the counted requests.
async fn counted(state: &SimState, seq: u64, req: Request<Incoming>) -> Response<SimBody> {
    let _in_flight = InFlight::enter(&state.in_flight);
    if state.record.load(Relaxed) {
        state.record_request(seq, &req);
    }
    let is_echo = matches!(*req.method(), Method::POST | Method::PUT)
        && req.uri().path().starts_with("/echo");

    // A request waits for one of the workers, then works for `latency`.
    let _worker = match &state.workers {
        Some(workers) => workers.clone().acquire_owned().await.ok(),
        None => None,
    };
    let latency = state.latency_nanos.load(Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_nanos(latency)).await;
    }
    if state.hang.load(Relaxed) {
        std::future::pending::<()>().await;
    }

    if is_echo {
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let mut response = Response::new(SimBody::Echo(req.into_body()));
        if let Some(content_type) = content_type {
            response.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        return response;
    }

    let rate = state.error_rate();
    if rate > 0.0 && rand::random::<f64>() < rate {
        let status = status_code(state.error_status.load(Relaxed));
        return text(status, Bytes::from_static(b"sim error\n"));
    }
    let body = Bytes::clone(&state.body.load());
    text(status_code(state.status.load(Relaxed)), body)
}

/// A control endpoint, as named by the path after `/__sim/`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ControlRoute {
    State,
    Config,
    Reset,
    Crash,
    Memory,
    Log,
    Stats,
    Unknown,
}

impl ControlRoute {
    fn parse(rest: &str) -> Self {
        match rest.trim_end_matches('/') {
            "state" => ControlRoute::State,
            "config" => ControlRoute::Config,
            "reset" => ControlRoute::Reset,
            "crash" => ControlRoute::Crash,
            "memory" => ControlRoute::Memory,
            "log" => ControlRoute::Log,
            "stats" => ControlRoute::Stats,
            _ => ControlRoute::Unknown,
        }
    }

    fn method(self) -> Method {
        match self {
            ControlRoute::State | ControlRoute::Stats => Method::GET,
            _ => Method::POST,
        }
    }

    fn method_name(self) -> &'static str {
        match self {
            ControlRoute::State | ControlRoute::Stats => "GET",
            _ => "POST",
        }
    }
}

async fn control(
    state: &Arc<SimState>,
    route: ControlRoute,
    req: Request<Incoming>,
) -> Response<SimBody> {
    if route == ControlRoute::Unknown {
        return json_error(
            StatusCode::NOT_FOUND,
            None,
            format!(
                "no control endpoint {}; try state, config, reset, crash, memory, log or stats",
                req.uri().path()
            ),
        );
    }
    let allowed = route.method();
    if *req.method() != allowed {
        let mut response = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            format!("{} takes {allowed}", req.uri().path()),
        );
        response.headers_mut().insert(
            http::header::ALLOW,
            HeaderValue::from_static(route.method_name()),
        );
        return response;
    }
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref().unwrap_or("");

    match route {
        ControlRoute::State => json_response(StatusCode::OK, &state.state_json()),
        ControlRoute::Stats => json_response(StatusCode::OK, &state.stats_json()),
        ControlRoute::Reset => {
            state.reset();
            json_response(StatusCode::OK, &state.state_json())
        }
        ControlRoute::Config => {
            let body = match read_control_body(req.into_body()).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            match parse_config(&body) {
                Ok(patch) => {
                    state.apply(&patch);
                    json_response(StatusCode::OK, &state.state_json())
                }
                Err(error) => json_error(
                    StatusCode::BAD_REQUEST,
                    error.field.as_deref(),
                    error.message,
                ),
            }
        }
        ControlRoute::Crash => {
            let code = match query_param(query, "code") {
                None => 1,
                Some(text) => match text.parse::<i32>() {
                    Ok(code) => code,
                    Err(_) => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            Some("code"),
                            format!("code: expected an integer exit code, found {text:?}"),
                        )
                    }
                },
            };
            let name = state.name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CRASH_DELAY).await;
                crash(&name, code, "/__sim/crash");
            });
            json_response(
                StatusCode::ACCEPTED,
                &json!({ "crashing": true, "code": code }),
            )
        }
        ControlRoute::Memory => {
            let mib = match query_param(query, "mib").map(str::parse::<u64>) {
                Some(Ok(mib)) if mib <= MEMORY_CALL_LIMIT_MIB => mib,
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        Some("mib"),
                        format!("mib: expected ?mib=N with N from 0 to {MEMORY_CALL_LIMIT_MIB}"),
                    )
                }
            };
            let leaker = Arc::clone(state);
            match tokio::task::spawn_blocking(move || leaker.leak(mib)).await {
                Ok(total) => json_response(
                    StatusCode::OK,
                    &json!({ "allocated_mib": mib, "memory_mib": total }),
                ),
                Err(error) => json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    format!("allocation failed: {error}"),
                ),
            }
        }
        ControlRoute::Log => {
            let body = match read_control_body(req.into_body()).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let mut line = String::from_utf8_lossy(&body).replace(['\r', '\n'], " ");
            line.push('\n');
            let to_stderr = query_param(query, "stream") == Some("stderr");
            let written = if to_stderr {
                write_flush(&mut std::io::stderr().lock(), line.as_bytes())
            } else {
                write_flush(&mut std::io::stdout().lock(), line.as_bytes())
            };
            match written {
                Ok(()) => json_response(StatusCode::OK, &json!({ "logged": body.len() })),
                Err(error) => json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    None,
                    format!("cannot write the log line: {error}"),
                ),
            }
        }
        ControlRoute::Unknown => json_error(StatusCode::NOT_FOUND, None, "no such endpoint".into()),
    }
}

impl SimState {
    /// Allocates `mib` MiB, touching every page, and keeps it forever.
    /// Returns the total MiB held. Blocking: run it off the async workers.
    fn leak(&self, mib: u64) -> u64 {
        for _ in 0..mib {
            // A non-zero fill writes every byte, so the pages are really resident.
            let chunk = std::hint::black_box(vec![0xA5u8; MIB]).into_boxed_slice();
            lock(&self.leaked).push(chunk);
            self.leaked_mib.fetch_add(1, Relaxed);
        }
        self.leaked_mib.load(Relaxed)
    }
}

/// Reads a control request body, at most [`CONTROL_BODY_LIMIT`] bytes.
async fn read_control_body(body: Incoming) -> Result<Bytes, Response<SimBody>> {
    match Limited::new(body, CONTROL_BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("control bodies are limited to {CONTROL_BODY_LIMIT} bytes"),
        )),
        Err(error) => Err(json_error(
            StatusCode::BAD_REQUEST,
            None,
            format!("cannot read the request body: {error}"),
        )),
    }
}

/// A change to the settings from `POST /__sim/config`; `None` keeps the value.
#[derive(Debug, Default, Clone, PartialEq)]
struct ConfigPatch {
    status: Option<u16>,
    body: Option<Bytes>,
    latency: Option<Duration>,
    error_rate: Option<f64>,
    error_status: Option<u16>,
    hang: Option<bool>,
    fail_health: Option<bool>,
    record: Option<bool>,
}

/// Why a `POST /__sim/config` body was refused.
#[derive(Debug, Clone, PartialEq)]
struct ConfigError {
    field: Option<String>,
    message: String,
}

impl ConfigError {
    fn field(field: &str, message: impl std::fmt::Display) -> Self {
        ConfigError {
            field: Some(field.to_owned()),
            message: format!("{field}: {message}"),
        }
    }
}

const CONFIG_FIELDS: &str =
    "status, body, latency, error_rate, error_status, hang, fail_health, record";

/// Parses and validates a `POST /__sim/config` body. An empty body is an
/// empty patch; anything else must be a JSON object of known fields.
fn parse_config(bytes: &[u8]) -> Result<ConfigPatch, ConfigError> {
    let mut patch = ConfigPatch::default();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(patch);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|error| ConfigError {
        field: None,
        message: format!("the body is not valid JSON: {error}"),
    })?;
    let Value::Object(map) = value else {
        return Err(ConfigError {
            field: None,
            message: format!("expected a JSON object of settings ({CONFIG_FIELDS})"),
        });
    };
    for (key, value) in &map {
        match key.as_str() {
            "status" => patch.status = Some(status_field(key, value)?),
            "error_status" => patch.error_status = Some(status_field(key, value)?),
            "body" => match value {
                Value::String(text) => patch.body = Some(Bytes::from(text.clone())),
                other => {
                    return Err(ConfigError::field(
                        key,
                        format!("expected a string, found {other}"),
                    ))
                }
            },
            "latency" => match value {
                Value::String(text) => {
                    patch.latency =
                        Some(parse_duration(text).map_err(|e| ConfigError::field(key, e))?)
                }
                other => {
                    return Err(ConfigError::field(
                        key,
                        format!("expected a duration string like \"200ms\", found {other}"),
                    ))
                }
            },
            "error_rate" => match value.as_f64() {
                Some(rate) if (0.0..=1.0).contains(&rate) => patch.error_rate = Some(rate),
                _ => {
                    return Err(ConfigError::field(
                        key,
                        format!("expected a number from 0 to 1, found {value}"),
                    ))
                }
            },
            "hang" => patch.hang = Some(bool_field(key, value)?),
            "fail_health" => patch.fail_health = Some(bool_field(key, value)?),
            "record" => patch.record = Some(bool_field(key, value)?),
            _ => {
                return Err(ConfigError::field(
                    key,
                    format!("unknown setting; known settings are {CONFIG_FIELDS}"),
                ))
            }
        }
    }
    Ok(patch)
}

fn status_field(key: &str, value: &Value) -> Result<u16, ConfigError> {
    value
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .filter(|code| (200..=999).contains(code))
        .ok_or_else(|| {
            ConfigError::field(
                key,
                format!("expected a status code from 200 to 999, found {value}"),
            )
        })
}

fn bool_field(key: &str, value: &Value) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| ConfigError::field(key, format!("expected true or false, found {value}")))
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn parse_status_arg(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|code| (200..=999).contains(code))
        .ok_or_else(|| format!("expected a status code from 200 to 999, found {text:?}"))
}

fn parse_rate_arg(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
        .ok_or_else(|| format!("expected a fraction from 0 to 1, found {text:?}"))
}

/// The value of `key` in a query string (no percent-decoding; values are numbers or words).
fn query_param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

fn status_code(code: u16) -> StatusCode {
    // Codes are validated when set; the fallback is unreachable in practice.
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn text(status: StatusCode, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(SimBody::full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

fn json_error(status: StatusCode, field: Option<&str>, message: String) -> Response<SimBody> {
    let mut value = json!({ "error": message });
    if let (Some(field), Value::Object(map)) = (field, &mut value) {
        map.insert("field".to_owned(), Value::String(field.to_owned()));
    }
    json_response(status, &value)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_flush(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

/// Prints one line to stdout and flushes; a closed stdout is not an error here.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Exits the process with `code` after saying why on stderr.
fn crash(name: &str, code: i32, why: &str) -> ! {
    let _ = std::io::stdout().flush();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "sim {name} crashing with exit code {code} ({why})");
    let _ = err.flush();
    std::process::exit(code)
}

/// SIGTERM and SIGINT, installed once before the port is bound.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Result<Self, SimError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(SimError::Signal)?,
            int: signal(SignalKind::interrupt()).map_err(SimError::Signal)?,
        })
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Result<Self, SimError> {
        Ok(Signals)
    }

    async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(_) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;
    use http_body_util::Full;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn args(extra: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(extra.iter().copied())).map(|cli| cli.sim)
    }

    #[test]
    fn flags() {
        let defaults = args(&[]).unwrap();
        assert_eq!(defaults.listen, "127.0.0.1:8080");
        assert_eq!(defaults.body, "hello from sim\n");
        assert_eq!((defaults.status, defaults.error_status), (200, 500));
        assert_eq!(defaults.latency, Duration::ZERO);
        assert!(Settings::from_args(&defaults).record);

        let set = args(&[
            "--latency",
            "250ms",
            "--error-rate",
            "0.5",
            "--hang",
            "--crash-after",
            "0s",
        ])
        .unwrap();
        assert_eq!(set.latency, Duration::from_millis(250));
        assert_eq!(set.error_rate, 0.5);
        assert!(set.hang);
        assert_eq!(set.crash_after, Some(Duration::ZERO));

        assert!(!Settings::from_args(&args(&["--record", "false"]).unwrap()).record);
        assert!(!Settings::from_args(&args(&["--record=false"]).unwrap()).record);
        assert!(!Settings::from_args(&args(&["--no-record"]).unwrap()).record);
        assert!(Settings::from_args(&args(&["--record"]).unwrap()).record);

        assert!(args(&["--error-rate", "1.5"]).is_err());
        assert!(args(&["--status", "99"]).is_err());
        assert!(args(&["--latency", "5"]).is_err());
    }

    #[test]
    fn config_parsing() {
        let patch = parse_config(
            br#"{"status":503,"body":"down","latency":"200ms","error_rate":0.5,
                 "error_status":502,"hang":true,"fail_health":false,"record":false}"#,
        )
        .unwrap();
        assert_eq!(
            patch,
            ConfigPatch {
                status: Some(503),
                body: Some(Bytes::from_static(b"down")),
                latency: Some(Duration::from_millis(200)),
                error_rate: Some(0.5),
                error_status: Some(502),
                hang: Some(true),
                fail_health: Some(false),
                record: Some(false),
            }
        );
        assert_eq!(parse_config(b"").unwrap(), ConfigPatch::default());
        assert_eq!(parse_config(b"{}").unwrap(), ConfigPatch::default());
        assert_eq!(
            parse_config(br#"{"error_rate":1}"#).unwrap().error_rate,
            Some(1.0)
        );

        let field = |body: &[u8]| parse_config(body).unwrap_err().field;
        assert_eq!(
            field(br#"{"error_rate":1.5}"#).as_deref(),
            Some("error_rate")
        );
        assert_eq!(
            field(br#"{"error_rate":-0.1}"#).as_deref(),
            Some("error_rate")
        );
        assert_eq!(
            field(br#"{"error_rate":"half"}"#).as_deref(),
            Some("error_rate")
        );
        assert_eq!(field(br#"{"latency":"fast"}"#).as_deref(), Some("latency"));
        assert_eq!(field(br#"{"latency":200}"#).as_deref(), Some("latency"));
        assert_eq!(field(br#"{"status":99}"#).as_deref(), Some("status"));
        assert_eq!(
            field(br#"{"error_status":70000}"#).as_deref(),
            Some("error_status")
        );
        assert_eq!(field(br#"{"hang":"yes"}"#).as_deref(), Some("hang"));
        assert_eq!(field(br#"{"body":1}"#).as_deref(), Some("body"));
        let unknown = parse_config(br#"{"status":200,"colour":"red"}"#).unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("colour"));
        assert!(unknown.message.contains("colour"), "{}", unknown.message);
        assert_eq!(parse_config(b"[1]").unwrap_err().field, None);
        assert_eq!(parse_config(b"{not json").unwrap_err().field, None);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("code=3", "code"), Some("3"));
        assert_eq!(query_param("a=1&stream=stderr", "stream"), Some("stderr"));
        assert_eq!(query_param("", "mib"), None);
        assert_eq!(query_param("mibs=3", "mib"), None);
    }

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    async fn call(
        client: &TestClient,
        method: Method,
        url: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header("x-request-id", "req-42")
            .header("content-type", "application/x-test")
            .body(Full::new(body.into()))
            .unwrap();
        let response = client.request(req).await.unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    fn json(bytes: &Bytes) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[tokio::test]
    async fn end_to_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let defaults = Settings::from_args(&args(&["--name", "test"]).unwrap());
        let state = Arc::new(SimState::new("test".into(), defaults).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        let base = format!("http://{addr}");
        let client: TestClient = Client::builder(TokioExecutor::new()).build_http();

        // A normal GET.
        let (status, headers, body) =
            call(&client, Method::GET, &format!("{base}/hello"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from sim\n");
        assert_eq!(headers["x-sim-name"], "test");
        assert_eq!(headers["x-sim-request-count"], "1");
        assert_eq!(headers["x-request-id"], "req-42");
        assert_eq!(headers["content-type"], "text/plain");

        // Change the status at runtime; a bad field is refused and names it.
        let (status, _, body) = call(
            &client,
            Method::POST,
            &format!("{base}/__sim/config"),
            r#"{"status":503}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["status"], 503);
        let (status, _, body) = call(
            &client,
            Method::POST,
            &format!("{base}/__sim/config"),
            r#"{"error_rate":2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json(&body)["field"], "error_rate");
        let (status, headers, _) = call(&client, Method::GET, &format!("{base}/"), "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["x-sim-request-count"], "2");

        // Echo 1 MiB, streamed back with the request's content-type.
        let payload: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        let (status, headers, body) = call(
            &client,
            Method::POST,
            &format!("{base}/echo/x"),
            payload.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/x-test");
        assert_eq!(body.len(), payload.len());
        assert!(body == payload);

        // Stats: three counted requests, the last one recorded.
        let (_, _, body) = call(&client, Method::GET, &format!("{base}/__sim/stats"), "").await;
        let stats = json(&body);
        assert_eq!(stats["requests"], 3);
        assert_eq!(stats["in_flight"], 0);
        assert_eq!(stats["last_request"]["method"], "POST");
        assert_eq!(stats["last_request"]["path"], "/echo/x");
        assert_eq!(stats["last_request"]["headers"]["x-request-id"], "req-42");

        // Health, fail_health, reset.
        let (status, _, body) = call(&client, Method::GET, &format!("{base}/healthz"), "").await;
        assert_eq!((status, body), (StatusCode::OK, Bytes::from_static(b"ok")));
        call(
            &client,
            Method::POST,
            &format!("{base}/__sim/config"),
            r#"{"fail_health":true}"#,
        )
        .await;
        let (status, _, _) = call(&client, Method::GET, &format!("{base}/healthz"), "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, body) =
            call(&client, Method::POST, &format!("{base}/__sim/reset"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["status"], 200);
        assert_eq!(json(&body)["fail_health"], false);

        // Hang: data requests never answer, control still does.
        call(
            &client,
            Method::POST,
            &format!("{base}/__sim/config"),
            r#"{"hang":true}"#,
        )
        .await;
        let hung = tokio::time::timeout(
            Duration::from_millis(200),
            call(&client, Method::GET, &format!("{base}/"), ""),
        )
        .await;
        assert!(hung.is_err(), "a hung sim answered");
        let (status, _, body) =
            call(&client, Method::GET, &format!("{base}/__sim/state"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["hang"], true);
        call(&client, Method::POST, &format!("{base}/__sim/reset"), "").await;

        // Control errors.
        let (status, _, _) = call(&client, Method::GET, &format!("{base}/__sim/nope"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) =
            call(&client, Method::GET, &format!("{base}/__sim/config"), "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers["allow"], "POST");
        let big = vec![b' '; CONTROL_BODY_LIMIT + 1];
        let (status, _, _) =
            call(&client, Method::POST, &format!("{base}/__sim/config"), big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, _, body) = call(
            &client,
            Method::POST,
            &format!("{base}/__sim/memory?mib=2"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body)["memory_mib"], 2);
        let (status, _, _) = call(
            &client,
            Method::POST,
            &format!("{base}/__sim/memory?mib=5000"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // h2c with prior knowledge on the same port, echo included.
        let h2: TestClient = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let (status, _, body) = call(&h2, Method::GET, &format!("{base}/"), "").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from_static(b"hello from sim\n"))
        );
        let (_, _, body) = call(&h2, Method::PUT, &format!("{base}/echo"), payload.clone()).await;
        assert!(body == payload);
        let (_, _, body) = call(&client, Method::GET, &format!("{base}/__sim/stats"), "").await;
        assert_eq!(json(&body)["last_request"]["version"], "HTTP/2.0");

        stop.send(()).unwrap();
        server.await.unwrap();
    }
}
