//! One upstream endpoint: its address, its active-health verdict, and the
//! clients that talk to it, HTTP/1.1 (a keep-alive pool) and HTTP/2 (one
//! multiplexed connection), both dialling through one [`Connect`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use http::{Request, Response, Version};

use super::connect::Connect;
use super::http1::{Http1Pool, PoolLimits, PoolStats};
use super::http2::Http2Client;
use crate::config::Protocol;
use crate::proxy::body::Body;
use crate::proxy::outcome::CallError;

/// One endpoint and its clients.
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// False while the active health check says unhealthy.
    healthy: AtomicBool,
    http1: Arc<Http1Pool<Body>>,
    http2: Http2Client<Body>,
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint at `authority`, healthy until a check says otherwise,
    /// its HTTP/1 connections within `limits`.
    pub fn new(authority: Authority, connect: &Connect, limits: PoolLimits) -> Self {
        Endpoint {
            http1: Http1Pool::new(authority.clone(), connect.clone(), limits),
            http2: Http2Client::new(authority.clone(), connect.clone()),
            authority,
            healthy: AtomicBool::new(true),
        }
    }

    /// Whether the active health check lets it take traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Sets the active health check's verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Its HTTP/1 connections and queue now.
    pub fn connections(&self) -> PoolStats {
        self.http1.stats()
    }

    /// Sends `request` in the upstream's `protocol` (`auto`: the
    /// request's own version).
    pub async fn send(
        &self,
        request: Request<Body>,
        protocol: Protocol,
    ) -> Result<Response<Body>, CallError> {
        let http2 = match protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Auto => request.version() == Version::HTTP_2,
        };
        if http2 {
            let response = self.http2.send(request).await?;
            return Ok(response.map(Body::incoming));
        }
        let leased = self.http1.send(request).await?;
        Ok(match leased.lease {
            Some(lease) => leased
                .response
                .map(|incoming| Body::leased(incoming, lease)),
            None => leased.response.map(Body::incoming),
        })
    }
}
