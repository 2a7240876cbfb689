//! What the supervisor may do given its dependencies (SPEC §12): a pure
//! decision, check results and `now` in, verdicts out.
//!
//! A dependency is something the process needs and a restart cannot fix —
//! a database, a queue, a disk. Until every *required* one has been seen
//! up, the child is not started; while one is down, recovery holds: the
//! ladder takes no action on triggers and an exited child waits instead of
//! being restarted into the same failure. Optional dependencies are only
//! reported. A dependency is down after `unhealthy_threshold` failed checks
//! in a row (at once, before its first pass) and up again after one pass.

use tokio::time::Instant;

/// One dependency's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// Its name.
    pub name: String,
    /// Whether the child waits for it.
    pub required: bool,
    /// `None` until the first check; then whether it is up.
    pub up: Option<bool>,
    /// Since when `up` has held (or since the board was made).
    pub since: Instant,
    failures_in_a_row: u32,
    unhealthy_threshold: u32,
}

/// A change of one dependency, for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It went down (or was down at its first check).
    Down,
    /// It came up (or was up at its first check).
    Up,
}

/// What the supervisor may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start, restart, climb the ladder: nothing it needs is missing.
    Proceed,
    /// Hold: these required dependencies are down (or not checked yet).
    Hold {
        /// Their names.
        waiting_for: Vec<String>,
    },
}

impl Verdict {
    /// Whether the supervisor must hold.
    pub fn holds(&self) -> bool {
        matches!(self, Verdict::Hold { .. })
    }
}

/// Every dependency's standing.
#[derive(Debug, Clone, Default)]
pub struct Board {
    standings: Vec<Standing>,
}

impl Board {
    /// A board of `(name, required, unhealthy_threshold)`, nothing checked.
    pub fn new(dependencies: impl IntoIterator<Item = (String, bool, u32)>, now: Instant) -> Self {
        Board {
            standings: dependencies
                .into_iter()
                .map(|(name, required, unhealthy_threshold)| Standing {
                    name,
                    required,
                    up: None,
                    since: now,
                    failures_in_a_row: 0,
                    unhealthy_threshold: unhealthy_threshold.max(1),
                })
                .collect(),
        }
    }

    /// Every standing, in config order.
    pub fn standings(&self) -> &[Standing] {
        &self.standings
    }

    /// Records a check of dependency `index`; returns its change, if any.
    pub fn record(&mut self, index: usize, passed: bool, now: Instant) -> Option<Change> {
        let standing = self.standings.get_mut(index)?;
        let next = if passed {
            standing.failures_in_a_row = 0;
            true
        } else {
            standing.failures_in_a_row = standing.failures_in_a_row.saturating_add(1);
            // Still up while the misses stay under the threshold; down at
            // once when it was not up yet.
            standing.up == Some(true) && standing.failures_in_a_row < standing.unhealthy_threshold
        };
        if standing.up == Some(next) {
            return None;
        }
        standing.up = Some(next);
        standing.since = now;
        Some(if next { Change::Up } else { Change::Down })
    }

    /// May the child be started, restarted, or the ladder act?
    pub fn verdict(&self) -> Verdict {
        let waiting_for: Vec<String> = self
            .standings
            .iter()
            .filter(|standing| standing.required && standing.up != Some(true))
            .map(|standing| standing.name.clone())
            .collect();
        if waiting_for.is_empty() {
            Verdict::Proceed
        } else {
            Verdict::Hold { waiting_for }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn board() -> Board {
        Board::new(
            [("db".to_owned(), true, 2), ("cache".to_owned(), false, 1)],
            Instant::now(),
        )
    }

    #[test]
    fn nothing_starts_before_every_required_dependency_was_seen_up() {
        let mut board = board();
        let t = Instant::now();
        assert_eq!(
            board.verdict(),
            Verdict::Hold {
                waiting_for: vec!["db".into()]
            },
            "unchecked is not up"
        );
        assert_eq!(
            board.record(0, false, t),
            Some(Change::Down),
            "down at once before its first pass"
        );
        assert!(board.verdict().holds());
        assert_eq!(board.record(1, false, t), Some(Change::Down));
        assert_eq!(board.record(0, true, t), Some(Change::Up));
        assert_eq!(
            board.verdict(),
            Verdict::Proceed,
            "an optional dependency never holds"
        );
    }

    #[test]
    fn a_running_dependency_goes_down_after_its_threshold_and_comes_back_at_once() {
        let mut board = board();
        let t = Instant::now();
        assert_eq!(board.record(0, true, t), Some(Change::Up));
        assert_eq!(
            board.record(0, false, t + Duration::from_secs(1)),
            None,
            "one miss is not down"
        );
        assert_eq!(board.verdict(), Verdict::Proceed);
        assert_eq!(
            board.record(0, false, t + Duration::from_secs(2)),
            Some(Change::Down)
        );
        assert!(board.verdict().holds(), "recovery holds while it is down");
        assert_eq!(board.standings()[0].since, t + Duration::from_secs(2));
        assert_eq!(board.record(0, false, t + Duration::from_secs(3)), None);
        assert_eq!(
            board.record(0, true, t + Duration::from_secs(4)),
            Some(Change::Up)
        );
        assert_eq!(
            board.verdict(),
            Verdict::Proceed,
            "and resumes when it is back"
        );
    }

    #[test]
    fn no_dependencies_never_hold() {
        assert_eq!(Board::default().verdict(), Verdict::Proceed);
        assert_eq!(Board::default().record(3, true, Instant::now()), None);
    }
}
