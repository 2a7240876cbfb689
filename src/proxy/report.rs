//! Where a route's policies report: metric handles and events, resolved
//! once per snapshot, and the breaker's record of a call's end.
//!
//! [`RouteReport`] is what every layer of one route counts into (sheds,
//! breaker transitions, retries). [`BreakerRecord`] is a breaker ticket
//! waiting for its call's outcome: the breaker layer attaches it to the
//! response body, which records it when the response has really ended —
//! a response that streams for minutes holds its half-open probe slot for
//! as long — or the layer records it at once when the call failed without
//! a response.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec};
use tokio::time::Instant;

use super::outcome::{End, Outcome};
use crate::events::{EventBus, Severity};
use crate::metrics::Metrics;
use crate::policy::breaker::{BreakerState, BreakerTicket, CallResult, Transition};

/// What the layers of one route report to: its name, metric handles and
/// the event bus.
pub struct RouteReport {
    /// Route name.
    pub route: Arc<str>,
    /// `breakwater_circuit_breaker_transitions_total{route,to}`.
    transitions: IntCounterVec,
    /// `breakwater_shed_total{route,reason}`.
    shed: IntCounterVec,
    /// Where events go.
    pub events: Arc<EventBus>,
    /// `breakwater_retries_total{route}`.
    pub retries: IntCounter,
    /// `breakwater_retry_budget_exhausted_total`.
    pub budget_exhausted: IntCounter,
    /// `breakwater_degraded_total{route,kind}`.
    degraded_total: IntCounterVec,
    /// Degraded replies so far, for the route's degrading events.
    n_degraded: AtomicU64,
}

// === impl RouteReport ===

impl RouteReport {
    /// The handles for `route`.
    pub fn new(metrics: &Metrics, route: &str, events: Arc<EventBus>) -> Self {
        RouteReport {
            route: Arc::from(route),
            transitions: metrics.breaker_transitions.clone(),
            shed: metrics.shed_total.clone(),
            events,
            retries: metrics.retries_total.with_label_values(&[route]),
            budget_exhausted: metrics.retry_budget_exhausted.clone(),
            degraded_total: metrics.degraded_total.clone(),
            n_degraded: AtomicU64::new(0),
        }
    }

    /// Counts a reply that was not the upstream's live answer, by `kind`
    /// (`fallback`, `stale`, `level`).
    pub fn degraded(&self, kind: &str) {
        self.degraded_total
            .with_label_values(&[&*self.route, kind])
            .inc();
        self.n_degraded.fetch_add(1, Ordering::Relaxed);
    }

    /// Degraded replies so far.
    pub fn n_degraded(&self) -> u64 {
        self.n_degraded.load(Ordering::Relaxed)
    }

    /// Counts and announces a breaker transition.
    pub fn transition(&self, transition: Transition) {
        self.transitions
            .with_label_values(&[&*self.route, transition.to.as_str()])
            .inc();
        let severity = match transition.to.as_str() {
            "open" | "forced_open" => Severity::Warning,
            _ => Severity::Info,
        };
        self.events.emit(
            "breaker",
            &self.route,
            severity,
            &format!(
                "{} -> {} ({})",
                in_words(transition.from),
                in_words(transition.to),
                transition.reason.as_str()
            ),
        );
    }

    /// Counts a request refused by a policy, by reason.
    pub fn shed(&self, reason: &str) {
        self.shed.with_label_values(&[&*self.route, reason]).inc();
    }
}

/// A breaker state as people say it in an event (`half-open`); metrics
/// keep the label (`half_open`).
fn in_words(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
        BreakerState::ForcedOpen => "forced open",
        BreakerState::ForcedClosed => "forced closed",
    }
}

/// A breaker ticket waiting for its call's end.
pub struct BreakerRecord {
    ticket: BreakerTicket,
    report: Arc<RouteReport>,
}

impl BreakerRecord {
    /// A ticket to record into, reporting transitions to `report`.
    pub fn new(ticket: BreakerTicket, report: Arc<RouteReport>) -> Self {
        BreakerRecord { ticket, report }
    }

    /// Records how the call ended.
    pub fn finish(self, end: &End) {
        self.record(end.outcome);
    }

    /// Records `outcome`. One that says nothing about the upstream (the
    /// client's own failure, a local refusal further in) releases the
    /// ticket without counting.
    pub fn record(self, outcome: Outcome) {
        let result = match outcome {
            Outcome::Slow => CallResult::Slow,
            other => match other.upstream_failed() {
                Some(true) => CallResult::Failure,
                Some(false) => CallResult::Success,
                None => CallResult::Ignored,
            },
        };
        if let Some(transition) = self.ticket.record(result, Instant::now()) {
            self.report.transition(transition);
        }
    }
}
