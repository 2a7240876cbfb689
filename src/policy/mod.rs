//! The resilience policies of SPEC §3 as plain types that make decisions.
//!
//! Each type here answers one question, and the data plane wraps each in a
//! tower layer (`proxy/`), in the SPEC §3 order, or samples it
//! (`sampler.rs`):
//!
//! | step | type | question it answers |
//! | --- | --- | --- |
//! | rate limit | [`rate_limit::RateLimiter`] | may this request start now, or when may it? |
//! | breaker | [`breaker::Breaker`] | is the upstream healthy enough to try? |
//! | bulkhead | [`bulkhead::Bulkhead`] | is there room in flight (or in the queue)? |
//! | retries | [`retry`], [`retry_budget::RetryBudget`], [`backoff::Backoff`] | may this failure be retried, and after how long? |
//! | endpoints | [`outlier::OutlierDetector`], [`health::HealthTracker`] | which endpoints may take traffic? |
//! | overload | [`overload::Ladder`] | is breakwater itself short of memory? |
//! | heap | [`trim::TrimPolicy`] | has a burst ended, so freed memory can go back? |
//!
//! The one idea: **the data plane reads the clock once per request and passes
//! `now` down.** Every policy takes `now: tokio::time::Instant` as an argument
//! instead of reading the clock, so unit tests drive time explicitly and the
//! async code around the policies runs under tokio's paused clock.
//! linkerd's `SuccessRateWindow::new(window, now)` / `roll(now)` has the same
//! shape.
//!
//! The hot calls (rate-limit take, breaker acquire and record, bulkhead
//! acquire and release, retry-budget deposit) cost tens of nanoseconds, so
//! that the whole decision fits the SPEC §10 budget of 200 ns per request.
//! They use atomics or a `std::sync::Mutex` held for a few instructions,
//! never across an `.await`, and allocate nothing per request.
//! `benches/policy.rs` measures them.
//!
//! Policies return decisions, not errors: an admission is a guard value (a
//! ticket or permit) that releases what it holds when dropped, and a refusal
//! says why and for how long.
//!
//! What this module does not do: no I/O, no HTTP types, no metrics, no
//! logging and no configuration parsing. Validating the numbers is
//! `config/`'s job; the constructors here clamp nonsensical values (a zero
//! probe count, a backoff factor below 1) so that a policy can never wedge
//! itself, and say so in their docs.

pub mod adaptive;
pub mod backoff;
pub mod breaker;
pub mod bulkhead;
pub mod degradation;
pub mod health;
pub mod outlier;
pub mod overload;
pub mod rate_limit;
pub mod retry;
pub mod retry_budget;
pub mod trim;
pub mod window;

use std::time::Duration;
use tokio::time::Instant;

/// Keeps a value on its own cache line, so that writes to it (a lock, a
/// counter) do not slow down readers of the fields next to it, and the
/// other way round. Only the alignment matters; crossbeam's `CachePadded`
/// without the dependency.
#[derive(Debug, Default)]
#[repr(align(64))]
struct CacheAligned<T>(T);

impl<T> std::ops::Deref for CacheAligned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Nanoseconds from `base` to `now`, saturating at 0 (for a `now` that is
/// earlier than `base`) and at `u64::MAX` (584 years).
///
/// Policies that keep time in atomics store it as nanoseconds since an
/// `Instant` taken at construction; this is the one conversion they share.
fn nanos_since(base: Instant, now: Instant) -> u64 {
    duration_nanos(now.saturating_duration_since(base))
}

/// A duration in nanoseconds, saturating at `u64::MAX`.
fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
