use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;
use crate::policy::window::WindowConfig;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn breaker(config: BreakerConfig) -> (Arc<Breaker>, Instant) {
    let t0 = Instant::now();
    (Arc::new(Breaker::new(config, t0)), t0)
}

/// Only the consecutive-failures trigger, so tests of the others are exact.
fn rates_only() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    }
}

fn call(breaker: &Arc<Breaker>, outcome: CallResult, now: Instant) -> Option<Transition> {
    breaker
        .try_acquire(now)
        .expect("admitted")
        .record(outcome, now)
}

fn transition(from: BreakerState, to: BreakerState, reason: TripReason) -> Option<Transition> {
    Some(Transition { from, to, reason })
}

/// Trips a default breaker with five failures at `now`.
fn trip(breaker: &Arc<Breaker>, now: Instant) {
    for _ in 0..4 {
        assert_eq!(call(breaker, CallResult::Failure, now), None);
    }
    assert_eq!(
        call(breaker, CallResult::Failure, now),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::ConsecutiveFailures
        )
    );
}

#[test]
fn defaults_are_the_spec_defaults() {
    let config = BreakerConfig::default();
    assert_eq!(config.consecutive_failures, 5);
    assert_eq!(config.failure_rate, 0.5);
    assert_eq!(config.slow_call_rate, None);
    assert_eq!(config.slow_call_duration, secs(1));
    assert_eq!(config.window, WindowConfig::Count(100));
    assert_eq!(config.minimum_calls, 20);
    assert_eq!(config.open_duration, secs(5));
    assert_eq!(config.open_backoff, 2.0);
    assert_eq!(config.max_open_duration, secs(60));
    assert_eq!(config.half_open_max_calls, 3);
    assert_eq!(config.half_open_successes, 3);
}

#[test]
fn state_names_and_gauge_values() {
    let states = [
        (BreakerState::Closed, "closed", 0),
        (BreakerState::Open, "open", 2),
        (BreakerState::HalfOpen, "half_open", 1),
        (BreakerState::ForcedOpen, "forced_open", 2),
        (BreakerState::ForcedClosed, "forced_closed", 0),
    ];
    for (state, name, gauge) in states {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.gauge(), gauge);
        assert_eq!(BreakerState::from_bits(state.to_bits()), state);
    }
}

#[test]
fn breaker_and_ticket_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Breaker>();
    assert_send_sync::<BreakerTicket>();
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    for _ in 0..4 {
        assert_eq!(call(&breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(call(&breaker, CallResult::Success, t0), None);
    assert_eq!(breaker.snapshot(t0).consecutive_failures, 0);
    // A slow success also breaks the run; an ignored call does not.
    for _ in 0..4 {
        assert_eq!(call(&breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(call(&breaker, CallResult::Slow, t0), None);
    for _ in 0..4 {
        assert_eq!(call(&breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(call(&breaker, CallResult::Ignored, t0), None);
    assert_eq!(breaker.snapshot(t0).consecutive_failures, 4);
    assert_eq!(
        call(&breaker, CallResult::Failure, t0),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::ConsecutiveFailures
        )
    );
    let snapshot = breaker.snapshot(t0);
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!(snapshot.n_trips, 1);
    assert_eq!(snapshot.open_remaining, Some(secs(5)));
}

#[test]
fn failure_rate_waits_for_minimum_calls() {
    let (breaker, t0) = breaker(rates_only());
    // 19 failures: a rate of 1.0, but under minimum_calls.
    for _ in 0..19 {
        assert_eq!(call(&breaker, CallResult::Failure, t0), None);
    }
    assert_eq!(
        call(&breaker, CallResult::Failure, t0),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::FailureRate
        )
    );
}

#[test]
fn failure_rate_trips_at_exactly_the_threshold() {
    let (breaker, t0) = breaker(rates_only());
    // 9 failures in 19 calls, then the 20th call fails: 10/20 = 0.5.
    for i in 0..19 {
        let outcome = if i % 2 == 0 {
            CallResult::Success
        } else {
            CallResult::Failure
        };
        assert_eq!(call(&breaker, outcome, t0), None);
    }
    assert_eq!(
        call(&breaker, CallResult::Failure, t0),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::FailureRate
        )
    );
}

#[test]
fn failure_rate_below_the_threshold_does_not_trip() {
    let (breaker, t0) = breaker(rates_only());
    // 9 failures in 20 calls: 0.45.
    for i in 0..20 {
        let outcome = if i % 2 == 1 && i < 19 {
            CallResult::Failure
        } else {
            CallResult::Success
        };
        assert_eq!(call(&breaker, outcome, t0), None);
    }
    assert_eq!(breaker.snapshot(t0).window.failures, 9);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn a_success_that_reaches_minimum_calls_can_trip_on_the_rate() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    // Runs of four failures and a success never reach 5 in a row; the 20th
    // call (a success) fills minimum_calls with 16/20 failures.
    for i in 1..20 {
        let outcome = if i % 5 == 0 {
            CallResult::Success
        } else {
            CallResult::Failure
        };
        assert_eq!(call(&breaker, outcome, t0), None);
    }
    assert_eq!(
        call(&breaker, CallResult::Success, t0),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::FailureRate
        )
    );
}

#[test]
fn slow_call_rate_trips_only_when_set() {
    let (breaker_off, t0) = breaker(rates_only());
    for _ in 0..50 {
        assert_eq!(call(&breaker_off, CallResult::Slow, t0), None);
    }
    assert_eq!(breaker_off.snapshot(t0).window.slow, 50);
    assert_eq!(breaker_off.snapshot(t0).window.failures, 0);

    let (breaker, t0) = breaker(BreakerConfig {
        slow_call_rate: Some(0.8),
        ..rates_only()
    });
    // 15 slow of 19, then one more slow: 16/20 = 0.8.
    for i in 0..19 {
        let outcome = if i < 4 {
            CallResult::Success
        } else {
            CallResult::Slow
        };
        assert_eq!(call(&breaker, outcome, t0), None);
    }
    assert_eq!(
        call(&breaker, CallResult::Slow, t0),
        transition(
            BreakerState::Closed,
            BreakerState::Open,
            TripReason::SlowCallRate
        )
    );
}

#[test]
fn is_slow_uses_slow_call_duration() {
    let (breaker, _) = breaker(BreakerConfig::default());
    assert!(!breaker.is_slow(secs(1)));
    assert!(breaker.is_slow(secs(1) + Duration::from_nanos(1)));
}

#[test]
fn open_refuses_with_the_time_until_half_open() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let rejected = breaker.try_acquire(t0 + ms(1_500)).unwrap_err();
    assert_eq!(rejected.retry_after, ms(3_500));
    assert_eq!(rejected.state, BreakerState::Open);
    assert_eq!(rejected.transition, None);
    let rejected = breaker
        .try_acquire(t0 + secs(5) - Duration::from_nanos(1))
        .unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_nanos(1));
}

#[test]
fn open_goes_half_open_lazily_and_reports_it_on_the_ticket() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    // The snapshot shows half-open, but changes nothing.
    let snapshot = breaker.snapshot(t1);
    assert_eq!(snapshot.state, BreakerState::HalfOpen);
    assert_eq!(snapshot.open_remaining, None);
    assert_eq!(breaker.state(), BreakerState::Open);

    let probe = breaker.try_acquire(t1).unwrap();
    assert!(probe.is_probe());
    assert_eq!(
        probe.transition(),
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            TripReason::OpenElapsed
        )
    );
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let second = breaker.try_acquire(t1).unwrap();
    assert_eq!(second.transition(), None);
}

#[test]
fn advance_applies_a_due_half_open() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    assert_eq!(breaker.advance(t0 + secs(100)), None);
    trip(&breaker, t0);
    assert_eq!(breaker.advance(t0 + ms(4_999)), None);
    assert_eq!(
        breaker.advance(t0 + secs(5)),
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            TripReason::OpenElapsed
        )
    );
    assert_eq!(breaker.advance(t0 + secs(6)), None);
    assert_eq!(breaker.snapshot(t0 + secs(6)).state, BreakerState::HalfOpen);
}

#[test]
fn half_open_admits_at_most_max_probes_and_dropping_one_frees_its_slot() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    let probes: Vec<_> = (0..3).map(|_| breaker.try_acquire(t1).unwrap()).collect();
    let rejected = breaker.try_acquire(t1).unwrap_err();
    assert_eq!(rejected.state, BreakerState::HalfOpen);
    assert_eq!(rejected.retry_after, HALF_OPEN_FULL_RETRY_AFTER);
    assert_eq!(breaker.snapshot(t1).half_open_in_flight, 3);

    let mut probes = probes.into_iter();
    drop(probes.next());
    assert_eq!(breaker.snapshot(t1).half_open_in_flight, 2);
    let again = breaker.try_acquire(t1).unwrap();
    assert!(breaker.try_acquire(t1).is_err());
    drop(again);
    drop(probes);
    assert_eq!(breaker.snapshot(t1).half_open_in_flight, 0);
    // Dropped probes counted nothing.
    assert_eq!(breaker.snapshot(t1).half_open_successes, 0);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

#[test]
fn probe_successes_close_and_clear_the_window() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    assert_eq!(call(&breaker, CallResult::Success, t1), None);
    assert_eq!(call(&breaker, CallResult::Ignored, t1), None);
    assert_eq!(call(&breaker, CallResult::Slow, t1), None);
    assert_eq!(breaker.snapshot(t1).half_open_successes, 2);
    assert_eq!(
        call(&breaker, CallResult::Success, t1),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            TripReason::ProbesSucceeded
        )
    );
    let snapshot = breaker.snapshot(t1);
    assert_eq!(snapshot.window, WindowTotals::default());
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.half_open_successes, 0);
    assert_eq!(snapshot.n_trips, 1);
}

#[test]
fn a_slow_probe_fails_when_the_slow_trigger_is_on() {
    let (breaker, t0) = breaker(BreakerConfig {
        slow_call_rate: Some(0.5),
        ..BreakerConfig::default()
    });
    trip(&breaker, t0);
    assert_eq!(
        call(&breaker, CallResult::Slow, t0 + secs(5)),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Open,
            TripReason::ProbeFailed
        )
    );
}

#[test]
fn probe_failures_back_off_up_to_the_cap_and_a_full_close_resets_it() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let mut now = t0;
    let mut expected = secs(5);
    for next in [10, 20, 40, 60, 60] {
        now += expected;
        assert_eq!(
            call(&breaker, CallResult::Failure, now),
            transition(
                BreakerState::HalfOpen,
                BreakerState::Open,
                TripReason::ProbeFailed
            )
        );
        expected = secs(next);
        let snapshot = breaker.snapshot(now);
        assert_eq!(snapshot.current_open_duration, expected);
        assert_eq!(snapshot.open_remaining, Some(expected));
        assert_eq!(
            breaker
                .try_acquire(now + expected - ms(1))
                .unwrap_err()
                .retry_after,
            ms(1)
        );
    }
    assert_eq!(breaker.snapshot(now).n_trips, 6);
    now += expected;
    for _ in 0..3 {
        call(&breaker, CallResult::Success, now);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot(now).current_open_duration, secs(5));
    trip(&breaker, now);
    assert_eq!(breaker.snapshot(now).open_remaining, Some(secs(5)));
}

#[test]
fn backoff_below_one_is_clamped() {
    let (breaker, t0) = breaker(BreakerConfig {
        open_backoff: 0.5,
        ..BreakerConfig::default()
    });
    trip(&breaker, t0);
    call(&breaker, CallResult::Failure, t0 + secs(5));
    assert_eq!(
        breaker.snapshot(t0 + secs(5)).current_open_duration,
        secs(5)
    );
}

#[test]
fn a_stale_closed_outcome_does_not_drive_half_open() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    let slow_failure = breaker.try_acquire(t0).unwrap();
    let slow_success = breaker.try_acquire(t0).unwrap();
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    let probe = breaker.try_acquire(t1).unwrap();
    // Admitted while closed, finished while half-open: counts nothing.
    assert_eq!(slow_failure.record(CallResult::Failure, t1), None);
    assert_eq!(slow_success.record(CallResult::Success, t1), None);
    let snapshot = breaker.snapshot(t1);
    assert_eq!(snapshot.state, BreakerState::HalfOpen);
    assert_eq!(snapshot.half_open_successes, 0);
    assert_eq!(snapshot.half_open_in_flight, 1);
    assert_eq!(probe.record(CallResult::Success, t1), None);
    assert_eq!(breaker.snapshot(t1).half_open_successes, 1);
}

#[test]
fn a_stale_closed_outcome_does_not_land_in_a_new_closed_window() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    let old: Vec<_> = (0..10).map(|_| breaker.try_acquire(t0).unwrap()).collect();
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    for _ in 0..3 {
        call(&breaker, CallResult::Success, t1);
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    for ticket in old {
        assert_eq!(ticket.record(CallResult::Failure, t1), None);
    }
    let snapshot = breaker.snapshot(t1);
    assert_eq!(snapshot.state, BreakerState::Closed);
    assert_eq!(snapshot.window, WindowTotals::default());
    assert_eq!(snapshot.consecutive_failures, 0);
}

#[test]
fn a_probe_outliving_its_half_open_keeps_its_slot_but_decides_nothing() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    let lingering = breaker.try_acquire(t1).unwrap();
    let lingering_too = breaker.try_acquire(t1).unwrap();
    // Another probe fails: open for 10s.
    call(&breaker, CallResult::Failure, t1);
    assert_eq!(breaker.snapshot(t1).half_open_in_flight, 2);

    // Half-open again: only one slot is free while the old probes run, and
    // the transition is reported even on a refusal.
    let t2 = t1 + secs(10);
    let probe = breaker.try_acquire(t2).unwrap();
    assert_eq!(
        probe.transition(),
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            TripReason::OpenElapsed
        )
    );
    assert!(breaker.try_acquire(t2).is_err());
    // The old probe's failure does not re-open the new half-open.
    assert_eq!(lingering.record(CallResult::Failure, t2), None);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.snapshot(t2).half_open_in_flight, 2);
    drop(lingering_too);
    drop(probe);
    assert_eq!(breaker.snapshot(t2).half_open_in_flight, 0);
}

#[test]
fn a_refusal_can_carry_the_half_open_transition() {
    let (breaker, t0) = breaker(BreakerConfig {
        half_open_max_calls: 1,
        ..BreakerConfig::default()
    });
    trip(&breaker, t0);
    let t1 = t0 + secs(5);
    let lingering = breaker.try_acquire(t1).unwrap();
    // Re-open by forcing, then reset and trip again: the old probe lives on.
    breaker.force(Force::Reset, t1);
    trip(&breaker, t1);
    let rejected = breaker.try_acquire(t1 + secs(5)).unwrap_err();
    assert_eq!(
        rejected.transition,
        transition(
            BreakerState::Open,
            BreakerState::HalfOpen,
            TripReason::OpenElapsed
        )
    );
    assert_eq!(rejected.state, BreakerState::HalfOpen);
    drop(lingering);
    assert!(breaker.try_acquire(t1 + secs(5)).unwrap().is_probe());
}

#[test]
fn ignored_outcomes_count_nothing_while_closed() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    for _ in 0..30 {
        assert_eq!(call(&breaker, CallResult::Ignored, t0), None);
        drop(breaker.try_acquire(t0).unwrap());
    }
    assert_eq!(breaker.snapshot(t0).window, WindowTotals::default());
}

#[test]
fn forced_open_refuses_until_reset() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    assert_eq!(
        breaker.force(Force::Open, t0),
        transition(
            BreakerState::Closed,
            BreakerState::ForcedOpen,
            TripReason::Forced
        )
    );
    assert_eq!(breaker.force(Force::Open, t0), None);
    let later = t0 + secs(3600);
    let rejected = breaker.try_acquire(later).unwrap_err();
    assert_eq!(rejected.retry_after, secs(5));
    assert_eq!(rejected.state, BreakerState::ForcedOpen);
    assert_eq!(breaker.advance(later), None);
    assert_eq!(breaker.snapshot(later).state, BreakerState::ForcedOpen);
    assert_eq!(
        breaker.force(Force::Reset, later),
        transition(
            BreakerState::ForcedOpen,
            BreakerState::Closed,
            TripReason::Reset
        )
    );
    assert!(breaker.try_acquire(later).is_ok());
}

#[test]
fn forced_closed_admits_everything_and_counts_nothing() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    assert_eq!(
        breaker.force(Force::Closed, t0),
        transition(
            BreakerState::Open,
            BreakerState::ForcedClosed,
            TripReason::Forced
        )
    );
    for _ in 0..50 {
        assert_eq!(call(&breaker, CallResult::Failure, t0), None);
    }
    let snapshot = breaker.snapshot(t0 + secs(3600));
    assert_eq!(snapshot.state, BreakerState::ForcedClosed);
    assert_eq!(
        breaker.force(Force::Open, t0),
        transition(
            BreakerState::ForcedClosed,
            BreakerState::ForcedOpen,
            TripReason::Forced
        )
    );
}

#[test]
fn reset_clears_the_window_the_run_and_the_backoff() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    call(&breaker, CallResult::Failure, t0 + secs(5));
    assert_eq!(breaker.snapshot(t0).current_open_duration, secs(10));
    assert_eq!(
        breaker.force(Force::Reset, t0 + secs(6)),
        transition(BreakerState::Open, BreakerState::Closed, TripReason::Reset)
    );
    let snapshot = breaker.snapshot(t0 + secs(6));
    assert_eq!(snapshot.window, WindowTotals::default());
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.current_open_duration, secs(5));
    assert_eq!(snapshot.n_trips, 2);
}

#[test]
fn reset_while_closed_reports_nothing_but_clears_and_starts_a_new_epoch() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    for _ in 0..4 {
        call(&breaker, CallResult::Failure, t0);
    }
    let before_reset = breaker.try_acquire(t0).unwrap();
    assert_eq!(breaker.force(Force::Reset, t0), None);
    assert_eq!(breaker.snapshot(t0).consecutive_failures, 0);
    assert_eq!(breaker.snapshot(t0).window, WindowTotals::default());
    // A call admitted before the reset does not count after it.
    assert_eq!(before_reset.record(CallResult::Failure, t0), None);
    assert_eq!(breaker.snapshot(t0).window, WindowTotals::default());
}

#[test]
fn reset_from_half_open_closes() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let probe = breaker.try_acquire(t0 + secs(5)).unwrap();
    assert_eq!(
        breaker.force(Force::Reset, t0 + secs(5)),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            TripReason::Reset
        )
    );
    assert_eq!(probe.record(CallResult::Failure, t0 + secs(5)), None);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot(t0).half_open_in_flight, 0);
}

#[test]
fn time_window_forgets_old_failures() {
    let (breaker, t0) = breaker(BreakerConfig {
        window: WindowConfig::Time(secs(10)),
        ..rates_only()
    });
    for _ in 0..19 {
        call(&breaker, CallResult::Failure, t0);
    }
    // Ten seconds later those 19 failures have left the window.
    let t1 = t0 + secs(10);
    assert_eq!(call(&breaker, CallResult::Failure, t1), None);
    assert_eq!(breaker.snapshot(t1).window.calls, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn zero_probe_settings_are_clamped_so_the_breaker_cannot_wedge() {
    let (breaker, t0) = breaker(BreakerConfig {
        half_open_max_calls: 0,
        half_open_successes: 0,
        ..BreakerConfig::default()
    });
    assert_eq!(breaker.config().half_open_max_calls, 1);
    trip(&breaker, t0);
    assert_eq!(
        call(&breaker, CallResult::Success, t0 + secs(5)),
        transition(
            BreakerState::HalfOpen,
            BreakerState::Closed,
            TripReason::ProbesSucceeded
        )
    );
}

#[test]
fn snapshot_serializes_with_spec_names() {
    let (breaker, t0) = breaker(BreakerConfig::default());
    trip(&breaker, t0);
    let json = serde_json::to_value(breaker.snapshot(t0 + secs(1))).unwrap();
    assert_eq!(json["state"], "open");
    assert_eq!(json["open_remaining_ms"], 4_000);
    assert_eq!(json["current_open_duration_ms"], 5_000);
    assert_eq!(json["window"]["failures"], 5);
    let json = serde_json::to_value(breaker.snapshot(t0 + secs(5))).unwrap();
    assert_eq!(json["state"], "half_open");
    assert!(json["open_remaining_ms"].is_null());
    let transition = Transition {
        from: BreakerState::HalfOpen,
        to: BreakerState::ForcedOpen,
        reason: TripReason::ProbesSucceeded,
    };
    assert_eq!(
        serde_json::to_string(&transition).unwrap(),
        r#"{"from":"half_open","to":"forced_open","reason":"probes_succeeded"}"#
    );
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record(usize, CallResult),
    Drop(usize),
    Advance(u64),
    Force(Force),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        Just(CallResult::Success),
        Just(CallResult::Failure),
        Just(CallResult::Slow),
        Just(CallResult::Ignored),
    ];
    let force = prop_oneof![Just(Force::Open), Just(Force::Closed), Just(Force::Reset)];
    prop_oneof![
        6 => Just(Op::Acquire),
        5 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Record(i, o)),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => (0u64..1_500).prop_map(Op::Advance),
        1 => force.prop_map(Op::Force),
    ]
}

proptest! {
    /// Half-open never has more than `half_open_max_calls` probe tickets
    /// alive, the breaker's count of them is exact, every transition starts
    /// from the state before it, and no slot leaks.
    #[test]
    fn half_open_never_admits_more_than_max_probes(
        max_probes in 1u32..4,
        successes in 1u32..4,
        consecutive in 1u32..4,
        slow_rate in proptest::option::of(0.3f64..1.0),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let config = BreakerConfig {
            consecutive_failures: consecutive,
            slow_call_rate: slow_rate,
            minimum_calls: 4,
            window: WindowConfig::Count(8),
            open_duration: ms(500),
            max_open_duration: ms(2_000),
            half_open_max_calls: max_probes,
            half_open_successes: successes,
            ..BreakerConfig::default()
        };
        let (breaker, mut now) = breaker(config);
        let mut tickets: Vec<BreakerTicket> = Vec::new();
        for op in ops {
            let before = breaker.state();
            let transition = match op {
                Op::Acquire => match breaker.try_acquire(now) {
                    Ok(ticket) => {
                        let transition = ticket.transition();
                        tickets.push(ticket);
                        transition
                    }
                    Err(rejected) => rejected.transition,
                },
                Op::Record(i, outcome) if !tickets.is_empty() => {
                    let ticket = tickets.swap_remove(i % tickets.len());
                    ticket.record(outcome, now)
                }
                Op::Drop(i) if !tickets.is_empty() => {
                    drop(tickets.swap_remove(i % tickets.len()));
                    None
                }
                Op::Advance(step) => {
                    now += ms(step);
                    None
                }
                Op::Force(action) => breaker.force(action, now),
                Op::Record(..) | Op::Drop(_) => None,
            };
            match transition {
                Some(transition) => {
                    prop_assert_eq!(transition.from, before);
                    prop_assert_eq!(transition.to, breaker.state());
                }
                None => prop_assert_eq!(breaker.state(), before),
            }
            let probes = tickets.iter().filter(|ticket| ticket.is_probe()).count() as u32;
            prop_assert!(probes <= max_probes);
            prop_assert_eq!(breaker.snapshot(now).half_open_in_flight, probes);
        }
        drop(tickets);
        prop_assert_eq!(breaker.snapshot(now).half_open_in_flight, 0);
    }
}
