//! The overload ladder of SPEC §11 as a pure decision: breakwater's own
//! resident memory in, a level out.
//!
//! When breakwater's RSS nears `overload.memory`, it first stops keep-alive
//! (each HTTP/1 response closes its connection, so idle clients release
//! their buffers), then sheds new requests with 503
//! `x-breakwater-reason: overload`. Each step is entered at a higher mark
//! than it is left, so a process hovering at a threshold does not flap.
//!
//! What it does not do: read memory (`crate::sys`), run on a timer
//! (`crate::sampler`) or refuse requests (the data plane's admission layer
//! reads the level the sampler publishes).

/// The ladder's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Below every mark.
    Normal = 0,
    /// Responses close their HTTP/1 connections.
    StopKeepAlive = 1,
    /// New requests get 503 overload.
    Shed = 2,
}

impl Level {
    /// Label for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::StopKeepAlive => "stop_keep_alive",
            Level::Shed => "shed",
        }
    }

    /// The level stored as `value` (unknown values read as `Normal`).
    pub fn from_u8(value: u8) -> Level {
        match value {
            1 => Level::StopKeepAlive,
            2 => Level::Shed,
            _ => Level::Normal,
        }
    }
}

/// Fractions of the limit where each step is entered and left.
const ENTER_STOP_KEEP_ALIVE: f64 = 0.85;
const LEAVE_STOP_KEEP_ALIVE: f64 = 0.80;
const ENTER_SHED: f64 = 0.95;
const LEAVE_SHED: f64 = 0.90;

/// The watermark ladder: a pure function of RSS samples.
#[derive(Debug, Clone)]
pub struct Ladder {
    limit: u64,
    level: Level,
}

impl Ladder {
    /// A ladder for `limit` bytes, starting at `Normal`.
    pub fn new(limit: u64) -> Self {
        Ladder {
            limit,
            level: Level::Normal,
        }
    }

    /// Changes the limit (on reload); the level is re-evaluated on the
    /// next sample.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Takes a sample; returns the new level if it changed. Moves as many
    /// steps as the sample justifies, up or down.
    pub fn update(&mut self, rss: u64) -> Option<Level> {
        let ratio = rss as f64 / self.limit.max(1) as f64;
        let next = match self.level {
            Level::Normal if ratio >= ENTER_SHED => Level::Shed,
            Level::Normal if ratio >= ENTER_STOP_KEEP_ALIVE => Level::StopKeepAlive,
            Level::StopKeepAlive if ratio >= ENTER_SHED => Level::Shed,
            Level::StopKeepAlive if ratio < LEAVE_STOP_KEEP_ALIVE => Level::Normal,
            Level::Shed if ratio < LEAVE_STOP_KEEP_ALIVE => Level::Normal,
            Level::Shed if ratio < LEAVE_SHED => Level::StopKeepAlive,
            same => same,
        };
        (next != self.level).then(|| {
            self.level = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn climbs_in_order_and_releases_with_hysteresis() {
        let mut ladder = Ladder::new(100 * MIB);
        assert_eq!(ladder.update(50 * MIB), None);
        assert_eq!(ladder.update(86 * MIB), Some(Level::StopKeepAlive));
        assert_eq!(ladder.update(84 * MIB), None, "inside the hysteresis band");
        assert_eq!(ladder.update(96 * MIB), Some(Level::Shed));
        assert_eq!(ladder.update(92 * MIB), None, "inside the hysteresis band");
        assert_eq!(ladder.update(89 * MIB), Some(Level::StopKeepAlive));
        assert_eq!(ladder.update(81 * MIB), None);
        assert_eq!(ladder.update(79 * MIB), Some(Level::Normal));
    }

    #[test]
    fn jumps_several_steps_when_the_sample_says_so() {
        let mut ladder = Ladder::new(100 * MIB);
        assert_eq!(ladder.update(200 * MIB), Some(Level::Shed));
        assert_eq!(ladder.update(10 * MIB), Some(Level::Normal));
    }
}
