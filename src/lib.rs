//! breakwater: a sidecar resilience proxy.
//!
//! It runs beside one service, takes that service's HTTP traffic, and keeps
//! it healthy: routing, timeouts, and (in later parts) circuit breakers,
//! bulkheads, retries with budgets, degradation and an embedded supervisor.
//! `SPEC.md` is the contract; `ARCHITECTURE.md` is the map.
//!
//! # Layout
//! - [`config`]: YAML → validated [`config::Config`], every error at once.
//! - [`proxy`]: the data plane — listeners, connections, routing, the
//!   per-route tower stack, forwarding.
//! - [`admin`]: the operator port (status, metrics, reload).
//! - [`reload`]: SIGHUP / admin / file-watch reloads, one atomic swap.
//! - [`run`]: start-up and graceful drain.
//! - [`overload`]: the memory watermark ladder.
//! - [`state`], [`metrics`], [`events`], [`telemetry`]: shared plumbing.
//! - [`sim`], [`demo`]: the controllable upstream and the guided tour.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod metrics;
pub mod overload;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod run;
pub mod sim;
pub mod state;
pub mod supervisor;
pub mod telemetry;
pub mod trim;
pub mod units;
