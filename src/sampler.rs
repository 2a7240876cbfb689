//! The periodic sampler of breakwater's own state: every 250 ms it reads
//! breakwater's resident memory and
//!
//! - moves the overload ladder (`policy::overload::Ladder`), publishing its
//!   level for the data plane's admission layer (one atomic) and as a
//!   metric and event when it changes;
//! - asks `policy::trim::TrimPolicy` whether a burst just ended, and if
//!   so hands freed heap back to the OS (`sys::release_free_memory`).
//!
//! The decisions are pure; this task only reads, asks and publishes. The
//! supervisor samples its child on its own task (`supervisor/`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::events::Severity;
use crate::policy::overload::{Ladder, Level};
use crate::policy::trim::TrimPolicy;
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
