//! How long to wait before a retry (SPEC §3.4): exponential backoff with
//! full jitter, `base` 25ms and `max` 250ms by default.
//!
//! The one idea: **spread the retries out.** Plain exponential backoff
//! makes every client that failed together retry together, in waves.
//! "Full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*)
//! picks the delay uniformly in `[0, min(max, base × 2^attempt)]`: the
//! ceiling still grows exponentially, so a struggling upstream gets room,
//! while the retries land spread over the whole interval.
//!
//! The random number is an argument, so the delay is a pure function and
//! tests can pin it; the data plane passes `rand::random()` or similar.
//!
//! What it does not do: sleep, count attempts, or decide whether to retry
//! at all (see [`super::retry_budget`]).

use std::time::Duration;

/// Exponential backoff with full jitter; see the module docs.
///
/// Built by [`Backoff::try_new`] (or [`Default`]), so `0 < base <= max`
/// always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// Why [`Backoff::try_new`] refused its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `base` was zero, which would never back off.
    #[error("backoff base must be greater than zero")]
    ZeroBase,
    /// `base` was greater than `max`.
    #[error("backoff base ({base:?}) must not exceed max ({max:?})")]
    BaseAboveMax {
        /// The base given.
        base: Duration,
        /// The max given.
        max: Duration,
    },
}

// === impl Backoff ===

impl Default for Backoff {
    /// The SPEC defaults: base 25ms, max 250ms.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// A backoff from `base` growing to at most `max`; refuses a zero
    /// `base` or one above `max`.
    pub fn try_new(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() {
            return Err(InvalidBackoff::ZeroBase);
        }
        if base > max {
            return Err(InvalidBackoff::BaseAboveMax { base, max });
        }
        Ok(Backoff { base, max })
    }

    /// The delay before retry number `attempt` (0 for the first retry):
    /// uniform in `[0, min(max, base × 2^attempt)]`, picked by `random`
    /// (any `u64`; 0 gives 0, `u64::MAX` gives the ceiling).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ceiling_nanos = ceiling.as_nanos().min(u128::from(u64::MAX));
        // Scale `random` into [0, ceiling] by multiplying and keeping the
        // high bits: no division, no modulo bias beyond one part in 2^64.
        let scaled = (u128::from(random) * (ceiling_nanos + 1)) >> 64;
        // `scaled <= ceiling_nanos <= u64::MAX`, so the conversion holds.
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// The largest delay for `attempt`: `min(max, base × 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |grown| grown.min(self.max))
    }

    /// The first ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let backoff = Backoff::default();
        assert_eq!(backoff.base(), ms(25));
        assert_eq!(backoff.max(), ms(250));
    }

    #[test]
    fn try_new_refuses_zero_and_base_above_max() {
        assert_eq!(
            Backoff::try_new(Duration::ZERO, ms(1)),
            Err(InvalidBackoff::ZeroBase)
        );
        assert_eq!(
            Backoff::try_new(ms(2), ms(1)),
            Err(InvalidBackoff::BaseAboveMax {
                base: ms(2),
                max: ms(1)
            })
        );
        assert_eq!(Backoff::try_new(ms(1), ms(1)).unwrap().max(), ms(1));
        assert_eq!(
            InvalidBackoff::BaseAboveMax {
                base: ms(2),
                max: ms(1)
            }
            .to_string(),
            "backoff base (2ms) must not exceed max (1ms)"
        );
    }

    #[test]
    fn the_ceiling_doubles_up_to_max() {
        let backoff = Backoff::default();
        let ceilings: Vec<_> = (0..6).map(|attempt| backoff.ceiling(attempt)).collect();
        assert_eq!(
            ceilings,
            [ms(25), ms(50), ms(100), ms(200), ms(250), ms(250)]
        );
        // No overflow for absurd attempt numbers.
        assert_eq!(backoff.ceiling(31), ms(250));
        assert_eq!(backoff.ceiling(32), ms(250));
        assert_eq!(backoff.ceiling(u32::MAX), ms(250));
        let huge = Backoff::try_new(Duration::from_secs(1), Duration::MAX).unwrap();
        assert_eq!(huge.ceiling(40), Duration::MAX);
        // Delays are capped at u64::MAX nanoseconds (584 years).
        assert_eq!(huge.delay(40, u64::MAX).as_nanos(), u128::from(u64::MAX));
    }

    #[test]
    fn the_delay_spans_zero_to_the_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, 0), Duration::ZERO);
        // u64::MAX lands within a nanosecond of the ceiling.
        assert!(ms(25) - backoff.delay(0, u64::MAX) <= Duration::from_nanos(1));
        assert_eq!(backoff.delay(2, u64::MAX / 2), ms(50));
        assert_eq!(backoff.delay(9, 1 << 63), ms(125));
    }

    proptest::proptest! {
        #[test]
        fn every_delay_is_within_the_ceiling(attempt in 0u32..70, random: u64) {
            let backoff = Backoff::default();
            proptest::prop_assert!(backoff.delay(attempt, random) <= backoff.ceiling(attempt));
        }
    }
}
