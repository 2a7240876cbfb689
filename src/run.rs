//! `breakwater run`: bind, serve, reload, and drain on SIGTERM/SIGINT.
//!
//! Start-up binds every socket before serving anything, so a port clash is
//! reported at once and nothing half-starts. It then wires the parts,
//! each holding only the handles it needs: the data plane
//! ([`DataPlane`]), the supervisor ([`Supervisors`], which writes the
//! upstream's gate), the reload path ([`Reloader`]), the sampler, and the
//! admin server over all of them. Shutdown follows SPEC §5.5: `/readyz`
//! turns 503, listeners stop accepting, each connection finishes its
//! in-flight requests (HTTP/1 closes after the current response, HTTP/2
//! sends GOAWAY), and breakwater stops the child and exits once all are
//! closed or `drain_timeout` has passed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::config::{Config, Overrides};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::proxy::snapshot::SnapshotError;
use crate::proxy::{DataPlane, ListenerHandle};
use crate::reload::{ConfigSource, Reloader};
use crate::supervisor::Supervisors;

/// Why breakwater could not start.
///
/// Each message says what failed; its cause is the error's `source`, which
/// `main` prints after it (`cannot listen on …: Address already in use`),
/// so the message never repeats it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {address} ({what})")]
    Bind {
        /// `admin` or the listener name.
        what: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metrics could not be registered (a bug).
    #[error("cannot register the metrics")]
    Metrics(#[from] prometheus::Error),
    /// The config could not be compiled for the data plane.
    #[error("the config cannot be served")]
    Snapshot(#[from] SnapshotError),
    /// Installing a signal handler failed.
    #[error("cannot install the signal handlers")]
    Signal(#[source] std::io::Error),
}

/// A started proxy: sockets bound, serving.
pub struct Running {
    /// The data plane.
    pub plane: Arc<DataPlane>,
    /// The supervised process, if any.
    pub supervisors: Arc<Supervisors>,
    listeners: Vec<ListenerHandle>,
}

/// Binds and starts serving `config`.
pub async fn start(
    config: Config,
    source: ConfigSource,
    overrides: Overrides,
) -> Result<Running, RunError> {
    let metrics = Arc::new(Metrics::new()?);
    let admin_socket = bind("admin", config.admin.listen).await?;
    let mut bound = Vec::new();
    for listener in &config.listeners {
        bound.push((
            bind(&listener.name, listener.listen).await?,
            listener.name.clone(),
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
    let plane = DataPlane::new(config, metrics, events)?;
    let supervisors = Arc::new(Supervisors::default());
    let reloader = Arc::new(Reloader::new(
        plane.clone(),
        supervisors.clone(),
        source,
        overrides,
    ));
    crate::admin::serve(
        Arc::new(Admin {
            plane: plane.clone(),
            reloader: reloader.clone(),
            supervisors: supervisors.clone(),
        }),
        admin_socket,
    );
    let listeners = bound
        .into_iter()
        .map(|(socket, name)| crate::proxy::serve_listener(plane.clone(), socket, &name))
        .collect();
    reloader.spawn_triggers().map_err(RunError::Signal)?;
    crate::sampler::spawn(plane.clone());
    crate::sampler::spawn_degradation(plane.clone());
    let config = plane.snapshot().config.clone();
    supervisors.start(&plane, &config);
    for listener in &config.listeners {
        tracing::info!(listener = %listener.name, address = %listener.listen, routes = listener.routes.len(), "Listening.");
    }
    tracing::info!(address = %config.admin.listen, "Admin server listening.");
    Ok(Running {
        plane,
        supervisors,
        listeners,
    })
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
    /// `drain_timeout`, stops the supervised process, and returns.
    pub async fn drain(self) {
        let plane = self.plane;
        plane.begin_shutdown();
        let timeout = plane.snapshot().config.supervisor.drain_timeout;
        let all_closed = async {
            for listener in &self.listeners {
                listener.drained().await;
            }
        };
        match tokio::time::timeout(timeout, all_closed).await {
            Ok(()) => tracing::info!("Drained: all connections closed."),
            Err(_) => tracing::warn!(
                in_flight = plane.requests_in_flight(),
                timeout = %crate::units::format_duration(timeout),
                "Drain timeout reached; closing the remaining connections."
            ),
        }
        // The child goes last: every request that reached it has finished.
        if self.supervisors.get().is_some() {
            self.supervisors.stop().await;
            tracing::info!("Supervised process stopped.");
        }
    }
}
