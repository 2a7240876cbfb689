//! The periodic samplers of breakwater's own state.
//!
//! Every 250 ms, [`spawn`] reads breakwater's resident memory and
//!
//! - moves the overload ladder (`policy::overload::Ladder`), publishing its
//!   level for the data plane's admission layer (one atomic) and as a
//!   metric and event when it changes;
//! - asks `policy::trim::TrimPolicy` whether a burst just ended, and if
//!   so hands freed heap back to the OS (`sys::release_free_memory`).
//!
//! Every second, [`spawn_degradation`] reads the data plane's signals —
//! the share of requests shed over the last ten seconds, open breakers,
//! upstreams with nothing available, a supervised process coming back —
//! and moves the automatic degradation level
//! (`policy::degradation::AutoLevel`), which takes effect unless an
//! operator or the config fixed the level. It announces every change of
//! the level in force, and each route that starts or stops answering with
//! degraded replies.
//!
//! The decisions are pure; these tasks only read, ask and publish. The
//! supervisor samples its child on its own task (`supervisor/`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use crate::events::Severity;
use crate::policy::breaker::BreakerState;
use crate::policy::degradation::{AutoLevel, Signals};
use crate::policy::overload::{Ladder, Level};
use crate::policy::trim::TrimPolicy;
use crate::proxy::gate::Readiness;
use crate::proxy::DataPlane;
use crate::sys;

/// How often breakwater's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Samples until shutdown. The overload limit follows the live config, so
/// a reload can move the watermark.
pub fn spawn(plane: Arc<DataPlane>) {
    tokio::spawn(async move {
        let mut ladder = Ladder::new(plane.snapshot().config.overload.memory.0);
        let requests = || plane.requests.load(Ordering::Relaxed);
        let mut trim = TrimPolicy::new(sys::current_rss().unwrap_or(0), requests());
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        let mut shutdown = plane.watch_shutdown();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            let limit = plane.snapshot().config.overload.memory.0;
            ladder.set_limit(limit);
            let Some(rss) = sys::current_rss() else {
                continue;
            };
            if trim.sample(rss, requests()) {
                sys::release_free_memory();
                let after = sys::current_rss().unwrap_or(rss);
                tracing::debug!(before = rss, after, "Returned free heap to the OS.");
                trim.trimmed(after);
            }
            if let Some(level) = ladder.update(rss) {
                plane.overload.set(level);
                plane.metrics.overload_level.set(level as i64);
                let severity = if level == Level::Normal {
                    Severity::Info
                } else {
                    Severity::Warning
                };
                plane.events.emit(
                    "overload",
                    level.as_str(),
                    severity,
                    &format!(
                        "rss {} of limit {}",
                        crate::units::format_size(rss),
                        crate::units::format_size(limit)
                    ),
                );
            }
        }
    });
}

/// How often the degradation signals are sampled.
const DEGRADATION_EVERY: Duration = Duration::from_secs(1);

/// The window the shed rate is measured over.
const SHED_WINDOW: Duration = Duration::from_secs(10);

/// Samples the degradation signals until shutdown.
pub fn spawn_degradation(plane: Arc<DataPlane>) {
    tokio::spawn(async move {
        let settings = plane.snapshot().config.degradation.clone();
        let mut auto = AutoLevel::new(settings.raise_after, settings.lower_after);
        let mut window: VecDeque<(Instant, u64, u64)> = VecDeque::new();
        let mut in_force = plane.degradation.level();
        let mut routes: HashMap<String, (u64, Option<Instant>)> = HashMap::new();
        let mut ticks = tokio::time::interval(DEGRADATION_EVERY);
        let mut shutdown = plane.watch_shutdown();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            let now = Instant::now();
            let settings = plane.snapshot().config.degradation.clone();
            auto.set_timing(settings.raise_after, settings.lower_after);
            let signals = signals(&plane, &mut window, now);
            if let Some(level) = auto.update(&signals, now) {
                plane.degradation.set_auto(level);
            }
            let (source, level) = plane.degradation.source_and_level();
            plane.metrics.degradation_level.set(level as i64);
            if level != in_force {
                plane.events.emit(
                    "degradation",
                    level.as_str(),
                    if level > in_force {
                        Severity::Warning
                    } else {
                        Severity::Info
                    },
                    &format!(
                        "level {} -> {} ({source}; shed rate {:.0}%, {} of {} breakers open, {} of {} upstreams down{})",
                        in_force.as_str(),
                        level.as_str(),
                        signals.shed_rate * 100.0,
                        signals.breakers_open,
                        signals.breakers,
                        signals.upstreams_down,
                        signals.upstreams,
                        if signals.recovering { ", recovering" } else { "" },
                    ),
                );
                in_force = level;
            }
            announce_degrading_routes(&plane, &mut routes, now, settings.lower_after);
        }
    });
}

/// The signals now; `window` keeps (time, requests, sheds) samples for the
/// shed rate.
fn signals(plane: &DataPlane, window: &mut VecDeque<(Instant, u64, u64)>, now: Instant) -> Signals {
    let requests = plane.requests.load(Ordering::Relaxed);
    let sheds = plane.sheds.load(Ordering::Relaxed);
    window.push_back((now, requests, sheds));
    while window.len() > 2
        && window
            .get(1)
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= SHED_WINDOW)
    {
        window.pop_front();
    }
    let shed_rate = match window.front() {
        Some(&(_, requests_then, sheds_then)) => {
            let requests = requests.saturating_sub(requests_then);
            let sheds = sheds.saturating_sub(sheds_then);
            if requests >= 20 {
                sheds as f64 / requests as f64
            } else {
                0.0
            }
        }
        None => 0.0,
    };
    let snapshot = plane.snapshot();
    let mut signals = Signals {
        shed_rate,
        ..Signals::default()
    };
    for route in snapshot.routes() {
        if let Some(breaker) = &route.breaker {
            signals.breakers += 1;
            if matches!(
                breaker.state(),
                BreakerState::Open | BreakerState::ForcedOpen
            ) {
                signals.breakers_open += 1;
            }
        }
    }
    for pool in &snapshot.upstreams {
        signals.upstreams += 1;
        if !pool
            .all_endpoints()
            .any(|(index, _)| pool.is_available(index, now))
        {
            signals.upstreams_down += 1;
        }
        if pool.gate().readiness() == Readiness::Starting {
            signals.recovering = true;
        }
    }
    signals
}

/// Emits an event when a route starts answering with degraded replies,
/// and when it has stopped for `quiet` (the level's `lower_after`).
fn announce_degrading_routes(
    plane: &DataPlane,
    routes: &mut HashMap<String, (u64, Option<Instant>)>,
    now: Instant,
    quiet: Duration,
) {
    let snapshot = plane.snapshot();
    for route in snapshot.routes() {
        let count = route.report.n_degraded();
        let (last, since) = routes
            .entry(route.name.to_string())
            .or_insert((count, None));
        if count > *last {
            if since.is_none() {
                plane.events.emit(
                    "degraded",
                    &route.name,
                    Severity::Warning,
                    "started answering with fallbacks, stale copies or 503 degraded",
                );
            }
            *since = Some(now);
        } else if since.is_some_and(|at| now.saturating_duration_since(at) >= quiet) {
            plane.events.emit(
                "degraded",
                &route.name,
                Severity::Info,
                "stopped degrading: the upstream answers again",
            );
            *since = None;
        }
        *last = count;
    }
}
