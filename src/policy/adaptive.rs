//! An adaptive concurrency limit (SPEC §3.2, `bulkhead: {adaptive: true}`):
//! the bulkhead's limit follows the upstream's measured latency instead of
//! a number someone guessed.
//!
//! A fixed limit is either too low (idle capacity, needless sheds) or too
//! high (requests pile up in the upstream's own queue and every one of
//! them waits). The right number is the upstream's real concurrency — its
//! worker count — and latency tells it: below it, latency stays at the
//! unloaded baseline; above it, every extra request in flight only adds
//! queueing delay.
//!
//! ## The algorithm: a gradient over a minimum-latency baseline
//!
//! Envoy's adaptive concurrency filter and Netflix's `concurrency-limits`
//! (Gradient2) both compute a *gradient* — how far latency has risen above
//! what the upstream does unloaded — and scale the limit by it. The
//! difference is the baseline: Gradient2 compares against a slow moving
//! average of latency itself, which drifts upward while the upstream is
//! overloaded and lets queues grow; Envoy measures the true minimum by
//! periodically pinning concurrency low, which costs throughput every time.
//! Here, as in Envoy, the baseline is *measured*: at start and then every
//! [`AdaptiveConfig::probe_every`], the limit drops to `min` for a short
//! probe of [`PROBE_SAMPLES`] requests admitted during it, and the lowest
//! latency they see is the baseline (requests admitted before the probe,
//! still queued upstream, do not count: each request carries the epoch it
//! was admitted in). A probe costs a brief dip in concurrency — requests
//! wait in the bulkhead's queue meanwhile — and is what keeps the baseline
//! honest: a baseline learned under load (an average, or a minimum over a
//! window in which the upstream's queue never emptied) drifts up with the
//! queue it should be measuring. Between probes, a faster latency lowers
//! the baseline at once.
//!
//! Every [`AdaptiveConfig::interval`] with enough samples:
//!
//! ```text
//! gradient  = clamp(baseline × (1 + tolerance) / average latency, 0.5, 2)
//! new limit = limit × gradient + √limit          (headroom, as Envoy)
//! limit     = clamp(new limit, min, max)
//! ```
//!
//! With an upstream of N workers and service time S, latency at
//! concurrency C > N is S·C/N, so the limit settles where
//! C = (1 + tolerance)·N + √C: close to N, with latency within
//! (1 + tolerance) of the unloaded S. The limit grows only while it is
//! actually used (requests in flight at least half of it), so an idle
//! route does not drift up to `max` and then admit a burst unchecked.
//!
//! Pure: time and samples are passed in; the bulkhead applies the limit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Settings of an [`AdaptiveLimit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveConfig {
    /// The limit never goes below this (at least 1).
    pub min_limit: usize,
    /// Nor above this.
    pub max_limit: usize,
    /// Where it starts.
    pub initial_limit: usize,
    /// Latency may rise this fraction above the baseline before the limit
    /// shrinks.
    pub tolerance: f64,
    /// How often the limit is recomputed.
    pub interval: Duration,
    /// How often the baseline is measured again.
    pub probe_every: Duration,
}

impl AdaptiveConfig {
    /// The settings breakwater uses between `min_limit` and `max_limit`.
    pub fn new(min_limit: usize, max_limit: usize) -> Self {
        let min_limit = min_limit.max(1);
        let max_limit = max_limit.max(min_limit);
        AdaptiveConfig {
            min_limit,
            max_limit,
            initial_limit: 16.clamp(min_limit, max_limit),
            tolerance: 0.25,
            interval: Duration::from_millis(100),
            probe_every: Duration::from_secs(30),
        }
    }
}

/// The limit, and what it is computed from.
#[derive(Debug)]
pub struct AdaptiveLimit {
    config: AdaptiveConfig,
    /// The current limit, for lock-free reads.
    limit: AtomicUsize,
    /// Bumped when a probe starts: a request admitted in the current epoch
    /// of a probe measures the baseline.
    epoch: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The limit as a real number, so small steps accumulate.
    estimate: f64,
    /// Samples of the current interval.
    interval_start: Instant,
    n_samples: u32,
    sum_seconds: f64,
    /// The most requests in flight seen in the interval.
    max_in_flight: usize,
    /// The lowest latency measured, by the last probe or since.
    baseline: Option<Duration>,
    /// The probe under way, if any.
    probe: Option<Probe>,
    /// When the next probe starts.
    next_probe: Instant,
}

#[derive(Debug)]
struct Probe {
    /// The limit to go back to.
    resume: f64,
    /// Qualifying samples so far, and the lowest of them.
    n_samples: u32,
    lowest: Option<Duration>,
}

/// Requests of a probe that measure the baseline.
pub const PROBE_SAMPLES: u32 = 16;

/// Fewest samples an interval needs before it moves the limit.
const MIN_SAMPLES: u32 = 4;

// === impl AdaptiveLimit ===

impl AdaptiveLimit {
    /// A limit that measures its baseline first (at `min`), then starts at
    /// `config.initial_limit`.
    pub fn new(config: AdaptiveConfig, now: Instant) -> Self {
        let initial = config
            .initial_limit
            .clamp(config.min_limit, config.max_limit);
        AdaptiveLimit {
            config,
            limit: AtomicUsize::new(config.min_limit),
            epoch: AtomicU64::new(1),
            state: Mutex::new(State {
                estimate: initial as f64,
                interval_start: now,
                n_samples: 0,
                sum_seconds: 0.0,
                max_in_flight: 0,
                baseline: None,
                probe: Some(Probe {
                    resume: initial as f64,
                    n_samples: 0,
                    lowest: None,
                }),
                next_probe: now + config.probe_every,
            }),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The epoch a request admitted now belongs to; hand it back to
    /// [`AdaptiveLimit::record`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// The measured unloaded latency, once a probe has measured it.
    pub fn baseline(&self) -> Option<Duration> {
        self.lock().baseline
    }

    /// Whether a probe is under way.
    pub fn probing(&self) -> bool {
        self.lock().probe.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, estimate: f64) -> Option<usize> {
        let limit = estimate.round() as usize;
        let before = self.limit.swap(limit, Ordering::Relaxed);
        (before != limit).then_some(limit)
    }

    /// One admitted request, admitted in `epoch`, took `latency` (to its
    /// response headers), with `in_flight` requests in flight when it
    /// ended. Returns the new limit when this sample moved it.
    pub fn record(
        &self,
        latency: Duration,
        in_flight: usize,
        epoch: u64,
        now: Instant,
    ) -> Option<usize> {
        let mut state = self.lock();
        let current_epoch = self.epoch();
        if let Some(probe) = &mut state.probe {
            if epoch != current_epoch {
                // Admitted before the probe: measures the old load.
                return None;
            }
            probe.n_samples += 1;
            probe.lowest = Some(probe.lowest.map_or(latency, |low| low.min(latency)));
            if probe.n_samples < PROBE_SAMPLES {
                return None;
            }
            let (resume, lowest) = (probe.resume, probe.lowest);
            state.probe = None;
            state.baseline = lowest;
            state.estimate = resume;
            state.interval_start = now;
            state.n_samples = 0;
            state.sum_seconds = 0.0;
            state.max_in_flight = 0;
            return self.publish(resume);
        }
        if now >= state.next_probe {
            state.next_probe = now + self.config.probe_every;
            state.probe = Some(Probe {
                resume: state.estimate,
                n_samples: 0,
                lowest: None,
            });
            self.epoch.fetch_add(1, Ordering::Relaxed);
            return self.publish(self.config.min_limit as f64);
        }
        if state.baseline.is_some_and(|baseline| latency < baseline) {
            state.baseline = Some(latency);
        }
        state.n_samples += 1;
        state.sum_seconds += latency.as_secs_f64();
        state.max_in_flight = state.max_in_flight.max(in_flight);
        if now.saturating_duration_since(state.interval_start) < self.config.interval
            || state.n_samples < MIN_SAMPLES
        {
            return None;
        }
        let average = state.sum_seconds / f64::from(state.n_samples);
        let used = state.max_in_flight as f64 >= state.estimate / 2.0;
        state.interval_start = now;
        state.n_samples = 0;
        state.sum_seconds = 0.0;
        state.max_in_flight = 0;
        let baseline = state.baseline?;
        if average <= 0.0 {
            return None;
        }
        let gradient =
            (baseline.as_secs_f64() * (1.0 + self.config.tolerance) / average).clamp(0.5, 2.0);
        let mut estimate = state.estimate * gradient + state.estimate.sqrt();
        if !used {
            // An interval that did not use the limit says nothing about
            // more: it may shrink it, never grow it.
            estimate = estimate.min(state.estimate);
        }
        state.estimate = estimate.clamp(self.config.min_limit as f64, self.config.max_limit as f64);
        let estimate = state.estimate;
        self.publish(estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed-loop model of `clients` callers against an upstream of
    /// `workers` workers with service time `service`: the limiter admits
    /// `min(clients, limit)`, and each admitted request takes
    /// `service × max(1, admitted / workers)`. Returns the limit and the
    /// latency after `seconds` of simulated time.
    fn settle(
        limiter: &AdaptiveLimit,
        clients: usize,
        workers: usize,
        service: Duration,
        seconds: u64,
        start: Instant,
    ) -> (usize, Duration) {
        let mut now = start;
        let end = start + Duration::from_secs(seconds);
        let mut latency = service;
        while now < end {
            let admitted = clients.min(limiter.limit());
            let epoch = limiter.epoch();
            let stretch = (admitted as f64 / workers as f64).max(1.0);
            latency = service.mul_f64(stretch);
            // One round of every admitted request ending.
            for _ in 0..admitted {
                limiter.record(latency, admitted, epoch, now);
            }
            now += latency;
        }
        (limiter.limit(), latency)
    }

    #[test]
    fn measures_its_baseline_first_at_the_minimum() {
        let start = Instant::now();
        let limiter = AdaptiveLimit::new(AdaptiveConfig::new(2, 100), start);
        assert!(limiter.probing());
        assert_eq!(limiter.limit(), 2);
        let epoch = limiter.epoch();
        for _ in 0..PROBE_SAMPLES {
            limiter.record(Duration::from_millis(7), 2, epoch, start);
        }
        assert!(!limiter.probing());
        assert_eq!(limiter.baseline(), Some(Duration::from_millis(7)));
        assert_eq!(limiter.limit(), 16);
    }

    #[test]
    fn settles_near_the_upstreams_concurrency_with_latency_near_the_baseline() {
        for workers in [4, 8, 32] {
            let start = Instant::now();
            let limiter = AdaptiveLimit::new(AdaptiveConfig::new(1, 1000), start);
            let service = Duration::from_millis(10);
            // Past two re-probes: the baseline stays honest under load.
            let (limit, latency) = settle(&limiter, 500, workers, service, 75, start);
            assert!(
                limit >= workers && limit <= 2 * workers + 8,
                "{workers} workers: limit {limit}"
            );
            assert!(
                latency <= service * 2,
                "{workers} workers: latency {latency:?} against {service:?} unloaded"
            );
            assert_eq!(limiter.baseline(), Some(service));
        }
    }

    #[test]
    fn grows_to_use_an_upstream_that_keeps_up() {
        let start = Instant::now();
        let limiter = AdaptiveLimit::new(AdaptiveConfig::new(1, 200), start);
        // 10 000 workers: latency never rises; the limit climbs to max.
        let (limit, _) = settle(&limiter, 500, 10_000, Duration::from_millis(5), 20, start);
        assert_eq!(limit, 200);
    }

    #[test]
    fn requests_admitted_before_a_probe_do_not_measure_the_baseline() {
        let start = Instant::now();
        let limiter = AdaptiveLimit::new(AdaptiveConfig::new(1, 100), start);
        let old = limiter.epoch() - 1;
        for _ in 0..100 {
            limiter.record(Duration::from_secs(1), 50, old, start);
        }
        assert!(limiter.probing());
        assert_eq!(limiter.baseline(), None);
    }

    #[test]
    fn does_not_grow_while_the_limit_is_not_used() {
        let start = Instant::now();
        let limiter = AdaptiveLimit::new(AdaptiveConfig::new(1, 1000), start);
        let mut now = start;
        for _ in 0..2000 {
            now += Duration::from_millis(10);
            // Two in flight against a limit of 16: idle capacity.
            let epoch = limiter.epoch();
            limiter.record(Duration::from_millis(5), 2, epoch, now);
        }
        assert!(limiter.limit() <= 16, "{}", limiter.limit());
    }

    #[test]
    fn stays_within_its_bounds_and_shrinks_when_latency_soars() {
        let start = Instant::now();
        let limiter = AdaptiveLimit::new(AdaptiveConfig::new(5, 50), start);
        let mut now = start;
        for _ in 0..200 {
            now += Duration::from_millis(20);
            let epoch = limiter.epoch();
            limiter.record(Duration::from_millis(1), 50, epoch, now);
        }
        assert_eq!(limiter.limit(), 50);
        for _ in 0..200 {
            now += Duration::from_millis(20);
            let epoch = limiter.epoch();
            limiter.record(Duration::from_secs(1), 50, epoch, now);
        }
        assert_eq!(limiter.limit(), 5);
    }
}
