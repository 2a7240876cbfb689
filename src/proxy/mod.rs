//! The data plane: listeners, connections, and the request path.
//!
//! ```text
//! accept (serve_listener) ── max_connections ─▶ serve_connection
//!   hyper-util auto (HTTP/1.1 + h2c), limits, idle + drain watch
//!     └─▶ service::handle  (per request)
//!           snapshot ▸ route ▸ headers ▸ RouteStack ▸ response ▸ completion
//!                                        │
//!            (part 2 policies) ─ RequestTimeout ─ Forward ─▶ upstream pool
//! ```
//!
//! Modules: [`route`] (matching), [`headers`] (hygiene), [`snapshot`] (the
//! compiled config and each route's tower stack), [`timeout`] and
//! [`forward`] (the stack's layers), [`outcome`] (classification),
//! [`reject`] (breakwater's own responses), [`body`] (the body type and its
//! completion hook), [`service`] (the per-request walk-through).

pub mod body;
pub mod client;
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

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;
use crate::state::State;
use framing::HeadLimits;
use guard::{GuardCounters, GuardTimeouts, GuardedStream};
use service::{Activity, ConnContext};

/// HTTP/2 flow-control windows (SPEC §11): 64 KiB per stream, 1 MiB per
/// connection, so one client cannot make us buffer much.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

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
            });
            tokio::spawn(serve_connection(
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

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // The guard (guard.rs) enforces header_read itself, with a 408.
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        // A backstop only: the guard has already refused larger heads.
        .max_buf_size(
            usize::try_from(limits.max_header_bytes.0)
                .unwrap_or(usize::MAX)
                .max(8192),
        );
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes.0).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// Serves one downstream connection until it closes, the client is idle
/// for `limits.idle`, or shutdown asks it to finish.
async fn serve_connection(
    context: Arc<ConnContext>,
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    guard_counters: Arc<GuardCounters>,
) {
    let state = context.state.clone();
    let snapshot = state.snapshot();
    let limits = snapshot
        .listener(&context.listener)
        .map(|listener| listener.limits.clone())
        .unwrap_or_default();
    drop(snapshot);
    let gauge = state
        .metrics
        .downstream_connections
        .with_label_values(&[&*context.listener]);
    gauge.inc();

    let builder = connection_builder(&limits);
    let service_context = context.clone();
    let service = service_fn(move |request| service::handle(service_context.clone(), request));
    let head_limits = HeadLimits {
        max_request_line: usize::try_from(limits.max_request_line.0).unwrap_or(usize::MAX),
        max_header_bytes: usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX),
        max_headers: limits.max_headers,
        max_body_bytes: limits.max_body_bytes.map(|size| size.0),
    };
    let timeouts = GuardTimeouts {
        header_read: limits.header_read,
        body_read_idle: limits.body_read_idle,
    };
    let stream = GuardedStream::new(
        stream,
        context.clone(),
        head_limits,
        timeouts,
        guard_counters,
    );
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);

    let mut shutdown = state.shutdown.subscribe();
    let mut idle_check = tokio::time::interval(limits.idle / 2);
    idle_check.tick().await;
    let mut last_seen = context.activity.observe().0;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %context.peer, %error, "Connection ended with an error.");
                }
                break;
            }
            _ = shutdown.wait_for(|stopping| *stopping), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick(), if !closing => {
                let (generation, quiet) = context.activity.observe();
                if quiet && generation == last_seen {
                    tracing::debug!(peer = %context.peer, "Closing idle connection.");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                last_seen = generation;
            }
        }
    }
    gauge.dec();
    drop(permit);
}
