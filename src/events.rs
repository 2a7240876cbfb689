//! Events: every state transition worth telling an operator about.
//!
//! [`emit`] is the one function that records an event. Today it writes a
//! structured log line and counts `breakwater_events_total{kind}`; the
//! bounded ring, `/events`, the SSE stream and webhooks (part 3) plug in
//! here without touching the callers.

use prometheus::IntCounterVec;

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Routine (a reload succeeded).
    Info,
    /// Something degraded or was refused.
    Warning,
    /// Needs a human.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Records an event: `kind` is from a fixed set (e.g. `config_reload`),
/// `subject` names what it is about (a route, an upstream, a file).
/// `events_total` is `Metrics::events_total`.
pub fn emit(
    events_total: &IntCounterVec,
    kind: &'static str,
    subject: &str,
    severity: Severity,
    detail: &str,
) {
    events_total.with_label_values(&[kind]).inc();
    match severity {
        Severity::Info => {
            tracing::info!(target: "breakwater::event", kind, subject, severity = severity.as_str(), detail, "Event.")
        }
        Severity::Warning => {
            tracing::warn!(target: "breakwater::event", kind, subject, severity = severity.as_str(), detail, "Event.")
        }
        Severity::Critical => {
            tracing::error!(target: "breakwater::event", kind, subject, severity = severity.as_str(), detail, "Event.")
        }
    }
}
