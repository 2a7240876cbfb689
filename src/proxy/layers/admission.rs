//! Admission before any per-route policy: is breakwater itself able to
//! take the request, and is the upstream's process there to serve it?
//!
//! - [`OverloadLayer`]: past the overload ladder's shed watermark
//!   (breakwater's own memory, SPEC §11), new requests get 503 `overload`.
//!   The level is sampled off the request path (`crate::sampler`) and read
//!   here with one relaxed load.
//! - [`ReadinessLayer`]: while the supervised process behind the route's
//!   upstream is starting or restarting, requests get 503 `starting` —
//!   unless a backup endpoint can take them — and once the supervisor has
//!   given up, 503 `needs-intervention`. The layer reads the upstream's
//!   [`UpstreamGate`]; it never asks the supervisor.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Decided;
use crate::policy::overload::Level;
use crate::proxy::body::Body;
use crate::proxy::gate::{Readiness, UpstreamGate};
use crate::proxy::reject::{Rejection, StackError};
use crate::proxy::upstream::balance::UpstreamPool;

/// The overload ladder's level as the data plane reads it.
#[derive(Debug, Default)]
pub struct OverloadFlag(AtomicU8);

impl OverloadFlag {
    /// The current level.
    pub fn level(&self) -> Level {
        Level::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Publishes a new level.
    pub fn set(&self, level: Level) {
        self.0.store(level as u8, Ordering::Relaxed);
    }
}

// === overload ===

/// Sheds every request while the overload ladder is at `shed`.
#[derive(Clone, Debug)]
pub struct OverloadLayer {
    flag: Arc<OverloadFlag>,
}

impl OverloadLayer {
    /// Reads the level from `flag`.
    pub fn new(flag: Arc<OverloadFlag>) -> Self {
        OverloadLayer { flag }
    }
}

impl<S> Layer<S> for OverloadLayer {
    type Service = OverloadGate<S>;
    fn layer(&self, inner: S) -> OverloadGate<S> {
        OverloadGate {
            inner,
            flag: self.flag.clone(),
        }
    }
}

/// See [`OverloadLayer`].
#[derive(Clone, Debug)]
pub struct OverloadGate<S> {
    inner: S,
    flag: Arc<OverloadFlag>,
}

impl<S> Service<Request<Body>> for OverloadGate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = Decided<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if self.flag.level() == Level::Shed {
            return Decided::refuse(Rejection::Overload);
        }
        Decided::Running {
            inner: self.inner.call(request),
        }
    }
}

// === readiness ===

/// Holds requests back from an upstream whose process is not ready.
#[derive(Clone)]
pub struct ReadinessLayer {
    pool: Arc<UpstreamPool>,
}

impl ReadinessLayer {
    /// Gates on `pool`'s upstream.
    pub fn new(pool: Arc<UpstreamPool>) -> Self {
        ReadinessLayer { pool }
    }
}

impl<S> Layer<S> for ReadinessLayer {
    type Service = ReadinessGate<S>;
    fn layer(&self, inner: S) -> ReadinessGate<S> {
        ReadinessGate {
            inner,
            gate: self.pool.gate().clone(),
            pool: self.pool.clone(),
        }
    }
}

/// See [`ReadinessLayer`].
#[derive(Clone)]
pub struct ReadinessGate<S> {
    inner: S,
    gate: Arc<UpstreamGate>,
    pool: Arc<UpstreamPool>,
}

impl<S> Service<Request<Body>> for ReadinessGate<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = StackError>,
{
    type Response = Response<Body>;
    type Error = StackError;
    type Future = Decided<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StackError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let refusal = match self.gate.readiness() {
            Readiness::Ready => None,
            Readiness::Starting => Some(Rejection::Starting),
            Readiness::NeedsIntervention => Some(Rejection::NeedsIntervention),
        };
        match refusal {
            Some(rejection) if !self.pool.has_available_backup(Instant::now()) => {
                Decided::refuse(rejection)
            }
            _ => Decided::Running {
                inner: self.inner.call(request),
            },
        }
    }
}
