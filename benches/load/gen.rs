//! The load generator: hyper client connections and an HDR histogram.
//!
//! Three shapes of load, all on the bench's one-thread tokio runtime:
//!
//! - **Closed loop** ([`closed_loop`]): `N` connections, each sending its
//!   next request as soon as the previous response is read (or, over
//!   HTTP/2, `S` streams per connection, each doing so). Measures the
//!   most a target serves at that concurrency, and the latency at it.
//! - **Open loop** ([`open_loop`]): requests are scheduled on a clock at a
//!   fixed rate, whatever the target does, and handed to a pool of
//!   connections. Latency is free of coordinated omission: when a request
//!   goes out late because its connection was still waiting for an earlier
//!   response, its latency is measured from its *scheduled* time, so a stall
//!   is charged for the queue it causes (wrk2, and oha's
//!   `--latency-correction`). When the connection was idle and only the
//!   generator's timer woke late (tokio's timer has 1 ms granularity), the
//!   latency is measured from the actual send: that slop is the generator's,
//!   not the target's, and charging it would bury a 0.1 ms difference under
//!   up to 1 ms of noise.
//! - **Idle connections** ([`hold_idle`]): many keep-alive connections that
//!   each served one request and then sit idle, to weigh a target's memory
//!   per connection.
//!
//! Three protocols: HTTP/1.1 GET, h2c GET, and gRPC unary calls over h2c
//! (`grpc.rs`: a call succeeds only with `grpc-status: 0` and the echo of
//! what was sent).
//!
//! Every loop is bounded in count and in time.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::grpc;

/// A TCP connect that takes longer than this counts as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request without a complete response after this counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnects one worker may make in one phase before it gives up.
const MAX_RECONNECTS: u32 = 100;
/// Requests one worker may send in one phase: far above what any phase
/// reaches, so time ends the phase, but still a bound.
const MAX_REQUESTS_PER_WORKER: u64 = 50_000_000;
/// Connections opened at once when a phase sets up its pool.
const CONNECT_BATCH: usize = 128;

/// The protocol a phase speaks to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive.
    #[serde(rename = "http1")]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    #[serde(rename = "h2c")]
    H2c,
    /// gRPC unary calls (`grpc.rs`) over h2c.
    #[serde(rename = "grpc")]
    Grpc,
}

impl Proto {
    /// The short name used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::H2c => "h2c",
            Proto::Grpc => "gRPC",
        }
    }
}

/// What a target answered to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP response with this status code (a gRPC call whose HTTP
    /// status was not 200, too).
    Http(u16),
    /// A gRPC call answered with HTTP 200 that ended with this
    /// `grpc-status`; 0 (OK) only when the reply was the echo asked for.
    Grpc(u32),
}

// === impl Answer ===

impl Answer {
    /// HTTP 200, or gRPC OK: what a readiness probe waits for.
    pub fn is_ready(self) -> bool {
        matches!(self, Answer::Http(200) | Answer::Grpc(0))
    }
}

/// Where requests go: a socket address plus the URL's authority and path.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The address connected to.
    pub addr: SocketAddr,
    /// Absolute-form URI for h2 (`http://authority/path?query`): its
    /// authority becomes `:authority`.
    absolute_uri: Uri,
    /// The whole HTTP/1.1 request, built once: `GET path`, `Host`, nothing else.
    http1_request: Bytes,
}

impl Endpoint {
    /// An endpoint at `addr`, requesting `path` with `authority` as host.
    pub fn new(addr: SocketAddr, authority: &str, path: &str) -> Result<Self> {
        if !path.starts_with('/')
            || path.contains(['\r', '\n', ' '])
            || authority.contains(['\r', '\n', ' '])
        {
            bail!("bad path {path:?} or authority {authority:?}");
        }
        Ok(Endpoint {
            addr,
            absolute_uri: format!("http://{authority}{path}").parse()?,
            http1_request: Bytes::from(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n")),
        })
    }

    /// An endpoint for `127.0.0.1:port`, path `/`.
    pub fn loopback(addr: SocketAddr) -> Result<Self> {
        Endpoint::new(addr, &addr.to_string(), "/")
    }

    /// Parses `http://host[:port][/path]` and resolves the host.
    pub async fn from_url(url: &str) -> Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("parsing URL {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: only http:// URLs are supported (HTTP/1.1 or h2c)");
        }
        let authority = uri.authority().ok_or_else(|| anyhow!("{url}: no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("{url}: host does not resolve"))?;
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        Endpoint::new(addr, authority.as_str(), path)
    }
}

/// One client connection, ready to send requests one at a time (or, for
/// HTTP/2, one stream of a connection that others may share: see
/// [`Sender::share`]).
enum Sender {
    Http1(Http1Connection),
    H2c(http2::SendRequest<Empty<Bytes>>),
    /// A gRPC channel and the request body, framed once.
    Grpc(http2::SendRequest<Full<Bytes>>, Bytes),
}

// === impl Sender ===

impl Sender {
    async fn connect(endpoint: &Endpoint, proto: Proto) -> Result<Self> {
        Ok(match proto {
            Proto::Http1 => Sender::Http1(Http1Connection::connect(endpoint, None).await?),
            Proto::H2c => Sender::H2c(h2_connect(endpoint).await?),
            Proto::Grpc => Sender::Grpc(h2_connect(endpoint).await?, grpc::request_body()),
        })
    }

    /// Another stream on the same HTTP/2 connection; `None` for HTTP/1.1,
    /// which has one request in flight per connection.
    fn share(&self) -> Option<Sender> {
        match self {
            Sender::Http1(_) => None,
            Sender::H2c(sender) => Some(Sender::H2c(sender.clone())),
            Sender::Grpc(sender, body) => Some(Sender::Grpc(sender.clone(), body.clone())),
        }
    }

    /// Sends one GET (or one gRPC call), reads the whole body, returns what
    /// the target answered.
    async fn get(&mut self, endpoint: &Endpoint) -> Result<Answer> {
        match self {
            Sender::Http1(connection) => connection.get(endpoint).await.map(Answer::Http),
            Sender::H2c(sender) => {
                sender.ready().await?;
                let mut request = Request::new(Empty::new());
                *request.uri_mut() = endpoint.absolute_uri.clone();
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok(Answer::Http(status))
            }
            Sender::Grpc(sender, body) => {
                sender.ready().await?;
                let mut request = Request::new(Full::new(body.clone()));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = endpoint.absolute_uri.clone();
                let headers = request.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                headers.insert(TE, HeaderValue::from_static("trailers"));
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let (head, body) = response.into_parts();
                let collected = body.collect().await?;
                if status != 200 {
                    return Ok(Answer::Http(status));
                }
                let Some(code) = grpc::status(&head.headers, collected.trailers()) else {
                    bail!("gRPC reply without grpc-status");
                };
                if code == 0 {
                    grpc::check_reply(&collected.to_bytes())?;
                }
                Ok(Answer::Grpc(code))
            }
        }
    }
}

/// An h2c connection (prior knowledge), driven by a task of its own.
async fn h2_connect<B>(endpoint: &Endpoint) -> Result<http2::SendRequest<B>>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tcp_connect(endpoint.addr, None).await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A TCP connection with Nagle off, optionally from a given source address.
async fn tcp_connect(addr: SocketAddr, source: Option<SocketAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(source)?;
    }
    let stream = timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a response body ends.
enum Framing {
    /// `Content-Length` bytes (0 for 204, 304 and bodiless statuses).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length: the body ends when the server closes.
    UntilClose,
}

/// An HTTP/1.1 client connection written for the generator's hot loop: a
/// request prebuilt once, one buffer reused, the head parsed with
/// `httparse` (hyper's own parser). hyper's client costs about three times
/// as much CPU per request (a dispatch channel and a connection task per
/// connection); on a shared core that cost showed up as a lower ceiling
/// for every target, so the HTTP/1.1 generator is this instead. h2c keeps
/// hyper's client: framing HTTP/2 by hand is not worth it.
struct Http1Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// Set when the server asked to close: reconnect before the next request.
    closing: bool,
}

/// A response head larger than this is an error, not a reason to grow.
const MAX_HEAD_BYTES: usize = 64 * 1024;

// === impl Http1Connection ===

impl Http1Connection {
    async fn connect(endpoint: &Endpoint, source: Option<SocketAddr>) -> Result<Self> {
        Ok(Http1Connection {
            stream: tcp_connect(endpoint.addr, source).await?,
            buffer: vec![0; 4096],
            closing: false,
        })
    }

    async fn get(&mut self, endpoint: &Endpoint) -> Result<u16> {
        if self.closing {
            bail!("server closed the connection");
        }
        self.stream.write_all(&endpoint.http1_request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<u16> {
        let mut filled = 0;
        let (status, head_len, framing) = loop {
            if filled == self.buffer.len() {
                if self.buffer.len() >= MAX_HEAD_BYTES {
                    bail!("response head over {MAX_HEAD_BYTES} bytes");
                }
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buffer[filled..]).await?;
            if n == 0 {
                bail!("connection closed before the response head");
            }
            filled += n;
            if let Some(head) = self.parse_head(filled)? {
                break head;
            }
        };
        // Keep only the body bytes read so far, at the front of the buffer.
        self.buffer.copy_within(head_len..filled, 0);
        let have = filled - head_len;
        match framing {
            Framing::Length(length) => self.skip_body(have, length).await?,
            Framing::Chunked => self.skip_chunked(have).await?,
            Framing::UntilClose => {
                self.closing = true;
                while self.stream.read(&mut self.buffer).await? > 0 {}
            }
        }
        Ok(status)
    }

    /// Parses the head in `buffer[..filled]`: status, head length, framing.
    fn parse_head(&mut self, filled: usize) -> Result<Option<(u16, usize, Framing)>> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&self.buffer[..filled])? {
            httparse::Status::Complete(head_len) => head_len,
            httparse::Status::Partial => return Ok(None),
        };
        let status = response.code.unwrap_or(0);
        let mut framing = if status == 204 || status == 304 || status < 200 {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        };
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(header.value)?.trim().parse()?;
                if !matches!(framing, Framing::Chunked)
                    && status >= 200
                    && status != 204
                    && status != 304
                {
                    framing = Framing::Length(length);
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                && header.value.eq_ignore_ascii_case(b"chunked")
            {
                framing = Framing::Chunked;
            } else if header.name.eq_ignore_ascii_case("connection")
                && header.value.eq_ignore_ascii_case(b"close")
            {
                self.closing = true;
            }
        }
        Ok(Some((status, head_len, framing)))
    }

    /// Reads and drops the rest of a `length`-byte body, `have` already read.
    async fn skip_body(&mut self, mut have: usize, length: usize) -> Result<()> {
        while have < length {
            let n = self.stream.read(&mut self.buffer).await?;
            if n == 0 {
                bail!("connection closed inside the body");
            }
            have += n;
        }
        if have > length {
            bail!("bytes after the response: the server sent more than asked");
        }
        Ok(())
    }

    /// Reads and drops a chunked body whose first `filled` bytes sit at the
    /// front of the buffer. Trailers are skipped too.
    async fn skip_chunked(&mut self, mut filled: usize) -> Result<()> {
        let mut position = 0;
        loop {
            // Need a complete chunk-size line at `position`.
            match httparse::parse_chunk_size(&self.buffer[position..filled]) {
                Ok(httparse::Status::Complete((line_len, 0))) => {
                    position += line_len;
                    // Trailers, if any, then the final CRLF.
                    loop {
                        let rest = &self.buffer[position..filled];
                        if rest.starts_with(b"\r\n") {
                            return Ok(());
                        }
                        if rest.windows(4).any(|window| window == b"\r\n\r\n") {
                            return Ok(());
                        }
                        filled = self.refill(&mut position, filled).await?;
                    }
                }
                Ok(httparse::Status::Complete((line_len, size))) => {
                    position += line_len;
                    // Skip `size` bytes of data and the CRLF after them.
                    let mut to_skip = usize::try_from(size)? + 2;
                    loop {
                        let available = filled - position;
                        if available >= to_skip {
                            position += to_skip;
                            break;
                        }
                        to_skip -= available;
                        position = filled;
                        filled = self.refill(&mut position, filled).await?;
                    }
                }
                Ok(httparse::Status::Partial) => {
                    filled = self.refill(&mut position, filled).await?
                }
                Err(_) => bail!("bad chunk size line"),
            }
        }
    }

    /// Moves unread bytes to the front and reads more; returns the new fill.
    async fn refill(&mut self, position: &mut usize, filled: usize) -> Result<usize> {
        self.buffer.copy_within(*position..filled, 0);
        let filled = filled - *position;
        *position = 0;
        if filled == self.buffer.len() {
            if self.buffer.len() >= MAX_HEAD_BYTES {
                bail!("chunk line or trailers too long");
            }
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buffer[filled..]).await?;
        if n == 0 {
            bail!("connection closed inside a chunked body");
        }
        Ok(filled + n)
    }
}

/// One GET (or gRPC call) on a fresh connection: the readiness probe.
pub async fn probe(endpoint: &Endpoint, proto: Proto) -> Result<Answer> {
    let mut sender = Sender::connect(endpoint, proto).await?;
    timeout(REQUEST_TIMEOUT, sender.get(endpoint))
        .await
        .map_err(|_| anyhow!("probe timed out"))?
}

/// What one phase measured against one target.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// Responses completed inside the measurement window.
    pub requests: u64,
    /// `requests` per second of the window.
    pub rps: f64,
    /// Connection errors and timeouts inside the window.
    pub errors: u64,
    /// Responses whose status was not 2xx inside the window.
    pub non_2xx: u64,
    /// gRPC calls answered with HTTP 200 but a `grpc-status` other than 0
    /// (OK) inside the window.
    pub grpc_not_ok: u64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest latency seen.
    pub max_us: f64,
    /// Responses completed over the whole phase, warm-up included: the
    /// divisor of CPU per request, since CPU is read around the whole phase.
    pub completed_total: u64,
}

/// Counters one phase's workers share (one thread, so a `RefCell`).
struct Tally {
    latency_ns: Histogram<u64>,
    requests: u64,
    errors: u64,
    non_2xx: u64,
    grpc_not_ok: u64,
    completed_total: u64,
}

// === impl Tally ===

impl Tally {
    fn new() -> Result<Self> {
        Ok(Tally {
            // 1 µs .. 60 s at 3 significant digits.
            latency_ns: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
            requests: 0,
            errors: 0,
            non_2xx: 0,
            grpc_not_ok: 0,
            completed_total: 0,
        })
    }

    fn record(&mut self, latency: Duration, answer: Answer, in_window: bool) {
        self.completed_total += 1;
        if in_window {
            self.requests += 1;
            match answer {
                Answer::Http(status) if !(200..300).contains(&status) => self.non_2xx += 1,
                Answer::Grpc(code) if code != 0 => self.grpc_not_ok += 1,
                _ => {}
            }
            let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            self.latency_ns.saturating_record(nanos.max(1_000));
        }
    }

    fn summarize(self, window: Duration) -> Measured {
        let percentile_us =
            |quantile: f64| self.latency_ns.value_at_quantile(quantile) as f64 / 1_000.0;
        Measured {
            requests: self.requests,
            rps: self.requests as f64 / window.as_secs_f64(),
            errors: self.errors,
            non_2xx: self.non_2xx,
            grpc_not_ok: self.grpc_not_ok,
            p50_us: percentile_us(0.50),
            p90_us: percentile_us(0.90),
            p99_us: percentile_us(0.99),
            p999_us: percentile_us(0.999),
            max_us: self.latency_ns.max() as f64 / 1_000.0,
            completed_total: self.completed_total,
        }
    }
}

/// Opens `count` connections, [`CONNECT_BATCH`] at a time. Fails only if
/// none opens; the rest are counted as errors by the caller's pool size.
async fn connect_pool(endpoint: &Endpoint, proto: Proto, count: usize) -> Result<Vec<Sender>> {
    let mut senders = Vec::with_capacity(count);
    let mut last_error = None;
    let mut remaining = count;
    while remaining > 0 {
        let batch = remaining.min(CONNECT_BATCH);
        remaining -= batch;
        for result in join_all((0..batch).map(|_| Sender::connect(endpoint, proto))).await {
            match result {
                Ok(sender) => senders.push(sender),
                Err(error) => last_error = Some(error),
            }
        }
    }
    match (senders.is_empty(), last_error) {
        (true, Some(error)) => {
            Err(error.context(format!("no connection to {} opened", endpoint.addr)))
        }
        _ => Ok(senders),
    }
}

/// `streams` senders per connection: the connection itself and
/// `streams - 1` more streams on it. Fails for HTTP/1.1 with `streams > 1`.
fn fan_out(senders: Vec<Sender>, streams: usize) -> Result<Vec<Sender>> {
    let streams = streams.max(1);
    let mut all = Vec::with_capacity(senders.len() * streams);
    for sender in senders {
        for _ in 1..streams {
            all.push(
                sender
                    .share()
                    .ok_or_else(|| anyhow!("HTTP/1.1 has one request in flight per connection"))?,
            );
        }
        all.push(sender);
    }
    Ok(all)
}

/// Replaces a failed connection; `false` once the worker should give up.
async fn reconnect(
    sender: &mut Sender,
    endpoint: &Endpoint,
    proto: Proto,
    reconnects: &mut u32,
    deadline: Instant,
) -> bool {
    while *reconnects < MAX_RECONNECTS && Instant::now() < deadline {
        *reconnects += 1;
        match Sender::connect(endpoint, proto).await {
            Ok(fresh) => {
                *sender = fresh;
                return true;
            }
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
    false
}

/// Closed loop: `connections` connections, each with `streams` requests
/// in flight (1 for HTTP/1.1). The first `warmup` is not recorded; `window`
/// is. A stream whose request fails opens a connection of its own.
pub async fn closed_loop(
    endpoint: &Endpoint,
    proto: Proto,
    connections: usize,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Measured> {
    let opened = connect_pool(endpoint, proto, connections).await?;
    let mut tally = Tally::new()?;
    tally.errors += ((connections - opened.len()) * streams.max(1)) as u64;
    let senders = fan_out(opened, streams)?;
    let tally = RefCell::new(tally);
    let window_start = Instant::now() + warmup;
    let window_end = window_start + window;
    let workers = senders
        .into_iter()
        .map(|sender| closed_worker(sender, endpoint, proto, window_start, window_end, &tally));
    join_all(workers).await;
    Ok(tally.into_inner().summarize(window))
}

async fn closed_worker(
    mut sender: Sender,
    endpoint: &Endpoint,
    proto: Proto,
    window_start: Instant,
    window_end: Instant,
    tally: &RefCell<Tally>,
) {
    let mut reconnects = 0;
    for _ in 0..MAX_REQUESTS_PER_WORKER {
        let sent = Instant::now();
        if sent >= window_end {
            break;
        }
        let result = timeout(REQUEST_TIMEOUT, sender.get(endpoint)).await;
        let done = Instant::now();
        let in_window = done >= window_start && done <= window_end;
        match result {
            Ok(Ok(answer)) => tally.borrow_mut().record(done - sent, answer, in_window),
            _ => {
                if in_window {
                    tally.borrow_mut().errors += 1;
                }
                if !reconnect(&mut sender, endpoint, proto, &mut reconnects, window_end).await {
                    break;
                }
            }
        }
    }
}

/// The open loop's clock: request `i` is due at `start + i / rate`.
struct Schedule {
    start: Instant,
    nanos_per_request: f64,
    next_ticket: Cell<u64>,
    window_start: Instant,
    window_end: Instant,
}

// === impl Schedule ===

impl Schedule {
    /// Takes the next request off the schedule: its due time, or `None`
    /// when the schedule is over.
    fn take(&self) -> Option<Instant> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        let due =
            self.start + Duration::from_nanos((ticket as f64 * self.nanos_per_request) as u64);
        (due < self.window_end).then_some(due)
    }
}

/// Open loop: `rate` requests per second on a clock, over a pool of
/// `connections` connections with `streams` requests in flight on each at
/// most (1 for HTTP/1.1); latency measured as the module doc says.
pub async fn open_loop(
    endpoint: &Endpoint,
    proto: Proto,
    rate: u64,
    connections: usize,
    streams: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Measured> {
    let opened = connect_pool(endpoint, proto, connections).await?;
    let mut tally = Tally::new()?;
    tally.errors += ((connections - opened.len()) * streams.max(1)) as u64;
    let senders = fan_out(opened, streams)?;
    let tally = RefCell::new(tally);
    let start = Instant::now();
    let schedule = Schedule {
        start,
        nanos_per_request: 1e9 / rate.max(1) as f64,
        next_ticket: Cell::new(0),
        window_start: start + warmup,
        window_end: start + warmup + window,
    };
    let workers = senders
        .into_iter()
        .map(|sender| open_worker(sender, endpoint, proto, &schedule, &tally));
    // Requests still unanswered well after the schedule ends are abandoned.
    let drain_deadline = schedule.window_end + REQUEST_TIMEOUT + Duration::from_secs(1);
    let _ = tokio::time::timeout_at(drain_deadline, join_all(workers)).await;
    Ok(tally.into_inner().summarize(window))
}

async fn open_worker(
    mut sender: Sender,
    endpoint: &Endpoint,
    proto: Proto,
    schedule: &Schedule,
    tally: &RefCell<Tally>,
) {
    let mut reconnects = 0;
    for _ in 0..MAX_REQUESTS_PER_WORKER {
        let Some(due) = schedule.take() else { break };
        let origin = if Instant::now() < due {
            sleep_until(due).await;
            // Idle connection, late timer: the slop is the generator's.
            Instant::now()
        } else {
            // This connection was busy with an earlier response when the
            // request fell due: the target made it wait, so it is charged.
            due
        };
        let in_window = due >= schedule.window_start;
        let result = timeout(REQUEST_TIMEOUT, sender.get(endpoint)).await;
        let done = Instant::now();
        match result {
            Ok(Ok(answer)) => tally.borrow_mut().record(done - origin, answer, in_window),
            _ => {
                if in_window {
                    tally.borrow_mut().errors += 1;
                }
                if !reconnect(
                    &mut sender,
                    endpoint,
                    proto,
                    &mut reconnects,
                    schedule.window_end,
                )
                .await
                {
                    break;
                }
            }
        }
    }
}

/// Idle keep-alive connections held open by [`hold_idle`].
pub struct IdleConnections {
    /// The open connections; dropping them closes them.
    connections: Vec<Http1Connection>,
    /// Connections that failed to open or to get a complete response.
    pub failed: usize,
}

// === impl IdleConnections ===

impl IdleConnections {
    /// Connections open and idle.
    pub fn held(&self) -> usize {
        self.connections.len()
    }
}

/// Opens `count` HTTP/1.1 connections, sends one GET on each, reads the
/// response and keeps the connection open and idle. Source addresses
/// rotate over 127.0.1.1–127.0.1.200 for loopback targets, so ephemeral
/// ports never run short.
pub async fn hold_idle(endpoint: &Endpoint, count: usize, deadline: Duration) -> IdleConnections {
    let deadline = Instant::now() + deadline;
    let mut held = IdleConnections {
        connections: Vec::with_capacity(count),
        failed: 0,
    };
    let mut opened = 0;
    while opened < count {
        if Instant::now() >= deadline {
            held.failed += count - opened;
            break;
        }
        let batch = (count - opened).min(256);
        let attempts = (opened..opened + batch).map(|index| open_idle(endpoint, index));
        for result in join_all(attempts).await {
            match result {
                Ok(connection) => held.connections.push(connection),
                Err(_) => held.failed += 1,
            }
        }
        opened += batch;
    }
    held
}

async fn open_idle(endpoint: &Endpoint, index: usize) -> Result<Http1Connection> {
    let source = (endpoint.addr.is_ipv4() && endpoint.addr.ip().is_loopback()).then(|| {
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + (index % 200) as u8)),
            0,
        )
    });
    let exchange = async {
        let mut connection = Http1Connection::connect(endpoint, source).await?;
        connection.get(endpoint).await?;
        Ok::<_, anyhow::Error>(connection)
    };
    timeout(CONNECT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("idle connection setup timed out"))?
}
