//! breakwater: a sidecar resilience proxy.
//!
//! It runs beside one service, takes that service's HTTP traffic, and keeps
//! it healthy: on every request circuit breakers, bulkheads, timeouts,
//! retries with budgets and rate limits; an embedded supervisor that
//! restarts the service or fails over to a backup; an admin port to see
//! and steer all of it. `ARCHITECTURE.md` is the map.
//!
//! # Layout
//! - [`config`]: YAML → validated [`config::Config`], every error at once.
//! - [`proxy`]: the data plane — listeners, connections, the per-route
//!   stack of layers, the upstream side.
//! - [`policy`]: the resilience decisions as plain types, no I/O.
//! - [`supervisor`]: the upstream's process, its triggers and recovery.
//! - [`admin`]: the operator port (status, metrics, control).
//! - [`reload`]: SIGHUP / admin / file-watch reloads, one atomic swap.
//! - [`run`]: start-up, wiring and graceful drain.
//! - [`sampler`] and [`sys`]: breakwater's own memory, sampled and read.
//! - [`grpc`]: the gRPC vocabulary (codes, deadlines, health messages).
//! - [`tls`]: PEM files → rustls configs for listeners, upstreams and
//!   webhooks.
//! - [`intercept`]: transparent interception — the `breakwater iptables`
//!   rules and the original destination of a redirected connection.
//! - [`metrics`], [`events`], [`telemetry`], [`units`]: shared plumbing.
//! - [`cli`], [`sim`], [`demo`]: the command line, the controllable
//!   upstream and the guided tour.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod events;
pub mod grpc;
pub mod intercept;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod run;
pub mod sampler;
pub mod sim;
pub mod supervisor;
pub mod sys;
pub mod telemetry;
pub mod tls;
pub mod units;
