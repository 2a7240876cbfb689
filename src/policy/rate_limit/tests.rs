use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_full_bucket_admits_burst_then_refuses_with_the_wait() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(10.0, 3, t0);
    for _ in 0..3 {
        assert_eq!(limiter.try_take(t0), Ok(()));
    }
    assert_eq!(limiter.try_take(t0), Err(ms(100)));
    assert_eq!(limiter.try_take(t0 + ms(40)), Err(ms(60)));
    assert_eq!(limiter.try_take(t0 + ms(100)), Ok(()));
    assert_eq!(limiter.try_take(t0 + ms(100)), Err(ms(100)));
}

#[test]
fn refills_at_rps_and_never_beyond_burst() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(100.0, 5, t0);
    // One token every 10ms, steadily.
    for i in 0..50 {
        assert_eq!(limiter.try_take(t0 + ms(10 * i)), Ok(()), "request {i}");
    }
    // An hour idle refills to burst, not to 360,000.
    let later = t0 + Duration::from_secs(3600);
    assert_eq!(limiter.available(later), 5.0);
    for _ in 0..5 {
        assert_eq!(limiter.try_take(later), Ok(()));
    }
    assert!(limiter.try_take(later).is_err());
}

#[test]
fn available_counts_fractional_tokens() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(10.0, 4, t0);
    assert_eq!(limiter.available(t0), 4.0);
    limiter.try_take(t0).unwrap();
    limiter.try_take(t0).unwrap();
    assert_eq!(limiter.available(t0), 2.0);
    assert_eq!(limiter.available(t0 + ms(50)), 2.5);
    assert_eq!(limiter.available(t0 + ms(1_000)), 4.0);
    while limiter.try_take(t0).is_ok() {}
    assert_eq!(limiter.available(t0), 0.0);
}

#[test]
fn fractional_rates_work() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(0.5, 1, t0);
    assert_eq!(limiter.try_take(t0), Ok(()));
    assert_eq!(limiter.try_take(t0), Err(Duration::from_secs(2)));
    assert_eq!(limiter.try_take(t0 + Duration::from_secs(2)), Ok(()));
    assert_eq!(limiter.rps(), 0.5);
}

#[test]
fn a_zero_rate_never_refills_and_a_zero_burst_is_one() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(0.0, 0, t0);
    assert_eq!(limiter.burst(), 1);
    assert_eq!(limiter.try_take(t0), Ok(()));
    let years = t0 + Duration::from_secs(86_400 * 365);
    assert!(limiter.try_take(years).is_err());
    let nan = RateLimiter::new(f64::NAN, 1, t0);
    nan.try_take(t0).unwrap();
    assert!(nan.try_take(years).is_err());
}

#[test]
fn a_huge_rate_is_one_token_per_nanosecond() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(1e12, 1, t0);
    assert_eq!(limiter.try_take(t0), Ok(()));
    assert_eq!(limiter.try_take(t0), Err(Duration::from_nanos(1)));
    assert_eq!(limiter.try_take(t0 + Duration::from_nanos(1)), Ok(()));
}

#[test]
fn an_older_now_does_not_refill_backwards() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(1.0, 1, t0);
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(limiter.try_take(t1), Ok(()));
    assert!(limiter.try_take(t1 - ms(500)).is_err());
    // A now before the limiter was built counts as its start.
    let early = RateLimiter::new(1.0, 1, t1);
    assert_eq!(early.try_take(t0), Ok(()));
    assert!(early.try_take(t0).is_err());
}

#[test]
fn two_threads_at_the_same_instant_share_exactly_burst_tokens() {
    let t0 = Instant::now();
    let limiter = RateLimiter::new(1.0, 1_000, t0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..1_000 {
                    if limiter.try_take(t0).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 1_000);
}

proptest! {
    /// Between any two moments, at most `burst + rps × elapsed` requests
    /// are admitted.
    #[test]
    fn never_admits_more_than_burst_plus_rate(
        rps in 0.5f64..2_000.0,
        burst in 1u32..20,
        steps in proptest::collection::vec((0u64..20_000_000, 1usize..5), 1..150),
    ) {
        let t0 = Instant::now();
        let limiter = RateLimiter::new(rps, burst, t0);
        let mut at = 0u64;
        let mut admitted: Vec<u64> = Vec::new();
        for (advance_nanos, n_takes) in steps {
            at += advance_nanos;
            for _ in 0..n_takes {
                if limiter.try_take(t0 + Duration::from_nanos(at)).is_ok() {
                    admitted.push(at);
                }
            }
        }
        for (i, &start) in admitted.iter().enumerate() {
            for (j, &end) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as f64;
                let elapsed = (end - start) as f64 / 1e9;
                prop_assert!(
                    count <= f64::from(burst) + rps * elapsed + 1e-9,
                    "{count} admitted in {elapsed}s"
                );
            }
        }
    }

    /// And it does admit: after `burst / rps` of quiet, the whole burst.
    #[test]
    fn a_rested_bucket_admits_a_full_burst(
        rps in 0.5f64..2_000.0,
        burst in 1u32..20,
        taken in 0u32..40,
    ) {
        let t0 = Instant::now();
        let limiter = RateLimiter::new(rps, burst, t0);
        for _ in 0..taken {
            let _ = limiter.try_take(t0);
        }
        let rested = t0 + Duration::from_secs_f64(f64::from(burst) / rps) + ms(1);
        prop_assert_eq!(limiter.available(rested), f64::from(burst));
        for _ in 0..burst {
            prop_assert!(limiter.try_take(rested).is_ok());
        }
        prop_assert!(limiter.try_take(rested).is_err());
    }
}
