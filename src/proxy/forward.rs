//! Connection pools to one upstream, and the choice of endpoint.
//!
//! [`UpstreamPool`] owns the keep-alive pools of one upstream (hyper-util's
//! pooled client, one per protocol in use) and its endpoints' health: the
//! active health check's verdict per endpoint, and passive outlier
//! detection from live traffic (SPEC §3.6). [`UpstreamPool::pick`] chooses
//! round robin among the available endpoints, avoiding the one a retry
//! just failed on when another is available; if none is available it
//! falls back to all of them, since refusing every request is worse than
//! trying a doubtful endpoint (Envoy's "panic threshold").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::body::Body;
use super::outcome::UpstreamError;
use crate::config::{Protocol, Upstream};
use crate::policy::outlier::{Ejection, OutlierConfig, OutlierDetector};

type HttpClient = Client<HttpConnector, Body>;

/// Idle upstream connections are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One primary endpoint and its active-health verdict.
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// False while the active health check says unhealthy.
    pub healthy: AtomicBool,
}

/// Connection pools, endpoints and their health for one upstream.
pub struct UpstreamPool {
    /// The config this pool was built from; a reload reuses the pool (with
    /// its warm connections and endpoint health) when the new config is equal.
    pub config: Upstream,
    endpoints: Vec<Endpoint>,
    backup: Vec<Authority>,
    next: AtomicUsize,
    outlier: Option<OutlierDetector>,
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
        let endpoints: Vec<Endpoint> = parse(&config.endpoints)
            .into_iter()
            .map(|authority| Endpoint {
                authority,
                healthy: AtomicBool::new(true),
            })
            .collect();
        let outlier = config.outlier_detection.on().map(|outlier| {
            OutlierDetector::new(
                OutlierConfig {
                    consecutive_failures: outlier.consecutive_failures,
                    base_ejection_time: outlier.base_ejection_time,
                    max_ejection_percent: outlier.max_ejection_percent,
                },
                endpoints.len(),
            )
        });
        UpstreamPool {
            config: config.clone(),
            endpoints,
            backup: parse(&config.backup),
            next: AtomicUsize::new(0),
            outlier,
            http1,
            http2,
        }
    }

    /// Whether endpoint `index` may take traffic now.
    pub fn is_available(&self, index: usize, now: Instant) -> bool {
        self.endpoints
            .get(index)
            .is_some_and(|endpoint| endpoint.healthy.load(Ordering::Relaxed))
            && self
                .outlier
                .as_ref()
                .is_none_or(|outlier| outlier.is_available(index, now))
    }

    /// The next endpoint, round robin over the available ones, avoiding
    /// `avoid` when another is available.
    pub fn pick(&self, avoid: Option<usize>, now: Instant) -> Option<usize> {
        let n = self.endpoints.len();
        if n <= 1 {
            return (n == 1).then_some(0);
        }
        // A retry takes the endpoint after the one that failed, leaving the
        // shared counter alone, so retries do not fall into step with the
        // rotation and land every request's first try on the same endpoint.
        let start = match avoid {
            Some(failed) => failed + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let candidates = (0..n).map(|offset| (start + offset) % n);
        candidates
            .clone()
            .find(|&index| Some(index) != avoid && self.is_available(index, now))
            .or_else(|| {
                candidates
                    .clone()
                    .find(|&index| self.is_available(index, now))
            })
            .or_else(|| candidates.clone().find(|&index| Some(index) != avoid))
            .or(Some(start % n))
    }

    /// Counts a try's result against endpoint `index`; returns an
    /// ejection if this one caused it.
    pub fn record(&self, index: usize, failure: bool, now: Instant) -> Option<Ejection> {
        self.outlier.as_ref()?.record(index, failure, now)
    }

    /// Primary endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Backup endpoints (used by failover, part 3).
    pub fn backup(&self) -> &[Authority] {
        &self.backup
    }

    /// The outlier detector, when outlier detection is on.
    pub fn outlier(&self) -> Option<&OutlierDetector> {
        self.outlier.as_ref()
    }

    /// Sends `request` to endpoint `index`, rewriting its target.
    pub fn send(&self, index: usize, mut request: Request<Body>) -> ForwardFuture {
        let Some(endpoint) = self.endpoints.get(index) else {
            return ForwardFuture { inner: None };
        };
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(path);
        let Ok(uri) = Uri::from_parts(parts) else {
            return ForwardFuture { inner: None };
        };
        *request.uri_mut() = uri;
        let use_http2 = match self.config.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Auto => request.version() == Version::HTTP_2,
        };
        let client = if use_http2 {
            *request.version_mut() = Version::HTTP_2;
            &self.http2
        } else {
            *request.version_mut() = Version::HTTP_11;
            &self.http1
        };
        ForwardFuture {
            inner: Some(client.request(request)),
        }
    }

    /// A plain GET with no body, for the active health check.
    pub fn probe(&self, index: usize, path: &str) -> ForwardFuture {
        let mut request = Request::new(Body::empty());
        match path.parse() {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return ForwardFuture { inner: None },
        }
        if let Some(endpoint) = self.endpoints.get(index) {
            if let Ok(host) = http::HeaderValue::from_str(endpoint.authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        self.send(index, request)
    }
}

/// Response future of [`UpstreamPool::send`].
pub struct ForwardFuture {
    /// `None` when the request could not be addressed.
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
