//! `breakwater run`: bind, serve, reload, and drain on SIGTERM/SIGINT.
//!
//! Start-up binds every socket before serving anything, so a port clash is
//! reported at once and nothing half-starts. Shutdown follows SPEC §5.5:
//! `/readyz` turns 503, listeners stop accepting, each connection finishes
//! its in-flight requests (HTTP/1 closes after the current response, HTTP/2
//! sends GOAWAY), and breakwater exits once all are closed or
//! `drain_timeout` has passed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, Overrides};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::proxy::snapshot::Snapshot;
use crate::state::{ConfigSource, State};

/// Why breakwater could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        /// `admin` or the listener name.
        what: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Installing a signal handler failed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// A started proxy: sockets bound, serving.
pub struct Running {
    /// Shared state.
    pub state: Arc<State>,
    /// The bound listeners.
    listeners: Vec<crate::proxy::ListenerHandle>,
}

/// Binds and starts serving `config`.
pub async fn start(
    config: Config,
    source: ConfigSource,
    overrides: Overrides,
) -> Result<Running, RunError> {
    let metrics = Metrics::new()?;
    let admin = bind("admin", config.admin.listen).await?;
    let mut bound = Vec::new();
    for listener in &config.listeners {
        bound.push((
            bind(&listener.name, listener.listen).await?,
            listener.name.clone(),
            listener.limits.clone(),
        ));
    }
    let webhooks = config
        .alerts
        .webhooks
        .iter()
        .filter_map(|webhook| webhook.to_config())
        .collect();
    let events = EventBus::new(
        crate::events::DEFAULT_CAPACITY,
        metrics.events_total.clone(),
        webhooks,
    );
    let snapshot = Snapshot::build(config, 1, None, &metrics, &events);
    let state = State::new(snapshot, metrics, events, source, overrides);
    crate::admin::serve(state.clone(), admin);
    let listeners = bound
        .into_iter()
        .map(|(socket, name, limits)| {
            crate::proxy::serve_listener(state.clone(), socket, &name, &limits)
        })
        .collect();
    crate::reload::spawn_triggers(state.clone()).map_err(RunError::Signal)?;
    crate::overload::spawn(state.clone());
    if let Some(supervisor) = crate::supervisor::Supervisor::spawn(&state, &state.snapshot().config)
    {
        let _ = state.supervisor.set(supervisor);
    }
    let config = state.snapshot().config.clone();
    for listener in &config.listeners {
        tracing::info!(listener = %listener.name, address = %listener.listen, routes = listener.routes.len(), "Listening.");
    }
    tracing::info!(address = %config.admin.listen, "Admin server listening.");
    Ok(Running { state, listeners })
}

async fn bind(what: &str, address: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Bind {
            what: what.to_owned(),
            address,
            source,
        })
}

impl Running {
    /// Serves until SIGTERM or SIGINT, then drains.
    pub async fn until_signal(self) -> Result<(), RunError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(RunError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signal)?;
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Shutting down: draining connections.");
        self.drain().await;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within
    /// `drain_timeout`, and returns.
    pub async fn drain(self) {
        let state = self.state;
        state.draining.store(true, Ordering::Release);
        state.shutdown.send_replace(true);
        let timeout = state.snapshot().config.supervisor.drain_timeout;
        let all_closed = futures_join_all(self.listeners.iter().map(|listener| listener.drained()));
        match tokio::time::timeout(timeout, all_closed).await {
            Ok(()) => tracing::info!("Drained: all connections closed."),
            Err(_) => tracing::warn!(
                in_flight = state.in_flight.load(Ordering::Relaxed),
                ?timeout,
                "Drain timeout reached; closing the remaining connections."
            ),
        }
        // The child goes last: every request that reached it has finished.
        if let Some(supervisor) = state.supervisor.get() {
            supervisor.stop().await;
            tracing::info!("Supervised process stopped.");
        }
    }
}

/// Awaits every future (they are few: one per listener).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    for future in futures {
        future.await;
    }
}
