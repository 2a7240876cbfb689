//! Deploy auto-rollback (SPEC §12): a new process spec on watch.
//!
//! When a reload changes the process spec (command, args, env, cwd) and
//! `supervisor.rollback` is on, the supervisor keeps a [`Deploy`]: the
//! spec that was last stable (ready for `rollback.stable_for`), when the
//! new one started, and the gate's try counts then. Within `window`, a
//! failed start of the new spec (an exit before it was ready or within
//! `backoff.reset_after` of it, a missed `startup_timeout`, a failing
//! health check, or it cannot be spawned) or an error rate at or above
//! `rollback.error_rate` since it started restores the stable spec at
//! once, emits `rollback`, and refuses the bad spec until the config
//! changes it. A spec is only remembered as stable when no deploy is
//! under watch, so a rollback never restores the spec it is rolling back.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Process, Rollback};

/// A changed spec under watch.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// The spec to restore.
    pub good: Process,
    /// When the new spec was taken.
    pub started: Instant,
    /// `supervisor.rollback` at the time.
    pub settings: Rollback,
    /// The gate's (tries, failed tries) when it was taken.
    pub tries_at_start: (u64, u64),
}

impl Deploy {
    /// Whether the watch is over at `now` (the new spec is kept).
    pub fn accepted(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= self.settings.window
    }

    /// The error rate since the new spec started, when it has crossed
    /// `error_rate` with at least `min_requests` tries: its description.
    pub fn error_rate_crossed(&self, tries: u64, failed: u64) -> Option<String> {
        let threshold = self.settings.error_rate?;
        let tries = tries.saturating_sub(self.tries_at_start.0);
        let failed = failed.saturating_sub(self.tries_at_start.1);
        (tries >= self.settings.min_requests && failed as f64 / tries as f64 >= threshold)
            .then(|| format!("error rate {failed}/{tries} reached {threshold}"))
    }
}

/// How long a spec must run ready to be the one a rollback restores, when
/// rollback is off (the remembered spec is used if it is turned on later).
pub const DEFAULT_STABLE_FOR: Duration = Duration::from_secs(30);

/// The last rollback, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackStatus {
    /// The spec that failed.
    pub from: String,
    /// The spec restored.
    pub to: String,
    /// Why.
    pub reason: String,
    /// When, on the wall clock.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_rate_counts_from_the_deploy_and_waits_for_enough_tries() {
        let deploy = Deploy {
            good: crate::config::Process::from_command(&["app".to_owned()]).unwrap(),
            started: Instant::now(),
            settings: Rollback {
                window: Duration::from_secs(120),
                error_rate: Some(0.5),
                min_requests: 10,
                stable_for: Duration::from_secs(30),
            },
            tries_at_start: (1000, 900),
        };
        assert_eq!(deploy.error_rate_crossed(1009, 909), None, "9 tries");
        assert_eq!(deploy.error_rate_crossed(1010, 904), None, "4 of 10 failed");
        assert!(deploy.error_rate_crossed(1010, 905).is_some());
        assert!(!deploy.accepted(deploy.started + Duration::from_secs(119)));
        assert!(deploy.accepted(deploy.started + Duration::from_secs(120)));
    }
}
