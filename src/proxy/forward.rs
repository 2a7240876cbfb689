//! The last step of the stack: sending a request to an upstream endpoint.
//!
//! [`UpstreamPool`] owns the keep-alive connection pools of one upstream
//! (hyper-util's pooled client, one per protocol in use) and picks an
//! endpoint round robin. [`Forward`] is the tower service at the bottom of
//! every route stack; it rewrites the request target to the chosen endpoint
//! and classifies failures into [`UpstreamError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::Body;
use super::outcome::UpstreamError;
use crate::config::{Protocol, Upstream};

type HttpClient = Client<HttpConnector, Body>;

/// Idle upstream connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Connection pools and endpoint choice for one upstream.
pub struct UpstreamPool {
    /// The config this pool was built from; a reload reuses the pool (and
    /// its warm connections) when the new config is equal.
    pub config: Upstream,
    endpoints: Vec<Authority>,
    backup: Vec<Authority>,
    next: AtomicUsize,
    http1: HttpClient,
    http2: HttpClient,
}

impl UpstreamPool {
    /// Builds the pools. Endpoints were validated by the config loader; an
    /// endpoint that still fails to parse is skipped.
    pub fn new(config: &Upstream) -> Self {
        let parse = |list: &[String]| {
            list.iter()
                .filter_map(|e| e.parse::<Authority>().ok())
                .collect::<Vec<_>>()
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let http1 = builder.clone().build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        UpstreamPool {
            config: config.clone(),
            endpoints: parse(&config.endpoints),
            backup: parse(&config.backup),
            next: AtomicUsize::new(0),
            http1,
            http2,
        }
    }

    /// The next primary endpoint, round robin.
    pub fn pick(&self) -> Option<&Authority> {
        if self.endpoints.is_empty() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(index)
    }

    /// Primary endpoints.
    pub fn endpoints(&self) -> &[Authority] {
        &self.endpoints
    }

    /// Backup endpoints (used by failover, part 3).
    pub fn backup(&self) -> &[Authority] {
        &self.backup
    }
}

/// The tower service that sends a request to one endpoint of an upstream.
#[derive(Clone)]
pub struct Forward {
    pool: Arc<UpstreamPool>,
}

impl Forward {
    /// Forwards to `pool`'s endpoints.
    pub fn new(pool: Arc<UpstreamPool>) -> Self {
        Forward { pool }
    }
}

impl tower::Service<Request<Body>> for Forward {
    type Response = Response<Incoming>;
    type Error = UpstreamError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> ForwardFuture {
        let Some(endpoint) = self.pool.pick() else {
            return ForwardFuture { inner: None };
        };
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(endpoint.clone());
        parts.path_and_query = Some(path);
        let Ok(uri) = Uri::from_parts(parts) else {
            return ForwardFuture { inner: None };
        };
        *request.uri_mut() = uri;
        let use_http2 = match self.pool.config.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Auto => request.version() == Version::HTTP_2,
        };
        let client = if use_http2 {
            *request.version_mut() = Version::HTTP_2;
            &self.pool.http2
        } else {
            *request.version_mut() = Version::HTTP_11;
            &self.pool.http1
        };
        ForwardFuture {
            inner: Some(client.request(request)),
        }
    }
}

/// Response future of [`Forward`].
pub struct ForwardFuture {
    /// `None` when no endpoint could be chosen.
    inner: Option<ResponseFuture>,
}

impl Future for ForwardFuture {
    type Output = Result<Response<Incoming>, UpstreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(UpstreamError::Connect));
        };
        match Pin::new(inner).poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
            Poll::Ready(Err(error)) => {
                let classified = UpstreamError::classify(&error);
                tracing::debug!(error = %error, kind = ?classified, "Upstream request failed.");
                Poll::Ready(Err(classified))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
