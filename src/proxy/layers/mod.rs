//! The route stack's layers above the upstream side, outermost first, in
//! SPEC §3 order:
//!
//! | layer | decides with | refuses with |
//! | --- | --- | --- |
//! | [`rescue::RescueLayer`] | `reject::reply` | — (turns every refusal below into breakwater's reply) |
//! | [`admission::OverloadLayer`] | `policy::overload::Level`, sampled | 503 `overload` |
//! | [`admission::MaintenanceLayer`] | the upstream's `gate::UpstreamGate` | 503 `maintenance` |
//! | [`admission::ReadinessLayer`] | the upstream's `gate::UpstreamGate` | 503 `starting` / `needs-intervention` |
//! | [`rate_limit::RateLimitLayer`] | `policy::rate_limit::RateLimiter` | 429 `rate-limited` |
//! | [`admission::DegradationLayer`] | the level (`policy::degradation`) × the route's priority | 503 `degraded` |
//! | [`fault::FaultLayer`] | the route's `faults::RouteFault` | the fault's status, `fault-injected` (or a delay) |
//! | [`breaker::BreakerLayer`] | `policy::breaker::Breaker` | 503 `breaker-open` |
//! | [`bulkhead::BulkheadLayer`] | `policy::bulkhead::Bulkhead` | 503 `shed` |
//! | [`timeout::TimeoutLayer`] | `timeouts.request`, capped by `grpc-timeout` | 504 `timeout` |
//!
//! Below them: `upstream::retry` and `upstream::balance` (one try each).
//! Each admission layer is a thin adapter: read the clock once, ask the
//! policy, and either refuse with a [`Rejection`] or call the next layer.
//! Decisions live in `policy/`; what a decision means on the wire lives in
//! `reject.rs`; metrics and events go through `report::RouteReport`.
//! Maintenance sits above readiness (an upstream in maintenance says so
//! even while its process is down); fault injection sits after the rate
//! limit and before the breaker (see `fault.rs` for why). A gRPC call gets
//! every refusal as a gRPC status (`reject.rs`).

pub mod admission;
pub mod breaker;
pub mod bulkhead;
pub mod fault;
pub mod rate_limit;
pub mod rescue;
pub mod timeout;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::Body;
use super::reject::{Rejection, StackError};

pin_project! {
    /// An admission layer's future: refused at once (the refusal is taken
    /// when polled), or the next layer's call running.
    #[project = DecidedProject]
    #[allow(missing_docs)] // pin-project-lite takes no docs on variant fields
    pub enum Decided<F> {
        /// Refused without calling the inner service.
        Refused { rejection: Option<Rejection> },
        /// The inner call.
        Running { #[pin] inner: F },
    }
}

impl<F> Decided<F> {
    /// Refuses with `rejection`.
    pub fn refuse(rejection: Rejection) -> Self {
        Decided::Refused {
            rejection: Some(rejection),
        }
    }
}

impl<F> Future for Decided<F>
where
    F: Future<Output = Result<Response<Body>, StackError>>,
{
    type Output = Result<Response<Body>, StackError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DecidedProject::Refused { rejection } => Poll::Ready(Err(StackError::Rejected(
                rejection.take().unwrap_or(Rejection::Shed),
            ))),
            DecidedProject::Running { inner } => inner.poll(cx),
        }
    }
}
