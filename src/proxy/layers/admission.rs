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
//! - [`MaintenanceLayer`]: while an operator has the route's upstream in
//!   maintenance (`PUT /maintenance`), requests get the route's fallback or
//!   503 `maintenance`, backups or not: the operator said hands off.
//! - [`DegradationLayer`]: at a degradation level that sheds the route's
//!   priority (SPEC §4.3), the request gets the route's fallback or 503
//!   `degraded` without reaching the upstream. The level is the
//!   operator's (`PUT /degradation`), the config's, or the automatic one
//!   the sampler keeps ([`DegradationState`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::Decided;
use crate::policy::degradation::{Level as DegradationLevel, Priority};
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

/// Where the degradation level comes from, in order: an operator's
/// override, a fixed level in the config, or the automatic level.
#[derive(Debug)]
pub struct DegradationState {
    operator: AtomicU8,
    configured: AtomicU8,
    auto: AtomicU8,
}

/// No level set (for the operator's and the config's slots).
const UNSET: u8 = u8::MAX;

impl Default for DegradationState {
    fn default() -> Self {
        DegradationState {
            operator: AtomicU8::new(UNSET),
            configured: AtomicU8::new(UNSET),
            auto: AtomicU8::new(DegradationLevel::Normal as u8),
        }
    }
}

impl DegradationState {
    /// The level in force (one relaxed load in the common case).
    pub fn level(&self) -> DegradationLevel {
        self.source_and_level().1
    }

    /// Who set the level in force (`operator`, `config` or `auto`), and it.
    pub fn source_and_level(&self) -> (&'static str, DegradationLevel) {
        let operator = self.operator.load(Ordering::Relaxed);
        if operator != UNSET {
            return ("operator", DegradationLevel::from_u8(operator));
        }
        let configured = self.configured.load(Ordering::Relaxed);
        if configured != UNSET {
            return ("config", DegradationLevel::from_u8(configured));
        }
        (
            "auto",
            DegradationLevel::from_u8(self.auto.load(Ordering::Relaxed)),
        )
    }

    /// An operator's level, or `None` to hand control back.
    pub fn set_operator(&self, level: Option<DegradationLevel>) {
        self.operator
            .store(level.map_or(UNSET, |level| level as u8), Ordering::Relaxed);
    }

    /// The config's fixed level, or `None` for `auto`.
    pub fn set_configured(&self, level: Option<DegradationLevel>) {
        self.configured
            .store(level.map_or(UNSET, |level| level as u8), Ordering::Relaxed);
    }

    /// The automatic level (in force when nothing overrides it).
    pub fn set_auto(&self, level: DegradationLevel) {
        self.auto.store(level as u8, Ordering::Relaxed);
    }

    /// The automatic level, whether in force or not.
    pub fn auto_level(&self) -> DegradationLevel {
        DegradationLevel::from_u8(self.auto.load(Ordering::Relaxed))
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

// === maintenance ===

/// Refuses requests to an upstream in maintenance.
#[derive(Clone)]
pub struct MaintenanceLayer {
    gate: Arc<UpstreamGate>,
}

impl MaintenanceLayer {
    /// Refuses while `gate`'s upstream is in maintenance.
    pub fn new(gate: Arc<UpstreamGate>) -> Self {
        MaintenanceLayer { gate }
    }
}

impl<S> Layer<S> for MaintenanceLayer {
    type Service = MaintenanceGate<S>;
    fn layer(&self, inner: S) -> MaintenanceGate<S> {
        MaintenanceGate {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// See [`MaintenanceLayer`].
#[derive(Clone)]
pub struct MaintenanceGate<S> {
    inner: S,
    gate: Arc<UpstreamGate>,
}

impl<S> Service<Request<Body>> for MaintenanceGate<S>
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
        if self.gate.in_maintenance() {
            return Decided::refuse(Rejection::Maintenance);
        }
        Decided::Running {
            inner: self.inner.call(request),
        }
    }
}

// === degradation ===

/// Gives way at the degradation levels that shed the route's priority.
#[derive(Clone, Debug)]
pub struct DegradationLayer {
    state: Arc<DegradationState>,
    priority: Priority,
}

impl DegradationLayer {
    /// Sheds a route of `priority` when `state`'s level says so.
    pub fn new(state: Arc<DegradationState>, priority: Priority) -> Self {
        DegradationLayer { state, priority }
    }
}

impl<S> Layer<S> for DegradationLayer {
    type Service = DegradationGate<S>;
    fn layer(&self, inner: S) -> DegradationGate<S> {
        DegradationGate {
            inner,
            state: self.state.clone(),
            priority: self.priority,
        }
    }
}

/// See [`DegradationLayer`].
#[derive(Clone, Debug)]
pub struct DegradationGate<S> {
    inner: S,
    state: Arc<DegradationState>,
    priority: Priority,
}

impl<S> Service<Request<Body>> for DegradationGate<S>
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
        if self.priority != Priority::Critical && self.state.level().sheds(self.priority) {
            return Decided::refuse(Rejection::Degraded);
        }
        Decided::Running {
            inner: self.inner.call(request),
        }
    }
}
