//! `GET /events/stream`: events as Server-Sent Events.
//!
//! [`sse_body`] returns a response body that first replays the ring after
//! the client's last seen id, then streams live events, each as
//!
//! ```text
//! id: 42
//! event: breaker
//! data: {"id":42,"time":"…","kind":"breaker",…}
//!
//! ```
//!
//! with a `: keep-alive` comment after [`KEEPALIVE`] of silence so proxies
//! and load balancers do not cut an idle stream.
//!
//! A small task per stream moves events from the bus's broadcast channel
//! into a bounded channel the body reads. Neither buffer grows with a slow
//! client: when it falls [`super::BROADCAST_CAPACITY`] events behind, it
//! gets one `event: lagged` frame saying how many it missed (it can fetch
//! them from `/events?since=`) and the stream continues. The task ends, and
//! the body with it, when the client goes away or the bus is dropped; it
//! holds no reference to the bus, so an open stream never keeps it alive.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::{Event, EventBus};

/// Silence after which a `: keep-alive` comment is sent.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The `content-type` of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// Frames ready for the client but not yet taken by hyper. Small: the
/// broadcast channel is the real buffer, and it is the one that reports lag.
const FRAME_BUFFER: usize = 16;

/// A `: keep-alive` comment; SSE clients ignore it.
const KEEPALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// The body of a `GET /events/stream` response; see the module docs.
///
/// Never ends on its own while the bus lives and the client reads; its
/// error type is [`Infallible`].
#[derive(Debug)]
pub struct SseBody {
    frames: mpsc::Receiver<Bytes>,
}

/// A streaming body for `/events/stream`: replays the ring's events with
/// `id > since` (none when `since` is `None`: live only), then live events.
///
/// The admin handler maps `?since=N`, or the `Last-Event-ID` header a
/// reconnecting `EventSource` sends, to `since`. Serve it with
/// `content-type: text/event-stream` ([`CONTENT_TYPE`]) and
/// `cache-control: no-cache`.
///
/// Call it inside a tokio runtime: the stream is pumped by a spawned task.
/// Without one the body holds the replay only, then ends.
pub fn sse_body(bus: &Arc<EventBus>, since: Option<u64>) -> SseBody {
    sse_body_with_keepalive(bus, since, KEEPALIVE)
}

/// [`sse_body`] with a chosen keep-alive period, for tests.
pub(crate) fn sse_body_with_keepalive(
    bus: &EventBus,
    since: Option<u64>,
    keepalive: Duration,
) -> SseBody {
    let (replay, live) = match since {
        Some(since) => bus.replay_and_subscribe(since),
        None => (Vec::new(), bus.subscribe()),
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let (frames_tx, frames) = mpsc::channel(FRAME_BUFFER);
            runtime.spawn(pump(replay, live, frames_tx, keepalive));
            SseBody { frames }
        }
        Err(_) => {
            let (frames_tx, frames) = mpsc::channel(replay.len().max(1));
            for event in &replay {
                if let Some(frame) = event_frame(event) {
                    // Cannot be full: the channel was sized for the replay.
                    let _ = frames_tx.try_send(frame);
                }
            }
            SseBody { frames }
        }
    }
}

// === impl SseBody ===

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .frames
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Moves the replay, then live events, into `frames` until the client
/// leaves (`frames` closed) or the bus is dropped (`live` closed).
async fn pump(
    replay: Vec<Event>,
    mut live: broadcast::Receiver<Event>,
    frames: mpsc::Sender<Bytes>,
    keepalive: Duration,
) {
    // Replay and subscription were taken under one lock, so every live
    // event is newer than the replay; the check only guards that invariant.
    let mut last_sent = 0;
    for event in replay {
        last_sent = event.id;
        let Some(frame) = event_frame(&event) else {
            continue;
        };
        if frames.send(frame).await.is_err() {
            return;
        }
    }
    let idle = tokio::time::sleep(keepalive);
    tokio::pin!(idle);
    loop {
        let frame = tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.id <= last_sent => continue,
                Ok(event) => {
                    last_sent = event.id;
                    match event_frame(&event) {
                        Some(frame) => frame,
                        None => continue,
                    }
                }
                Err(RecvError::Lagged(missed)) => lagged_frame(missed),
                Err(RecvError::Closed) => return,
            },
            () = &mut idle => Bytes::from_static(KEEPALIVE_FRAME),
            () = frames.closed() => return,
        };
        if frames.send(frame).await.is_err() {
            return;
        }
        idle.as_mut().reset(Instant::now() + keepalive);
    }
}

/// `id: N\nevent: KIND\ndata: {json}\n\n`. JSON escapes newlines, so the
/// data is one line. `None` only if the event cannot be encoded, which a
/// struct of strings and numbers cannot fail to be.
pub(crate) fn event_frame(event: &Event) -> Option<Bytes> {
    match serde_json::to_string(event) {
        Ok(json) => Some(Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {json}\n\n",
            event.id, event.kind
        ))),
        Err(error) => {
            tracing::warn!(event_id = event.id, %error, "Could not encode an event for SSE; skipped.");
            None
        }
    }
}

/// Tells a client it fell behind and `missed` events were skipped.
fn lagged_frame(missed: u64) -> Bytes {
    Bytes::from(format!("event: lagged\ndata: {{\"missed\": {missed}}}\n\n"))
}
