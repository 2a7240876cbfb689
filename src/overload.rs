//! The overload manager (SPEC §11): a memory watermark ladder.
//!
//! When breakwater's own resident memory nears `overload.memory`, it first
//! stops keep-alive (each HTTP/1 response closes its connection, so idle
//! clients release their buffers), then sheds new requests with 503
//! `x-breakwater-reason: overload`. Each step is entered at a higher mark
//! than it is left, so a process hovering at a threshold does not flap.
//! [`Ladder`] is the pure decision (RSS in, level out); [`spawn`] samples
//! `/proc/self/statm` and publishes the level for the data plane, which
//! only reads one atomic per request. The same samples drive
//! [`crate::trim`], which hands freed heap back after a burst.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::events::Severity;
use crate::state::State;

/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The ladder's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Below every mark.
    Normal = 0,
    /// Responses close their HTTP/1 connections.
    StopKeepAlive = 1,
    /// New requests get 503 overload.
    Shed = 2,
}

impl Level {
    /// Label for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::StopKeepAlive => "stop_keep_alive",
            Level::Shed => "shed",
        }
    }

    fn from_u8(value: u8) -> Level {
        match value {
            1 => Level::StopKeepAlive,
            2 => Level::Shed,
            _ => Level::Normal,
        }
    }
}

/// Fractions of the limit where each step is entered and left.
const ENTER_STOP_KEEP_ALIVE: f64 = 0.85;
const LEAVE_STOP_KEEP_ALIVE: f64 = 0.80;
const ENTER_SHED: f64 = 0.95;
const LEAVE_SHED: f64 = 0.90;

/// The watermark ladder: a pure function of RSS samples.
#[derive(Debug, Clone)]
pub struct Ladder {
    limit: u64,
    level: Level,
}

impl Ladder {
    /// A ladder for `limit` bytes, starting at `Normal`.
    pub fn new(limit: u64) -> Self {
        Ladder {
            limit,
            level: Level::Normal,
        }
    }

    /// Changes the limit (on reload); the level is re-evaluated on the
    /// next sample.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Takes a sample; returns the new level if it changed. Moves as many
    /// steps as the sample justifies, up or down.
    pub fn update(&mut self, rss: u64) -> Option<Level> {
        let ratio = rss as f64 / self.limit.max(1) as f64;
        let next = match self.level {
            Level::Normal if ratio >= ENTER_SHED => Level::Shed,
            Level::Normal if ratio >= ENTER_STOP_KEEP_ALIVE => Level::StopKeepAlive,
            Level::StopKeepAlive if ratio >= ENTER_SHED => Level::Shed,
            Level::StopKeepAlive if ratio < LEAVE_STOP_KEEP_ALIVE => Level::Normal,
            Level::Shed if ratio < LEAVE_STOP_KEEP_ALIVE => Level::Normal,
            Level::Shed if ratio < LEAVE_SHED => Level::StopKeepAlive,
            same => same,
        };
        (next != self.level).then(|| {
            self.level = next;
            next
        })
    }
}

/// The level the data plane reads, one relaxed load per request.
#[derive(Debug, Default)]
pub struct OverloadState(AtomicU8);

impl OverloadState {
    /// Current level.
    pub fn level(&self) -> Level {
        Level::from_u8(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, level: Level) {
        self.0.store(level as u8, Ordering::Relaxed);
    }
}

/// Resident set size of this process.
pub fn current_rss() -> Option<u64> {
    rss_of("self")
}

/// Resident set size of process `pid` (`"self"` for this one), from
/// `/proc/PID/statm`.
pub fn rss_of(pid: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Samples RSS and moves the ladder until shutdown. The limit follows the
/// live config, so a reload can move the watermark.
pub fn spawn(state: Arc<State>) {
    tokio::spawn(async move {
        let mut ladder = Ladder::new(state.snapshot().config.overload.memory.0);
        let requests = || state.requests.load(Ordering::Relaxed);
        let mut trim = crate::trim::TrimPolicy::new(current_rss().unwrap_or(0), requests());
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        let mut shutdown = state.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            let limit = state.snapshot().config.overload.memory.0;
            ladder.set_limit(limit);
            let Some(rss) = current_rss() else { continue };
            if trim.sample(rss, requests()) {
                crate::trim::release_free_memory();
                let after = current_rss().unwrap_or(rss);
                tracing::debug!(before = rss, after, "Returned free heap to the OS.");
                trim.trimmed(after);
            }
            if let Some(level) = ladder.update(rss) {
                state.overload.set(level);
                state.metrics.overload_level.set(level as i64);
                let severity = if level == Level::Normal {
                    Severity::Info
                } else {
                    Severity::Warning
                };
                state.events.emit(
                    "overload",
                    level.as_str(),
                    severity,
                    &format!(
                        "rss {} of limit {}",
                        crate::units::format_size(rss),
                        crate::units::format_size(limit)
                    ),
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn climbs_in_order_and_releases_with_hysteresis() {
        let mut ladder = Ladder::new(100 * MIB);
        assert_eq!(ladder.update(50 * MIB), None);
        assert_eq!(ladder.update(86 * MIB), Some(Level::StopKeepAlive));
        assert_eq!(ladder.update(84 * MIB), None, "inside the hysteresis band");
        assert_eq!(ladder.update(96 * MIB), Some(Level::Shed));
        assert_eq!(ladder.update(92 * MIB), None, "inside the hysteresis band");
        assert_eq!(ladder.update(89 * MIB), Some(Level::StopKeepAlive));
        assert_eq!(ladder.update(81 * MIB), None);
        assert_eq!(ladder.update(79 * MIB), Some(Level::Normal));
    }

    #[test]
    fn jumps_several_steps_when_the_sample_says_so() {
        let mut ladder = Ladder::new(100 * MIB);
        assert_eq!(ladder.update(200 * MIB), Some(Level::Shed));
        assert_eq!(ladder.update(10 * MIB), Some(Level::Normal));
    }

    #[test]
    fn reads_its_own_rss() {
        assert!(current_rss().is_some_and(|rss| rss > 0));
    }
}
