//! Events: every state transition worth telling an operator about (SPEC §5.6).
//!
//! A breaker opening, a restart, a failover, a reload: each becomes one
//! [`Event`] `{id, time, kind, subject, severity, detail}` that is
//!
//! - written to the log and counted in `breakwater_events_total{kind}`,
//! - kept in a bounded ring ([`EventBus::since`] serves `GET /events`),
//! - fanned out live to subscribers ([`sse_body`] serves `GET /events/stream`),
//! - queued for every configured webhook ([`WebhookConfig`]).
//!
//! # The one idea: emitting never waits
//!
//! [`EventBus::emit`] is called from the data plane, so it takes one short
//! `std::sync::Mutex` (never held across an `.await`), pushes into bounded
//! buffers and returns. Every buffer is bounded and drops rather than
//! blocks: the ring forgets its oldest event, a slow SSE client sees a
//! `lagged` frame, and a webhook queue drops its oldest entry and counts it
//! ([`EventBus::webhook_dropped`]). Delivery to webhooks happens on one
//! background task per webhook.
//!
//! # What this module does not do
//!
//! It does not route HTTP: the admin server owns `/events` and
//! `/events/stream` and calls [`EventBus::since`] and [`sse_body`]. It does
//! not configure TLS itself: `https://` webhooks use `crate::tls`'s client
//! config.

pub(crate) mod rfc3339;
mod sse;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::IntCounterVec;
use serde::Serialize;
use tokio::sync::broadcast;

pub use sse::{sse_body, SseBody, CONTENT_TYPE as SSE_CONTENT_TYPE, KEEPALIVE as SSE_KEEPALIVE};
pub use webhook::{
    WebhookConfig, WebhookError, WebhookFormat, QUEUE_CAPACITY as WEBHOOK_QUEUE_CAPACITY,
    TRIES as WEBHOOK_TRIES, TRY_TIMEOUT as WEBHOOK_TRY_TIMEOUT,
};

use webhook::WebhookQueue;

/// Events kept in the ring when the config does not say otherwise.
pub const DEFAULT_CAPACITY: usize = 1_000;

/// Live events buffered per subscriber before it is told it lagged.
///
/// A subscriber that falls this far behind gets a `lagged` notice instead
/// of making the bus hold more: memory stays bounded whatever the client does.
pub const BROADCAST_CAPACITY: usize = 256;

/// How much an event matters. Ordered: `Info < Warning < Critical`, so a
/// webhook's `min_severity` is a plain comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine (a reload succeeded).
    Info,
    /// Something degraded or was refused.
    Warning,
    /// Needs a human.
    Critical,
}

// === impl Severity ===

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses the lower-case name (`info`, `warning`, `critical`), as
    /// written in config; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Severity> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Writes an event to the log and counts it in `events_total`; the part of
/// [`EventBus::emit`] that every event gets.
fn log_and_count(
    events_total: &IntCounterVec,
    kind: &'static str,
    subject: &str,
    severity: Severity,
    detail: &str,
) {
    events_total.with_label_values(&[kind]).inc();
    // People read a sentence (`breaker api: closed -> open (…)`); a
    // collector gets the fields.
    macro_rules! log {
        ($level:ident) => {
            if crate::telemetry::human() {
                tracing::$level!(target: "breakwater::event", "{kind} {subject}: {detail}")
            } else {
                tracing::$level!(target: "breakwater::event", kind, subject, severity = severity.as_str(), detail, "Event.")
            }
        };
    }
    match severity {
        Severity::Info => log!(info),
        Severity::Warning => log!(warn),
        Severity::Critical => log!(error),
    }
}

/// One recorded event, as listed at `/events`, streamed at `/events/stream`
/// and posted to JSON webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Position in the bus: starts at 1 and grows by one per event, so a
    /// client resumes with `?since=<last id it saw>`.
    pub id: u64,
    /// When it was emitted, RFC 3339 in UTC with milliseconds
    /// (`2024-05-01T12:00:00.123Z`).
    pub time: String,
    /// What happened, from a fixed set in the code (`breaker`, `restart`,
    /// `config_reload`, …); also the SSE `event:` name.
    pub kind: &'static str,
    /// What it happened to: a route, an upstream, a file.
    pub subject: String,
    /// How much it matters.
    pub severity: Severity,
    /// A human sentence with the particulars.
    pub detail: String,
}

/// The event hub shared by the whole process as `Arc<EventBus>`.
///
/// Holds the bounded ring, the live broadcast channel and one bounded queue
/// per webhook. See the module docs for why nothing here blocks.
pub struct EventBus {
    /// The ring and the id counter, behind one short lock so ids, ring
    /// order and broadcast order always agree.
    state: Mutex<Ring>,
    /// Live fan-out for SSE. Sent to while `state` is held, so a subscriber
    /// that snapshots the ring and subscribes under the same lock sees
    /// every event exactly once.
    live: broadcast::Sender<Event>,
    /// `breakwater_events_total{kind}`.
    events_total: IntCounterVec,
    /// Events dropped from full webhook queues, summed over all webhooks.
    webhook_dropped: Arc<AtomicU64>,
}

/// The ring itself (newest at the back), and the webhooks every event is
/// queued for, under the same lock so they see ids in ring order.
struct Ring {
    events: VecDeque<Event>,
    capacity: usize,
    /// Id of the most recent event; 0 before the first.
    last_id: u64,
    /// What the webhooks were built from, to tell a reload that changes
    /// them from one that does not.
    webhook_configs: Vec<WebhookConfig>,
    /// One queue per webhook with a running delivery task.
    webhooks: Vec<Arc<WebhookQueue>>,
}

// === impl EventBus ===

impl EventBus {
    /// Builds the bus: a ring of `capacity` events (at least 1; the
    /// default is [`DEFAULT_CAPACITY`]), counting into `events_total`
    /// (`Metrics::events_total`), delivering to `webhooks`.
    ///
    /// Webhook delivery tasks are spawned on the current tokio runtime. If
    /// there is none (a synchronous unit test, a CLI subcommand), webhooks
    /// are skipped with a warning; everything else works.
    pub fn new(
        capacity: usize,
        events_total: IntCounterVec,
        webhooks: Vec<WebhookConfig>,
    ) -> Arc<Self> {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        let webhook_dropped = Arc::new(AtomicU64::new(0));
        let queues = spawn_webhooks(&webhooks, &webhook_dropped);
        Arc::new(EventBus {
            state: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
                capacity,
                last_id: 0,
                webhook_configs: webhooks,
                webhooks: queues,
            }),
            live,
            events_total,
            webhook_dropped,
        })
    }

    /// Follows a reloaded `alerts.webhooks`: when the list changed, the old
    /// webhooks deliver what they have queued and stop, and the new ones
    /// receive every event from now on. Returns whether anything changed.
    pub fn set_webhooks(&self, webhooks: Vec<WebhookConfig>) -> bool {
        let mut ring = self.lock();
        if ring.webhook_configs == webhooks {
            return false;
        }
        for queue in &ring.webhooks {
            queue.close();
        }
        ring.webhooks = spawn_webhooks(&webhooks, &self.webhook_dropped);
        ring.webhook_configs = webhooks;
        true
    }

    /// Records an event and returns its id: logs and counts it, keeps it in
    /// the ring, broadcasts it to live
    /// subscribers and queues it for every webhook whose `min_severity` it
    /// meets.
    ///
    /// Never blocks on I/O and never awaits: safe on the data plane.
    pub fn emit(&self, kind: &'static str, subject: &str, severity: Severity, detail: &str) -> u64 {
        log_and_count(&self.events_total, kind, subject, severity, detail);
        let time = rfc3339::now();
        let subject = subject.to_owned();
        let detail = detail.to_owned();
        let mut ring = self.lock();
        ring.last_id += 1;
        let event = Event {
            id: ring.last_id,
            time,
            kind,
            subject,
            severity,
            detail,
        };
        // Still under the ring lock from here on, so the ring, live
        // subscribers and every webhook queue see ids in the same order.
        for queue in &ring.webhooks {
            queue.push(&event);
        }
        // An error only means nobody is subscribed right now.
        let _ = self.live.send(event.clone());
        let id = event.id;
        if ring.events.len() == ring.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
        id
    }

    /// Events with `id > since` (all kept events when `since` is `None`),
    /// oldest first, at most `limit` of them: the newest `limit` when more
    /// match, so a poller that falls behind skips ahead rather than stalls.
    pub fn since(&self, since: Option<u64>, limit: usize) -> Vec<Event> {
        let ring = self.lock();
        let first = match since {
            Some(since) => ring.events.partition_point(|event| event.id <= since),
            None => 0,
        };
        let first = first.max(ring.events.len().saturating_sub(limit));
        ring.events.range(first..).cloned().collect()
    }

    /// A receiver of every event emitted from now on (bounded: a receiver
    /// more than [`BROADCAST_CAPACITY`] events behind gets
    /// `RecvError::Lagged`). Ends with `RecvError::Closed` once the bus is
    /// dropped.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Id of the most recent event, 0 before the first one.
    pub fn latest_id(&self) -> u64 {
        self.lock().last_id
    }

    /// Events dropped from full webhook queues since start, over all
    /// webhooks; exported as a counter metric.
    pub fn webhook_dropped(&self) -> u64 {
        self.webhook_dropped.load(Ordering::Relaxed)
    }

    /// Replays the ring after `since` and subscribes, atomically: no event
    /// is both replayed and received live, and none falls between the two.
    pub(crate) fn replay_and_subscribe(
        &self,
        since: u64,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ring = self.lock();
        let first = ring.events.partition_point(|event| event.id <= since);
        let replay = ring.events.range(first..).cloned().collect();
        (replay, self.live.subscribe())
    }

    /// The ring lock. A panic while it was held cannot leave the ring
    /// inconsistent (each step is a single push/pop), so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for EventBus {
    /// Tells the webhook tasks to finish their queues and stop.
    fn drop(&mut self) {
        for queue in &self.lock().webhooks {
            queue.close();
        }
    }
}

/// One delivery task per webhook, on the current runtime. Without one (a
/// synchronous unit test, a CLI subcommand) webhooks are skipped with a
/// warning; everything else works.
fn spawn_webhooks(webhooks: &[WebhookConfig], dropped: &Arc<AtomicU64>) -> Vec<Arc<WebhookQueue>> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => webhooks
            .iter()
            .map(|config| webhook::spawn(&runtime, config.clone(), dropped.clone()))
            .collect(),
        Err(_) => {
            if !webhooks.is_empty() {
                tracing::warn!(
                    n_webhooks = webhooks.len(),
                    "No tokio runtime when building the event bus; webhooks are disabled."
                );
            }
            Vec::new()
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("latest_id", &self.latest_id())
            .field("n_webhooks", &self.lock().webhooks.len())
            .field("webhook_dropped", &self.webhook_dropped())
            .finish_non_exhaustive()
    }
}
