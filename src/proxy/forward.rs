//! Connection pools to one upstream, and the choice of endpoint.
//!
//! [`UpstreamPool`] owns the keep-alive pools of one upstream (breakwater's
//! own HTTP/1.1 pool per endpoint, [`super::client`]; hyper-util's pooled
//! client for h2c, which multiplexes one connection per endpoint) and its
//! endpoints' health: the active health check's verdict per endpoint, and
//! passive outlier detection from live traffic (SPEC §3.6).
//! [`UpstreamPool::pick`] chooses round robin among the available primary
//! endpoints, avoiding the one a retry just failed on when another is
//! available. When no primary is
//! available — ejected, unhealthy, or its supervised process down — or an
//! operator failed the upstream over (SPEC §5.4), the `backup` endpoints
//! take the traffic; with none available either it falls back to all
//! primaries, since refusing every request is worse than trying a doubtful
//! endpoint (Envoy's "panic threshold"). Endpoint indices run over the
//! primaries first, then the backups.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::body::Body;
use super::client::{Http1Pool, IDLE_TIMEOUT};
use super::outcome::UpstreamError;
use crate::config::{Protocol, Upstream};
use crate::policy::outlier::{Ejection, OutlierConfig, OutlierDetector};

type HttpClient = Client<HttpConnector, Body>;

/// One primary endpoint and its active-health verdict.
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// False while the active health check says unhealthy.
    pub healthy: AtomicBool,
    /// Keep-alive HTTP/1.1 connections to it.
    pub http1: Arc<Http1Pool>,
}

/// Connection pools, endpoints and their health for one upstream.
pub struct UpstreamPool {
    /// The config this pool was built from; a reload reuses the pool (with
    /// its warm connections and endpoint health) when the new config is equal.
    pub config: Upstream,
    endpoints: Vec<Endpoint>,
    backup: Vec<Endpoint>,
    next: AtomicUsize,
    /// Set by an operator's failover: backups take all traffic.
    failed_over: AtomicBool,
    /// Set by the supervisor while the process behind the primaries is
    /// down or restarting.
    primary_down: AtomicBool,
    /// Tries sent to the primaries, and how many failed: the supervisor's
    /// error-rate trigger samples these (two relaxed adds per try).
    tries: AtomicU64,
    failed_tries: AtomicU64,
    outlier: Option<OutlierDetector>,
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
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let http2 = builder.http2_only(true).build(connector);
        let endpoint = |authority: Authority| Endpoint {
            http1: Http1Pool::new(authority.clone(), config.connect_timeout),
            authority,
            healthy: AtomicBool::new(true),
        };
        let endpoints: Vec<Endpoint> = parse(&config.endpoints).into_iter().map(endpoint).collect();
        let backup: Vec<Endpoint> = parse(&config.backup).into_iter().map(endpoint).collect();
        let outlier = config.outlier_detection.on().map(|outlier| {
            OutlierDetector::with_spare(
                OutlierConfig {
                    consecutive_failures: outlier.consecutive_failures,
                    base_ejection_time: outlier.base_ejection_time,
                    max_ejection_percent: outlier.max_ejection_percent,
                },
                endpoints.len(),
                // With backups, every failing primary may be ejected: its
                // traffic spills to the backups instead of retrying a dead one.
                !backup.is_empty(),
            )
        });
        UpstreamPool {
            config: config.clone(),
            endpoints,
            backup,
            next: AtomicUsize::new(0),
            failed_over: AtomicBool::new(false),
            primary_down: AtomicBool::new(false),
            tries: AtomicU64::new(0),
            failed_tries: AtomicU64::new(0),
            outlier,
            http2,
        }
    }

    /// The endpoint at `index` (primaries first, then backups).
    pub fn endpoint(&self, index: usize) -> Option<&Endpoint> {
        self.endpoints
            .get(index)
            .or_else(|| self.backup.get(index.checked_sub(self.endpoints.len())?))
    }

    /// Whether endpoint `index` may take traffic now.
    pub fn is_available(&self, index: usize, now: Instant) -> bool {
        let Some(endpoint) = self.endpoint(index) else {
            return false;
        };
        if !endpoint.healthy.load(Ordering::Relaxed) {
            return false;
        }
        if index < self.endpoints.len() {
            !self.primary_down.load(Ordering::Relaxed)
                && self
                    .outlier
                    .as_ref()
                    .is_none_or(|outlier| outlier.is_available(index, now))
        } else {
            true
        }
    }

    /// The next endpoint: round robin over available primaries (or backups
    /// when failed over or no primary is available), avoiding `avoid` when
    /// another is available.
    pub fn pick(&self, avoid: Option<usize>, now: Instant) -> Option<usize> {
        let n_primary = self.endpoints.len();
        let n_backup = self.backup.len();
        if n_primary == 1 && n_backup == 0 {
            return Some(0);
        }
        // A retry takes the endpoint after the one that failed, leaving the
        // shared counter alone, so retries do not fall into step with the
        // rotation and land every request's first try on the same endpoint.
        let start = match avoid {
            Some(failed) => failed + 1,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let primaries =
            move || (0..n_primary).map(move |offset| (start + offset) % n_primary.max(1));
        let backups =
            move || (0..n_backup).map(move |offset| n_primary + (start + offset) % n_backup.max(1));
        let usable = |index: &usize| Some(*index) != avoid && self.is_available(*index, now);
        if !self.failed_over.load(Ordering::Relaxed) {
            if let Some(index) = primaries().find(usable) {
                return Some(index);
            }
        }
        backups()
            .find(usable)
            .or_else(|| primaries().find(usable))
            .or_else(|| {
                backups()
                    .chain(primaries())
                    .find(|&index| self.is_available(index, now))
            })
            .or_else(|| primaries().find(|&index| Some(index) != avoid))
            .or_else(|| primaries().next())
            .or_else(|| backups().next())
    }

    /// Tries sent to the primaries so far, and how many failed.
    pub fn try_counts(&self) -> (u64, u64) {
        (
            self.tries.load(Ordering::Relaxed),
            self.failed_tries.load(Ordering::Relaxed),
        )
    }

    /// Moves all traffic to the backups (`true`) or back (`false`).
    /// Returns whether anything changed.
    pub fn set_failed_over(&self, failed_over: bool) -> bool {
        self.failed_over.swap(failed_over, Ordering::Relaxed) != failed_over
    }

    /// Whether an operator failed this upstream over.
    pub fn is_failed_over(&self) -> bool {
        self.failed_over.load(Ordering::Relaxed)
    }

    /// Marks the supervised process behind the primaries down or up.
    pub fn set_primary_down(&self, down: bool) {
        self.primary_down.store(down, Ordering::Relaxed);
    }

    /// Whether some backup endpoint could take traffic now.
    pub fn has_available_backup(&self, now: Instant) -> bool {
        (0..self.backup.len()).any(|offset| self.is_available(self.endpoints.len() + offset, now))
    }

    /// Counts a try's result against endpoint `index`; returns an
    /// ejection if this one caused it.
    pub fn record(&self, index: usize, failure: bool, now: Instant) -> Option<Ejection> {
        if index >= self.endpoints.len() {
            return None; // Outlier detection covers the primary set.
        }
        self.tries.fetch_add(1, Ordering::Relaxed);
        if failure {
            self.failed_tries.fetch_add(1, Ordering::Relaxed);
        }
        self.outlier.as_ref()?.record(index, failure, now)
    }

    /// Primary endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Backup endpoints.
    pub fn backup(&self) -> &[Endpoint] {
        &self.backup
    }

    /// The outlier detector, when outlier detection is on.
    pub fn outlier(&self) -> Option<&OutlierDetector> {
        self.outlier.as_ref()
    }

    /// Sends `request` to endpoint `index`: HTTP/1.1 on the endpoint's
    /// own keep-alive pool, HTTP/2 on the shared h2c client.
    pub async fn send(
        &self,
        index: usize,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let endpoint = self.endpoint(index).ok_or(UpstreamError::Connect)?;
        let use_http2 = match self.config.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Auto => request.version() == Version::HTTP_2,
        };
        if !use_http2 {
            return endpoint.http1.send(request).await;
        }
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(path);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|_| UpstreamError::Connect)?;
        *request.version_mut() = Version::HTTP_2;
        match self.http2.request(request).await {
            Ok(response) => Ok(response.map(Body::incoming)),
            Err(error) => {
                let classified = UpstreamError::classify(&error);
                tracing::debug!(error = %error, kind = ?classified, "Upstream request failed.");
                Err(classified)
            }
        }
    }

    /// A plain GET with no body, for the active health check.
    pub async fn probe(&self, index: usize, path: &str) -> Result<Response<Body>, UpstreamError> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = path.parse().map_err(|_| UpstreamError::Connect)?;
        if let Some(endpoint) = self.endpoint(index) {
            if let Ok(host) = http::HeaderValue::from_str(endpoint.authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        self.send(index, request).await
    }
}
