//! The per-route rate limit of SPEC §3.5: a token bucket of `burst` tokens
//! refilled at `rps` per second; a request that finds no token gets 429
//! with `retry-after`.
//!
//! ## The one idea: GCRA, a token bucket in one number
//!
//! A token bucket is usually two numbers (tokens, last refill time) that
//! must change together, which needs a lock. The generic cell rate
//! algorithm (GCRA, from ATM networks) keeps the same bucket as one number,
//! the *theoretical arrival time* `tat`: the moment the bucket would be full
//! again if nothing else arrived. With `T = 1/rps` and room for `burst`
//! requests:
//!
//! ```text
//! on a request at t:   tat' = max(tat, t) + T
//!                      admit iff tat' - t <= burst * T, then store tat'
//!                      else refuse, retry after (tat' - t) - burst * T
//! ```
//!
//! `tat` is an `AtomicU64` of nanoseconds since the limiter was built, and
//! admission is one compare-and-swap, so [`RateLimiter::try_take`] takes no
//! lock, allocates nothing and costs a few nanoseconds; contention costs a
//! CAS retry, never a blocked thread. Over any stretch of time `d` it admits
//! at most `burst + rps × d` requests (the interval `T` is rounded *up* to a
//! whole nanosecond so rounding never admits extra). A `now` older than one
//! already seen is harmless: `max(tat, t)` keeps the bucket from refilling
//! backwards.
//!
//! What it does not do: limit globally across replicas (this is a local,
//! per-process bucket, like Envoy's local rate limit filter), queue or
//! delay requests, or build the 429.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{nanos_since, CacheAligned};

/// A lock-free token bucket; see the module docs.
///
/// `Send + Sync`; share it as `Arc<RateLimiter>`.
#[derive(Debug)]
pub struct RateLimiter {
    /// Time zero for `tat`.
    base: Instant,
    /// `T`: nanoseconds per token, at least 1.
    interval: u64,
    /// `burst × T`: how far ahead of `now` the arrival time may run.
    tolerance: u64,
    /// The theoretical arrival time, in nanoseconds since `base`. On its
    /// own cache line: it is written by every admitted request, and must
    /// not slow down readers of whatever sits next to the limiter.
    tat: CacheAligned<AtomicU64>,
    rps: f64,
    burst: u32,
}

/// The longest token interval, about 31 years: a rate of 0 (or less, or
/// not a number) means tokens that never come back.
const MAX_INTERVAL_NANOS: f64 = 1e18;

// === impl RateLimiter ===

impl RateLimiter {
    /// A full bucket of `burst` tokens (0 is treated as 1) refilled at
    /// `rps` tokens per second (rates above one per nanosecond are treated
    /// as that; a rate of 0 or less never refills). `now` is time zero.
    pub fn new(rps: f64, burst: u32, now: Instant) -> Self {
        let burst = burst.max(1);
        let per_token = if rps > 0.0 {
            (1e9 / rps).ceil().clamp(1.0, MAX_INTERVAL_NANOS)
        } else {
            MAX_INTERVAL_NANOS
        };
        // In range by the clamp above, so the cast is exact.
        let interval = per_token as u64;
        let tolerance = interval.saturating_mul(u64::from(burst));
        RateLimiter {
            base: now,
            interval,
            tolerance,
            tat: CacheAligned(AtomicU64::new(0)),
            rps,
            burst,
        }
    }

    /// Takes one token, or says how long until one is free.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let at = nanos_since(self.base, now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(at).saturating_add(self.interval);
            let ahead = next - at;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Tokens in the bucket at `now`, from 0 to `burst`, for `/status`.
    pub fn available(&self, now: Instant) -> f64 {
        let at = nanos_since(self.base, now);
        let tat = self.tat.load(Ordering::Relaxed).max(at);
        let used = (tat - at) as f64 / self.interval as f64;
        (f64::from(self.burst) - used).max(0.0)
    }

    /// The configured refill rate, per second.
    pub fn rps(&self) -> f64 {
        self.rps
    }

    /// The bucket's size (after clamping).
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

#[cfg(test)]
mod tests;
