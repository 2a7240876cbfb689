//! Active health-check thresholds (SPEC §8.4 `health_check:`): turn a
//! stream of probe results into healthy / unhealthy with hysteresis.
//!
//! The one idea: **one probe result proves little.** An endpoint becomes
//! unhealthy only after `unhealthy_threshold` failed probes in a row, and
//! healthy again only after `healthy_threshold` passed probes in a row, so
//! a single slow probe or lucky answer does not flap traffic back and
//! forth. These are Envoy's and Kubernetes' threshold semantics.
//!
//! A tracker starts **healthy**, as Envoy treats endpoints unless told to
//! wait for a first check: a sidecar must not refuse traffic just because
//! no probe has run yet (the supervisor's `startup_timeout` covers a
//! service that is still starting). [`HealthTracker::with_initial`] starts
//! it unhealthy instead.
//!
//! What it does not do: run probes (HTTP, TCP, exec: `health/`), time them,
//! or share itself between threads; the one task that probes an endpoint
//! owns its tracker.

use serde::Serialize;

/// A change of health, for the caller to act on and report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthChange {
    /// `healthy_threshold` probes passed in a row: back in rotation.
    BecameHealthy,
    /// `unhealthy_threshold` probes failed in a row: out of rotation.
    BecameUnhealthy,
}

/// Probe-result thresholds for one endpoint; see the module docs.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    unhealthy_threshold: u32,
    healthy_threshold: u32,
    healthy: bool,
    /// Passed probes in a row (reset by a failure).
    n_passed: u32,
    /// Failed probes in a row (reset by a pass).
    n_failed: u32,
}

// === impl HealthTracker ===

impl HealthTracker {
    /// A healthy tracker. Thresholds of 0 are treated as 1.
    pub fn new(unhealthy_threshold: u32, healthy_threshold: u32) -> Self {
        Self::with_initial(unhealthy_threshold, healthy_threshold, true)
    }

    /// A tracker that starts healthy or not.
    pub fn with_initial(unhealthy_threshold: u32, healthy_threshold: u32, healthy: bool) -> Self {
        HealthTracker {
            unhealthy_threshold: unhealthy_threshold.max(1),
            healthy_threshold: healthy_threshold.max(1),
            healthy,
            n_passed: 0,
            n_failed: 0,
        }
    }

    /// Counts one probe result; returns the change it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<HealthChange> {
        if ok {
            self.n_failed = 0;
            self.n_passed = self.n_passed.saturating_add(1);
            if !self.healthy && self.n_passed >= self.healthy_threshold {
                self.healthy = true;
                return Some(HealthChange::BecameHealthy);
            }
        } else {
            self.n_passed = 0;
            self.n_failed = self.n_failed.saturating_add(1);
            if self.healthy && self.n_failed >= self.unhealthy_threshold {
                self.healthy = false;
                return Some(HealthChange::BecameUnhealthy);
            }
        }
        None
    }

    /// Whether the endpoint is healthy now.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_healthy_and_needs_a_run_of_failures() {
        let mut tracker = HealthTracker::new(3, 2);
        assert!(tracker.is_healthy());
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(false), None);
        // A pass breaks the run.
        assert_eq!(tracker.record(true), None);
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(false), Some(HealthChange::BecameUnhealthy));
        assert!(!tracker.is_healthy());
        // Further failures change nothing.
        assert_eq!(tracker.record(false), None);
    }

    #[test]
    fn recovers_after_a_run_of_passes() {
        let mut tracker = HealthTracker::with_initial(3, 2, false);
        assert!(!tracker.is_healthy());
        assert_eq!(tracker.record(true), None);
        assert_eq!(tracker.record(false), None);
        assert_eq!(tracker.record(true), None);
        assert_eq!(tracker.record(true), Some(HealthChange::BecameHealthy));
        assert!(tracker.is_healthy());
        assert_eq!(tracker.record(true), None);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut tracker = HealthTracker::new(0, 0);
        assert_eq!(tracker.record(false), Some(HealthChange::BecameUnhealthy));
        assert_eq!(tracker.record(true), Some(HealthChange::BecameHealthy));
    }

    #[test]
    fn a_healthy_tracker_ignores_passes() {
        let mut tracker = HealthTracker::new(1, 1);
        for _ in 0..10 {
            assert_eq!(tracker.record(true), None);
        }
    }
}
