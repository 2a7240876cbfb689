//! The recovery ladder (SPEC §5.3): what to try next when a
//! sustained-failure trigger fires. Pure: triggers, results and `now` in,
//! actions out.
//!
//! Each rung (`restart`, `failover`, `exec`, `escalate`) is tried up to
//! `max_attempts` times; an attempt that does not bring the upstream back
//! to health before the next trigger counts as failed, and the ladder
//! climbs. Attempts are at least `cooldown` apart, only one runs at a time,
//! and once the upstream has been healthy for `stable_for` the ladder
//! resets to its first rung. `escalate` is the top: stop acting, mark the
//! upstream as needing intervention, keep serving what can be served.

use std::time::Duration;

use tokio::time::Instant;

/// One rung: owned by config, where the ladder is written.
pub use crate::config::RecoveryAction as Action;

/// `supervisor.recovery`.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderConfig {
    /// Rungs in order.
    pub ladder: Vec<Action>,
    /// Attempts per rung before climbing.
    pub max_attempts: u32,
    /// Least time between two attempts.
    pub cooldown: Duration,
    /// Healthy this long and the ladder starts over.
    pub stable_for: Duration,
}

/// Where the ladder is.
#[derive(Debug)]
pub struct Ladder {
    config: LadderConfig,
    rung: usize,
    attempts_on_rung: u32,
    last_attempt: Option<Instant>,
    in_progress: bool,
    healthy_since: Option<Instant>,
    escalated: bool,
}

impl Ladder {
    /// A ladder at its first rung.
    pub fn new(config: LadderConfig) -> Self {
        Ladder {
            config,
            rung: 0,
            attempts_on_rung: 0,
            last_attempt: None,
            in_progress: false,
            healthy_since: None,
            escalated: false,
        }
    }

    /// The rung the next attempt would use.
    pub fn rung(&self) -> Option<Action> {
        self.config.ladder.get(self.rung).copied()
    }

    /// Whether the ladder reached `escalate`.
    pub fn escalated(&self) -> bool {
        self.escalated
    }

    /// A trigger fired at `now`: the action to take, if any (none while an
    /// attempt runs, within the cooldown, or after escalation).
    pub fn on_trigger(&mut self, now: Instant) -> Option<Action> {
        self.healthy_since = None;
        if self.in_progress || self.escalated {
            return None;
        }
        if self
            .last_attempt
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.cooldown)
        {
            return None;
        }
        if self.attempts_on_rung >= self.config.max_attempts.max(1) {
            self.rung += 1;
            self.attempts_on_rung = 0;
        }
        let action = self.rung().unwrap_or(Action::Escalate);
        self.attempts_on_rung += 1;
        self.last_attempt = Some(now);
        if action == Action::Escalate {
            self.escalated = true;
        } else {
            self.in_progress = true;
        }
        Some(action)
    }

    /// The current attempt finished (its effect is judged by later triggers).
    pub fn on_done(&mut self) {
        self.in_progress = false;
    }

    /// The upstream is healthy at `now`; after `stable_for` the ladder
    /// resets — escalation included: an upstream that has been healthy
    /// that long no longer needs a human, and its next failure must be
    /// acted on again. Returns true when it just reset.
    pub fn on_healthy(&mut self, now: Instant) -> bool {
        let since = *self.healthy_since.get_or_insert(now);
        let climbed = self.rung > 0 || self.attempts_on_rung > 0 || self.escalated;
        if climbed
            && !self.in_progress
            && now.saturating_duration_since(since) >= self.config.stable_for
        {
            self.reset();
            return true;
        }
        false
    }

    /// Back to the first rung, escalation cleared: an operator restarted
    /// the upstream, saying the cause is dealt with.
    pub fn reset(&mut self) {
        self.rung = 0;
        self.attempts_on_rung = 0;
        self.last_attempt = None;
        self.in_progress = false;
        self.healthy_since = None;
        self.escalated = false;
    }

    /// New settings from a reload; where the ladder stands is kept.
    pub fn reconfigure(&mut self, config: LadderConfig) {
        self.config = config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(max_attempts: u32) -> Ladder {
        Ladder::new(LadderConfig {
            ladder: vec![Action::Restart, Action::Failover, Action::Escalate],
            max_attempts,
            cooldown: Duration::from_secs(10),
            stable_for: Duration::from_secs(60),
        })
    }

    #[test]
    fn climbs_one_rung_per_failed_attempts_and_respects_the_cooldown() {
        let mut ladder = ladder(2);
        let t = Instant::now();
        assert_eq!(ladder.on_trigger(t), Some(Action::Restart));
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(1)),
            None,
            "one at a time"
        );
        ladder.on_done();
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(5)),
            None,
            "cooldown"
        );
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(11)),
            Some(Action::Restart)
        );
        ladder.on_done();
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(22)),
            Some(Action::Failover)
        );
        ladder.on_done();
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(33)),
            Some(Action::Failover)
        );
        ladder.on_done();
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(44)),
            Some(Action::Escalate)
        );
        assert!(ladder.escalated());
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(100)),
            None,
            "escalation is final"
        );
    }

    #[test]
    fn resets_after_being_healthy_for_stable_for() {
        let mut ladder = ladder(1);
        let t = Instant::now();
        assert_eq!(ladder.on_trigger(t), Some(Action::Restart));
        ladder.on_done();
        assert!(!ladder.on_healthy(t + Duration::from_secs(20)));
        assert!(!ladder.on_healthy(t + Duration::from_secs(60)));
        assert!(ladder.on_healthy(t + Duration::from_secs(81)));
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(90)),
            Some(Action::Restart),
            "back at the first rung"
        );
    }

    #[test]
    fn escalation_clears_after_a_stable_period_and_on_an_operator_reset() {
        let mut ladder = Ladder::new(LadderConfig {
            ladder: vec![Action::Escalate],
            max_attempts: 1,
            cooldown: Duration::from_secs(10),
            stable_for: Duration::from_secs(60),
        });
        let t = Instant::now();
        assert_eq!(ladder.on_trigger(t), Some(Action::Escalate));
        assert!(ladder.escalated());
        assert!(!ladder.on_healthy(t + Duration::from_secs(30)));
        assert!(ladder.on_healthy(t + Duration::from_secs(91)));
        assert!(!ladder.escalated());
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(100)),
            Some(Action::Escalate),
            "a later failure is acted on again"
        );
        ladder.reset();
        assert!(!ladder.escalated());
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(101)),
            Some(Action::Escalate),
            "an operator's reset clears the cooldown too"
        );
    }

    #[test]
    fn a_trigger_interrupts_the_stable_period() {
        let mut ladder = ladder(1);
        let t = Instant::now();
        let _ = ladder.on_trigger(t);
        ladder.on_done();
        let _ = ladder.on_healthy(t + Duration::from_secs(20));
        assert_eq!(
            ladder.on_trigger(t + Duration::from_secs(40)),
            Some(Action::Failover)
        );
        ladder.on_done();
        assert!(
            !ladder.on_healthy(t + Duration::from_secs(90)),
            "the clock restarted at 40s+"
        );
    }
}
