//! The circuit breaker of SPEC §3.1: stop calling an upstream that is
//! failing, and find out cheaply when it has recovered.
//!
//! A [`Breaker`] is closed (calls flow, outcomes are counted), open (calls
//! are refused without contacting the upstream, for `open_duration`), or
//! half-open (a few probe calls are let through; enough successes close it,
//! one failure re-opens it). An operator can also pin it forced-open or
//! forced-closed from the admin port until a reset.
//!
//! ```text
//!            trip: consecutive failures, failure rate, slow-call rate
//!   Closed ────────────────────────────────────────────────────────▶ Open
//!     ▲                                                          │  ▲
//!     │ half_open_successes                    open_duration     │  │ a probe
//!     │ probes succeed                         elapsed (lazily)  ▼  │ fails
//!     └────────────────────────────────────────────────────── HalfOpen
//! ```
//!
//! ## The one idea: tickets and epochs
//!
//! Admission hands out a [`BreakerTicket`], an owned guard that must be
//! consumed by [`BreakerTicket::record`] with the call's [`CallResult`]. A
//! ticket dropped unrecorded (the client went away) counts nothing and, if
//! it was a half-open probe, gives its probe slot back, so a slot can never
//! leak.
//!
//! Every state change bumps an *epoch*, and a ticket remembers the epoch it
//! was issued in. An outcome whose ticket is from an earlier epoch is
//! *stale*: it releases the ticket's probe slot but counts nothing else.
//! A request admitted while closed that fails after the breaker opened must
//! not re-open a half-open breaker, and a slow request admitted before a
//! half-open probe must not close it. Stale outcomes are not added to a new
//! closed window either: after recovery, a burst of timeouts sent to the
//! old, broken upstream would otherwise re-trip the breaker on evidence
//! about the past.
//!
//! Half-open admits at most `half_open_max_calls` probe tickets *alive at
//! once, across epochs*: a probe that outlives its half-open period (the
//! breaker re-opened, then went half-open again) still holds its slot
//! until it ends. So the upstream never sees more than that many probes.
//!
//! ## How it runs
//!
//! The state lives behind a `std::sync::Mutex` held for a few instructions.
//! The hot paths avoid it where they can: an atomic *gate* mirrors
//! (state, epoch), so [`Breaker::try_acquire`] admits while closed, and
//! refuses while open, without locking; recording a success or failure
//! locks once to update the window. Time is `now: Instant`, passed in.
//!
//! Open → half-open happens lazily, when a caller passes a `now` at or
//! after the end of the open period: [`Breaker::try_acquire`] reports it on
//! the ticket ([`BreakerTicket::transition`]) or the refusal
//! ([`BreakerRejected::transition`]), and [`Breaker::advance`] applies it
//! for a caller with no request to make (a timer that wants the event on
//! time). [`Breaker::snapshot`] only *shows* the state as of `now` and
//! never changes it, so reading `/status` cannot swallow an event.
//!
//! What the breaker does not do: classify responses (the data plane maps
//! statuses and errors to [`CallResult`], see [`Breaker::is_slow`]), build
//! responses, sleep, or emit metrics and logs: every state change is
//! returned as a [`Transition`] for the caller to report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::window::{Window, WindowConfig, WindowTotals};
use super::{duration_nanos, nanos_since, CacheAligned};

/// The breaker's settings (SPEC `circuit_breaker:`).
///
/// [`Breaker::new`] clamps values that would wedge it (see each field);
/// everything else is `config/`'s to validate.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row while closed. 0 turns this
    /// trigger off.
    pub consecutive_failures: u32,
    /// Trip when failures / calls in the window reach this, once the window
    /// holds `minimum_calls`. Above 1 turns this trigger off.
    pub failure_rate: f64,
    /// Trip when slow calls / calls in the window reach this, once the
    /// window holds `minimum_calls`. `None` (the default) turns it off.
    pub slow_call_rate: Option<f64>,
    /// A success that took longer than this is a slow call
    /// ([`CallResult::Slow`]); the data plane applies it, with
    /// [`Breaker::is_slow`].
    pub slow_call_duration: Duration,
    /// Which recent outcomes the rates are computed over.
    pub window: WindowConfig,
    /// No rate trips until the window holds this many calls, so that two
    /// failures out of three calls do not open the breaker. 0 is treated
    /// as 1.
    pub minimum_calls: u32,
    /// How long the first trip keeps the breaker open.
    pub open_duration: Duration,
    /// Each re-trip from half-open multiplies the open period by this.
    /// Values below 1 (or not finite) are treated as 1.
    pub open_backoff: f64,
    /// The open period never grows beyond this (nor below
    /// `open_duration`).
    pub max_open_duration: Duration,
    /// At most this many probes in flight while half-open. 0 is treated
    /// as 1.
    pub half_open_max_calls: u32,
    /// This many probe successes close the breaker. 0 is treated as 1.
    pub half_open_successes: u32,
}

/// A breaker's state, as the SPEC and the admin port name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow and their outcomes are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few probe calls are let through to test the upstream.
    HalfOpen,
    /// Refused by an operator until reset.
    ForcedOpen,
    /// Let through by an operator until reset; nothing is counted.
    ForcedClosed,
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TripReason {
    /// `consecutive_failures` failures in a row (closed → open).
    ConsecutiveFailures,
    /// The window's failure rate reached `failure_rate` (closed → open).
    FailureRate,
    /// The window's slow-call rate reached `slow_call_rate` (closed → open).
    SlowCallRate,
    /// A half-open probe failed (half-open → open).
    ProbeFailed,
    /// `half_open_successes` probes succeeded (half-open → closed).
    ProbesSucceeded,
    /// The open period ended (open → half-open).
    OpenElapsed,
    /// An operator forced the breaker open or closed.
    Forced,
    /// An operator reset the breaker (→ closed, window cleared).
    Reset,
}

impl TripReason {
    /// The reason in the SPEC's words, for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ConsecutiveFailures => "consecutive failures",
            TripReason::FailureRate => "failure rate",
            TripReason::SlowCallRate => "slow-call rate",
            TripReason::ProbeFailed => "a probe failed",
            TripReason::ProbesSucceeded => "probes succeeded",
            TripReason::OpenElapsed => "open period over",
            TripReason::Forced => "forced by an operator",
            TripReason::Reset => "reset by an operator",
        }
    }
}

/// One state change, returned to the caller to log, count and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// What caused it.
    pub reason: TripReason,
}

/// The outcome of one admitted call, as the data plane classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallResult {
    /// A success in time (a 4xx counts here: SPEC §3).
    Success,
    /// A failure (`http_5xx`, `connect_error`, `connect_timeout`,
    /// `timeout`, `reset`).
    Failure,
    /// A success slower than `slow_call_duration`: counts toward the
    /// slow-call rate, not the failure rate. In half-open it counts as a
    /// success, unless `slow_call_rate` is set, when it re-opens the
    /// breaker like a failure (an upstream that tripped for slowness is not
    /// healthy while still slow).
    Slow,
    /// Not evidence either way (the call was cancelled, or never reached
    /// the upstream): releases the ticket, counts nothing. Same as
    /// dropping the ticket.
    Ignored,
}

/// An operator action from the admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Force {
    /// Refuse every call until reset.
    Open,
    /// Let every call through, counting nothing, until reset.
    Closed,
    /// Back to closed with an empty window, no consecutive failures and the
    /// base open period.
    Reset,
}

/// The refusal of [`Breaker::try_acquire`]: the caller answers 503 with
/// `x-breakwater-reason: breaker-open` or the route's fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRejected {
    /// For `retry-after`: time until the breaker goes half-open; for
    /// forced-open, `open_duration`; for a half-open breaker with every
    /// probe slot taken, [`HALF_OPEN_FULL_RETRY_AFTER`].
    pub retry_after: Duration,
    /// The state that refused the call.
    pub state: BreakerState,
    /// A transition this call caused (open → half-open, when every probe
    /// slot was still held by earlier probes).
    pub transition: Option<Transition>,
}

/// `retry_after` when the breaker is half-open and every probe slot is
/// taken: probes end quickly, so try again soon.
pub const HALF_OPEN_FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the admin port shows for one breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The state as of `now` (an open breaker whose period has ended shows
    /// as half-open).
    pub state: BreakerState,
    /// Failures in a row while closed (kept while open, to show what
    /// tripped it).
    pub consecutive_failures: u32,
    /// The window's totals (kept while open and half-open; cleared when the
    /// breaker closes again).
    pub window: WindowTotals,
    /// Time left before half-open, while open.
    #[serde(rename = "open_remaining_ms", serialize_with = "serialize_millis_opt")]
    pub open_remaining: Option<Duration>,
    /// Probe tickets alive (across epochs, see the module docs).
    pub half_open_in_flight: u32,
    /// Probe successes so far in the current half-open period.
    pub half_open_successes: u32,
    /// The open period of the current (or, while closed, the next) trip.
    #[serde(
        rename = "current_open_duration_ms",
        serialize_with = "serialize_millis"
    )]
    pub current_open_duration: Duration,
    /// Trips (entries into open) since the breaker was built.
    pub n_trips: u64,
}

/// A shared circuit breaker; see the module docs.
///
/// `Send + Sync`; share it as `Arc<Breaker>`.
#[derive(Debug)]
pub struct Breaker {
    /// The settings, clamped.
    config: BreakerConfig,
    /// Time zero for `open_until`.
    base: Instant,
    /// What admission reads without the lock, on its own cache line so
    /// that recording outcomes under the lock does not slow it down.
    gate: CacheAligned<Gate>,
    /// Everything else, on its own cache line.
    inner: CacheAligned<Mutex<Inner>>,
}

/// The lock-free mirror of the state, written under the lock on every
/// state change.
#[derive(Debug)]
struct Gate {
    /// `epoch << 3 | state`, read by [`Breaker::try_acquire`] and
    /// [`BreakerTicket::record`].
    state_epoch: AtomicU64,
    /// While open: the end of the open period, in nanoseconds since `base`,
    /// so that refusals need no lock.
    open_until: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped on every state change; see the module docs.
    epoch: u64,
    window: Window,
    consecutive_failures: u32,
    /// Nanoseconds since `base`; meaningful while open.
    open_until: u64,
    current_open_duration: Duration,
    /// Probe tickets alive, across epochs.
    half_open_in_flight: u32,
    /// Probe successes in the current half-open period.
    half_open_successes: u32,
    n_trips: u64,
}

/// The right to make one call, from [`Breaker::try_acquire`].
///
/// Consume it with [`record`](BreakerTicket::record). Dropping it instead
/// counts nothing and releases its probe slot.
#[derive(Debug)]
#[must_use = "record the call's outcome, or drop the ticket if the call never happened"]
pub struct BreakerTicket {
    breaker: Arc<Breaker>,
    epoch: u64,
    issued_in: BreakerState,
    transition: Option<Transition>,
    recorded: bool,
}

// === impl BreakerConfig ===

impl Default for BreakerConfig {
    /// The SPEC §3.1 defaults; `slow_call_duration` is 1s, as in the
    /// reference config, and the slow-call trigger is off.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            slow_call_rate: None,
            slow_call_duration: Duration::from_secs(1),
            window: WindowConfig::Count(100),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(60),
            half_open_max_calls: 3,
            half_open_successes: 3,
        }
    }
}

impl BreakerConfig {
    /// The same settings with the values that would wedge a breaker
    /// clamped, as documented on each field.
    fn clamped(mut self) -> Self {
        self.minimum_calls = self.minimum_calls.max(1);
        self.half_open_max_calls = self.half_open_max_calls.max(1);
        self.half_open_successes = self.half_open_successes.max(1);
        if !(self.open_backoff.is_finite() && self.open_backoff >= 1.0) {
            self.open_backoff = 1.0;
        }
        self.max_open_duration = self.max_open_duration.max(self.open_duration);
        self
    }
}

// === impl BreakerState ===

impl BreakerState {
    /// The name used by the admin port, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::ForcedClosed => "forced_closed",
        }
    }

    /// The value of the state gauge: 0 closed (or forced closed), 1
    /// half-open, 2 open (or forced open).
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed | BreakerState::ForcedClosed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open | BreakerState::ForcedOpen => 2,
        }
    }

    fn to_bits(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
            BreakerState::ForcedClosed => 4,
        }
    }

    fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            3 => BreakerState::ForcedOpen,
            _ => BreakerState::ForcedClosed,
        }
    }
}

/// The low bits of [`Gate::state_epoch`] hold the state.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn gate(state: BreakerState, epoch: u64) -> u64 {
    (epoch << STATE_BITS) | state.to_bits()
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker with an empty window. `now` is time zero for its
    /// open periods and time window.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        let config = config.clamped();
        let inner = Inner {
            state: BreakerState::Closed,
            epoch: 0,
            window: Window::new(config.window, now),
            consecutive_failures: 0,
            open_until: 0,
            current_open_duration: config.open_duration,
            half_open_in_flight: 0,
            half_open_successes: 0,
            n_trips: 0,
        };
        Breaker {
            gate: CacheAligned(Gate {
                state_epoch: AtomicU64::new(gate(BreakerState::Closed, 0)),
                open_until: AtomicU64::new(0),
            }),
            base: now,
            config,
            inner: CacheAligned(Mutex::new(inner)),
        }
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Whether a success that took `elapsed` is a slow call.
    pub fn is_slow(&self, elapsed: Duration) -> bool {
        elapsed > self.config.slow_call_duration
    }

    /// The stored state, without applying a due open → half-open change
    /// (see [`Breaker::snapshot`] for the state as of a given `now`).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_bits(self.gate.state_epoch.load(Ordering::Acquire))
    }

    /// Admits a call, or refuses it with the time until it may be tried.
    ///
    /// Closed, forced-closed: admitted (lock-free). Open before its period
    /// ends, forced-open: refused (lock-free). Open after its period ends:
    /// moves to half-open (reported on the result) and handles the call as
    /// half-open. Half-open: admitted as a probe while fewer than
    /// `half_open_max_calls` probe tickets are alive, refused otherwise.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<BreakerTicket, BreakerRejected> {
        let gate = self.gate.state_epoch.load(Ordering::Acquire);
        let epoch = gate >> STATE_BITS;
        match BreakerState::from_bits(gate) {
            state @ (BreakerState::Closed | BreakerState::ForcedClosed) => {
                return Ok(self.ticket(epoch, state, None));
            }
            BreakerState::ForcedOpen => return Err(self.rejected_forced(None)),
            BreakerState::Open => {
                let until = self.gate.open_until.load(Ordering::Acquire);
                let at = nanos_since(self.base, now);
                if at < until {
                    return Err(rejected_open(until - at, None));
                }
            }
            BreakerState::HalfOpen => {}
        }
        self.try_acquire_locked(now)
    }

    /// The slow path: open with its period over, or half-open.
    fn try_acquire_locked(
        self: &Arc<Self>,
        now: Instant,
    ) -> Result<BreakerTicket, BreakerRejected> {
        let mut inner = self.lock();
        let transition = self.advance_locked(&mut inner, now);
        match inner.state {
            state @ (BreakerState::Closed | BreakerState::ForcedClosed) => {
                Ok(self.ticket(inner.epoch, state, transition))
            }
            BreakerState::ForcedOpen => Err(self.rejected_forced(transition)),
            BreakerState::Open => {
                let at = nanos_since(self.base, now);
                Err(rejected_open(
                    inner.open_until.saturating_sub(at),
                    transition,
                ))
            }
            BreakerState::HalfOpen => {
                if inner.half_open_in_flight < self.config.half_open_max_calls {
                    inner.half_open_in_flight += 1;
                    Ok(self.ticket(inner.epoch, BreakerState::HalfOpen, transition))
                } else {
                    Err(BreakerRejected {
                        retry_after: HALF_OPEN_FULL_RETRY_AFTER,
                        state: BreakerState::HalfOpen,
                        transition,
                    })
                }
            }
        }
    }

    /// Applies a due open → half-open change without a call to admit, for
    /// a timer that wants the transition reported on time.
    pub fn advance(&self, now: Instant) -> Option<Transition> {
        if self.state() != BreakerState::Open {
            return None;
        }
        let mut inner = self.lock();
        self.advance_locked(&mut inner, now)
    }

    /// An operator action; returns the transition, or `None` when the
    /// state does not change (forcing the state it is already in, or
    /// resetting a closed breaker, which still clears its window and
    /// backoff).
    ///
    /// `now` is unused today; it is taken so that a forced change can be
    /// timed like every other one if the breaker ever needs it.
    pub fn force(&self, action: Force, _now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let from = inner.state;
        match action {
            Force::Open => self.set_state(&mut inner, BreakerState::ForcedOpen, TripReason::Forced),
            Force::Closed => {
                self.set_state(&mut inner, BreakerState::ForcedClosed, TripReason::Forced)
            }
            Force::Reset => {
                inner.window.reset();
                inner.consecutive_failures = 0;
                inner.half_open_successes = 0;
                inner.current_open_duration = self.config.open_duration;
                if from == BreakerState::Closed {
                    // A new epoch all the same: outcomes of calls admitted
                    // before the reset must not land in the cleared window.
                    inner.epoch += 1;
                    self.gate
                        .state_epoch
                        .store(gate(inner.state, inner.epoch), Ordering::Release);
                    None
                } else {
                    self.set_state(&mut inner, BreakerState::Closed, TripReason::Reset)
                }
            }
        }
    }

    /// The breaker as of `now`, for the admin port. Changes nothing: an
    /// open breaker whose period has ended shows as half-open here, and
    /// moves there at the next [`try_acquire`](Breaker::try_acquire) or
    /// [`advance`](Breaker::advance).
    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut inner = self.lock();
        let at = nanos_since(self.base, now);
        let (state, open_remaining, half_open_successes) = match inner.state {
            BreakerState::Open if at >= inner.open_until => (BreakerState::HalfOpen, None, 0),
            BreakerState::Open => (
                BreakerState::Open,
                Some(Duration::from_nanos(inner.open_until - at)),
                inner.half_open_successes,
            ),
            state => (state, None, inner.half_open_successes),
        };
        BreakerSnapshot {
            state,
            consecutive_failures: inner.consecutive_failures,
            window: inner.window.totals(now),
            open_remaining,
            half_open_in_flight: inner.half_open_in_flight,
            half_open_successes,
            current_open_duration: inner.current_open_duration,
            n_trips: inner.n_trips,
        }
    }

    fn ticket(
        self: &Arc<Self>,
        epoch: u64,
        issued_in: BreakerState,
        transition: Option<Transition>,
    ) -> BreakerTicket {
        BreakerTicket {
            breaker: Arc::clone(self),
            epoch,
            issued_in,
            transition,
            recorded: false,
        }
    }

    fn rejected_forced(&self, transition: Option<Transition>) -> BreakerRejected {
        BreakerRejected {
            retry_after: self.config.open_duration,
            state: BreakerState::ForcedOpen,
            transition,
        }
    }

    /// Poisoning cannot leave `Inner` half-updated in a way that matters
    /// (nothing in the critical sections panics), so a poisoned lock is
    /// used as is rather than spreading the panic to every request.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open → half-open when the open period is over.
    fn advance_locked(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        if inner.state == BreakerState::Open && nanos_since(self.base, now) >= inner.open_until {
            inner.half_open_successes = 0;
            self.set_state(inner, BreakerState::HalfOpen, TripReason::OpenElapsed)
        } else {
            None
        }
    }

    /// Ends a ticket: `outcome` is `None` when it was dropped unrecorded.
    fn finish(
        &self,
        epoch: u64,
        issued_in: BreakerState,
        outcome: Option<CallResult>,
        now: Instant,
    ) -> Option<Transition> {
        match issued_in {
            BreakerState::HalfOpen => {
                self.finish_probe(epoch, outcome.map(|outcome| (outcome, now)))
            }
            BreakerState::Closed => {
                let outcome = outcome?;
                if outcome == CallResult::Ignored
                    || self.gate.state_epoch.load(Ordering::Acquire)
                        != gate(BreakerState::Closed, epoch)
                {
                    // Nothing to count, or stale: no need to lock.
                    return None;
                }
                let mut inner = self.lock();
                if inner.state != BreakerState::Closed || inner.epoch != epoch {
                    return None;
                }
                self.record_closed(&mut inner, outcome, now)
            }
            // Forced-closed counts nothing; no other state issues tickets.
            _ => None,
        }
    }

    /// Ends a probe ticket: `outcome` is `None` when it was dropped
    /// unrecorded.
    fn finish_probe(
        &self,
        epoch: u64,
        outcome: Option<(CallResult, Instant)>,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        inner.half_open_in_flight = inner.half_open_in_flight.saturating_sub(1);
        if inner.state != BreakerState::HalfOpen || inner.epoch != epoch {
            return None;
        }
        let (outcome, now) = outcome?;
        let failed = match outcome {
            CallResult::Ignored => return None,
            CallResult::Success => false,
            CallResult::Slow => self.config.slow_call_rate.is_some(),
            CallResult::Failure => true,
        };
        if failed {
            let next = inner.current_open_duration.as_secs_f64() * self.config.open_backoff;
            inner.current_open_duration = Duration::try_from_secs_f64(next)
                .unwrap_or(self.config.max_open_duration)
                .min(self.config.max_open_duration);
            return self.trip(&mut inner, TripReason::ProbeFailed, now);
        }
        inner.half_open_successes += 1;
        if inner.half_open_successes < self.config.half_open_successes {
            return None;
        }
        inner.window.reset();
        inner.consecutive_failures = 0;
        inner.half_open_successes = 0;
        inner.current_open_duration = self.config.open_duration;
        self.set_state(
            &mut inner,
            BreakerState::Closed,
            TripReason::ProbesSucceeded,
        )
    }

    /// Counts a fresh closed-state outcome and trips if a threshold is met.
    fn record_closed(
        &self,
        inner: &mut Inner,
        outcome: CallResult,
        now: Instant,
    ) -> Option<Transition> {
        let failure = outcome == CallResult::Failure;
        inner
            .window
            .record(failure, outcome == CallResult::Slow, now);
        if !failure {
            inner.consecutive_failures = 0;
        } else {
            inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
            let limit = self.config.consecutive_failures;
            if limit > 0 && inner.consecutive_failures >= limit {
                return self.trip(inner, TripReason::ConsecutiveFailures, now);
            }
        }
        let totals = inner.window.totals(now);
        if totals.calls < self.config.minimum_calls {
            return None;
        }
        if totals.failure_rate() >= self.config.failure_rate {
            return self.trip(inner, TripReason::FailureRate, now);
        }
        match self.config.slow_call_rate {
            Some(rate) if totals.slow_rate() >= rate => {
                self.trip(inner, TripReason::SlowCallRate, now)
            }
            _ => None,
        }
    }

    /// → open for `current_open_duration` (the caller has grown it if this
    /// is a re-trip).
    fn trip(&self, inner: &mut Inner, reason: TripReason, now: Instant) -> Option<Transition> {
        let open_for = duration_nanos(inner.current_open_duration);
        inner.open_until = nanos_since(self.base, now).saturating_add(open_for);
        inner.n_trips += 1;
        self.set_state(inner, BreakerState::Open, reason)
    }

    /// Moves to `to` under a new epoch and publishes it to the gate.
    fn set_state(
        &self,
        inner: &mut Inner,
        to: BreakerState,
        reason: TripReason,
    ) -> Option<Transition> {
        let from = inner.state;
        if from == to {
            return None;
        }
        inner.state = to;
        inner.epoch += 1;
        self.gate
            .open_until
            .store(inner.open_until, Ordering::Release);
        self.gate
            .state_epoch
            .store(gate(to, inner.epoch), Ordering::Release);
        Some(Transition { from, to, reason })
    }
}

fn rejected_open(remaining_nanos: u64, transition: Option<Transition>) -> BreakerRejected {
    BreakerRejected {
        retry_after: Duration::from_nanos(remaining_nanos),
        state: BreakerState::Open,
        transition,
    }
}

// === impl BreakerTicket ===

impl BreakerTicket {
    /// Records the call's outcome and returns the state change it caused,
    /// if any. An outcome from a ticket issued before the breaker's last
    /// state change counts nothing (see the module docs).
    pub fn record(mut self, outcome: CallResult, now: Instant) -> Option<Transition> {
        self.recorded = true;
        self.breaker
            .finish(self.epoch, self.issued_in, Some(outcome), now)
    }

    /// The transition that admitting this call caused (open → half-open),
    /// for the caller to report.
    pub fn transition(&self) -> Option<Transition> {
        self.transition
    }

    /// The state the call was admitted in: [`BreakerState::HalfOpen`] for
    /// a probe.
    pub fn issued_in(&self) -> BreakerState {
        self.issued_in
    }

    /// Whether this ticket holds one of the half-open probe slots.
    pub fn is_probe(&self) -> bool {
        self.issued_in == BreakerState::HalfOpen
    }
}

impl Drop for BreakerTicket {
    fn drop(&mut self) {
        if !self.recorded && self.is_probe() {
            // Only a probe holds anything; its slot must come back.
            self.breaker.finish_probe(self.epoch, None);
        }
    }
}

fn serialize_millis<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn serialize_millis_opt<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serialize_millis(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
