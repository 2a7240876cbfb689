//! Giving freed heap back to the operating system after a burst.
//!
//! glibc's allocator keeps memory a process freed, and frees in the middle
//! of the heap are never returned on their own. A proxy's heap is mostly
//! per-connection and per-request buffers, so after a load burst breakwater
//! measured 43 MiB resident with 8 MiB live, and holding 10 000 idle
//! connections on top of that cost 69 MiB where 26 MiB was live. A
//! `malloc_trim(0)` returns the free pages. [`TrimPolicy`] decides when:
//! only once the request rate has fallen to a sixteenth of its recent peak
//! (so a steady load, which would refill the pages at once, is never
//! trimmed)
//! and resident memory has grown since the last trim. The sampler
//! (`crate::sampler`) asks it on every RSS sample and makes the call
//! (`crate::sys::release_free_memory`).

/// Resident growth since the last trim below which trimming is not worth
/// a walk of the heap.
pub const MIN_GROWTH: u64 = 4 << 20;

/// The burst is over when the request rate is at most 1/16 of its recent
/// peak. Trimming under a lighter but steady load only makes the allocator
/// fault the same pages back in, and the walk of the heap stalls requests.
const QUIET_FRACTION: f64 = 16.0;

/// The peak rate decays by this factor per sample (250 ms): it halves in
/// about 8 s, so "well below the peak" means "the burst is over".
const PEAK_DECAY: f64 = 0.98;

/// The pure decision: samples in, "trim now" out.
#[derive(Debug, Clone)]
pub struct TrimPolicy {
    /// Resident bytes right after the last trim (or at start).
    floor: u64,
    /// The request counter at the previous sample.
    last_count: u64,
    /// Requests per sample at the recent peak, decaying.
    peak: f64,
}

impl TrimPolicy {
    /// Starts with the current resident size and request counter.
    pub fn new(rss: u64, requests: u64) -> Self {
        TrimPolicy {
            floor: rss,
            last_count: requests,
            peak: 0.0,
        }
    }

    /// One sample: whether to trim now.
    pub fn sample(&mut self, rss: u64, requests: u64) -> bool {
        let rate = requests.saturating_sub(self.last_count) as f64;
        self.last_count = requests;
        self.peak = (self.peak * PEAK_DECAY).max(rate);
        if rss < self.floor {
            self.floor = rss;
        }
        let burst_over = rate * QUIET_FRACTION <= self.peak;
        burst_over && rss - self.floor >= MIN_GROWTH
    }

    /// Records the resident size after a trim.
    pub fn trimmed(&mut self, rss: u64) {
        self.floor = rss;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_steady_load_is_never_trimmed() {
        let mut policy = TrimPolicy::new(10 * MIB, 0);
        let mut count = 0;
        for step in 0..100 {
            count += 10_000;
            // Memory climbs to a plateau under load.
            let rss = (10 + step.min(40)) * MIB;
            assert!(!policy.sample(rss, count), "trimmed at step {step}");
        }
    }

    #[test]
    fn the_end_of_a_burst_trims_once() {
        let mut policy = TrimPolicy::new(10 * MIB, 0);
        let mut count = 0;
        for _ in 0..20 {
            count += 10_000;
            assert!(!policy.sample(50 * MIB, count));
        }
        // The load stops: one trim, then nothing while memory stays put.
        count += 100;
        assert!(policy.sample(50 * MIB, count));
        policy.trimmed(20 * MIB);
        for _ in 0..20 {
            count += 100;
            assert!(!policy.sample(20 * MIB, count));
        }
        // Idle connections pile up afterwards: growth past the floor trims again.
        count += 100;
        assert!(policy.sample(30 * MIB, count));
    }

    #[test]
    fn a_lighter_steady_load_after_a_burst_is_not_trimmed() {
        let mut policy = TrimPolicy::new(10 * MIB, 0);
        let mut count = 0;
        for _ in 0..10 {
            count += 15_000;
            assert!(!policy.sample(50 * MIB, count));
        }
        // An open-loop phase at a tenth of the peak still has a working set.
        for step in 0..20 {
            count += 1_500;
            assert!(!policy.sample(50 * MIB, count), "trimmed at step {step}");
        }
    }

    #[test]
    fn small_growth_is_not_worth_a_trim() {
        let mut policy = TrimPolicy::new(10 * MIB, 0);
        assert!(!policy.sample(10 * MIB + MIN_GROWTH - 1, 0));
        assert!(policy.sample(10 * MIB + MIN_GROWTH, 0));
    }
}
