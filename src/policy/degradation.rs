//! Degradation levels (SPEC §4.3): when the upstream cannot serve
//! everything, which routes give way first — decided from signals, with
//! hysteresis so the level does not flap.
//!
//! Five levels, each route a priority:
//!
//! | level | best_effort | normal | critical |
//! | --- | --- | --- | --- |
//! | `normal` | served | served | served |
//! | `minimal` | no retries | served | served |
//! | `moderate` | gives way | no retries | served |
//! | `severe` | gives way | gives way | no retries |
//! | `emergency` | gives way | gives way | served, no retries |
//!
//! A route that "gives way" gets its fallback (or 503 `degraded`) without
//! reaching the upstream; a route stops retrying one level before it gives
//! way, so the load it adds shrinks first. Critical routes always reach
//! the upstream.
//!
//! [`AutoLevel`] picks the level from [`Signals`] sampled once a second:
//! the share of requests shed, breakers open, upstreams unavailable, and
//! whether a recovery is in progress. It rises once the signals have held
//! for `raise_after` (2s by default), and falls one step at a time, each
//! only after the signals have stayed below it for `lower_after` (15s):
//! quick to protect, slow to trust again.

use std::time::Duration;

use tokio::time::Instant;

/// A degradation level, from nothing shed to only critical routes served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// Nothing gives way.
    Normal = 0,
    /// Best-effort routes stop retrying.
    Minimal = 1,
    /// Best-effort routes give way; normal routes stop retrying.
    Moderate = 2,
    /// Normal routes give way too; critical routes stop retrying.
    Severe = 3,
    /// Only critical routes reach the upstream.
    Emergency = 4,
}

/// How much a route matters when breakwater degrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Gives way first (at `moderate`).
    BestEffort,
    /// Gives way at `severe`.
    #[default]
    Normal,
    /// Always reaches the upstream.
    Critical,
}

impl Priority {
    /// The SPEC's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::BestEffort => "best_effort",
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }
}

// === impl Level ===

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 5] = [
        Level::Normal,
        Level::Minimal,
        Level::Moderate,
        Level::Severe,
        Level::Emergency,
    ];

    /// The SPEC's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Minimal => "minimal",
            Level::Moderate => "moderate",
            Level::Severe => "severe",
            Level::Emergency => "emergency",
        }
    }

    /// The level named `word`.
    pub fn from_word(word: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == word)
    }

    /// The level stored as `value` (unknown values read as `Normal`).
    pub fn from_u8(value: u8) -> Level {
        Level::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(Level::Normal)
    }

    /// The level one step down.
    pub fn lower(self) -> Level {
        Level::from_u8((self as u8).saturating_sub(1))
    }

    /// Whether a route of `priority` gives way at this level.
    pub fn sheds(self, priority: Priority) -> bool {
        match priority {
            Priority::Critical => false,
            Priority::Normal => self >= Level::Severe,
            Priority::BestEffort => self >= Level::Moderate,
        }
    }

    /// Whether a route of `priority` may still retry at this level.
    pub fn retries(self, priority: Priority) -> bool {
        let stops_at = match priority {
            Priority::BestEffort => Level::Minimal,
            Priority::Normal => Level::Moderate,
            Priority::Critical => Level::Severe,
        };
        self < stops_at
    }
}

/// What the automatic level is decided from, sampled once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Requests shed (bulkhead, connection queue, overload) over requests,
    /// in the last sampling window.
    pub shed_rate: f64,
    /// Routes whose breaker is open (or forced open).
    pub breakers_open: usize,
    /// Routes with a breaker.
    pub breakers: usize,
    /// Upstreams that cannot take traffic at all (no endpoint available,
    /// or their supervised process down).
    pub upstreams_down: usize,
    /// Upstreams.
    pub upstreams: usize,
    /// A supervised process is being brought back.
    pub recovering: bool,
}

impl Signals {
    /// The level these signals call for.
    pub fn target(&self) -> Level {
        let mut level = Level::Normal;
        let mut at_least = |candidate: Level| level = level.max(candidate);
        if self.shed_rate >= 0.5 {
            at_least(Level::Severe);
        } else if self.shed_rate >= 0.2 {
            at_least(Level::Moderate);
        } else if self.shed_rate >= 0.05 {
            at_least(Level::Minimal);
        }
        if self.breakers_open > 0 {
            at_least(Level::Minimal);
            if self.breakers_open * 2 >= self.breakers.max(1) {
                at_least(Level::Moderate);
            }
        }
        if self.upstreams_down > 0 {
            at_least(Level::Moderate);
            if self.upstreams_down >= self.upstreams.max(1) {
                at_least(Level::Severe);
            }
        }
        if self.recovering {
            at_least(Level::Minimal);
        }
        level
    }
}

/// The automatic level, with hysteresis.
#[derive(Debug, Clone)]
pub struct AutoLevel {
    raise_after: Duration,
    lower_after: Duration,
    level: Level,
    /// Since when the signals have called for more than `level`, and the
    /// most they called for meanwhile.
    above: Option<(Instant, Level)>,
    /// Since when they have called for less.
    below: Option<Instant>,
}

impl AutoLevel {
    /// At `normal`: rises when signals have called for more for
    /// `raise_after`, falls a step each `lower_after` they call for less.
    pub fn new(raise_after: Duration, lower_after: Duration) -> Self {
        AutoLevel {
            raise_after,
            lower_after,
            level: Level::Normal,
            above: None,
            below: None,
        }
    }

    /// New timing from a reload; the level is kept.
    pub fn set_timing(&mut self, raise_after: Duration, lower_after: Duration) {
        self.raise_after = raise_after;
        self.lower_after = lower_after;
    }

    /// The level now.
    pub fn level(&self) -> Level {
        self.level
    }

    /// One sample of the signals at `now`; the new level if it changed.
    pub fn update(&mut self, signals: &Signals, now: Instant) -> Option<Level> {
        let target = signals.target();
        if target > self.level {
            self.below = None;
            let (since, most) = self.above.get_or_insert((now, target));
            *most = (*most).max(target);
            if now.saturating_duration_since(*since) >= self.raise_after {
                // Up to what the signals called for, at least, throughout.
                self.level = target;
                self.above = None;
                return Some(self.level);
            }
            return None;
        }
        self.above = None;
        if target < self.level {
            let since = *self.below.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.lower_after {
                self.level = self.level.lower();
                // The next step waits a full period again.
                self.below = (target < self.level).then_some(now);
                return Some(self.level);
            }
        } else {
            self.below = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn each_level_sheds_and_stops_retrying_in_priority_order() {
        use Priority::*;
        let served =
            |level: Level| [BestEffort, Normal, Critical].map(|priority| !level.sheds(priority));
        assert_eq!(served(Level::Normal), [true, true, true]);
        assert_eq!(served(Level::Minimal), [true, true, true]);
        assert_eq!(served(Level::Moderate), [false, true, true]);
        assert_eq!(served(Level::Severe), [false, false, true]);
        assert_eq!(served(Level::Emergency), [false, false, true]);
        assert!(!Level::Minimal.retries(BestEffort));
        assert!(Level::Minimal.retries(Normal));
        assert!(!Level::Moderate.retries(Normal));
        assert!(Level::Moderate.retries(Critical));
        assert!(!Level::Severe.retries(Critical));
    }

    #[test]
    fn signals_call_for_levels() {
        assert_eq!(Signals::default().target(), Level::Normal);
        let shedding = |shed_rate| Signals {
            shed_rate,
            ..Signals::default()
        };
        assert_eq!(shedding(0.06).target(), Level::Minimal);
        assert_eq!(shedding(0.3).target(), Level::Moderate);
        assert_eq!(shedding(0.6).target(), Level::Severe);
        let breakers = Signals {
            breakers_open: 1,
            breakers: 4,
            ..Signals::default()
        };
        assert_eq!(breakers.target(), Level::Minimal);
        let half = Signals {
            breakers_open: 2,
            breakers: 4,
            ..Signals::default()
        };
        assert_eq!(half.target(), Level::Moderate);
        let all_down = Signals {
            upstreams_down: 1,
            upstreams: 1,
            ..Signals::default()
        };
        assert_eq!(all_down.target(), Level::Severe);
        let recovering = Signals {
            recovering: true,
            ..Signals::default()
        };
        assert_eq!(recovering.target(), Level::Minimal);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn rises_after_the_signals_hold_and_falls_one_step_at_a_time() {
        let mut auto = AutoLevel::new(secs(2), secs(15));
        let start = Instant::now();
        let overloaded = Signals {
            shed_rate: 0.6,
            ..Signals::default()
        };
        assert_eq!(auto.update(&overloaded, start), None);
        assert_eq!(auto.update(&overloaded, start + secs(1)), None);
        assert_eq!(
            auto.update(&overloaded, start + secs(2)),
            Some(Level::Severe)
        );
        let calm = Signals::default();
        let mut now = start + secs(2);
        let mut steps = Vec::new();
        for _ in 0..60 {
            now += secs(1);
            if let Some(level) = auto.update(&calm, now) {
                steps.push((now - start, level));
            }
        }
        assert_eq!(
            steps,
            [
                (secs(18), Level::Moderate),
                (secs(33), Level::Minimal),
                (secs(48), Level::Normal)
            ]
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_flapping_signal_does_not_flap_the_level() {
        let mut auto = AutoLevel::new(secs(2), secs(15));
        let start = Instant::now();
        let high = Signals {
            shed_rate: 0.3,
            ..Signals::default()
        };
        let low = Signals::default();
        let mut changes = 0;
        for tick in 0..120u64 {
            let signals = if tick % 2 == 0 { high } else { low };
            if auto.update(&signals, start + secs(tick)).is_some() {
                changes += 1;
            }
        }
        // A signal that never holds for two seconds never raises the level.
        assert_eq!(changes, 0);
        assert_eq!(auto.level(), Level::Normal);
    }
}
