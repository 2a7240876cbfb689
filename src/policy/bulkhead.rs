//! The bulkhead of SPEC §3.2: a fixed cap on calls in flight to one
//! route's upstream, with a short bounded queue in front of it.
//!
//! A slow upstream holds its connections and tasks for longer; without a
//! cap, one slow route eats every worker and socket and takes the healthy
//! routes down with it. The bulkhead gives each route `max_concurrent`
//! permits, lets up to `max_queue` more callers wait for one (first in,
//! first out) for at most `queue_timeout`, and sheds everyone else at once,
//! so an overload costs a fast 503 instead of a growing queue.
//!
//! The one idea: **the permit is a value.** A [`BulkheadPermit`] wraps a
//! tokio `OwnedSemaphorePermit` and gives the slot back when dropped,
//! exactly once, however the request ends: response finished, client gone,
//! future cancelled. tower's `ConcurrencyLimit` keeps its permit inside the
//! response future the same way (`tower/src/limit/concurrency/future.rs`).
//! The data plane keeps the permit alive until the response body ends.
//!
//! tokio's `Semaphore` is FIFO-fair: a released permit goes to the oldest
//! waiter, and [`Bulkhead::try_acquire`] cannot barge past waiters. The
//! queue count is an atomic guarded by a drop guard, so a waiter whose
//! future is dropped (the client went away while queued) leaves `queued`
//! correct.
//!
//! ## An adaptive limit
//!
//! With `adaptive: true` the limit moves ([`super::adaptive`] decides
//! where): each permit of an adaptive bulkhead reports its request's
//! latency when it completes, and the bulkhead applies the new limit to
//! the same semaphore — growing adds permits; shrinking takes free permits
//! away at once and, for the rest, swallows permits as requests in flight
//! return them. So the queue, its fairness and its cancel safety are the
//! same whatever the limit does.
//!
//! What it does not do: build the 503, or sleep on anything but tokio's
//! clock.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::adaptive::{AdaptiveConfig, AdaptiveLimit};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why the bulkhead refused a call: the caller sheds it with 503,
/// `x-breakwater-reason: shed` and `retry-after: 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shed {
    /// Every permit is taken and the queue is full (or queueing was not
    /// asked for).
    Full,
    /// Waited `queue_timeout` in the queue without getting a permit.
    QueueTimeout,
}

/// A per-route concurrency cap with a bounded FIFO queue.
///
/// `Send + Sync`; share it as `Arc<Bulkhead>`.
#[derive(Debug)]
pub struct Bulkhead {
    /// `max_concurrent` permits. Behind an `Arc` because owned permits
    /// point back at it.
    semaphore: Arc<Semaphore>,
    /// The permit count the semaphore was built with.
    max_concurrent: usize,
    /// How many callers may wait at once.
    max_queue: usize,
    /// How long one caller may wait.
    queue_timeout: Duration,
    /// Callers waiting now. Incremented before waiting and decremented by
    /// a drop guard, so a cancelled waiter is never counted forever.
    queued: AtomicUsize,
    /// The moving limit, when `adaptive: true`.
    adaptive: Option<Arc<Adaptive>>,
}

/// What an adaptive bulkhead shares with its permits.
#[derive(Debug)]
struct Adaptive {
    limiter: AdaptiveLimit,
    semaphore: Arc<Semaphore>,
    /// The limit applied to the semaphore now.
    limit: AtomicUsize,
    /// Permits in use that go away, not back, when returned (the limit
    /// dropped below what was in flight).
    owed: AtomicUsize,
    /// Serialises changes of `limit` and `owed`.
    adjusting: Mutex<()>,
}

/// One slot in flight; dropping it frees the slot (exactly once).
#[derive(Debug)]
#[must_use = "the slot is freed as soon as the permit is dropped"]
pub struct BulkheadPermit {
    permit: Option<OwnedSemaphorePermit>,
    /// For an adaptive bulkhead: where the request's latency goes, the
    /// epoch it was admitted in, and when.
    adaptive: Option<(Arc<Adaptive>, u64, Instant)>,
}

/// Holds one place in the queue; leaving it (by any path) gives it back.
struct QueueSlot<'a> {
    queued: &'a AtomicUsize,
}

// === impl Shed ===

impl Shed {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Full => "full",
            Shed::QueueTimeout => "queue_timeout",
        }
    }
}

// === impl Bulkhead ===

impl Bulkhead {
    /// A bulkhead of `max_concurrent` permits (at most tokio's
    /// `Semaphore::MAX_PERMITS`; 0 admits nothing) with a queue of
    /// `max_queue` waiters, each waiting at most `queue_timeout`.
    pub fn new(max_concurrent: usize, max_queue: usize, queue_timeout: Duration) -> Self {
        let max_concurrent = max_concurrent.min(Semaphore::MAX_PERMITS);
        Bulkhead {
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queue,
            queue_timeout,
            queued: AtomicUsize::new(0),
            adaptive: None,
        }
    }

    /// A bulkhead whose limit adapts to the upstream's latency, between
    /// `config.min_limit` and `config.max_limit`, with the same queue.
    pub fn adaptive(
        config: AdaptiveConfig,
        max_queue: usize,
        queue_timeout: Duration,
        now: Instant,
    ) -> Self {
        let max = config.max_limit.min(Semaphore::MAX_PERMITS);
        let limiter = AdaptiveLimit::new(config, now);
        let limit = limiter.limit().min(max);
        let semaphore = Arc::new(Semaphore::new(limit));
        Bulkhead {
            semaphore: semaphore.clone(),
            max_concurrent: max,
            max_queue,
            queue_timeout,
            queued: AtomicUsize::new(0),
            adaptive: Some(Arc::new(Adaptive {
                limiter,
                semaphore,
                limit: AtomicUsize::new(limit),
                owed: AtomicUsize::new(0),
                adjusting: Mutex::new(()),
            })),
        }
    }

    fn permit(&self, permit: OwnedSemaphorePermit) -> BulkheadPermit {
        BulkheadPermit {
            permit: Some(permit),
            adaptive: self
                .adaptive
                .as_ref()
                .map(|adaptive| (adaptive.clone(), adaptive.limiter.epoch(), Instant::now())),
        }
    }

    /// Takes a permit if one is free now; never waits.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, Shed> {
        match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => Ok(self.permit(permit)),
            Err(_) => Err(Shed::Full),
        }
    }

    /// The limit now: `max_concurrent`, or where the adaptive limit is.
    pub fn limit(&self) -> usize {
        self.adaptive
            .as_ref()
            .map_or(self.max_concurrent, |adaptive| {
                adaptive.limit.load(Ordering::Relaxed)
            })
    }

    /// The adaptive limit, when the bulkhead has one.
    pub fn adaptive_limit(&self) -> Option<&AdaptiveLimit> {
        self.adaptive.as_ref().map(|adaptive| &adaptive.limiter)
    }

    /// Takes a permit, waiting in the FIFO queue for up to `queue_timeout`
    /// if none is free and the queue has room.
    ///
    /// The future owns a clone of the `Arc`, so it is `'static` and can
    /// live inside a tower response future. It is cancel-safe: dropping it
    /// leaves the queue, and a permit handed to a waiter that is gone
    /// returns to the semaphore.
    pub fn acquire(
        self: &Arc<Self>,
    ) -> impl Future<Output = Result<BulkheadPermit, Shed>> + Send + 'static {
        let bulkhead = Arc::clone(self);
        async move { bulkhead.acquire_or_wait().await }
    }

    async fn acquire_or_wait(&self) -> Result<BulkheadPermit, Shed> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let _slot = self.enter_queue().ok_or(Shed::Full)?;
        let waiting = Arc::clone(&self.semaphore).acquire_owned();
        match tokio::time::timeout(self.queue_timeout, waiting).await {
            Ok(Ok(permit)) => Ok(self.permit(permit)),
            // The semaphore is never closed; treat it as full if it were.
            Ok(Err(_closed)) => Err(Shed::Full),
            Err(_elapsed) => Err(Shed::QueueTimeout),
        }
    }

    /// Permits taken now (including one just handed to a waiter that has
    /// not yet woken up).
    pub fn in_flight(&self) -> usize {
        let issued = match &self.adaptive {
            Some(adaptive) => {
                adaptive.limit.load(Ordering::Relaxed) + adaptive.owed.load(Ordering::Relaxed)
            }
            None => self.max_concurrent,
        };
        issued.saturating_sub(self.semaphore.available_permits())
    }

    /// Callers waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The permit count (for an adaptive bulkhead, the most the limit
    /// may reach).
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// The queue's capacity.
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// The longest a caller waits in the queue.
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }

    fn enter_queue(&self) -> Option<QueueSlot<'_>> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued < self.max_queue).then_some(queued + 1)
            })
            .ok()?;
        Some(QueueSlot {
            queued: &self.queued,
        })
    }
}

// === impl Adaptive ===

impl Adaptive {
    /// Applies a new limit to the semaphore.
    fn set_limit(&self, new: usize) {
        let _one_at_a_time = self
            .adjusting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let limit = self.limit.load(Ordering::Relaxed);
        let owed = self.owed.load(Ordering::Relaxed);
        if new > limit {
            // Cancel what is owed first, then add the rest.
            let grow = new - limit;
            let cancelled = grow.min(owed);
            self.owed.store(owed - cancelled, Ordering::Relaxed);
            self.semaphore.add_permits(grow - cancelled);
        } else if new < limit {
            let shrink = limit - new;
            let taken = self.semaphore.forget_permits(shrink);
            self.owed.store(owed + (shrink - taken), Ordering::Relaxed);
        }
        self.limit.store(new, Ordering::Relaxed);
    }

    /// A permit coming back: swallowed if one is owed.
    fn swallow(&self) -> bool {
        if self.owed.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let _one_at_a_time = self
            .adjusting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let owed = self.owed.load(Ordering::Relaxed);
        if owed == 0 {
            return false;
        }
        self.owed.store(owed - 1, Ordering::Relaxed);
        true
    }

    /// Permits in use, for the limiter's notion of "in flight".
    fn in_flight(&self) -> usize {
        (self.limit.load(Ordering::Relaxed) + self.owed.load(Ordering::Relaxed))
            .saturating_sub(self.semaphore.available_permits())
    }
}

// === impl BulkheadPermit ===

impl BulkheadPermit {
    /// The request admitted by this permit answered after `latency` (to
    /// its response headers): an adaptive bulkhead learns from it. A
    /// request that ended otherwise (the client gone, a local refusal)
    /// just drops its permit.
    pub fn completed(&self, latency: Duration) {
        if let Some((adaptive, epoch, _)) = &self.adaptive {
            let in_flight = adaptive.in_flight();
            if let Some(limit) = adaptive
                .limiter
                .record(latency, in_flight, *epoch, Instant::now())
            {
                adaptive.set_limit(limit);
            }
        }
    }
}

impl BulkheadPermit {
    /// The request admitted by this permit timed out: its latency, as far
    /// as the limit is concerned, is the time since it was admitted.
    pub fn timed_out(&self) {
        if let Some((_, _, admitted)) = &self.adaptive {
            self.completed(admitted.elapsed());
        }
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        if let (Some(permit), Some((adaptive, ..))) = (self.permit.take(), &self.adaptive) {
            if adaptive.swallow() {
                permit.forget();
            }
        }
    }
}

// === impl QueueSlot ===

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
