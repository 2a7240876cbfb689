//! Fault injection's live state (SPEC §12): which routes have a fault on,
//! from where, and until when.
//!
//! [`Faults`] lives as long as the data plane, keyed by route name, so a
//! fault outlives reloads of its route: a snapshot's fault layer holds the
//! route's [`RouteFault`] and reads it with one atomic load per request.
//! A fault comes from the config (`routes[].fault`) or from `PUT
//! /faults/{route}`, and always ends: a timer clears it after its `ttl`
//! (and says so with a `fault` event), `DELETE /faults/{route}` clears it
//! at once. A reload that brings the same config fault keeps it — and its
//! clock; a changed one replaces whatever is on; one taken out of the
//! config ends a config fault (an operator's stays until its own end).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::config::{Config, FaultInjection};
use crate::events::{EventBus, Severity};

/// A fault in force on one route.
#[derive(Debug)]
pub struct ActiveFault {
    /// What it does.
    pub spec: FaultInjection,
    /// `config` or `admin`.
    pub source: &'static str,
    /// When it ends by itself.
    pub until: Instant,
    /// The same, on the wall clock, for `/status`.
    pub until_wall: SystemTime,
    generation: u64,
}

impl ActiveFault {
    /// The fault as `/status` shows it.
    pub fn status(&self, now: Instant) -> Value {
        json!({
            "delay": self.spec.delay,
            "abort": self.spec.abort,
            "source": self.source,
            "until": crate::events::rfc3339::format(self.until_wall),
            "remaining_seconds": self.until.saturating_duration_since(now).as_secs_f64(),
        })
    }
}

/// One route's fault slot, shared by every snapshot's stack for the route.
#[derive(Debug, Default)]
pub struct RouteFault {
    current: ArcSwapOption<ActiveFault>,
    /// The config fault a snapshot last brought: a reload that brings the
    /// same one changes nothing.
    from_config: Mutex<Option<FaultInjection>>,
}

impl RouteFault {
    /// The fault in force at `now`, if any (one atomic load).
    pub fn active(&self, now: Instant) -> Option<Arc<ActiveFault>> {
        self.current.load_full().filter(|fault| now < fault.until)
    }
}

/// Every route's fault slot, and the count of injected 5xx replies (which
/// `config_rollback` leaves out of the error rate it watches).
#[derive(Debug, Default)]
pub struct Faults {
    routes: Mutex<HashMap<String, Arc<RouteFault>>>,
    generation: AtomicU64,
    /// Aborts injected with a 5xx status, process-wide.
    pub injected_5xx: Arc<AtomicU64>,
}

impl Faults {
    /// Route `name`'s slot, made on first use.
    pub fn route(&self, name: &str) -> Arc<RouteFault> {
        self.lock().entry(name.to_owned()).or_default().clone()
    }

    /// The fault in force on route `name`, if any.
    pub fn active(&self, name: &str, now: Instant) -> Option<Arc<ActiveFault>> {
        self.lock().get(name)?.active(now)
    }

    /// Puts `spec` on route `name` from `source` for its `ttl`, replacing
    /// whatever was on, and starts the timer that ends it.
    pub fn set(
        self: &Arc<Self>,
        name: &str,
        spec: FaultInjection,
        source: &'static str,
        events: &Arc<EventBus>,
    ) -> Arc<ActiveFault> {
        let ttl = spec.ttl;
        let fault = Arc::new(ActiveFault {
            spec,
            source,
            until: Instant::now() + ttl,
            until_wall: SystemTime::now() + ttl,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        });
        // Writes go under the map's lock, so a timer's clear cannot
        // interleave with a newer set.
        self.lock()
            .entry(name.to_owned())
            .or_default()
            .current
            .store(Some(fault.clone()));
        events.emit(
            "fault",
            name,
            Severity::Warning,
            &format!(
                "injecting {} (by {source}) for {}",
                describe(&fault.spec),
                crate::units::format_duration(ttl)
            ),
        );
        let faults = self.clone();
        let events = events.clone();
        let route = name.to_owned();
        let generation = fault.generation;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(ttl).await;
                if faults.clear(&route, Some(generation)).is_some() {
                    events.emit("fault", &route, Severity::Info, "ended: its ttl ran out");
                }
            });
        }
        fault
    }

    /// Ends route `name`'s fault — only generation `generation`'s, when
    /// given (a timer must not end a fault that replaced its own).
    /// Returns the fault that ended.
    pub fn clear(&self, name: &str, generation: Option<u64>) -> Option<Arc<ActiveFault>> {
        let routes = self.lock();
        let slot = routes.get(name)?;
        let current = slot.current.load_full()?;
        if generation.is_some_and(|generation| generation != current.generation) {
            return None;
        }
        slot.current.store(None);
        Some(current)
    }

    /// Follows a newly published config's `routes[].fault`.
    pub fn apply_config(self: &Arc<Self>, config: &Config, events: &Arc<EventBus>) {
        for route in config.listeners.iter().flat_map(|l| l.routes.iter()) {
            let slot = self.route(&route.name);
            let mut from_config = slot
                .from_config
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *from_config == route.fault {
                continue;
            }
            *from_config = route.fault.clone();
            drop(from_config);
            match &route.fault {
                Some(spec) => {
                    self.set(&route.name, spec.clone(), "config", events);
                }
                None => {
                    let from_config = slot
                        .current
                        .load_full()
                        .filter(|fault| fault.source == "config");
                    if let Some(fault) = from_config {
                        if self.clear(&route.name, Some(fault.generation)).is_some() {
                            events.emit(
                                "fault",
                                &route.name,
                                Severity::Info,
                                "ended: taken out of the config",
                            );
                        }
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RouteFault>>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `delay 50% 200ms, abort 10% 503` — for events.
pub fn describe(spec: &FaultInjection) -> String {
    let mut parts = Vec::new();
    if let Some(delay) = &spec.delay {
        parts.push(format!(
            "delay {}% {}",
            delay.percent,
            crate::units::format_duration(delay.duration)
        ));
    }
    if let Some(abort) = &spec.abort {
        parts.push(format!("abort {}% {}", abort.percent, abort.status));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{FaultAbort, FaultDelay};

    fn spec(ttl: Duration) -> FaultInjection {
        FaultInjection {
            delay: Some(FaultDelay {
                percent: 50.0,
                duration: Duration::from_millis(10),
            }),
            abort: Some(FaultAbort {
                percent: 10.0,
                status: 503,
                grpc_status: None,
            }),
            ttl,
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_fault_ends_by_its_ttl_and_a_later_one_is_not_ended_by_the_earlier_timer() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let events = EventBus::new(16, metrics.events_total.clone(), Vec::new());
        let faults = Arc::new(Faults::default());
        let slot = faults.route("main");
        faults.set("main", spec(Duration::from_secs(10)), "admin", &events);
        assert!(slot.active(Instant::now()).is_some());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let second = faults.set("main", spec(Duration::from_secs(20)), "admin", &events);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = Instant::now();
        assert!(
            slot.active(now).is_some_and(|f| Arc::ptr_eq(&f, &second)),
            "the first timer left the second fault alone"
        );
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert!(
            slot.active(Instant::now()).is_none(),
            "ended by its own ttl"
        );
        assert!(faults.clear("main", None).is_none());
    }
}
