//! What the data plane, the admin server and the reload triggers share.
//!
//! [`State`] holds the live [`Snapshot`] behind one `ArcSwap`, the metrics,
//! and the process-wide flags (draining). It is created once in `run` and
//! handed around as `Arc<State>`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Overrides;
use crate::metrics::Metrics;
use crate::proxy::snapshot::Snapshot;

/// Where the running config came from, for reloads.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read on reload.
    File(PathBuf),
    /// The embedded default; reload re-applies it (with the same flags).
    Embedded,
}

/// Process-wide shared state.
pub struct State {
    snapshot: ArcSwap<Snapshot>,
    /// All metric families.
    pub metrics: Metrics,
    /// The event ring, live stream and webhooks.
    pub events: Arc<crate::events::EventBus>,
    /// Where config comes from, and the CLI overrides to re-apply.
    pub source: ConfigSource,
    /// CLI flags applied over every load.
    pub overrides: Overrides,
    /// Set once SIGTERM/SIGINT arrived: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// The embedded supervisor, when a process is supervised.
    pub supervisor: std::sync::OnceLock<Arc<crate::supervisor::Supervisor>>,
    /// The overload ladder's current level.
    pub overload: crate::overload::OverloadState,
    /// Requests currently being served, all listeners.
    pub in_flight: AtomicUsize,
    /// Requests started since launch, all listeners (for [`crate::trim`]).
    pub requests: std::sync::atomic::AtomicU64,
    /// When breakwater started.
    pub started: Instant,
    /// Flips to true when shutdown begins; listeners and connections watch it.
    pub shutdown: watch::Sender<bool>,
    /// Serialises reloads so two triggers cannot interleave.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// Fault injection for tests of panic isolation: a request to exactly
    /// this path panics. Set only from `BREAKWATER_FAULT_PANIC_PATH`; never
    /// from anything a client sends.
    pub fault_panic_path: Option<String>,
}

impl State {
    /// Creates the state around a first snapshot.
    pub fn new(
        snapshot: Snapshot,
        metrics: Metrics,
        events: Arc<crate::events::EventBus>,
        source: ConfigSource,
        overrides: Overrides,
    ) -> Arc<State> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(State {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            events,
            source,
            overrides,
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: std::sync::atomic::AtomicU64::new(0),
            overload: crate::overload::OverloadState::default(),
            supervisor: std::sync::OnceLock::new(),
            started: Instant::now(),
            shutdown,
            reload_lock: tokio::sync::Mutex::new(()),
            fault_panic_path: std::env::var("BREAKWATER_FAULT_PANIC_PATH")
                .ok()
                .filter(|path| path.starts_with('/')),
        })
    }

    /// The current snapshot; keep the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Publishes a new snapshot atomically.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
