use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn withdraw_all(budget: &RetryBudget, now: Instant) -> usize {
    let mut n_retries = 0;
    while budget.try_withdraw(now) {
        n_retries += 1;
        assert!(n_retries < 1_000_000, "the budget never ran out");
    }
    n_retries
}

#[test]
fn the_reserve_allows_min_per_sec_times_window_with_no_traffic() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(0.2, 10, secs(10), t0);
    assert_eq!(budget.available(t0), 100.0);
    assert_eq!(withdraw_all(&budget, t0), 100);
    assert_eq!(budget.available(t0), 0.0);
}

#[test]
fn requests_earn_ratio_retries() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(0.2, 0, secs(10), t0);
    assert!(!budget.try_withdraw(t0));
    for _ in 0..1_000 {
        budget.record_request(t0);
    }
    assert_eq!(budget.available(t0), 200.0);
    assert_eq!(withdraw_all(&budget, t0), 200);
    // Five more requests earn one more retry.
    for _ in 0..5 {
        budget.record_request(t0);
    }
    assert_eq!(withdraw_all(&budget, t0), 1);
}

#[test]
fn a_refused_withdrawal_takes_nothing() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(1.0, 0, secs(10), t0);
    budget.record_request(t0);
    assert!(budget.try_withdraw(t0));
    for _ in 0..10 {
        assert!(!budget.try_withdraw(t0));
    }
    budget.record_request(t0);
    assert!(budget.try_withdraw(t0));
}

#[test]
fn requests_expire_after_the_window_and_retries_a_bucket_later() {
    let t0 = Instant::now();
    // Ten 1s buckets.
    let budget = RetryBudget::new(1.0, 0, secs(10), t0);
    for _ in 0..10 {
        budget.record_request(t0 + ms(500));
    }
    assert_eq!(withdraw_all(&budget, t0 + ms(900)), 10);
    // Bucket 0's requests count through bucket 9, not in bucket 10.
    assert_eq!(budget.available(t0 + ms(9_999)), 0.0);
    for _ in 0..10 {
        budget.record_request(t0 + secs(10));
    }
    // Bucket 0's retries still count in bucket 10 (the window reaches back
    // to 0.9s when t is 10.9s)...
    assert_eq!(budget.available(t0 + ms(10_900)), 0.0);
    // ...and are gone in bucket 11.
    assert_eq!(budget.available(t0 + secs(11)), 10.0);
    assert_eq!(budget.available(t0 + secs(20)), 0.0);
}

#[test]
fn a_negative_ratio_is_zero() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(-1.0, 1, secs(1), t0);
    budget.record_request(t0);
    assert_eq!(withdraw_all(&budget, t0), 1);
    let nan = RetryBudget::new(f64::NAN, 0, secs(1), t0);
    nan.record_request(t0);
    assert!(!nan.try_withdraw(t0));
}

#[test]
fn a_long_quiet_spell_forgets_everything() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(0.5, 0, ms(10), t0);
    for _ in 0..100 {
        budget.record_request(t0);
    }
    assert_eq!(withdraw_all(&budget, t0), 50);
    let later = t0 + Duration::from_secs(86_400 * 30);
    assert_eq!(budget.available(later), 0.0);
    budget.record_request(later);
    budget.record_request(later);
    assert_eq!(withdraw_all(&budget, later), 1);
}

#[test]
fn an_older_now_never_loosens_the_budget() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(1.0, 0, secs(10), t0);
    let t1 = t0 + secs(30);
    budget.record_request(t1);
    assert!(budget.try_withdraw(t1));
    // A caller whose clock read lags by a bucket still sees the retry.
    assert!(!budget.try_withdraw(t1 - secs(1)));
    // One lagging by the whole ring finds the slot taken by a newer bucket:
    // its request is dropped, its retry counted against the newer one.
    budget.record_request(t1 - secs(11));
    assert!(!budget.try_withdraw(t1));
}

#[test]
fn two_threads_share_exactly_the_budget() {
    let t0 = Instant::now();
    let budget = RetryBudget::new(0.0, 100, secs(10), t0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..2_000 {
                    budget.record_request(t0);
                    if budget.try_withdraw(t0) {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 1_000);
}

#[test]
fn slot_packing_round_trips() {
    let value = pack(12_345, 678);
    assert_eq!(count(value), 678);
    assert_eq!(age(value, 12_345), 0);
    assert_eq!(age(value, 12_355), 10);
    assert_eq!(age(value, 12_334), -11);
    // Bucket numbers wrap at 2^40 without breaking ages.
    let wrapped = pack(STAMP_MASK, 1);
    assert_eq!(age(wrapped, STAMP_MASK + 3), 3);
}

#[derive(Debug, Clone)]
enum Event {
    Request,
    Retry,
    Advance(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Request),
        4 => Just(Event::Retry),
        1 => (0u64..3_000).prop_map(Event::Advance),
    ]
}

proptest! {
    /// Whenever a retry is admitted at t, the retries admitted in
    /// (t − window, t] are at most ratio × the requests in it plus the
    /// reserve.
    #[test]
    fn retries_never_exceed_the_budget(
        ratio in 0.0f64..1.0,
        min_per_sec in 0u32..5,
        window_ms in 100u64..5_000,
        events in proptest::collection::vec(event(), 1..400),
    ) {
        let t0 = Instant::now();
        let window = ms(window_ms);
        let budget = RetryBudget::new(ratio, min_per_sec, window, t0);
        let reserve = f64::from(min_per_sec) * window.as_secs_f64();
        let mut at = Duration::ZERO;
        let mut requests: Vec<Duration> = Vec::new();
        let mut retries: Vec<Duration> = Vec::new();
        for event in events {
            match event {
                Event::Advance(step) => at += ms(step),
                Event::Request => {
                    budget.record_request(t0 + at);
                    requests.push(at);
                }
                Event::Retry => {
                    if budget.try_withdraw(t0 + at) {
                        retries.push(at);
                        let in_window = |time: &&Duration| **time + window > at;
                        let n_requests = requests.iter().filter(in_window).count();
                        let n_retries = retries.iter().filter(in_window).count();
                        prop_assert!(
                            n_retries as f64 <= ratio * n_requests as f64 + reserve,
                            "{n_retries} retries for {n_requests} requests at {at:?}"
                        );
                    }
                }
            }
        }
    }
}
