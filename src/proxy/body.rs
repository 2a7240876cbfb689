//! The one body type of the data plane, and what happens when it ends.
//!
//! Requests and responses both flow as [`Body`]: a streamed hyper body
//! (never collected), a small in-memory body for breakwater's own replies,
//! or nothing. A response body carries a **tail**: everything that must
//! learn how the exchange really ended, which is only known when the body
//! has ended (its last byte sent, the upstream breaking it, or the client
//! going away — and, for gRPC, its trailers):
//!
//! - the classification made when the response headers arrived
//!   ([`Body::classify`]), refined once at the end ([`End::outcome`]) —
//!   for a gRPC call, by the `grpc-status` in its trailers
//!   ([`Body::await_grpc_status`]);
//! - the bulkhead permit, released by ownership when the body is dropped;
//! - the breaker's ticket ([`BreakerRecord`]), recorded with the outcome;
//! - the try's endpoint ([`TryRecord`]): outlier detection and the
//!   supervisor's try counts;
//! - the access log and request metrics ([`Completion`]);
//! - a copy of the body for the stale-if-error store ([`Capture`]), kept
//!   only if the body ends whole.
//!
//! They are typed fields of one boxed `Tail`, attached by the layers
//! that own them, so a request costs one allocation for all of them (plus
//! the log's closure), and each fires exactly once.
//!
//! A downstream request body also watches for the client's own failure
//! ([`ClientFault`]): a body cut short or framed badly ends the exchange
//! as the client's doing, never the upstream's.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::outcome::{caused_by, CallError, End, EndReason, Outcome};
use super::report::BreakerRecord;
use super::stale::Capture;
use super::upstream::http1::Lease;
use super::upstream::passive::TryRecord;
use crate::grpc::{self, Code, CodeSet};
use crate::policy::bulkhead::BulkheadPermit;

/// Errors a body can yield; allocated only when one happens.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub struct Body {
    kind: Kind,
    tail: Option<Box<Tail>>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    /// breakwater's own gRPC message: data, then trailers.
    WithTrailers {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// A streamed hyper body: an upstream's response over HTTP/2, or an
    /// upgrade response.
    Incoming(Incoming),
    /// A downstream request body; `fault` notes the client's failure.
    Downstream {
        incoming: Incoming,
        fault: Option<Arc<ClientFault>>,
    },
    /// An upstream response body on a pooled HTTP/1 connection, which
    /// goes back to its pool once the body has reached its end.
    Leased {
        incoming: Incoming,
        lease: Lease<Body>,
    },
    /// A request body streamed to its first try while a copy is kept, so
    /// a retry can send it again if it turned out small enough.
    Recorded {
        inner: Box<Body>,
        recording: Arc<Recording>,
    },
}

/// The copy a [`Body::recorded`] body keeps: whole if it ended within the
/// limit, else nothing.
#[derive(Debug)]
pub struct Recording {
    limit: u64,
    state: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    chunks: Vec<Bytes>,
    len: u64,
    complete: bool,
    /// Past the limit, or carrying trailers: not replayable.
    given_up: bool,
}

impl Recording {
    /// A recording of at most `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Recording {
            limit,
            state: Mutex::new(Recorded::default()),
        })
    }

    /// The whole body, if it ended within the limit.
    pub fn whole(&self) -> Option<Bytes> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.complete || state.given_up {
            return None;
        }
        Some(match state.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }

    fn frame(&self, frame: &Frame<Bytes>, ended: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.given_up {
            if let Some(data) = frame.data_ref() {
                state.len += data.len() as u64;
                if state.len > self.limit {
                    state.given_up = true;
                    state.chunks = Vec::new();
                } else {
                    state.chunks.push(data.clone());
                }
            } else {
                state.given_up = true;
                state.chunks = Vec::new();
            }
        }
        state.complete |= ended;
    }

    fn end(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .complete = true;
    }
}

/// What must learn how a response ended. See the module docs.
struct Tail {
    outcome: Outcome,
    upstream_elapsed: Option<Duration>,
    /// For a gRPC call whose status is still to come: the codes that are
    /// failures.
    grpc_pending: Option<CodeSet>,
    /// The call's `grpc-status`, once known.
    grpc_status: Option<Code>,
    /// The request's client: when the response breaks because the client
    /// broke its request body, the exchange ends as the client's failure.
    client: Option<Arc<ClientFault>>,
    permit: Option<BulkheadPermit>,
    breaker: Option<BreakerRecord>,
    endpoint: Option<TryRecord>,
    completion: Option<Completion>,
    capture: Option<Capture>,
}

/// Runs once when a response ends: the access log and request metrics.
pub struct Completion {
    on_end: Box<dyn FnOnce(&End) + Send + Sync>,
}

impl Completion {
    /// Calls `on_end` exactly once, when the body ends or is dropped.
    pub fn new(on_end: impl FnOnce(&End) + Send + Sync + 'static) -> Self {
        Completion {
            on_end: Box::new(on_end),
        }
    }
}

/// The client's failure while sending its request body, noted by the body
/// and read by whoever sent it upstream.
#[derive(Debug, Default)]
pub struct ClientFault(AtomicU8);

const NO_FAULT: u8 = 0;
const FAULT_GONE: u8 = 1;
const FAULT_MALFORMED: u8 = 2;

impl ClientFault {
    /// The client's failure, if its body failed.
    pub fn get(&self) -> Option<CallError> {
        match self.0.load(Ordering::Acquire) {
            FAULT_GONE => Some(CallError::ClientGone),
            FAULT_MALFORMED => Some(CallError::ClientMalformed),
            _ => None,
        }
    }

    /// Notes how the client's body failed: refused by the framing guard or
    /// unparseable (malformed), or anything else, such as a body cut short
    /// or a stall past `body_read_idle` (the client gone).
    fn note(&self, error: &hyper::Error) {
        let malformed = error.is_parse() || caused_by(error, std::io::ErrorKind::InvalidData);
        let fault = if malformed {
            FAULT_MALFORMED
        } else {
            FAULT_GONE
        };
        let _ = self
            .0
            .compare_exchange(NO_FAULT, fault, Ordering::AcqRel, Ordering::Acquire);
    }
}

// === impl Body ===

impl Body {
    fn of(kind: Kind) -> Self {
        Body { kind, tail: None }
    }

    /// No body.
    pub fn empty() -> Self {
        Body::of(Kind::Empty)
    }

    /// A body held in memory followed by `trailers` (breakwater's own
    /// gRPC message and its status).
    pub fn with_trailers(data: Bytes, trailers: HeaderMap) -> Self {
        Body::of(Kind::WithTrailers {
            data: Some(data).filter(|data| !data.is_empty()),
            trailers: Some(trailers),
        })
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::empty()
        } else {
            Body::of(Kind::Full(Some(bytes)))
        }
    }

    /// A streamed hyper body.
    pub fn incoming(incoming: Incoming) -> Self {
        Body::of(Kind::Incoming(incoming))
    }

    /// A downstream request body.
    pub fn downstream(incoming: Incoming) -> Self {
        Body::of(Kind::Downstream {
            incoming,
            fault: None,
        })
    }

    /// An upstream response body whose connection returns to its pool
    /// when the body ends.
    pub fn leased(incoming: Incoming, lease: Lease<Body>) -> Self {
        Body::of(Kind::Leased { incoming, lease })
    }

    /// `body`, streamed as it is, while `recording` keeps a copy.
    pub fn recorded(body: Body, recording: Arc<Recording>) -> Self {
        Body::of(Kind::Recorded {
            inner: Box::new(body),
            recording,
        })
    }

    /// For a downstream request body still to be read: a handle that says
    /// whether the client failed while sending it. `None` for any other
    /// body (nothing left that the client could break).
    pub fn watch_client(&mut self) -> Option<Arc<ClientFault>> {
        match &mut self.kind {
            Kind::Downstream { incoming, fault } if !incoming.is_end_stream() => {
                Some(fault.get_or_insert_with(Default::default).clone())
            }
            Kind::Recorded { inner, .. } => inner.watch_client(),
            _ => None,
        }
    }

    fn tail(&mut self) -> &mut Tail {
        self.tail.get_or_insert_with(|| {
            Box::new(Tail {
                outcome: Outcome::Success,
                upstream_elapsed: None,
                grpc_pending: None,
                grpc_status: None,
                client: None,
                permit: None,
                breaker: None,
                endpoint: None,
                completion: None,
                capture: None,
            })
        })
    }

    /// Records how the response was classified when its headers arrived,
    /// and the try's time to them.
    pub fn classify(&mut self, outcome: Outcome, upstream_elapsed: Option<Duration>) {
        let tail = self.tail();
        tail.outcome = outcome;
        tail.upstream_elapsed = upstream_elapsed;
    }

    /// A gRPC call whose status comes in the trailers: when they arrive,
    /// a status in `failures` makes the outcome `grpc_error`; if the
    /// stream ends without one it is a failure too, and if the client
    /// abandons the call first it says nothing.
    pub fn await_grpc_status(&mut self, failures: CodeSet) {
        self.tail().grpc_pending = Some(failures);
    }

    /// Records the `grpc-status` the call ended with (a trailers-only
    /// response, or breakwater's own gRPC reply).
    pub fn set_grpc_status(&mut self, code: Code) {
        self.tail().grpc_status = Some(code);
    }

    /// The call's `grpc-status`, when it is known already.
    pub fn grpc_status(&self) -> Option<Code> {
        self.tail.as_ref().and_then(|tail| tail.grpc_status)
    }

    /// Ties this response to its request's client: if the response breaks
    /// after the client broke its request body, the client is to blame.
    pub fn watch_request(&mut self, client: Arc<ClientFault>) {
        self.tail().client = Some(client);
    }

    /// The classification made at the headers (`success` when none was).
    pub fn outcome(&self) -> Outcome {
        self.tail
            .as_ref()
            .map_or(Outcome::Success, |tail| tail.outcome)
    }

    /// Holds `permit` until this body is dropped.
    pub fn hold_permit(&mut self, permit: BulkheadPermit) {
        self.tail().permit = Some(permit);
    }

    /// Records the breaker's ticket when this body ends.
    pub fn record_breaker(&mut self, record: BreakerRecord) {
        self.tail().breaker = Some(record);
    }

    /// Records the try against its endpoint when this body ends.
    pub fn record_try(&mut self, record: TryRecord) {
        self.tail().endpoint = Some(record);
    }

    /// Runs `completion` when this body ends.
    pub fn complete_with(&mut self, completion: Completion) {
        self.tail().completion = Some(completion);
    }

    /// Copies the body into `capture` as it streams, kept if it ends whole.
    pub fn capture_into(&mut self, capture: Capture) {
        self.tail().capture = Some(capture);
    }

    /// Fires the tail's hooks once, with how the body ended.
    fn finish(&mut self, reason: EndReason) {
        let Some(mut tail) = self.tail.take() else {
            return;
        };
        let client_fault = tail.client.as_ref().and_then(|client| client.get());
        let outcome = match (reason, tail.outcome) {
            (EndReason::Error, Outcome::Success | Outcome::Slow | Outcome::Http5xx) => {
                client_fault.map_or(Outcome::Reset, CallError::outcome)
            }
            // A gRPC call that ended without its status failed, as its
            // client sees it; one the client abandoned first says nothing.
            (EndReason::Complete, _) if tail.grpc_pending.is_some() => Outcome::GrpcError,
            (EndReason::Dropped, _) if tail.grpc_pending.is_some() => Outcome::Cancelled,
            (_, outcome) => outcome,
        };
        let end = End {
            outcome,
            reason,
            upstream_elapsed: tail.upstream_elapsed,
            grpc_status: tail.grpc_status,
        };
        if let Some(record) = tail.endpoint.take() {
            record.finish(&end);
        }
        if let Some(record) = tail.breaker.take() {
            record.finish(&end);
        }
        if let Some(completion) = tail.completion.take() {
            (completion.on_end)(&end);
        }
        if let (Some(capture), EndReason::Complete, Outcome::Success | Outcome::Slow) =
            (tail.capture.take(), reason, outcome)
        {
            capture.keep(tokio::time::Instant::now());
        }
        // The permit goes last: the slot frees once everything is counted,
        // and an adaptive limit learns from an upstream that answered.
        if let Some(permit) = tail.permit.take() {
            if let (Outcome::Success | Outcome::Slow, Some(latency)) =
                (end.outcome, end.upstream_elapsed)
            {
                permit.completed(latency);
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.tail.is_some() {
            self.finish(EndReason::Dropped);
        }
        if let Kind::Leased { incoming, lease } = &mut self.kind {
            // A body nobody read to the end may still be complete (an empty
            // or fully counted one); otherwise the connection closes with it.
            if incoming.is_end_stream() {
                lease.release();
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::WithTrailers { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            Kind::Incoming(incoming) => poll_incoming(incoming, cx, None),
            Kind::Downstream { incoming, fault } => poll_incoming(incoming, cx, fault.as_deref()),
            Kind::Leased { incoming, lease } => {
                let polled = poll_incoming(incoming, cx, None);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => incoming.is_end_stream(),
                    _ => false,
                };
                if ended {
                    lease.release();
                }
                polled
            }
            Kind::Recorded { inner, recording } => {
                let polled = Pin::new(&mut **inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => recording.frame(frame, inner.is_end_stream()),
                    Poll::Ready(None) => recording.end(),
                    _ => {}
                }
                polled
            }
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(tail)) = (&polled, this.tail.as_mut()) {
            if let (Some(capture), Some(data)) = (tail.capture.as_mut(), frame.data_ref()) {
                capture.push(data);
            }
            if let Some(trailers) = frame.trailers_ref() {
                tail.trailers(trailers);
            }
        }
        match &polled {
            Poll::Ready(None) => this.finish(EndReason::Complete),
            Poll::Ready(Some(Err(_))) => this.finish(EndReason::Error),
            // hyper stops polling a body of known length once it has it all,
            // so the last frame is the end.
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.finish(EndReason::Complete),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(bytes) => bytes.is_none(),
            Kind::WithTrailers { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Recorded { inner, .. } => inner.is_end_stream(),
            Kind::Incoming(incoming)
            | Kind::Downstream { incoming, .. }
            | Kind::Leased { incoming, .. } => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            // Unknown length: over HTTP/1.1 the trailers need chunked.
            Kind::WithTrailers { .. } => SizeHint::default(),
            Kind::Recorded { inner, .. } => inner.size_hint(),
            Kind::Incoming(incoming)
            | Kind::Downstream { incoming, .. }
            | Kind::Leased { incoming, .. } => incoming.size_hint(),
        }
    }
}

impl Tail {
    /// The trailers arrived: a gRPC call's status is in them.
    fn trailers(&mut self, trailers: &HeaderMap) {
        let Some(failures) = self.grpc_pending else {
            return;
        };
        let Some(code) = grpc::status(trailers) else {
            return;
        };
        self.grpc_pending = None;
        self.grpc_status = Some(code);
        if failures.contains(code) && matches!(self.outcome, Outcome::Success | Outcome::Slow) {
            self.outcome = Outcome::GrpcError;
        }
    }
}

/// A frame of a hyper body, its error boxed (and, for a downstream body,
/// noted as the client's fault).
fn poll_incoming(
    incoming: &mut Incoming,
    cx: &mut Context<'_>,
    fault: Option<&ClientFault>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(incoming).poll_frame(cx).map(|frame| {
        frame.map(|result| {
            result.map_err(|error| {
                if let Some(fault) = fault {
                    fault.note(&error);
                }
                error.into()
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::BodyExt;

    use super::*;

    fn recorded() -> (Arc<Mutex<Vec<End>>>, Completion) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let completion = Completion::new(move |end| record.lock().unwrap().push(*end));
        (seen, completion)
    }

    #[tokio::test]
    async fn completion_fires_once_on_end() {
        let (seen, completion) = recorded();
        let mut body = Body::full("hello");
        body.complete_with(completion);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].reason, EndReason::Complete);
    }

    #[tokio::test]
    async fn completion_fires_complete_on_last_frame() {
        let (seen, completion) = recorded();
        let mut body = Body::full("hello");
        body.complete_with(completion);
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        drop(body);
        assert_eq!(seen.lock().unwrap()[0].reason, EndReason::Complete);
    }

    #[test]
    fn completion_fires_on_drop_with_the_headers_classification() {
        let (seen, completion) = recorded();
        let mut body = Body::full("hello");
        body.classify(Outcome::Http5xx, Some(Duration::from_millis(3)));
        body.complete_with(completion);
        drop(body);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].reason, EndReason::Dropped);
        assert_eq!(seen[0].outcome, Outcome::Http5xx);
        assert_eq!(seen[0].upstream_elapsed, Some(Duration::from_millis(3)));
    }

    #[tokio::test]
    async fn a_recording_is_whole_only_within_its_limit() {
        let recording = Recording::new(8);
        let body = Body::recorded(Body::full("abc"), recording.clone());
        assert_eq!(recording.whole(), None, "nothing read yet");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert_eq!(recording.whole().as_deref(), Some(&b"abc"[..]));

        let recording = Recording::new(2);
        let body = Body::recorded(Body::full("abc"), recording.clone());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
        assert_eq!(recording.whole(), None, "past the limit");

        let recording = Recording::new(64);
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "1".parse().unwrap());
        let body = Body::recorded(
            Body::with_trailers(Bytes::from_static(b"abc"), trailers),
            recording.clone(),
        );
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
        assert_eq!(recording.whole(), None, "trailers are not replayed");
    }

    #[tokio::test]
    async fn grpc_trailers_decide_the_outcome() {
        let failures: CodeSet = [Code::UNAVAILABLE].into_iter().collect();
        for (status, outcome) in [("0", Outcome::Success), ("14", Outcome::GrpcError)] {
            let (seen, completion) = recorded();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            let mut body = Body::with_trailers(Bytes::from_static(b"msg"), trailers);
            body.await_grpc_status(failures);
            body.complete_with(completion);
            body.collect().await.unwrap();
            let end = seen.lock().unwrap()[0];
            assert_eq!(end.outcome, outcome);
            assert_eq!(end.grpc_status.map(Code::label), Some(status));
        }
        // Ended without a status: failed. Abandoned before it: says nothing.
        let (seen, completion) = recorded();
        let mut body = Body::full("msg");
        body.await_grpc_status(failures);
        body.complete_with(completion);
        body.collect().await.unwrap();
        assert_eq!(seen.lock().unwrap()[0].outcome, Outcome::GrpcError);
        let (seen, completion) = recorded();
        let mut body = Body::full("msg");
        body.await_grpc_status(failures);
        body.complete_with(completion);
        drop(body);
        assert_eq!(seen.lock().unwrap()[0].outcome, Outcome::Cancelled);
    }

    #[test]
    fn only_a_downstream_body_is_watched() {
        assert!(Body::full("x").watch_client().is_none());
        assert!(Body::empty().watch_client().is_none());
    }
}
