//! The data plane: listeners, connections, and the request path.
//!
//! ```text
//! listener::serve_listener ── max_connections ─▶ conn::serve_connection (any Transport)
//!   guard (framing, slow clients) ▸ sniff (HTTP/1.1 or h2c) ▸ hyper, parked between HTTP/1 requests
//!     └─▶ service::handle (per request): snapshot ▸ route ▸ headers ▸ RouteStack ▸ access log at body end
//!           RouteStack (snapshot.rs), outermost first:
//!             rescue ▸ overload ▸ readiness ▸ rate limit ▸ breaker ▸ bulkhead ▸ request timeout   (layers/)
//!             ▸ retry ▸ balance: one try ▸ endpoint ▸ HTTP/1 pool | HTTP/2 ▸ connect               (upstream/)
//! ```
//!
//! Shared state: [`plane::DataPlane`] (the live snapshot, counters,
//! shutdown), [`gate::UpstreamGate`] per upstream (readiness, failover: it
//! outlives reloads, and the supervisor writes it), [`meta::Conn`] per
//! connection. How an exchange ended is classified once
//! ([`outcome`]) and carried by the response [`body`] to everything that
//! records it when the body ends. Every reply breakwater makes itself
//! comes from [`reject`].

pub mod body;
pub mod conn;
pub mod faults;
pub mod framing;
pub mod gate;
pub mod guard;
pub mod headers;
pub mod layers;
pub mod listener;
pub mod meta;
pub mod outcome;
pub mod plane;
pub mod reject;
pub mod report;
pub mod route;
pub mod service;
pub mod snapshot;
pub mod stale;
pub mod upstream;

pub use listener::{serve_listener, ListenerHandle};
pub use plane::DataPlane;
