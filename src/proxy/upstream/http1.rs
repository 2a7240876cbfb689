//! breakwater's own HTTP/1.1 keep-alive pool for one upstream endpoint,
//! with connection limits and a queue.
//!
//! hyper-util's pooled client cost about 12 % of breakwater's CPU per
//! request in the load bench: a keyed pool behind a mutex, a checkout
//! future, and a task spawned per response to wait until the connection
//! is ready again (docs/BENCHMARKS.md). [`Http1Pool`] does only what a
//! proxy with a fixed endpoint list needs: a LIFO list of idle
//! [`SendRequest`]s per endpoint behind a mutex held for a push or a pop.
//! A request pops the most recently used connection (dropping closed
//! ones) or dials through the endpoint's [`Connect`]; the connection then
//! rides with the response body in a [`Lease`] and goes back to the pool
//! when that body has reached its end. A body dropped before its end drops
//! the connection with it, since a connection in the middle of a message
//! cannot be reused.
//!
//! ## Limits and the queue
//!
//! Opening one connection per concurrent request turns a burst into an
//! outage for a small service: a Python `ThreadingHTTPServer` listens with
//! a backlog of 5, so 40 simultaneous dials overflow its accept queue, the
//! kernel drops the extra SYNs and retries them after a second, and the
//! connects time out. So, like HAProxy's `maxconn` with its server queue
//! and Envoy's `max_connections` with `max_pending_requests`, an endpoint
//! has at most [`PoolLimits::max_connections`] connections (open, in use
//! or being dialled) and at most [`PoolLimits::max_connecting`] new ones
//! not yet proven: a connection counts as connecting until the service
//! has answered its first request on it (or for [`PROVE_WITHIN`]), because
//! the kernel completes the handshake long before a busy service accepts
//! the connection — pacing dials by the handshake alone still overflows
//! the accept queue. A request that finds neither an idle connection nor room to dial
//! waits, first in first out, in a queue of [`PoolLimits::max_pending`]
//! for at most [`PoolLimits::pending_timeout`]: a connection coming back
//! is handed straight to the oldest waiter, and a connection closing lets
//! the oldest waiter dial. A full queue or an expired wait is breakwater's
//! own congestion, never the upstream's failure
//! ([`CallError::QueueFull`], [`CallError::QueueTimeout`]).
//!
//! ## Congestion is not death
//!
//! A dial that times out while the endpoint made progress — another dial
//! to it succeeded, or it answered a request on another connection — was
//! congestion (a SYN dropped because the service's accept queue was full):
//! the request goes back to waiting for a connection, or dials again, and
//! nothing is counted against the endpoint. A dial refused, or timed out
//! while the endpoint made no progress at all, says the endpoint is down:
//! it fails, and so does every request waiting in its queue — they would
//! dial into the same wall — so a dead or black-holed upstream trips the
//! breaker within one connect timeout.
//!
//! A request that a pooled connection did not send (the upstream closed
//! it while it sat idle) is sent again on the next one; hyper hands such
//! a request back untouched. Idle connections older than
//! [`IDLE_TIMEOUT`] are closed when the list is next used, and at most
//! [`MAX_IDLE`] are kept per endpoint.
//!
//! The pool is generic over the request body type, so it knows nothing of
//! the data plane's body (which carries a [`Lease`] back to it).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connect::{Alpn, Connect};
use crate::proxy::outcome::CallError;

/// Idle upstream connections are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per endpoint; more are closed on return.
pub const MAX_IDLE: usize = 512;

/// Longest a new connection counts as connecting while its first request
/// waits for an answer. A small service that accepts late answers within a
/// few milliseconds of accepting; one still silent after this is doing
/// slow work, and holding its dial slot longer would only serialise the
/// ramp-up to a slow upstream.
pub const PROVE_WITHIN: Duration = Duration::from_millis(50);

/// An endpoint's connection limits (`upstreams[].connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections open, in use or being dialled, at most.
    pub max_connections: usize,
    /// Dials in progress at once, at most.
    pub max_connecting: usize,
    /// Requests waiting for a connection, at most; more are shed.
    pub max_pending: usize,
    /// Longest wait for a connection before being shed.
    pub pending_timeout: Duration,
}

/// What the pool holds now, for `/status` and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Connections open or being dialled.
    pub open: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Of those, being dialled.
    pub connecting: usize,
    /// Requests waiting for a connection.
    pub pending: usize,
    /// Requests that had to wait, since start.
    pub waited_total: u64,
    /// Requests shed because the queue was full, since start.
    pub queue_full_total: u64,
    /// Requests shed because their wait ran out, since start.
    pub queue_timeout_total: u64,
    /// Dials that timed out while others got through (congestion, not
    /// counted against the endpoint), since start.
    pub congested_dials_total: u64,
}

/// Keep-alive connections to one endpoint, for request bodies of type `B`.
pub struct Http1Pool<B> {
    authority: Authority,
    connect: Connect,
    limits: PoolLimits,
    state: Mutex<State<B>>,
    /// Dials that succeeded and responses received, ever: a timed-out dial
    /// that saw this move was congestion, not a dead endpoint.
    progress: AtomicU64,
    waited_total: AtomicU64,
    queue_full_total: AtomicU64,
    queue_timeout_total: AtomicU64,
    congested_dials_total: AtomicU64,
}

struct State<B> {
    idle: Vec<Idle<B>>,
    /// Connections open or being dialled (each a [`Slot`]).
    open: usize,
    /// Of those, being dialled.
    connecting: usize,
    /// Requests waiting, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant<B>>>,
}

struct Idle<B> {
    conn: Pooled<B>,
    since: Instant,
}

/// An open connection and its place in the pool's count.
struct Pooled<B> {
    sender: SendRequest<B>,
    slot: Slot<B>,
}

/// One unit of the pool's `open` count (and, while dialling, of
/// `connecting`); given back when dropped.
struct Slot<B> {
    pool: Weak<Http1Pool<B>>,
    connecting: bool,
}

/// What a waiting request is handed.
enum Grant<B> {
    /// A connection that just came back.
    Conn(Pooled<B>),
    /// Room to dial a new one.
    Dial(Slot<B>),
    /// The endpoint was found dead while the request waited.
    Failed(CallError),
}

/// How a dial ended.
enum Dialled<B> {
    Open(Pooled<B>),
    /// Timed out while other dials got through: wait again.
    Congested,
}

/// A response and, unless it was a 101, the connection it arrived on.
pub struct Leased<B> {
    /// The response, its body still streaming.
    pub response: Response<Incoming>,
    /// The connection, to give back once the body has ended; `None` when a
    /// 101 handed it over to the upgrade.
    pub lease: Option<Lease<B>>,
}

// === impl Slot ===

impl<B> Drop for Slot<B> {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            let mut state = pool.lock();
            state.open = state.open.saturating_sub(1);
            if self.connecting {
                state.connecting = state.connecting.saturating_sub(1);
            }
            pool.grant_dials(&mut state);
        }
    }
}

// === impl Http1Pool ===

impl<B> Http1Pool<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets the oldest waiters dial while there is room. Called with the
    /// lock held; drops nothing that would take it again.
    fn grant_dials(self: &Arc<Self>, state: &mut State<B>) {
        while !state.waiters.is_empty()
            && state.open < self.limits.max_connections
            && state.connecting < self.limits.max_connecting
        {
            let Some(waiter) = state.waiters.pop_front() else {
                break;
            };
            state.open += 1;
            state.connecting += 1;
            let slot = Slot {
                pool: Arc::downgrade(self),
                connecting: true,
            };
            if let Err(Grant::Dial(mut slot)) = waiter.send(Grant::Dial(slot)) {
                // The waiter gave up: take the room back by hand, since
                // dropping the slot here would take the lock again.
                slot.pool = Weak::new();
                state.open -= 1;
                state.connecting -= 1;
            }
        }
    }

    /// What the pool holds now.
    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        PoolStats {
            open: state.open,
            idle: state.idle.len(),
            connecting: state.connecting,
            pending: state.waiters.iter().filter(|w| !w.is_closed()).count(),
            waited_total: self.waited_total.load(Ordering::Relaxed),
            queue_full_total: self.queue_full_total.load(Ordering::Relaxed),
            queue_timeout_total: self.queue_timeout_total.load(Ordering::Relaxed),
            congested_dials_total: self.congested_dials_total.load(Ordering::Relaxed),
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }

    /// Fails every waiting request with `error`: the endpoint was found
    /// dead, and they would dial into the same wall.
    fn fail_waiters(&self, error: CallError) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        for waiter in waiters {
            let _ = waiter.send(Grant::Failed(error));
        }
    }
}

impl<B> Http1Pool<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// An empty pool for `authority` (`host:port`), dialling with `connect`
    /// within `limits`.
    pub fn new(authority: Authority, connect: Connect, limits: PoolLimits) -> Arc<Self> {
        Arc::new(Http1Pool {
            authority,
            connect,
            limits,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                connecting: 0,
                waiters: VecDeque::new(),
            }),
            progress: AtomicU64::new(0),
            waited_total: AtomicU64::new(0),
            queue_full_total: AtomicU64::new(0),
            queue_timeout_total: AtomicU64::new(0),
            congested_dials_total: AtomicU64::new(0),
        })
    }

    /// Sends `request` (its target in origin form or not) on a pooled or
    /// new connection. A failure after the request started to go out is
    /// `reset`; the caller tells it apart from the client breaking its own
    /// body.
    pub async fn send(self: &Arc<Self>, mut request: Request<B>) -> Result<Leased<B>, CallError> {
        self.prepare(&mut request);
        let deadline = Instant::now() + self.limits.pending_timeout;
        loop {
            let (mut conn, reused) = self.obtain(deadline).await?;
            // A returned connection takes a moment to finish the last
            // message; one that closed meanwhile is skipped.
            if reused && conn.sender.ready().await.is_err() {
                continue;
            }
            let sent = {
                let sending = conn.sender.try_send_request(request);
                tokio::pin!(sending);
                if conn.slot.connecting {
                    // Unproven: a connection, until answered or for at most
                    // PROVE_WITHIN (a slow answer is slow work, not a
                    // service that has not accepted it).
                    match tokio::time::timeout(PROVE_WITHIN, &mut sending).await {
                        Ok(sent) => sent,
                        Err(_) => {
                            self.proven(&mut conn.slot);
                            sending.await
                        }
                    }
                } else {
                    sending.await
                }
            };
            match sent {
                Ok(response) => {
                    self.progress.fetch_add(1, Ordering::Relaxed);
                    self.proven(&mut conn.slot);
                    return Ok(self.lease(response, conn));
                }
                Err(mut error) => match error.take_message() {
                    // Not sent: the pooled connection had closed. Use the
                    // next one (or a new one, which ends the loop).
                    Some(unsent) if reused => request = unsent,
                    Some(_) => {
                        tracing::debug!(error = %error.error(), "Upstream closed a new connection before the request went out.");
                        return Err(CallError::Connect);
                    }
                    None => {
                        tracing::debug!(error = %error.error(), "Upstream request failed.");
                        return Err(CallError::Reset);
                    }
                },
            }
        }
    }

    /// Origin-form target, HTTP/1.1, and a `Host` header.
    fn prepare(&self, request: &mut Request<B>) {
        if !request.headers().contains_key(HOST) {
            let host = request
                .uri()
                .authority()
                .unwrap_or(&self.authority)
                .as_str();
            if let Ok(host) = HeaderValue::from_str(host) {
                request.headers_mut().insert(HOST, host);
            }
        }
        if request.uri().scheme().is_some() || request.uri().authority().is_some() {
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
        *request.version_mut() = Version::HTTP_11;
    }

    /// A connection for one request: the most recently returned idle one,
    /// a new one when there is room to dial, or the next one handed over
    /// after waiting in the queue until `deadline`. `true` with a reused
    /// connection.
    async fn obtain(self: &Arc<Self>, deadline: Instant) -> Result<(Pooled<B>, bool), CallError> {
        enum Next<B> {
            Reuse(Pooled<B>),
            Dial(Slot<B>),
            Wait(oneshot::Receiver<Grant<B>>),
            Full,
        }
        loop {
            let mut closed = Vec::new();
            let next = {
                let mut state = self.lock();
                let mut found = None;
                while let Some(idle) = state.idle.pop() {
                    if idle.conn.sender.is_closed() {
                        closed.push(idle);
                    } else {
                        found = Some(idle.conn);
                        break;
                    }
                }
                match found {
                    Some(conn) => Next::Reuse(conn),
                    None if state.open < self.limits.max_connections
                        && state.connecting < self.limits.max_connecting =>
                    {
                        state.open += 1;
                        state.connecting += 1;
                        let slot = Slot {
                            pool: Arc::downgrade(self),
                            connecting: true,
                        };
                        Next::Dial(slot)
                    }
                    None if state.waiters.len() < self.limits.max_pending => {
                        let (tell, told) = oneshot::channel();
                        state.waiters.push_back(tell);
                        Next::Wait(told)
                    }
                    None => Next::Full,
                }
            };
            // Closed connections give their slots back outside the lock.
            drop(closed);
            let slot = match next {
                Next::Reuse(conn) => return Ok((conn, true)),
                Next::Dial(slot) => slot,
                Next::Full => {
                    self.queue_full_total.fetch_add(1, Ordering::Relaxed);
                    return Err(CallError::QueueFull);
                }
                Next::Wait(mut told) => {
                    self.waited_total.fetch_add(1, Ordering::Relaxed);
                    let grant = match tokio::time::timeout_at(deadline, &mut told).await {
                        Ok(Ok(grant)) => grant,
                        Ok(Err(_)) => return Err(CallError::Connect),
                        Err(_) => {
                            // A grant may have come just as the wait ran out.
                            told.close();
                            match told.try_recv() {
                                Ok(grant) => grant,
                                Err(_) => {
                                    self.lock().waiters.retain(|waiter| !waiter.is_closed());
                                    return Err(self.timed_out());
                                }
                            }
                        }
                    };
                    match grant {
                        Grant::Conn(conn) => return Ok((conn, true)),
                        Grant::Failed(error) => return Err(error),
                        Grant::Dial(slot) => slot,
                    }
                }
            };
            match self.dial(slot).await? {
                Dialled::Open(conn) => return Ok((conn, false)),
                Dialled::Congested if Instant::now() < deadline => continue,
                Dialled::Congested => return Err(self.timed_out()),
            }
        }
    }

    fn timed_out(&self) -> CallError {
        self.queue_timeout_total.fetch_add(1, Ordering::Relaxed);
        CallError::QueueTimeout
    }

    /// Dials a new connection into `slot`.
    async fn dial(self: &Arc<Self>, slot: Slot<B>) -> Result<Dialled<B>, CallError> {
        let progress = self.progress.load(Ordering::Relaxed);
        let stream = match self.connect.connect(&self.authority, Alpn::Http1).await {
            Ok(stream) => stream,
            Err(error) => {
                drop(slot);
                let congested = error == CallError::ConnectTimeout
                    && self.progress.load(Ordering::Relaxed) > progress;
                if congested {
                    self.congested_dials_total.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(endpoint = self.authority.as_str(), "Upstream connect timed out while others got through: congestion, not a dead endpoint.");
                    return Ok(Dialled::Congested);
                }
                self.fail_waiters(error);
                return Err(error);
            }
        };
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| CallError::Connect)?;
        let endpoint = self.authority.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(endpoint = endpoint.as_str(), %error, "Upstream connection ended with an error.");
            }
        });
        self.progress.fetch_add(1, Ordering::Relaxed);
        Ok(Dialled::Open(Pooled { sender, slot }))
    }

    /// A new connection is proven — its first answer arrived, or it has
    /// been waiting for one for [`PROVE_WITHIN`] — so it no longer counts
    /// as connecting. Until then it does: the kernel completes a handshake
    /// long before a busy service accepts the connection, and a pool that
    /// dialled again at the handshake would overflow the service's accept
    /// queue (and wait a second for every SYN dropped).
    fn proven(&self, slot: &mut Slot<B>) {
        if !slot.connecting {
            return;
        }
        let Some(pool) = slot.pool.upgrade() else {
            return;
        };
        let mut state = self.lock();
        state.connecting = state.connecting.saturating_sub(1);
        slot.connecting = false;
        pool.grant_dials(&mut state);
    }

    /// Puts a connection whose last response has ended back: to the oldest
    /// waiter, or on the idle list.
    fn checkin(&self, mut conn: Pooled<B>) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let stale = {
            let mut state = self.lock();
            while let Some(waiter) = state.waiters.pop_front() {
                match waiter.send(Grant::Conn(conn)) {
                    Ok(()) => return,
                    Err(Grant::Conn(back)) => conn = back,
                    // Only a connection was sent.
                    Err(_) => return,
                }
            }
            // The front holds the oldest: close what has idled too long,
            // and keep the list bounded.
            let stale = state
                .idle
                .iter()
                .take_while(|entry| now.duration_since(entry.since) >= IDLE_TIMEOUT)
                .count();
            let over = (state.idle.len() + 1).saturating_sub(MAX_IDLE);
            let close = stale.max(over).min(state.idle.len());
            let stale: Vec<Idle<B>> = state.idle.drain(..close).collect();
            state.idle.push(Idle { conn, since: now });
            stale
        };
        // Their slots go back outside the lock.
        drop(stale);
    }

    /// Lends the connection to the response; a 101 hands it over to the
    /// upgrade instead.
    fn lease(self: &Arc<Self>, response: Response<Incoming>, conn: Pooled<B>) -> Leased<B> {
        let lease = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: self.clone(),
            conn: Some(conn),
        });
        Leased { response, lease }
    }
}

/// A pooled connection lent to one response body.
pub struct Lease<B> {
    pool: Arc<Http1Pool<B>>,
    conn: Option<Pooled<B>>,
}

impl<B> Lease<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// The response is over: the connection may take the next request.
    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    type Pool = Http1Pool<Empty<Bytes>>;

    /// A keep-alive upstream answering `body` to every request; counts
    /// the connections it accepted.
    async fn upstream(body: &'static str) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |_request| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            body.as_bytes(),
                        ))))
                    }),
                ));
            }
        });
        (authority, accepted)
    }

    fn get() -> Request<Empty<Bytes>> {
        Request::get("http://example/x").body(Empty::new()).unwrap()
    }

    const WIDE: PoolLimits = PoolLimits {
        max_connections: 64,
        max_connecting: 8,
        max_pending: 64,
        pending_timeout: Duration::from_secs(5),
    };

    fn pool(authority: Authority) -> Arc<Pool> {
        Http1Pool::new(authority, Connect::new(Duration::from_secs(1)), WIDE)
    }

    /// Reads the body to its end, then gives the connection back.
    async fn finish(leased: Leased<Empty<Bytes>>) -> Bytes {
        let body = leased
            .response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        if let Some(mut lease) = leased.lease {
            lease.release();
        }
        body
    }

    #[tokio::test]
    async fn a_finished_response_returns_its_connection() {
        let (authority, accepted) = upstream("hello").await;
        let pool = pool(authority);
        for _ in 0..5 {
            let leased = pool.send(get()).await.unwrap();
            assert_eq!(finish(leased).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_unfinished_response_closes_its_connection() {
        let (authority, accepted) = upstream("a longer body").await;
        let pool = pool(authority);
        let leased = pool.send(get()).await.unwrap();
        drop(leased);
        assert_eq!(pool.idle_count(), 0);
        let leased = pool.send(get()).await.unwrap();
        finish(leased).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        assert_eq!(
            pool(authority).send(get()).await.err(),
            Some(CallError::Connect)
        );
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_skipped() {
        // An upstream that answers one request per connection and closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(|_request| async {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                    b"once",
                                ))))
                            }),
                        ),
                );
            }
        });
        let pool = pool(authority);
        for _ in 0..3 {
            let leased = pool.send(get()).await.unwrap();
            assert_eq!(finish(leased).await, "once");
        }
    }

    /// An upstream that answers after `delay`; counts connections accepted.
    async fn slow_upstream(delay: Duration) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |_request| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }),
                ));
            }
        });
        (authority, accepted)
    }

    fn limited(authority: Authority, limits: PoolLimits) -> Arc<Pool> {
        Http1Pool::new(authority, Connect::new(Duration::from_millis(300)), limits)
    }

    #[tokio::test]
    async fn a_burst_waits_for_connections_instead_of_dialling_one_each() {
        let (authority, accepted) = slow_upstream(Duration::from_millis(50)).await;
        let pool = limited(
            authority,
            PoolLimits {
                max_connections: 2,
                max_connecting: 1,
                ..WIDE
            },
        );
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { finish(pool.send(get()).await.unwrap()).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "two connections served all ten"
        );
        let stats = pool.stats();
        assert_eq!((stats.open, stats.idle, stats.pending), (2, 2, 0));
        assert!(stats.waited_total >= 8, "{stats:?}");
    }

    #[tokio::test]
    async fn a_full_queue_and_an_expired_wait_shed() {
        let (authority, _) = slow_upstream(Duration::from_millis(500)).await;
        let pool = limited(
            authority,
            PoolLimits {
                max_connections: 1,
                max_connecting: 1,
                max_pending: 1,
                pending_timeout: Duration::from_millis(100),
            },
        );
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.send(get()).await.map(|_| ()) })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.stats().open == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.send(get()).await.map(|_| ()) })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.stats().pending == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(pool.send(get()).await.err(), Some(CallError::QueueFull));
        assert_eq!(waiting.await.unwrap(), Err(CallError::QueueTimeout));
        assert!(busy.await.unwrap().is_ok());
        let stats = pool.stats();
        assert_eq!((stats.queue_full_total, stats.queue_timeout_total), (1, 1));
        assert_eq!(stats.pending, 0);
    }

    #[tokio::test]
    async fn a_refused_endpoint_fails_its_queue_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let pool = limited(
            authority,
            PoolLimits {
                max_connections: 1,
                max_connecting: 1,
                ..WIDE
            },
        );
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.send(get()).await.err() })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Some(CallError::Connect));
        }
        assert_eq!(pool.stats().open, 0);
    }

    /// A listener whose accept queue is full and never drained: further
    /// SYNs are dropped, as by a black hole.
    async fn full_backlog() -> (Authority, Vec<tokio::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let address = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // Fill the queue from outside the pool; stop once a connect hangs.
        while let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            fillers.push(stream);
        }
        std::mem::forget(listener);
        (address.to_string().parse().unwrap(), fillers)
    }

    #[tokio::test]
    async fn a_black_hole_fails_the_dial_and_the_queue_as_connect_timeouts() {
        let (authority, _fillers) = full_backlog().await;
        let pool = limited(
            authority,
            PoolLimits {
                max_connections: 1,
                max_connecting: 1,
                ..WIDE
            },
        );
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.send(get()).await.err() })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Some(CallError::ConnectTimeout));
        }
        assert_eq!(pool.stats().congested_dials_total, 0);
    }
}
