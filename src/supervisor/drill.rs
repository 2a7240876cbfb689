//! Drills (SPEC §12): chaos for the service. `POST
//! /upstreams/{name}/drill {"action": "kill" | "hang"}` sends the running
//! child SIGKILL or SIGSTOP, and the supervisor then does what it would do
//! for real — sees the exit at once, or a trigger (the health check, the
//! error rate, a breaker) for a hung process — while this records the
//! times a team reports after a game day: *detection*, from the signal
//! until an exit or a trigger was seen, and *recovery*, from the signal
//! until the upstream served again (the new process ready, or traffic
//! failed over to the backups).
//!
//! A hung child gets SIGCONT once it is no longer in the way: just before
//! it is stopped and replaced (so it can honour its stop signal), or after
//! a recovery that left it running (a failover). Drills are refused while
//! the upstream is in maintenance, while nothing runs or is ready yet, and
//! while another drill is under way.

use serde::Serialize;
use tokio::time::Instant;

/// What a drill does to the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillAction {
    /// SIGKILL: a crash.
    Kill,
    /// SIGSTOP: a hang (the process stays, answering nothing).
    Hang,
}

impl DrillAction {
    /// `kill` or `hang`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillAction::Kill => "kill",
            DrillAction::Hang => "hang",
        }
    }

    /// Parses `kill` or `hang`.
    pub fn from_word(word: &str) -> Option<DrillAction> {
        match word {
            "kill" => Some(DrillAction::Kill),
            "hang" => Some(DrillAction::Hang),
            _ => None,
        }
    }

    /// The signal sent.
    pub fn signal(self) -> i32 {
        match self {
            DrillAction::Kill => libc::SIGKILL,
            DrillAction::Hang => libc::SIGSTOP,
        }
    }
}

/// The drill under way.
#[derive(Debug, Clone)]
pub struct ActiveDrill {
    /// What was done.
    pub action: DrillAction,
    /// To which process.
    pub pid: u32,
    /// When the signal was sent.
    pub started: Instant,
    /// When and by what the trouble was seen.
    pub detected: Option<(Instant, &'static str)>,
}

/// A drill as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DrillStatus {
    /// `kill` or `hang`.
    pub action: DrillAction,
    /// The process signalled.
    pub pid: u32,
    /// When, on the wall clock.
    pub started_at: String,
    /// `running`, `recovered`, or `interrupted` (an operator restarted the
    /// process, or breakwater stopped).
    pub state: &'static str,
    /// What saw it: `exit` or a trigger (`health_check`, `error_rate`, …).
    pub detected_by: Option<&'static str>,
    /// Seconds from the signal until it was seen.
    pub detection_seconds: Option<f64>,
    /// Seconds from the signal until the upstream served again.
    pub recovery_seconds: Option<f64>,
}

impl ActiveDrill {
    /// The status of a drill just started.
    pub fn status(&self) -> DrillStatus {
        DrillStatus {
            action: self.action,
            pid: self.pid,
            started_at: crate::events::rfc3339::now(),
            state: "running",
            detected_by: None,
            detection_seconds: None,
            recovery_seconds: None,
        }
    }

    /// Notes what saw the trouble at `now`, if nothing did before; returns
    /// whether this was the detection.
    pub fn detect(&mut self, by: &'static str, now: Instant) -> bool {
        if self.detected.is_some() {
            return false;
        }
        self.detected = Some((now, by));
        true
    }

    /// (detection, recovery) in seconds for a recovery at `now`. A recovery
    /// that nothing detected first counts as detected then.
    pub fn times(&self, now: Instant) -> (f64, f64) {
        let detected = self.detected.map_or(now, |(at, _)| at);
        (
            detected
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            now.saturating_duration_since(self.started).as_secs_f64(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn detection_is_the_first_sighting_and_recovery_counts_from_the_signal() {
        let t = Instant::now();
        let mut drill = ActiveDrill {
            action: DrillAction::Hang,
            pid: 7,
            started: t,
            detected: None,
        };
        assert!(drill.detect("health_check", t + Duration::from_millis(300)));
        assert!(!drill.detect("exit", t + Duration::from_secs(1)));
        assert_eq!(drill.detected.map(|(_, by)| by), Some("health_check"));
        assert_eq!(drill.times(t + Duration::from_secs(2)), (0.3, 2.0));
        assert_eq!(DrillAction::from_word("hang"), Some(DrillAction::Hang));
        assert_eq!(DrillAction::from_word("stop"), None);
    }
}
