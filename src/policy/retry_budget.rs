//! The retry budget of SPEC §3.4: retries may add at most `ratio` of recent
//! request volume, plus `min_per_sec` so that a quiet route can still retry.
//!
//! ## Why budgets and not max retries?
//!
//! A fixed "retry up to N times" multiplies load exactly when the upstream
//! can least take it: at N = 3, an upstream that starts failing every
//! request suddenly receives four times the traffic, which keeps it down.
//! That is a retry storm, and with several layers retrying it compounds.
//! A budget bounds retries as a *fraction of the traffic*: with ratio 0.2,
//! a failing upstream sees at most 1.2× its normal load, while a rare
//! failure on a healthy route is still retried. The per-second reserve lets
//! low-volume routes retry at all. This is tower's reasoning
//! (`tower/src/retry/budget/mod.rs`) and Finagle's before it.
//!
//! ## The guarantee, exactly
//!
//! Whenever [`RetryBudget::try_withdraw`] admits a retry at time `t`, the
//! retries admitted in `(t − window, t]`, this one included, number at most
//! `ratio × (requests recorded in (t − window, t]) + min_per_sec × window`.
//! (No causal budget can promise more: requests that arrived just before a
//! window rightly paid for retries made inside it.)
//!
//! ## Window mechanics
//!
//! The window is cut into 10 buckets, kept in a ring of 11 slots per
//! counter. Each slot is one `AtomicU64` holding a bucket number (40 bits)
//! and a count (24 bits), so recording is one compare-and-swap and rolling
//! a slot to a new bucket happens in the same CAS: no lock anywhere. To keep
//! the guarantee exact despite whole buckets, the budget is conservative on
//! both sides: requests count only from the last 10 buckets (at most
//! `window` old), retries from the last 11 (at least `window` old). A
//! withdrawal adds its retry first and then checks the sums, taking it back
//! if the budget is exceeded; two racing withdrawals can therefore both be
//! refused, but never both admitted past the limit.
//!
//! What it does not do: decide *whether* a failure is retryable (the data
//! plane's `retry_on` and idempotency rules), pick the endpoint, or wait
//! (see [`super::backoff`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{duration_nanos, nanos_since, CacheAligned};

/// Buckets the window is cut into.
const BUCKETS: u64 = 10;
/// Slots per ring: one more than the buckets, so retries can be counted
/// over a span at least as long as the window.
const SLOTS: usize = BUCKETS as usize + 1;
/// Low bits of a slot: the count.
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// High bits of a slot: the bucket number, modulo 2^40 (about 35 years of
/// 1ms buckets).
const STAMP_BITS: u32 = 64 - COUNT_BITS;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// A shared retry budget; see the module docs.
///
/// `Send + Sync`; share it as `Arc<RetryBudget>`.
#[derive(Debug)]
pub struct RetryBudget {
    /// Time zero for bucket numbers.
    base: Instant,
    /// The width of one bucket: `window / 10`, at least 1ns.
    bucket_nanos: u64,
    /// Retries allowed per request.
    ratio: f64,
    /// Retries allowed per window regardless of traffic:
    /// `min_per_sec × window` in seconds.
    reserve: f64,
    /// Original requests per bucket. Each ring on its own cache lines:
    /// they are written by every request and retry.
    requests: CacheAligned<[AtomicU64; SLOTS]>,
    /// Admitted retries per bucket.
    retries: CacheAligned<[AtomicU64; SLOTS]>,
}

// === impl RetryBudget ===

impl RetryBudget {
    /// An empty budget: `ratio` retries per request (negative or not a
    /// number is treated as 0) plus `min_per_sec` per second, over the last
    /// `window` (SPEC default 10s). `now` is time zero.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration, now: Instant) -> Self {
        let ratio = if ratio >= 0.0 { ratio } else { 0.0 };
        RetryBudget {
            base: now,
            bucket_nanos: (duration_nanos(window) / BUCKETS).max(1),
            ratio,
            reserve: f64::from(min_per_sec) * window.as_secs_f64(),
            requests: CacheAligned(std::array::from_fn(|_| AtomicU64::new(0))),
            retries: CacheAligned(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Counts one original request (not a retry): it earns `ratio` of a
    /// retry for the next `window`.
    pub fn record_request(&self, now: Instant) {
        let bucket = self.bucket(now);
        let slot = &self.requests[slot_of(bucket)];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = match age(current, bucket) {
                0 if count(current) < COUNT_MAX => current + 1,
                // A full bucket, or a caller whose clock read is behind
                // another's by a whole ring: dropping the request only
                // makes the budget stricter.
                0 => return,
                age if age < 0 && age >= -(SLOTS as i64) => return,
                _ => pack(bucket, 1),
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes one retry from the budget, if it has room; `false` means do
    /// not retry (and count it).
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let bucket = self.bucket(now);
        let slot = &self.retries[slot_of(bucket)];
        let Some(written) = add_retry(slot, bucket) else {
            return false;
        };
        if self.retries_in_window(bucket) as f64 <= self.allowance(bucket) {
            return true;
        }
        take_back_retry(slot, written);
        false
    }

    /// Retries that could be withdrawn at `now`, for `/status`.
    pub fn available(&self, now: Instant) -> f64 {
        let bucket = self.bucket(now);
        (self.allowance(bucket) - self.retries_in_window(bucket) as f64).max(0.0)
    }

    /// Retries allowed in the window ending in `bucket`.
    fn allowance(&self, bucket: u64) -> f64 {
        let requests: u64 = self
            .requests
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&value| (0..BUCKETS as i64).contains(&age(value, bucket)))
            .map(count)
            .sum();
        self.ratio * requests as f64 + self.reserve
    }

    /// Retries counted against the window ending in `bucket`: the last 11
    /// buckets, and any a caller with a later clock read has already
    /// started.
    fn retries_in_window(&self, bucket: u64) -> u64 {
        self.retries
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&value| (-(SLOTS as i64)..=BUCKETS as i64).contains(&age(value, bucket)))
            .map(count)
            .sum()
    }

    fn bucket(&self, now: Instant) -> u64 {
        nanos_since(self.base, now) / self.bucket_nanos
    }
}

/// Adds one retry to `bucket`'s slot; returns the value written, or `None`
/// if the slot is full.
fn add_retry(slot: &AtomicU64, bucket: u64) -> Option<u64> {
    let mut current = slot.load(Ordering::Relaxed);
    loop {
        let next = match age(current, bucket) {
            // The current bucket, or a newer one a caller with a later
            // clock read started: counting there keeps the retry in the
            // window at least as long.
            age if (-(SLOTS as i64)..=0).contains(&age) => {
                if count(current) >= COUNT_MAX {
                    return None;
                }
                current + 1
            }
            _ => pack(bucket, 1),
        };
        match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(next),
            Err(actual) => current = actual,
        }
    }
}

/// Undoes [`add_retry`], unless the slot has since moved to another bucket
/// (then the retry has already left the window).
fn take_back_retry(slot: &AtomicU64, written: u64) {
    let stamp = written >> COUNT_BITS;
    let mut current = slot.load(Ordering::Relaxed);
    while current >> COUNT_BITS == stamp && count(current) > 0 {
        match slot.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

fn slot_of(bucket: u64) -> usize {
    (bucket % SLOTS as u64) as usize
}

fn pack(bucket: u64, count: u64) -> u64 {
    ((bucket & STAMP_MASK) << COUNT_BITS) | count
}

fn count(value: u64) -> u64 {
    value & COUNT_MAX
}

/// How many buckets older than `bucket` the slot's bucket is: 0 for the
/// same bucket, negative for a newer one (modulo 2^40, read as signed).
fn age(value: u64, bucket: u64) -> i64 {
    let stamp = value >> COUNT_BITS;
    let diff = bucket.wrapping_sub(stamp) & STAMP_MASK;
    if diff >= 1 << (STAMP_BITS - 1) {
        diff as i64 - (1_i64 << STAMP_BITS)
    } else {
        diff as i64
    }
}

#[cfg(test)]
mod tests;
