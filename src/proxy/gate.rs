//! Per-upstream state that outlives config reloads: readiness, failover
//! and try counts.
//!
//! An [`UpstreamGate`] exists once per upstream name for the life of the
//! process. The data plane's pools are rebuilt when a reload changes an
//! upstream, but what the gate holds must not be forgotten by a reload:
//! whether the supervised process behind the primaries is ready, whether
//! an operator (or the recovery ladder) failed the upstream over, and the
//! running count of tries and failures that the supervisor's error-rate
//! trigger samples.
//!
//! The supervisor is the only writer of readiness; the data plane only
//! reads it, one relaxed load per request, and never calls the supervisor.
//! Readiness is also a [`tokio::sync::watch`], so whatever waits for the
//! process to be ready (the supervisor's own start-up, and later the
//! hold-and-replay queue and the restart-aware breaker) can await a change
//! instead of polling.
//!
//! The gate also holds an operator's maintenance window (`PUT
//! /maintenance`): the admin port writes it, the data plane reads one
//! relaxed load per request (the route's fallback or 503 `maintenance`),
//! and the supervisor awaits its end before acting again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// Whether the process behind an upstream's primary endpoints can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Serving (always, for an upstream breakwater does not supervise).
    Ready,
    /// Starting, restarting or backing off between restarts.
    Starting,
    /// The supervisor stopped trying (a crash loop, the ladder escalated,
    /// the process cannot be started, or it exited with `restart: never`):
    /// only an operator brings it back.
    NeedsIntervention,
}

impl Readiness {
    /// The SPEC's word, as `/readyz` and `x-breakwater-reason` say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Starting => "starting",
            Readiness::NeedsIntervention => "needs_intervention",
        }
    }

    fn from_u8(value: u8) -> Readiness {
        match value {
            1 => Readiness::Starting,
            2 => Readiness::NeedsIntervention,
            _ => Readiness::Ready,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Readiness::Ready => 0,
            Readiness::Starting => 1,
            Readiness::NeedsIntervention => 2,
        }
    }
}

/// One upstream's gate. Shared as `Arc<UpstreamGate>` by its pools (one per
/// config version) and the supervisor.
#[derive(Debug)]
pub struct UpstreamGate {
    name: Arc<str>,
    /// Written by the supervisor; awaited by whoever waits for readiness.
    readiness: watch::Sender<Readiness>,
    /// The same value for the per-request read: one relaxed load.
    fast: AtomicU8,
    /// Set by an operator's or the ladder's failover: backups take all
    /// traffic until failback.
    failed_over: AtomicBool,
    /// Tries sent to the primaries, and how many failed (upstream
    /// failures only; the client's own failures are not counted).
    tries: AtomicU64,
    failed_tries: AtomicU64,
    /// The maintenance window, if one is on; `in_maintenance` mirrors it
    /// for the per-request read and the watch for the supervisor.
    maintenance: Mutex<Option<Maintenance>>,
    in_maintenance: watch::Sender<bool>,
    maintenance_fast: AtomicBool,
    maintenance_generation: AtomicU64,
}

/// An operator's maintenance window on one upstream.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// Why, as the operator said.
    pub reason: String,
    /// When it ends by itself.
    pub until: Instant,
    /// The same on the wall clock, for `/status`.
    pub until_wall: SystemTime,
    /// Tells windows apart: a timer ends only its own.
    pub generation: u64,
}

// === impl UpstreamGate ===

impl UpstreamGate {
    fn new(name: &str) -> Self {
        let (readiness, _) = watch::channel(Readiness::Ready);
        UpstreamGate {
            name: Arc::from(name),
            readiness,
            fast: AtomicU8::new(Readiness::Ready.as_u8()),
            failed_over: AtomicBool::new(false),
            tries: AtomicU64::new(0),
            failed_tries: AtomicU64::new(0),
            maintenance: Mutex::new(None),
            in_maintenance: watch::channel(false).0,
            maintenance_fast: AtomicBool::new(false),
            maintenance_generation: AtomicU64::new(0),
        }
    }

    /// Starts (or replaces) a maintenance window of `ttl`; returns it.
    pub fn start_maintenance(&self, reason: String, ttl: Duration) -> Maintenance {
        let window = Maintenance {
            reason,
            until: Instant::now() + ttl,
            until_wall: SystemTime::now() + ttl,
            generation: self.maintenance_generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let mut slot = self.maintenance_slot();
        *slot = Some(window.clone());
        self.maintenance_fast.store(true, Ordering::Relaxed);
        self.in_maintenance.send_replace(true);
        window
    }

    /// Ends the maintenance window — only window `generation`, when given
    /// (a TTL timer must not end a window that replaced its own). Returns
    /// the window that ended.
    pub fn end_maintenance(&self, generation: Option<u64>) -> Option<Maintenance> {
        let mut slot = self.maintenance_slot();
        if generation.is_some_and(|generation| {
            slot.as_ref()
                .is_some_and(|window| window.generation != generation)
        }) {
            return None;
        }
        let ended = slot.take()?;
        self.maintenance_fast.store(false, Ordering::Relaxed);
        self.in_maintenance.send_replace(false);
        Some(ended)
    }

    /// Whether the upstream is in maintenance (one relaxed load).
    pub fn in_maintenance(&self) -> bool {
        self.maintenance_fast.load(Ordering::Relaxed)
    }

    /// The maintenance window, if one is on.
    pub fn maintenance(&self) -> Option<Maintenance> {
        self.maintenance_slot().clone()
    }

    /// A receiver that sees maintenance start and end.
    pub fn watch_maintenance(&self) -> watch::Receiver<bool> {
        self.in_maintenance.subscribe()
    }

    fn maintenance_slot(&self) -> std::sync::MutexGuard<'_, Option<Maintenance>> {
        self.maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Readiness now (one relaxed load).
    pub fn readiness(&self) -> Readiness {
        Readiness::from_u8(self.fast.load(Ordering::Relaxed))
    }

    /// Whether the primaries' process is ready.
    pub fn is_ready(&self) -> bool {
        self.readiness() == Readiness::Ready
    }

    /// Sets readiness; returns the previous value.
    pub fn set_readiness(&self, readiness: Readiness) -> Readiness {
        self.fast.store(readiness.as_u8(), Ordering::Relaxed);
        self.readiness.send_replace(readiness)
    }

    /// A receiver that sees every readiness change from now on.
    pub fn watch_readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.subscribe()
    }

    /// Moves all traffic to the backups (`true`) or back (`false`).
    /// Returns whether anything changed.
    pub fn set_failed_over(&self, failed_over: bool) -> bool {
        self.failed_over.swap(failed_over, Ordering::Relaxed) != failed_over
    }

    /// Whether the upstream is failed over to its backups.
    pub fn is_failed_over(&self) -> bool {
        self.failed_over.load(Ordering::Relaxed)
    }

    /// Counts one try to a primary endpoint.
    pub fn count_try(&self, failed: bool) {
        self.tries.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed_tries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tries sent to the primaries so far, and how many failed.
    pub fn try_counts(&self) -> (u64, u64) {
        (
            self.tries.load(Ordering::Relaxed),
            self.failed_tries.load(Ordering::Relaxed),
        )
    }
}

/// Every upstream's gate, by name. A gate is made the first time a config
/// names its upstream and kept from then on.
#[derive(Debug, Default)]
pub struct Gates {
    by_name: Mutex<HashMap<String, Arc<UpstreamGate>>>,
}

impl Gates {
    /// The gate of upstream `name`, made on first use.
    pub fn get(&self, name: &str) -> Arc<UpstreamGate> {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(UpstreamGate::new(name)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_is_the_same_for_every_lookup_and_readiness_is_watched() {
        let gates = Gates::default();
        let gate = gates.get("app");
        assert!(Arc::ptr_eq(&gate, &gates.get("app")));
        assert!(gate.is_ready());
        let mut watcher = gate.watch_readiness();
        assert_eq!(gate.set_readiness(Readiness::Starting), Readiness::Ready);
        watcher.changed().await.unwrap();
        assert_eq!(*watcher.borrow(), Readiness::Starting);
        assert_eq!(gates.get("app").readiness(), Readiness::Starting);
    }

    #[test]
    fn a_maintenance_timer_ends_only_its_own_window() {
        let gate = Gates::default().get("app");
        let first = gate.start_maintenance("upgrade".into(), Duration::from_secs(60));
        assert!(gate.in_maintenance());
        let second = gate.start_maintenance("longer".into(), Duration::from_secs(600));
        assert!(gate.end_maintenance(Some(first.generation)).is_none());
        assert!(gate.in_maintenance());
        assert_eq!(
            gate.end_maintenance(Some(second.generation))
                .map(|w| w.reason),
            Some("longer".to_owned())
        );
        assert!(!gate.in_maintenance());
        assert!(gate.end_maintenance(None).is_none());
    }

    #[test]
    fn failover_and_try_counts() {
        let gate = Gates::default().get("app");
        assert!(gate.set_failed_over(true));
        assert!(!gate.set_failed_over(true));
        assert!(gate.is_failed_over());
        gate.count_try(false);
        gate.count_try(true);
        assert_eq!(gate.try_counts(), (2, 1));
    }
}
