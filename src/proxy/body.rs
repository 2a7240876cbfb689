//! The one body type of the data plane.
//!
//! Requests and responses both flow as [`Body`]: a streamed hyper body
//! (never collected), a small in-memory body for breakwater's own replies,
//! or nothing. A body can carry a [`Completion`] that runs when the body
//! ends or is dropped — that is how the access log, the duration histogram
//! and (later) bulkhead permits learn that a response is really over,
//! including when the client goes away mid-body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::client::Lease;

/// Errors a body can yield; allocated only when one happens.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub struct Body {
    kind: Kind,
    completion: Option<Completion>,
    /// A bulkhead slot held until the response is over: dropped with the
    /// body, whether it ended, failed, or the client went away.
    permit: Option<crate::policy::bulkhead::BulkheadPermit>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    /// An upstream response body on a pooled connection.
    Leased(Leased),
}

/// An upstream response body and the connection it arrives on, which
/// goes back to its pool once the body has reached its end.
struct Leased {
    incoming: Incoming,
    lease: Lease,
}

impl Drop for Leased {
    fn drop(&mut self) {
        // A body nobody read to the end may still be complete (an empty
        // or fully counted one); otherwise the connection closes with it.
        if self.incoming.is_end_stream() {
            self.lease.release();
        }
    }
}

/// Runs once when a body finishes or is dropped.
pub struct Completion {
    on_end: Option<Box<dyn FnOnce(EndReason) + Send + Sync>>,
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// All of it was sent.
    Complete,
    /// The stream failed part way (e.g. the upstream reset).
    Error,
    /// It was dropped before the end (e.g. the client went away).
    Dropped,
}

impl Completion {
    /// Calls `on_end` exactly once.
    pub fn new(on_end: impl FnOnce(EndReason) + Send + Sync + 'static) -> Self {
        Completion {
            on_end: Some(Box::new(on_end)),
        }
    }

    fn fire(&mut self, reason: EndReason) {
        if let Some(on_end) = self.on_end.take() {
            on_end(reason);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.fire(EndReason::Dropped);
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Body {
            kind: Kind::Empty,
            completion: None,
            permit: None,
        }
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let kind = if bytes.is_empty() {
            Kind::Empty
        } else {
            Kind::Full(Some(bytes))
        };
        Body {
            kind,
            completion: None,
            permit: None,
        }
    }

    /// A streamed hyper body.
    pub fn incoming(incoming: Incoming) -> Self {
        Body {
            kind: Kind::Incoming(incoming),
            completion: None,
            permit: None,
        }
    }

    /// An upstream response body whose connection returns to its pool
    /// when the body ends.
    pub fn leased(incoming: Incoming, lease: Lease) -> Self {
        Body {
            kind: Kind::Leased(Leased { incoming, lease }),
            completion: None,
            permit: None,
        }
    }

    /// Holds `permit` until this body is dropped.
    pub fn with_permit(mut self, permit: crate::policy::bulkhead::BulkheadPermit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// Attaches a completion to run when this body ends.
    pub fn with_completion(mut self, completion: Completion) -> Self {
        self.completion = Some(completion);
        self
    }

    fn finish(&mut self, reason: EndReason) {
        if let Some(mut completion) = self.completion.take() {
            completion.fire(reason);
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
            Kind::Incoming(incoming) => poll_incoming(incoming, cx),
            Kind::Leased(leased) => {
                let polled = poll_incoming(&mut leased.incoming, cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => leased.incoming.is_end_stream(),
                    _ => false,
                };
                if ended {
                    leased.lease.release();
                }
                polled
            }
        };
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
            Kind::Incoming(incoming) => incoming.is_end_stream(),
            Kind::Leased(leased) => leased.incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Incoming(incoming) => incoming.size_hint(),
            Kind::Leased(leased) => leased.incoming.size_hint(),
        }
    }
}

/// A frame of a hyper body, its error boxed.
fn poll_incoming(
    incoming: &mut Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Pin::new(incoming)
        .poll_frame(cx)
        .map(|frame| frame.map(|result| result.map_err(Into::into)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn completion_fires_once_on_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let body = Body::full("hello").with_completion(Completion::new(move |reason| {
            record.lock().unwrap().push(reason)
        }));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello");
        assert_eq!(*seen.lock().unwrap(), [EndReason::Complete]);
    }

    #[tokio::test]
    async fn completion_fires_complete_on_last_frame() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let mut body = Body::full("hello").with_completion(Completion::new(move |reason| {
            record.lock().unwrap().push(reason)
        }));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        drop(body);
        assert_eq!(*seen.lock().unwrap(), [EndReason::Complete]);
    }

    #[test]
    fn completion_fires_on_drop() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        drop(
            Body::full("hello").with_completion(Completion::new(move |reason| {
                record.lock().unwrap().push(reason)
            })),
        );
        assert_eq!(*seen.lock().unwrap(), [EndReason::Dropped]);
    }
}
