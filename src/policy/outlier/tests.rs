use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn fail_times(
    detector: &OutlierDetector,
    endpoint: usize,
    n: u32,
    now: Instant,
) -> Option<Ejection> {
    let mut ejection = None;
    for _ in 0..n {
        assert_eq!(ejection, None, "ejected before the last failure");
        ejection = detector.record(endpoint, true, now);
    }
    ejection
}

#[test]
fn defaults_are_the_spec_defaults() {
    let config = OutlierConfig::default();
    assert_eq!(config.consecutive_failures, 5);
    assert_eq!(config.base_ejection_time, secs(30));
    assert_eq!(config.max_ejection_percent, 50);
}

#[test]
fn consecutive_failures_eject_and_a_success_resets_the_run() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 4);
    assert_eq!(fail_times(&detector, 1, 4, t0), None);
    assert_eq!(detector.record(1, false, t0), None);
    assert_eq!(fail_times(&detector, 1, 4, t0), None);
    let ejection = detector.record(1, true, t0).unwrap();
    assert_eq!(
        ejection,
        Ejection {
            endpoint: 1,
            duration: secs(30),
            until: t0 + secs(30),
            times_ejected: 1,
        }
    );
    assert!(!detector.is_available(1, t0));
    assert!(detector.is_available(0, t0));
    assert_eq!(detector.n_ejected(t0), 1);
    assert_eq!(detector.times_ejected(1), 1);
}

#[test]
fn an_endpoint_comes_back_when_its_time_is_over() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 2);
    assert_eq!(detector.refresh(t0), Vec::<usize>::new());
    assert_eq!(detector.next_return(), None);
    fail_times(&detector, 0, 5, t0).unwrap();
    assert_eq!(detector.next_return(), Some(t0 + secs(30)));
    let almost = t0 + secs(30) - Duration::from_nanos(1);
    assert!(!detector.is_available(0, almost));
    assert_eq!(detector.refresh(almost), Vec::<usize>::new());
    // Available as soon as the time is over, even before the refresh.
    assert!(detector.is_available(0, t0 + secs(30)));
    assert_eq!(detector.n_ejected(t0 + secs(30)), 0);
    assert_eq!(detector.refresh(t0 + secs(30)), [0]);
    assert_eq!(detector.refresh(t0 + secs(31)), Vec::<usize>::new());
    assert_eq!(detector.next_return(), None);
}

#[test]
fn each_ejection_lasts_longer() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 2);
    let mut now = t0;
    for times in 1..=4u32 {
        let ejection = fail_times(&detector, 0, 5, now).unwrap();
        assert_eq!(ejection.times_ejected, times);
        assert_eq!(ejection.duration, secs(30) * times);
        now = ejection.until;
        assert_eq!(detector.refresh(now), [0]);
    }
}

#[test]
fn outcomes_while_ejected_are_ignored() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 2);
    fail_times(&detector, 0, 5, t0).unwrap();
    for _ in 0..20 {
        assert_eq!(detector.record(0, true, t0), None);
    }
    assert_eq!(detector.refresh(t0 + secs(30)), [0]);
    // The run starts from zero after the return.
    assert_eq!(fail_times(&detector, 0, 4, t0 + secs(30)), None);
}

#[test]
fn never_more_than_max_ejection_percent() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 4);
    fail_times(&detector, 0, 5, t0).unwrap();
    fail_times(&detector, 1, 5, t0).unwrap();
    // 2 of 4 is 50%: the third is refused, and its run starts over.
    assert_eq!(fail_times(&detector, 2, 5, t0), None);
    assert!(detector.is_available(2, t0));
    assert_eq!(fail_times(&detector, 2, 4, t0), None);
    // Once one is back there is room again, and the run of four goes on.
    assert_eq!(detector.refresh(t0 + secs(30)), [0, 1]);
    assert!(detector.record(2, true, t0 + secs(30)).is_some());
}

#[test]
fn an_expired_ejection_frees_room_even_before_refresh() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 2);
    fail_times(&detector, 0, 5, t0).unwrap();
    assert_eq!(fail_times(&detector, 1, 5, t0), None);
    assert!(fail_times(&detector, 1, 5, t0 + secs(30)).is_some());
}

#[test]
fn the_last_endpoint_is_never_ejected() {
    let t0 = Instant::now();
    let single = OutlierDetector::new(OutlierConfig::default(), 1);
    assert_eq!(fail_times(&single, 0, 50, t0), None);
    assert!(single.is_available(0, t0));

    let all = OutlierConfig {
        max_ejection_percent: 100,
        ..OutlierConfig::default()
    };
    let pair = OutlierDetector::new(all, 2);
    assert!(fail_times(&pair, 0, 5, t0).is_some());
    assert_eq!(fail_times(&pair, 1, 5, t0), None);
    assert!(pair.is_available(1, t0));
}

#[test]
fn at_least_one_may_be_ejected_whatever_the_percentage() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        max_ejection_percent: 10,
        ..OutlierConfig::default()
    };
    let detector = OutlierDetector::new(config, 3);
    assert!(fail_times(&detector, 0, 5, t0).is_some());
    assert_eq!(fail_times(&detector, 1, 5, t0), None);
    let off = OutlierConfig {
        max_ejection_percent: 0,
        ..OutlierConfig::default()
    };
    assert_eq!(fail_times(&OutlierDetector::new(off, 3), 0, 5, t0), None);
}

#[test]
fn with_backups_the_last_primary_may_go_but_the_percentage_holds() {
    let t0 = Instant::now();
    let single = OutlierDetector::with_spare(OutlierConfig::default(), 1, true);
    assert!(fail_times(&single, 0, 5, t0).is_some());
    assert!(!single.is_available(0, t0));

    // Four primaries at 25%: one out at a time, backups or not.
    let quarter = OutlierConfig {
        max_ejection_percent: 25,
        ..OutlierConfig::default()
    };
    let four = OutlierDetector::with_spare(quarter, 4, true);
    assert!(fail_times(&four, 0, 5, t0).is_some());
    for endpoint in 1..4 {
        assert_eq!(fail_times(&four, endpoint, 5, t0), None);
        assert!(four.is_available(endpoint, t0));
    }
}

#[test]
fn zero_consecutive_failures_turns_ejection_off() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        consecutive_failures: 0,
        ..OutlierConfig::default()
    };
    let detector = OutlierDetector::new(config, 4);
    for _ in 0..100 {
        assert_eq!(detector.record(0, true, t0), None);
    }
    assert!(detector.is_available(0, t0));
}

#[test]
fn indexes_outside_the_set_are_ignored() {
    let t0 = Instant::now();
    let detector = OutlierDetector::new(OutlierConfig::default(), 2);
    assert_eq!(fail_times(&detector, 7, 10, t0), None);
    assert!(detector.is_available(7, t0));
    assert_eq!(detector.times_ejected(7), 0);
    assert_eq!(detector.len(), 2);
    assert!(!detector.is_empty());
    assert!(OutlierDetector::new(OutlierConfig::default(), 0).is_empty());
}

#[test]
fn detector_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OutlierDetector>();
}

proptest! {
    /// Whatever the traffic, at most `max_ejection_percent` of the
    /// endpoints (but at least one) are out at once, and at least one is
    /// available.
    #[test]
    fn ejections_respect_the_cap(
        n_endpoints in 1usize..8,
        percent in 0u32..=100,
        events in proptest::collection::vec((0usize..8, any::<bool>(), 0u64..20), 1..300),
    ) {
        let config = OutlierConfig {
            consecutive_failures: 2,
            base_ejection_time: secs(10),
            max_ejection_percent: percent,
        };
        let detector = OutlierDetector::new(config, n_endpoints);
        let mut now = Instant::now();
        for (endpoint, failure, advance) in events {
            now += secs(advance);
            if advance > 10 {
                detector.refresh(now);
            }
            detector.record(endpoint % n_endpoints, failure, now);
            let n_out = (0..n_endpoints).filter(|&i| !detector.is_available(i, now)).count();
            prop_assert_eq!(n_out, detector.n_ejected(now));
            let floor = n_endpoints * percent as usize / 100;
            let cap = if percent == 0 { 0 } else { floor.max(1) };
            prop_assert!(n_out <= cap);
            prop_assert!(n_out < n_endpoints);
        }
    }
}
