//! The data plane's shared handle: the live snapshot and the counters the
//! request path keeps.
//!
//! [`DataPlane`] is what every connection and request holds (through its
//! `Conn`), and what the admin server, the reload path, the sampler and
//! the supervisor read: the current [`Snapshot`] behind one `ArcSwap`, the
//! upstreams' gates, the overload level, the requests in flight, and the
//! shutdown signal. It knows nothing of the supervisor, the admin server
//! or where config comes from; those hold it, not the other way round.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::faults::Faults;
use super::gate::Gates;
use super::layers::admission::{DegradationState, OverloadFlag};
use super::snapshot::{Snapshot, SnapshotError, Wiring};
use crate::config::Config;
use crate::events::EventBus;
use crate::metrics::Metrics;

/// The data plane's shared state. See the module docs.
pub struct DataPlane {
    snapshot: ArcSwap<Snapshot>,
    /// All metric families.
    pub metrics: Arc<Metrics>,
    /// The event ring, live stream and webhooks.
    pub events: Arc<EventBus>,
    /// Every upstream's gate (readiness, failover, try counts).
    pub gates: Gates,
    /// The overload ladder's level, set by the sampler.
    pub overload: Arc<OverloadFlag>,
    /// The degradation level: an operator's, the config's, or automatic.
    pub degradation: Arc<DegradationState>,
    /// Requests shed by breakwater's own limits (bulkhead, connection
    /// queue, overload), since launch: a signal of the automatic level.
    pub sheds: Arc<AtomicU64>,
    /// Every route's injected fault, kept across reloads.
    pub faults: Arc<Faults>,
    /// Requests being served now, all listeners.
    pub in_flight: AtomicUsize,
    /// Requests started since launch, all listeners (for heap trimming).
    pub requests: AtomicU64,
    /// When breakwater started.
    pub started: Instant,
    /// Flips to true when shutdown begins; listeners and connections watch it.
    shutdown: watch::Sender<bool>,
}

// === impl DataPlane ===

impl DataPlane {
    /// The data plane for `config`, at config version 1.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        events: Arc<EventBus>,
    ) -> Result<Arc<DataPlane>, SnapshotError> {
        let gates = Gates::default();
        let overload = Arc::new(OverloadFlag::default());
        let degradation = Arc::new(DegradationState::default());
        degradation.set_configured(config.degradation.level.level());
        let sheds = Arc::new(AtomicU64::new(0));
        let faults = Arc::new(Faults::default());
        let snapshot = Snapshot::build(
            config,
            1,
            None,
            &Wiring {
                metrics: &metrics,
                events: &events,
                gates: &gates,
                overload: &overload,
                degradation: &degradation,
                sheds: &sheds,
                faults: &faults,
            },
        )?;
        faults.apply_config(&snapshot.config, &events);
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(DataPlane {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            events,
            gates,
            overload,
            degradation,
            sheds,
            faults,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            started: Instant::now(),
            shutdown,
        }))
    }

    /// The current snapshot; keep the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Builds the snapshot for `config` on the side, as the next version
    /// after the current one, keeping state the current one can hand over.
    pub fn build(&self, config: Config) -> Result<Snapshot, SnapshotError> {
        let current = self.snapshot();
        Snapshot::build(
            config,
            current.version + 1,
            Some(&current),
            &Wiring {
                metrics: &self.metrics,
                events: &self.events,
                gates: &self.gates,
                overload: &self.overload,
                degradation: &self.degradation,
                sheds: &self.sheds,
                faults: &self.faults,
            },
        )
    }

    /// Publishes a new snapshot atomically (and the config's degradation
    /// setting with it).
    pub fn publish(&self, snapshot: Snapshot) {
        self.degradation
            .set_configured(snapshot.config.degradation.level.level());
        self.faults.apply_config(&snapshot.config, &self.events);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Starts shutdown: listeners stop accepting, connections finish.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that sees shutdown begin.
    pub fn watch_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Requests being served now.
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}
