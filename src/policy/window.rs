//! The circuit breaker's sliding window of recent outcomes (SPEC §3.1).
//!
//! The breaker trips on a failure *rate* and a slow-call *rate*, and a rate
//! needs a denominator that forgets: the window holds the calls, failures
//! and slow calls of the recent past, and nothing older.
//!
//! Two shapes, as in Resilience4j and the SPEC's `window.type`:
//!
//! - [`WindowConfig::Count`]: the last N outcomes, kept in a ring of N
//!   bytes. Each new outcome pushes the oldest one out. Time plays no part.
//! - [`WindowConfig::Time`]: the outcomes of the last `size` of time, kept
//!   as [`TIME_BUCKETS`] per-bucket counters. `now` picks the bucket; when
//!   time moves on, whole buckets expire. So the window covers between
//!   9/10 of `size` (just after a bucket rolls) and all of it (just before).
//!   That granularity is the price of constant memory and O(1) updates;
//!   linkerd's `breaker/success_rate.rs` makes the same trade with an EWMA.
//!
//! ## Window mechanics
//!
//! Both shapes keep running totals, so [`Window::totals`] is O(1) for the
//! count window, and for the time window costs only the buckets that
//! expired since the last call (at most [`TIME_BUCKETS`]). A `now` earlier
//! than one already seen (two threads read the clock, the later one takes
//! the lock first) lands in the current bucket rather than going back in
//! time.
//!
//! What the window does not do: it decides nothing (the breaker compares
//! the totals with its thresholds), it is not shared between threads (the
//! breaker keeps it under its lock), and it allocates only in
//! [`Window::new`].

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// How many buckets a time window is cut into.
pub const TIME_BUCKETS: usize = 10;

/// The shape and size of a breaker window (SPEC `window: {type, size}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowConfig {
    /// The last N outcomes (`{type: count, size: N}`). A size of 0 is
    /// treated as 1.
    Count(u32),
    /// The outcomes of the last stretch of time (`{type: time, size: 10s}`),
    /// in [`TIME_BUCKETS`] buckets. A size under [`TIME_BUCKETS`]
    /// nanoseconds is treated as that.
    Time(Duration),
}

/// What the window currently holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WindowTotals {
    /// Outcomes in the window (successes, slow successes and failures).
    pub calls: u32,
    /// Failures among them.
    pub failures: u32,
    /// Slow successes among them (failures are never counted as slow).
    pub slow: u32,
}

/// A sliding window of outcomes; see the module docs.
#[derive(Debug)]
pub struct Window {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Count(CountWindow),
    Time(TimeWindow),
}

/// The last `ring.len()` outcomes, one byte each.
#[derive(Debug)]
struct CountWindow {
    /// Outcome flags ([`FAILURE`], [`SLOW`]) of the recorded calls; only the
    /// first `len` entries are meaningful until the ring has filled once.
    ring: Box<[u8]>,
    /// Where the next outcome goes: the oldest entry once the ring is full.
    head: usize,
    /// How many entries are filled, up to `ring.len()`.
    len: usize,
    /// The sums of the filled entries, kept so reading them is O(1).
    totals: WindowTotals,
}

/// Outcome counters per bucket of time.
#[derive(Debug)]
struct TimeWindow {
    /// Time zero for bucket numbers.
    base: Instant,
    /// The width of one bucket.
    bucket_nanos: u64,
    /// Counters; bucket number `n` lives at `buckets[n % TIME_BUCKETS]`.
    buckets: [WindowTotals; TIME_BUCKETS],
    /// The newest bucket number seen; buckets older than
    /// `current - (TIME_BUCKETS - 1)` have been cleared.
    current: u64,
    /// The sums of the live buckets.
    totals: WindowTotals,
}

/// A count-window entry's flag for a failure.
const FAILURE: u8 = 1;
/// A count-window entry's flag for a slow success.
const SLOW: u8 = 2;

// === impl WindowTotals ===

impl WindowTotals {
    /// Failures per call, or 0 for an empty window.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls per call, or 0 for an empty window.
    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }

    fn add(&mut self, failure: bool, slow: bool) {
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(failure));
        self.slow = self.slow.saturating_add(u32::from(slow));
    }

    fn subtract(&mut self, other: WindowTotals) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

/// `part / whole` as a float; division rather than multiplication so that
/// 3 of 10 compares equal to a configured 0.3.
fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

// === impl Window ===

impl Window {
    /// An empty window. `now` is time zero for a time window's buckets.
    ///
    /// This is the only place the window allocates: `size` bytes for a
    /// count window, nothing for a time window.
    pub fn new(config: WindowConfig, now: Instant) -> Self {
        let kind = match config {
            WindowConfig::Count(size) => {
                let size = usize::try_from(size.max(1)).unwrap_or(usize::MAX);
                Kind::Count(CountWindow {
                    ring: vec![0; size].into_boxed_slice(),
                    head: 0,
                    len: 0,
                    totals: WindowTotals::default(),
                })
            }
            WindowConfig::Time(size) => {
                let bucket_nanos = (super::duration_nanos(size) / TIME_BUCKETS as u64).max(1);
                Kind::Time(TimeWindow {
                    base: now,
                    bucket_nanos,
                    buckets: [WindowTotals::default(); TIME_BUCKETS],
                    current: 0,
                    totals: WindowTotals::default(),
                })
            }
        };
        Window { kind }
    }

    /// Adds one outcome. `slow` is meant for successes; a call that is both
    /// is counted as both.
    pub fn record(&mut self, failure: bool, slow: bool, now: Instant) {
        match &mut self.kind {
            Kind::Count(window) => window.record(failure, slow),
            Kind::Time(window) => window.record(failure, slow, now),
        }
    }

    /// What the window holds at `now` (a time window first drops the
    /// buckets that have expired).
    pub fn totals(&mut self, now: Instant) -> WindowTotals {
        match &mut self.kind {
            Kind::Count(window) => window.totals,
            Kind::Time(window) => {
                window.roll(now);
                window.totals
            }
        }
    }

    /// Forgets every outcome, as when the breaker closes.
    pub fn reset(&mut self) {
        match &mut self.kind {
            Kind::Count(window) => {
                window.head = 0;
                window.len = 0;
                window.totals = WindowTotals::default();
            }
            Kind::Time(window) => {
                window.buckets = [WindowTotals::default(); TIME_BUCKETS];
                window.totals = WindowTotals::default();
            }
        }
    }
}

// === impl CountWindow ===

impl CountWindow {
    fn record(&mut self, failure: bool, slow: bool) {
        let size = self.ring.len();
        if self.len == size {
            let oldest = self.ring[self.head];
            self.totals.subtract(WindowTotals {
                calls: 1,
                failures: u32::from(oldest & FAILURE != 0),
                slow: u32::from(oldest & SLOW != 0),
            });
        } else {
            self.len += 1;
        }
        let mut flags = 0;
        if failure {
            flags |= FAILURE;
        }
        if slow {
            flags |= SLOW;
        }
        self.ring[self.head] = flags;
        self.head += 1;
        if self.head == size {
            self.head = 0;
        }
        self.totals.add(failure, slow);
    }
}

// === impl TimeWindow ===

impl TimeWindow {
    fn record(&mut self, failure: bool, slow: bool, now: Instant) {
        self.roll(now);
        let slot = (self.current % TIME_BUCKETS as u64) as usize;
        self.buckets[slot].add(failure, slow);
        self.totals.add(failure, slow);
    }

    /// Moves `current` up to `now`'s bucket, clearing every bucket that
    /// falls out of the window on the way.
    fn roll(&mut self, now: Instant) {
        let bucket = super::nanos_since(self.base, now) / self.bucket_nanos;
        if bucket <= self.current {
            return;
        }
        let steps = bucket - self.current;
        if steps >= TIME_BUCKETS as u64 {
            self.buckets = [WindowTotals::default(); TIME_BUCKETS];
            self.totals = WindowTotals::default();
        } else {
            for step in 1..=steps {
                let slot = ((self.current + step) % TIME_BUCKETS as u64) as usize;
                let expired = std::mem::take(&mut self.buckets[slot]);
                self.totals.subtract(expired);
            }
        }
        self.current = bucket;
    }
}

#[cfg(test)]
mod tests;
