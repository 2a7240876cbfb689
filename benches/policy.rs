//! The cost of breakwater's policy decisions, against SPEC §10's budget:
//! breaker check + record, bulkhead acquire + release and rate-limit take
//! must cost at most 200 ns per request together.
//!
//! One `bench_function` per hot call, each twice: alone on one thread, and
//! `contended`, with a second thread hammering the same shared policy for
//! the whole measurement (the proxy's worker threads share one policy set
//! per route). The `chain` benches run the whole per-request sequence of
//! SPEC §3: rate limit, breaker, bulkhead, retry-budget deposit, release,
//! record.
//!
//! Run: `cargo bench --bench policy` (add `-- --quick` for a fast look).
//! Each thread reads the real clock once every [`CLOCK_EVERY`] calls and
//! passes that `now` in, so time moves as it does in the proxy (which
//! reads it once per request) without the clock read dominating the
//! figures.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::policy::breaker::{Breaker, BreakerConfig, CallResult};
use breakwater::policy::bulkhead::Bulkhead;
use breakwater::policy::rate_limit::RateLimiter;
use breakwater::policy::retry_budget::RetryBudget;
use criterion::{criterion_main, Criterion};
use tokio::time::Instant;

/// Calls per clock read.
const CLOCK_EVERY: u64 = 64;

/// One route's policies, shared by every thread.
struct Route {
    rate_limiter: RateLimiter,
    breaker: Arc<Breaker>,
    bulkhead: Bulkhead,
    retry_budget: RetryBudget,
}

impl Route {
    fn new(now: Instant) -> Self {
        Route {
            // A rate no loop can reach, so every take is admitted and the
            // bench measures the admitting compare-and-swap.
            rate_limiter: RateLimiter::new(1e9, 1_000_000, now),
            breaker: Arc::new(Breaker::new(BreakerConfig::default(), now)),
            bulkhead: Bulkhead::new(64, 128, Duration::from_millis(100)),
            retry_budget: RetryBudget::new(0.2, 10, Duration::from_secs(10), now),
        }
    }
}

/// Runs `op` once per iteration, alone or with a second thread running
/// `op` on the same `route` throughout.
fn bench<F>(c: &mut Criterion, name: &str, op: F)
where
    F: Fn(&Route, Instant) + Sync,
{
    let route = Route::new(Instant::now());
    c.bench_function(name, |b| b.iter_custom(|iters| run(&route, &op, iters)));

    let route = Route::new(Instant::now());
    c.bench_function(&format!("{name}/contended"), |b| {
        b.iter_custom(|iters| {
            let started = AtomicBool::new(false);
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    started.store(true, Ordering::Release);
                    while !stop.load(Ordering::Relaxed) {
                        run(&route, &op, CLOCK_EVERY);
                    }
                });
                while !started.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let elapsed = run(&route, &op, iters);
                stop.store(true, Ordering::Relaxed);
                elapsed
            })
        })
    });
}

/// `iters` calls of `op`, reading the clock every [`CLOCK_EVERY`] calls;
/// returns the time they took.
fn run<F>(route: &Route, op: &F, iters: u64) -> Duration
where
    F: Fn(&Route, Instant),
{
    let start = Instant::now();
    let mut now = start;
    for i in 0..iters {
        if i % CLOCK_EVERY == 0 {
            now = Instant::now();
        }
        op(route, now);
    }
    start.elapsed()
}

fn policies(c: &mut Criterion) {
    bench(c, "breaker/acquire_record_closed", |route, now| {
        let ticket = route.breaker.try_acquire(now);
        if let Ok(ticket) = ticket {
            black_box(ticket.record(CallResult::Success, now));
        }
    });
    bench(c, "bulkhead/try_acquire_drop", |route, _now| {
        black_box(route.bulkhead.try_acquire()).ok();
    });
    bench(c, "rate_limit/try_take", |route, now| {
        black_box(route.rate_limiter.try_take(now)).ok();
    });
    bench(c, "retry_budget/record_withdraw", |route, now| {
        route.retry_budget.record_request(now);
        black_box(route.retry_budget.try_withdraw(now));
    });
    bench(c, "chain/rate_breaker_bulkhead_budget", |route, now| {
        if route.rate_limiter.try_take(now).is_err() {
            return;
        }
        let Ok(ticket) = route.breaker.try_acquire(now) else {
            return;
        };
        let permit = route.bulkhead.try_acquire();
        route.retry_budget.record_request(now);
        drop(black_box(permit));
        black_box(ticket.record(CallResult::Success, now));
    });
}

// The macros generate undocumented functions.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::policies);
}

criterion_main!(group::benches);
