//! The data plane: listeners, connections, and the request path.
//!
//! ```text
//! accept (serve_listener) ── max_connections ─▶ conn::serve_connection
//!   guard ▸ sniff (HTTP/1.1 or h2c) ▸ hyper, parked between HTTP/1 requests
//!     └─▶ service::handle  (per request)
//!           snapshot ▸ route ▸ headers ▸ RouteStack ▸ response ▸ completion
//!                                        │
//!            (part 2 policies) ─ RequestTimeout ─ Forward ─▶ upstream pool
//! ```
//!
//! Modules: [`conn`] (one downstream connection), [`guard`] and
//! [`framing`] (HTTP/1 framing and slow-client limits), [`client`] (the
//! HTTP/1.1 upstream pool), [`route`] (matching), [`headers`] (hygiene), [`snapshot`] (the
//! compiled config and each route's tower stack), [`timeout`] and
//! [`forward`] (the stack's layers), [`outcome`] (classification),
//! [`reject`] (breakwater's own responses), [`body`] (the body type and its
//! completion hook), [`service`] (the per-request walk-through).

pub mod body;
pub mod client;
pub mod conn;
pub mod forward;
pub mod framing;
pub mod guard;
pub mod headers;
pub mod health;
pub mod layers;
pub mod outcome;
pub mod reject;
pub mod route;
pub mod service;
pub mod snapshot;
pub mod timeout;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::state::State;
use guard::GuardCounters;
use service::{Activity, ConnContext};

/// A running listener: its accept loop, and the count of its connections
/// for drain.
pub struct ListenerHandle {
    /// Listener name.
    pub name: Arc<str>,
    /// One permit per allowed connection; all back means all closed.
    pub connections: Arc<Semaphore>,
    /// `max_connections` at start.
    pub max_connections: usize,
}

impl ListenerHandle {
    /// Waits until every connection of this listener has closed.
    pub async fn drained(&self) {
        let n = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _all = self.connections.acquire_many(n).await;
    }
}

/// Starts accepting on `listener`; returns at once. The loop stops when
/// shutdown begins, and each open connection is then closed gracefully.
pub fn serve_listener(
    state: Arc<State>,
    listener: TcpListener,
    name: &str,
    limits: &Limits,
) -> ListenerHandle {
    let name: Arc<str> = Arc::from(name);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handle = ListenerHandle {
        name: name.clone(),
        connections: connections.clone(),
        max_connections: limits.max_connections,
    };
    let mut shutdown = state.shutdown.subscribe();
    let rejected = state
        .metrics
        .rejected_total
        .with_label_values(&[&*name, "max_connections"]);
    let guard_counters = Arc::new(GuardCounters::new(&state.metrics, &name));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(listener = &*name, %error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                rejected.inc();
                tracing::debug!(listener = &*name, %peer, "Connection refused: max_connections reached.");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let context = Arc::new(ConnContext {
                state: state.clone(),
                listener: name.clone(),
                peer,
                proto: "http",
                activity: Activity::default(),
                framing_stopped: std::sync::atomic::AtomicBool::new(false),
                close_after: std::sync::atomic::AtomicBool::new(false),
                parking: std::sync::atomic::AtomicBool::new(false),
            });
            tokio::spawn(conn::serve_connection(
                context,
                stream,
                permit,
                guard_counters.clone(),
            ));
        }
        tracing::info!(listener = &*name, "Stopped accepting connections.");
    });
    handle
}
