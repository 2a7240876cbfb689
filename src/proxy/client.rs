//! breakwater's own HTTP/1.1 keep-alive pool for one upstream endpoint.
//!
//! hyper-util's pooled client cost about 12 % of breakwater's CPU per
//! request in the load bench: a keyed pool behind a mutex, a checkout
//! future, and a task spawned per response to wait until the connection
//! is ready again (docs/BENCHMARKS.md). [`Http1Pool`] does only what a
//! proxy with a fixed endpoint list needs: a LIFO list of idle
//! [`SendRequest`]s per endpoint behind a mutex held for a push or a pop.
//! A request pops the most recently used connection (dropping closed
//! ones) or connects; the connection then rides with the response body
//! in a [`Lease`] and goes back on the list when that body has reached
//! its end. A body dropped before its end drops the connection with it,
//! since a connection in the middle of a message cannot be reused.
//!
//! A request that a pooled connection did not send (the upstream closed
//! it while it sat idle) is sent again on the next one; hyper hands such
//! a request back untouched. Idle connections older than
//! [`IDLE_TIMEOUT`] are closed when the list is next used, and at most
//! [`MAX_IDLE`] are kept per endpoint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::Body;
use super::outcome::UpstreamError;

/// Idle upstream connections are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per endpoint; more are closed on return.
pub const MAX_IDLE: usize = 512;

/// Keep-alive connections to one endpoint.
pub struct Http1Pool {
    authority: Authority,
    connect_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Http1Pool {
    /// An empty pool for `authority` (`host:port`).
    pub fn new(authority: Authority, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Http1Pool {
            authority,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Sends `request` (its target already in origin form or not) on a
    /// pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
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
                        return Err(UpstreamError::Connect);
                    }
                    None => {
                        tracing::debug!(error = %error.error(), "Upstream request failed.");
                        return Err(UpstreamError::Reset);
                    }
                },
            }
        }
    }

    /// Origin-form target, HTTP/1.1, and a `Host` header.
    fn prepare(&self, request: &mut Request<Body>) {
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

    /// The most recently returned open connection, if any.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Puts a connection whose last response has ended back on the list.
    fn checkin(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
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

    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let connect = TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(endpoint = self.authority.as_str(), %error, "Upstream connect failed.");
                return Err(if error.kind() == std::io::ErrorKind::TimedOut {
                    UpstreamError::ConnectTimeout
                } else {
                    UpstreamError::Connect
                });
            }
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Connect)?;
        let endpoint = self.authority.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(endpoint = endpoint.as_str(), %error, "Upstream connection ended with an error.");
            }
        });
        Ok(sender)
    }

    /// Wraps the response body so the connection returns to the pool when
    /// the body ends. A 101 response hands the connection over to the
    /// upgrade instead.
    fn lease(
        self: &Arc<Self>,
        response: Response<hyper::body::Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return response.map(Body::incoming);
        }
        let lease = Lease {
            pool: self.clone(),
            sender: Some(sender),
        };
        response.map(|incoming| Body::leased(incoming, lease))
    }
}

/// A pooled connection lent to one response body.
pub struct Lease {
    pool: Arc<Http1Pool>,
    sender: Option<SendRequest<Body>>,
}

impl Lease {
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

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A keep-alive upstream answering `body` to every request; counts
    /// the connections it accepted.
    async fn upstream(body: &'static str) -> (Authority, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |_request| async move {
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(body.as_bytes()),
                        )))
                    }),
                ));
            }
        });
        (authority, accepted)
    }

    fn get() -> Request<Body> {
        Request::get("http://example/x")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_finished_response_returns_its_connection() {
        let (authority, accepted) = upstream("hello").await;
        let pool = Http1Pool::new(authority, Duration::from_secs(1));
        for _ in 0..5 {
            let response = pool.send(get()).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hello");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_unfinished_response_closes_its_connection() {
        let (authority, accepted) = upstream("a longer body").await;
        let pool = Http1Pool::new(authority, Duration::from_secs(1));
        let response = pool.send(get()).await.unwrap();
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        let response = pool.send(get()).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let pool = Http1Pool::new(authority, Duration::from_secs(1));
        assert_eq!(pool.send(get()).await.err(), Some(UpstreamError::Connect));
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
                                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from_static(b"once"),
                                )))
                            }),
                        ),
                );
            }
        });
        let pool = Http1Pool::new(authority, Duration::from_secs(1));
        for _ in 0..3 {
            let response = pool.send(get()).await.unwrap();
            assert_eq!(
                response.into_body().collect().await.unwrap().to_bytes(),
                "once"
            );
        }
    }
}
