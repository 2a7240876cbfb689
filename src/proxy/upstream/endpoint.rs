//! One upstream endpoint: its address, its active-health verdict, and the
//! clients that talk to it, HTTP/1.1 (a keep-alive pool) and HTTP/2 (one
//! multiplexed connection), both dialling through one [`Connect`].
//!
//! An `original_dst` upstream has one endpoint with no fixed address
//! (named `original-dst` in `/status` and metrics): each request carries
//! its [`OriginalTarget`] — where its connection was going, mapped by the
//! upstream's mode — and is sent through that target's clients, made on
//! first use and kept for the next request to the same target. Outlier
//! detection and the breaker see the endpoint as one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::uri::Authority;
use http::{Request, Response, Version};

use super::connect::Connect;
use super::http1::{Http1Pool, PoolLimits, PoolStats};
use super::http2::Http2Client;
use crate::config::Protocol;
use crate::proxy::body::Body;
use crate::proxy::outcome::CallError;

/// Most original-destination targets whose clients are kept per upstream.
/// Inbound interception sees a handful of ports; outbound (`address`)
/// may see many hosts: past this, targets with no open connection are
/// forgotten, and while every kept one is busy a new target is served by
/// clients made for that request alone.
pub const MAX_TARGETS: usize = 256;

/// Where the request's connection was going, mapped by the upstream's
/// `original_dst` mode: set by the request path for `original_dst`
/// upstreams, read when the try is sent. Travels in request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalTarget(pub SocketAddr);

/// The clients of one address.
struct Clients {
    http1: Arc<Http1Pool<Body>>,
    http2: Http2Client<Body>,
}

impl Clients {
    fn new(authority: &Authority, connect: &Connect, limits: PoolLimits) -> Clients {
        Clients {
            http1: Http1Pool::new(authority.clone(), connect.clone(), limits),
            http2: Http2Client::new(authority.clone(), connect.clone()),
        }
    }

    async fn send(
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

/// The clients of each original destination seen, made on first use.
struct Targets {
    connect: Connect,
    limits: PoolLimits,
    clients: Mutex<HashMap<SocketAddr, Arc<Clients>>>,
}

impl Targets {
    fn clients(&self, target: SocketAddr) -> Arc<Clients> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = clients.get(&target) {
            return found.clone();
        }
        let made = Arc::new(Clients::new(
            &authority_of(target),
            &self.connect,
            self.limits,
        ));
        if clients.len() >= MAX_TARGETS {
            clients.retain(|_, kept| Arc::strong_count(kept) > 1 || kept.http1.stats().open > 0);
        }
        if clients.len() < MAX_TARGETS {
            clients.insert(target, made.clone());
        }
        made
    }

    fn stats(&self) -> PoolStats {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.values().map(|clients| clients.http1.stats()).fold(
            PoolStats::default(),
            |sum, one| PoolStats {
                open: sum.open + one.open,
                idle: sum.idle + one.idle,
                connecting: sum.connecting + one.connecting,
                pending: sum.pending + one.pending,
                waited_total: sum.waited_total + one.waited_total,
                queue_full_total: sum.queue_full_total + one.queue_full_total,
                queue_timeout_total: sum.queue_timeout_total + one.queue_timeout_total,
                congested_dials_total: sum.congested_dials_total + one.congested_dials_total,
            },
        )
    }
}

enum Route {
    /// A configured `host:port`.
    Fixed(Clients),
    /// Wherever each request's connection was going.
    Original(Targets),
}

/// One endpoint and its clients.
pub struct Endpoint {
    /// `host:port`, or `original-dst` for an `original_dst` upstream.
    pub authority: Authority,
    /// False while the active health check says unhealthy.
    healthy: AtomicBool,
    route: Route,
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint at `authority`, healthy until a check says otherwise,
    /// its HTTP/1 connections within `limits`.
    pub fn new(authority: Authority, connect: &Connect, limits: PoolLimits) -> Self {
        Endpoint {
            route: Route::Fixed(Clients::new(&authority, connect, limits)),
            authority,
            healthy: AtomicBool::new(true),
        }
    }

    /// The one endpoint of an `original_dst` upstream: each request goes
    /// to its [`OriginalTarget`], each target's HTTP/1 connections within
    /// `limits`.
    pub fn original_dst(connect: &Connect, limits: PoolLimits) -> Self {
        Endpoint {
            authority: Authority::from_static(crate::config::ORIGINAL_DST_UPSTREAM),
            healthy: AtomicBool::new(true),
            route: Route::Original(Targets {
                connect: connect.clone(),
                limits,
                clients: Mutex::new(HashMap::new()),
            }),
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

    /// Its HTTP/1 connections and queue now (over every target, for an
    /// `original_dst` endpoint).
    pub fn connections(&self) -> PoolStats {
        match &self.route {
            Route::Fixed(clients) => clients.http1.stats(),
            Route::Original(targets) => targets.stats(),
        }
    }

    /// Sends `request` in the upstream's `protocol` (`auto`: the
    /// request's own version). An `original_dst` endpoint sends it to the
    /// request's [`OriginalTarget`]; a request without one is not sent.
    pub async fn send(
        &self,
        request: Request<Body>,
        protocol: Protocol,
    ) -> Result<Response<Body>, CallError> {
        match &self.route {
            Route::Fixed(clients) => clients.send(request, protocol).await,
            Route::Original(targets) => {
                let Some(OriginalTarget(target)) = request.extensions().get().copied() else {
                    tracing::warn!(
                        "A request reached an original_dst upstream without its target."
                    );
                    return Err(CallError::Connect);
                };
                targets.clients(target).send(request, protocol).await
            }
        }
    }
}

/// `address` as an authority (`http` has no such conversion).
fn authority_of(address: SocketAddr) -> Authority {
    // A socket address always prints as a valid authority.
    address
        .to_string()
        .parse()
        .unwrap_or_else(|_| Authority::from_static("invalid"))
}
