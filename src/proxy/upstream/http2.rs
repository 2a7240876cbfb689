//! HTTP/2 to one upstream endpoint — h2c with prior knowledge, or over TLS
//! with ALPN `h2` when the upstream has `tls:` — as one multiplexed
//! connection, dialled through the endpoint's [`Connect`] and shared by
//! every request.
//!
//! HTTP/2 carries concurrent requests as streams of one connection, so an
//! endpoint needs one connection, not a pool: [`Http2Client`] keeps the
//! current `SendRequest` (cloned per request, a few atomics) and dials a
//! new one only when it has closed. Concurrent requests that find it
//! closed wait for one dial instead of each opening their own.

use std::error::Error as StdError;
use std::sync::{Mutex, PoisonError};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::{Alpn, Connect};
use crate::proxy::outcome::CallError;

/// The HTTP/2 connection to one endpoint.
pub struct Http2Client<B> {
    authority: Authority,
    connect: Connect,
    current: Mutex<Option<SendRequest<B>>>,
    /// Held while dialling, so one dial serves everyone waiting.
    dialling: tokio::sync::Mutex<()>,
}

// === impl Http2Client ===

impl<B> Http2Client<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A client for `authority` that dials with `connect` on first use.
    pub fn new(authority: Authority, connect: Connect) -> Self {
        Http2Client {
            authority,
            connect,
            current: Mutex::new(None),
            dialling: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` as HTTP/2 on the endpoint's connection.
    pub async fn send(&self, mut request: Request<B>) -> Result<Response<Incoming>, CallError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.connect.tls().is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| CallError::Connect)?;
        *request.version_mut() = Version::HTTP_2;
        let mut sender = self.sender().await?;
        sender.ready().await.map_err(|_| CallError::Connect)?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok(response),
            Err(mut error) => {
                tracing::debug!(endpoint = self.authority.as_str(), error = %error.error(), "Upstream HTTP/2 request failed.");
                // A request the connection never took was not sent: any
                // method may go again (the retry layer decides).
                Err(if error.take_message().is_some() {
                    CallError::Connect
                } else {
                    CallError::Reset
                })
            }
        }
    }

    /// The open connection's sender, dialling one if there is none.
    async fn sender(&self) -> Result<SendRequest<B>, CallError> {
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let _one_dial = self.dialling.lock().await;
        if let Some(sender) = self.open() {
            return Ok(sender);
        }
        let stream = self.connect.connect(&self.authority, Alpn::Http2).await?;
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| CallError::Connect)?;
        let endpoint = self.authority.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(endpoint = endpoint.as_str(), %error, "Upstream HTTP/2 connection ended with an error.");
            }
        });
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    fn open(&self) -> Option<SendRequest<B>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|sender| !sender.is_closed() && sender.is_ready())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            service_fn(|request: Request<Incoming>| async move {
                                assert_eq!(request.version(), Version::HTTP_2);
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                    b"h2",
                                ))))
                            }),
                        ),
                );
            }
        });
        let client = Arc::new(Http2Client::<Empty<Bytes>>::new(
            authority,
            Connect::new(Duration::from_secs(1)),
        ));
        let calls = (0..8).map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let request = Request::get("/x").body(Empty::new()).unwrap();
                let response = client.send(request).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
        });
        for call in calls {
            assert_eq!(call.await.unwrap(), "h2");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
