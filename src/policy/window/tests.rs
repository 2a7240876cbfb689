use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn totals(calls: u32, failures: u32, slow: u32) -> WindowTotals {
    WindowTotals {
        calls,
        failures,
        slow,
    }
}

#[test]
fn count_window_keeps_the_last_n_outcomes() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Count(3), t0);
    assert_eq!(window.totals(t0), totals(0, 0, 0));

    window.record(true, false, t0);
    window.record(false, true, t0);
    window.record(false, false, t0);
    assert_eq!(window.totals(t0), totals(3, 1, 1));

    // The failure is the oldest and is pushed out first.
    window.record(false, false, t0);
    assert_eq!(window.totals(t0), totals(3, 0, 1));
    // Then the slow call.
    window.record(true, false, t0);
    assert_eq!(window.totals(t0), totals(3, 1, 0));
    // Time plays no part in a count window.
    assert_eq!(
        window.totals(t0 + Duration::from_secs(3600)),
        totals(3, 1, 0)
    );
}

#[test]
fn count_window_of_zero_holds_one() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Count(0), t0);
    window.record(true, false, t0);
    window.record(false, false, t0);
    assert_eq!(window.totals(t0), totals(1, 0, 0));
}

#[test]
fn count_window_reset_forgets_everything() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Count(2), t0);
    window.record(true, true, t0);
    window.reset();
    assert_eq!(window.totals(t0), totals(0, 0, 0));
    // And fills from empty again.
    window.record(true, false, t0);
    assert_eq!(window.totals(t0), totals(1, 1, 0));
    window.record(false, false, t0);
    window.record(false, false, t0);
    assert_eq!(window.totals(t0), totals(2, 0, 0));
}

#[test]
fn time_window_expires_whole_buckets() {
    let t0 = Instant::now();
    // 10s in ten 1s buckets.
    let mut window = Window::new(WindowConfig::Time(Duration::from_secs(10)), t0);
    window.record(true, false, t0); // bucket 0
    window.record(false, true, t0 + ms(500)); // bucket 0
    window.record(false, false, t0 + ms(4_200)); // bucket 4
    assert_eq!(window.totals(t0 + ms(9_999)), totals(3, 1, 1));
    // Bucket 10 reuses bucket 0's slot: its two outcomes expire together.
    assert_eq!(window.totals(t0 + ms(10_000)), totals(1, 0, 0));
    assert_eq!(window.totals(t0 + ms(13_999)), totals(1, 0, 0));
    assert_eq!(window.totals(t0 + ms(14_000)), totals(0, 0, 0));
}

#[test]
fn time_window_gap_longer_than_the_window_clears_it() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Time(Duration::from_secs(10)), t0);
    for second in 0..10 {
        window.record(true, false, t0 + Duration::from_secs(second));
    }
    assert_eq!(window.totals(t0 + ms(9_000)), totals(10, 10, 0));
    window.record(false, false, t0 + Duration::from_secs(25));
    assert_eq!(window.totals(t0 + Duration::from_secs(25)), totals(1, 0, 0));
}

#[test]
fn time_window_puts_an_earlier_now_in_the_current_bucket() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Time(Duration::from_secs(10)), t0);
    window.record(false, false, t0 + ms(5_000));
    // A caller whose clock read is older than the last one seen.
    window.record(true, false, t0 + ms(1_000));
    assert_eq!(window.totals(t0 + ms(5_000)), totals(2, 1, 0));
    // Both live in bucket 5 and expire with it.
    assert_eq!(window.totals(t0 + ms(14_999)), totals(2, 1, 0));
    assert_eq!(window.totals(t0 + ms(15_000)), totals(0, 0, 0));
}

#[test]
fn time_window_before_base_counts_in_bucket_zero() {
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut window = Window::new(WindowConfig::Time(Duration::from_secs(10)), t0);
    window.record(true, false, t0 - ms(500));
    assert_eq!(window.totals(t0), totals(1, 1, 0));
}

#[test]
fn time_window_reset_forgets_everything() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Time(Duration::from_secs(10)), t0);
    window.record(true, true, t0);
    window.record(true, false, t0 + ms(3_000));
    window.reset();
    assert_eq!(window.totals(t0 + ms(3_000)), totals(0, 0, 0));
    window.record(false, false, t0 + ms(3_500));
    assert_eq!(window.totals(t0 + ms(12_999)), totals(1, 0, 0));
    assert_eq!(window.totals(t0 + ms(13_000)), totals(0, 0, 0));
}

#[test]
fn tiny_time_window_still_works() {
    let t0 = Instant::now();
    let mut window = Window::new(WindowConfig::Time(Duration::ZERO), t0);
    window.record(true, false, t0);
    assert_eq!(window.totals(t0), totals(1, 1, 0));
    assert_eq!(
        window.totals(t0 + Duration::from_nanos(10)),
        totals(0, 0, 0)
    );
}

#[test]
fn rates_divide_exactly() {
    assert_eq!(totals(10, 3, 0).failure_rate(), 0.3);
    assert_eq!(totals(20, 10, 0).failure_rate(), 0.5);
    assert_eq!(totals(10, 0, 7).slow_rate(), 0.7);
    assert_eq!(totals(0, 0, 0).failure_rate(), 0.0);
    assert_eq!(totals(0, 0, 0).slow_rate(), 0.0);
}
