//! The upstream side of a route stack, as layers, from the route's request
//! down to a socket:
//!
//! ```text
//! Retry (retry.rs)            whether a failed try goes again, within the budget
//!   └─ Balance (balance.rs)   one try: pick an endpoint, send within per_try,
//!        │                    classify once, account for it (passive.rs)
//!        └─ Endpoint (endpoint.rs)
//!             ├─ Http1Pool (http1.rs)    keep-alive connections, lent to response bodies
//!             └─ Http2Client (http2.rs)  one multiplexed connection
//!                  └─ Connect (connect.rs)  dials, for both protocols
//! ```
//!
//! [`health`] runs the active health checks that take endpoints out of
//! rotation and back; [`passive`] is what live traffic says about them.
//! [`balance::UpstreamPool`] is one upstream for one config version; the
//! state that must outlive a reload (readiness, failover, try counts) is
//! its [`crate::proxy::gate::UpstreamGate`].

pub mod balance;
pub mod connect;
pub mod endpoint;
pub mod health;
pub mod http1;
pub mod http2;
pub mod passive;
pub mod retry;
