//! breakwater's own HTTP/1.1 keep-alive pool for one upstream endpoint.
//!
//! hyper-util's pooled client cost about 12 % of breakwater's CPU per
//! request in the load bench: a keyed pool behind a mutex, a checkout
//! future, and a task spawned per response to wait until the connection
//! is ready again (docs/BENCHMARKS.md). [`Http1Pool`] does only what a
//! proxy with a fixed endpoint list needs: a LIFO list of idle
//! [`SendRequest`]s per endpoint behind a mutex held for a push or a pop.
//! A request pops the most recently used connection (dropping closed
//! ones) or connects through the endpoint's [`Connect`]; the connection
//! then rides with the response body in a [`Lease`] and goes back on the
//! list when that body has reached its end. A body dropped before its end
//! drops the connection with it, since a connection in the middle of a
//! message cannot be reused.
//!
//! A request that a pooled connection did not send (the upstream closed
//! it while it sat idle) is sent again on the next one; hyper hands such
//! a request back untouched. Idle connections older than
//! [`IDLE_TIMEOUT`] are closed when the list is next used, and at most
//! [`MAX_IDLE`] are kept per endpoint.
//!
//! The pool is generic over the request body type, so it knows nothing of
//! the data plane's body (which carries a [`Lease`] back to it).

use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::Connect;
use crate::proxy::outcome::CallError;

/// Idle upstream connections are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per endpoint; more are closed on return.
pub const MAX_IDLE: usize = 512;

/// Keep-alive connections to one endpoint, for request bodies of type `B`.
pub struct Http1Pool<B> {
    authority: Authority,
    connect: Connect,
    idle: Mutex<Vec<Idle<B>>>,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// A response and, unless it was a 101, the connection it arrived on.
pub struct Leased<B> {
    /// The response, its body still streaming.
    pub response: Response<Incoming>,
    /// The connection, to give back once the body has ended; `None` when a
    /// 101 handed it over to the upgrade.
    pub lease: Option<Lease<B>>,
}

// === impl Http1Pool ===

impl<B> Http1Pool<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// An empty pool for `authority` (`host:port`), dialling with `connect`.
    pub fn new(authority: Authority, connect: Connect) -> Arc<Self> {
        Arc::new(Http1Pool {
            authority,
            connect,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `request` (its target in origin form or not) on a pooled or
    /// new connection. A failure after the request started to go out is
    /// `reset`; the caller tells it apart from the client breaking its own
    /// body.
    pub async fn send(self: &Arc<Self>, mut request: Request<B>) -> Result<Leased<B>, CallError> {
        self.prepare(&mut request);
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // A returned connection takes a moment to finish the last
            // message; one that closed meanwhile is skipped.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lease(response, sender)),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle<B>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned open connection, if any.
    fn checkout(&self) -> Option<SendRequest<B>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Puts a connection whose last response has ended back on the list.
    fn checkin(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The front holds the oldest: close what has idled too long, and
        // keep the list bounded.
        let stale = idle
            .iter()
            .take_while(|entry| now.duration_since(entry.since) >= IDLE_TIMEOUT)
            .count();
        let over = (idle.len() + 1).saturating_sub(MAX_IDLE);
        let close = stale.max(over).min(idle.len());
        idle.drain(..close);
        idle.push(Idle { sender, since: now });
    }

    async fn connect(&self) -> Result<SendRequest<B>, CallError> {
        let stream = self.connect.connect(&self.authority).await?;
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
        Ok(sender)
    }

    /// Lends the connection to the response; a 101 hands it over to the
    /// upgrade instead.
    fn lease(self: &Arc<Self>, response: Response<Incoming>, sender: SendRequest<B>) -> Leased<B> {
        let lease = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: self.clone(),
            sender: Some(sender),
        });
        Leased { response, lease }
    }
}

/// A pooled connection lent to one response body.
pub struct Lease<B> {
    pool: Arc<Http1Pool<B>>,
    sender: Option<SendRequest<B>>,
}

impl<B> Lease<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// The response is over: the connection may take the next request.
    pub fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.checkin(sender);
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

    fn pool(authority: Authority) -> Arc<Pool> {
        Http1Pool::new(authority, Connect::new(Duration::from_secs(1)))
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
}
