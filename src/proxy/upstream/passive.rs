//! Passive health: what live traffic says about each endpoint, recorded
//! once per try when the try has really ended.
//!
//! Every try that reached an endpoint ends in exactly one record: at once
//! when it produced no response (refused, timed out, reset), or when its
//! response body ends ([`TryRecord`], carried in the body's tail), so an
//! upstream that breaks a body mid-stream is counted as the failure it is.
//! A record feeds outlier detection (SPEC §3.6) and, for the primaries,
//! the try counts of the upstream's [`UpstreamGate`] that the supervisor's
//! error-rate trigger samples. Outcomes that say nothing about the
//! upstream — the client's own failure, a local refusal — are not recorded
//! at all.

use std::sync::Arc;

use http::uri::Authority;
use tokio::time::Instant;

use crate::events::{EventBus, Severity};
use crate::policy::outlier::OutlierDetector;
use crate::proxy::gate::UpstreamGate;
use crate::proxy::outcome::{End, Outcome};

/// One upstream's passive health: outlier detection over its primaries,
/// and its gate's try counts.
pub struct PassiveHealth {
    upstream: String,
    /// Primary endpoints, by index (events name them).
    primaries: Vec<Authority>,
    outlier: Option<OutlierDetector>,
    gate: Arc<UpstreamGate>,
    events: Arc<EventBus>,
}

// === impl PassiveHealth ===

impl PassiveHealth {
    /// Passive health for `upstream`'s `primaries`.
    pub fn new(
        upstream: &str,
        primaries: Vec<Authority>,
        outlier: Option<OutlierDetector>,
        gate: Arc<UpstreamGate>,
        events: Arc<EventBus>,
    ) -> Self {
        PassiveHealth {
            upstream: upstream.to_owned(),
            primaries,
            outlier,
            gate,
            events,
        }
    }

    /// Whether outlier detection lets endpoint `index` take traffic.
    pub fn is_available(&self, index: usize, now: Instant) -> bool {
        self.outlier
            .as_ref()
            .is_none_or(|outlier| outlier.is_available(index, now))
    }

    /// The outlier detector, when outlier detection is on.
    pub fn outlier(&self) -> Option<&OutlierDetector> {
        self.outlier.as_ref()
    }

    /// Records how a try to endpoint `index` ended. Backups are outside
    /// outlier detection and the error rate (they are the fallback).
    pub fn record(&self, index: usize, outcome: Outcome, now: Instant) {
        let Some(failed) = outcome.upstream_failed() else {
            return;
        };
        let Some(endpoint) = self.primaries.get(index) else {
            return;
        };
        self.gate.count_try(failed);
        let Some(ejection) = self
            .outlier
            .as_ref()
            .and_then(|outlier| outlier.record(index, failed, now))
        else {
            return;
        };
        self.events.emit(
            "ejection",
            endpoint.as_str(),
            Severity::Warning,
            &format!(
                "upstream {}: ejected for {} (ejection {})",
                self.upstream,
                crate::units::format_duration(ejection.duration),
                ejection.times_ejected
            ),
        );
    }
}

/// A try whose response is still streaming: recorded when it ends.
pub struct TryRecord {
    health: Arc<PassiveHealth>,
    index: usize,
}

impl TryRecord {
    /// A record for the try to endpoint `index`.
    pub fn new(health: Arc<PassiveHealth>, index: usize) -> Self {
        TryRecord { health, index }
    }

    /// The response ended: record the try's final outcome.
    pub fn finish(self, end: &End) {
        self.health.record(self.index, end.outcome, Instant::now());
    }
}
