//! The connection wrapper that enforces HTTP/1 framing and slow-client
//! limits before hyper parses anything (SPEC §11).
//!
//! [`GuardedStream`] sits between the TCP socket and hyper. Every chunk the
//! client sends goes through [`Framer::feed`] first; a chunk that completes
//! a refused head is taken back out of hyper's buffer, so hyper never holds
//! a complete bad request and nothing of it can reach an upstream. The
//! guard then writes its own error response (only when no response of
//! hyper's can be in progress: none was written since the refused
//! request's head), fails the read so hyper drops the connection, refuses
//! every later write so nothing of hyper's can follow its answer, and
//! lingers briefly on close so the client reads the answer instead of a
//! reset. A request refused mid-body (a malformed chunk) thus still gets
//! its 400, and the request already forwarded ends as the client's
//! failure, never the upstream's.
//!
//! The guard works over any [`Transport`]: plain TCP, and TLS, where it
//! wraps the decrypted stream — every framing rule and limit applies
//! inside TLS exactly as on plain TCP. (An intercepted connection is plain
//! TCP or TLS like any other.)
//!
//! It also owns two timers hyper does not have in the form we need:
//! `header_read` (from accept for the first request, from its first byte
//! for later ones) → 408 and close; and `body_read_idle` (no body byte for
//! that long) → close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::framing::{Framer, HeadLimits, Phase, Violation};
use super::meta::{Conn, Flag};
use super::reject::http1_refusal;
use crate::metrics::Metrics;

/// A downstream byte stream the guard can sit on.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Resolves when the peer has sent something (or closed), without
    /// reading: a parked connection waits on this with no buffer.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// A TLS connection is ready when rustls already holds decrypted bytes
/// (or the peer's close) that hyper has not read — a record larger than
/// the last read leaves some behind — or when the socket is readable.
/// A record with no application data (a TLS 1.3 key update) also wakes a
/// parked connection; its new session then simply waits for a request.
impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (socket, session) = self.get_ref();
        if !session.wants_read() {
            return Poll::Ready(Ok(()));
        }
        socket.poll_read_ready(cx)
    }
}

/// How long a refused connection is drained before it is closed, so the
/// client's unread bytes do not turn our FIN into a reset that destroys the
/// error response.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024;

/// `breakwater_rejected_total{listener,reason}` handles for one listener.
pub struct GuardCounters {
    violations: Vec<(Violation, IntCounter)>,
    header_read_timeout: IntCounter,
    body_read_timeout: IntCounter,
}

impl GuardCounters {
    /// Resolves every handle for `listener` once.
    pub fn new(metrics: &Metrics, listener: &str) -> Self {
        let counter = |reason: &str| {
            metrics
                .rejected_total
                .with_label_values(&[listener, reason])
        };
        GuardCounters {
            violations: Violation::ALL
                .iter()
                .map(|v| (*v, counter(v.reason())))
                .collect(),
            header_read_timeout: counter("header_read_timeout"),
            body_read_timeout: counter("body_read_timeout"),
        }
    }

    fn violation(&self, violation: Violation) -> Option<&IntCounter> {
        self.violations
            .iter()
            .find(|(v, _)| *v == violation)
            .map(|(_, counter)| counter)
    }
}

/// Timing limits the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct GuardTimeouts {
    /// Time to send a complete request head.
    pub header_read: Duration,
    /// Longest pause while sending a request body.
    pub body_read_idle: Duration,
}

/// A downstream stream whose request bytes are framed and checked first.
pub struct GuardedStream<IO: Transport> {
    inner: Option<IO>,
    framer: Framer,
    conn: Arc<Conn>,
    counters: Arc<GuardCounters>,
    timeouts: GuardTimeouts,
    /// Deadline of the running timer and what it guards.
    deadline: Option<(Instant, Phase)>,
    /// Allocated at accept with the connection's other long-lived state,
    /// not later among a request's short-lived buffers (which would leave
    /// it pinning their pages after they are freed).
    sleep: Pin<Box<Sleep>>,
    refused: bool,
    /// Heads the framer had passed when `wrote` was last reset.
    heads_seen: u64,
    /// Whether hyper wrote anything since the latest request head: then a
    /// response may be on the wire and the guard must not write its own.
    wrote: bool,
}

impl<IO: Transport> GuardedStream<IO> {
    /// Wraps a freshly accepted connection.
    pub fn new(
        stream: IO,
        conn: Arc<Conn>,
        limits: HeadLimits,
        timeouts: GuardTimeouts,
        counters: Arc<GuardCounters>,
    ) -> Self {
        // The first head must arrive within header_read of the accept.
        let deadline = Some((Instant::now() + timeouts.header_read, Phase::Head));
        GuardedStream {
            inner: Some(stream),
            framer: Framer::new(limits),
            conn,
            counters,
            timeouts,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.map_or_else(Instant::now, |(at, _)| at),
            )),
            refused: false,
            heads_seen: 0,
            wrote: false,
        }
    }

    /// Waits until the client sent something (or closed), without reading.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| match &self.inner {
            Some(stream) => stream.poll_read_ready(cx),
            None => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            ))),
        })
        .await
    }

    fn inner(&mut self) -> io::Result<&mut IO> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection closed"))
    }

    /// Re-arms the timer after the framer moved on.
    fn update_deadline(&mut self, before: Phase) {
        self.deadline = match self.framer.phase() {
            Phase::Head if before == Phase::Head => self.deadline,
            Phase::Head if self.framer.n_heads == 0 => self.deadline,
            Phase::Head => Some((Instant::now() + self.timeouts.header_read, Phase::Head)),
            Phase::Body => Some((Instant::now() + self.timeouts.body_read_idle, Phase::Body)),
            Phase::Idle | Phase::Passthrough => None,
        };
    }

    /// Answers a refused request (when no response of hyper's can be in
    /// progress), counts it, and fails the read so hyper drops the
    /// connection. `status` 0 closes without an answer. The error's kind
    /// tells a malformed request (`InvalidData`) from a stalled one
    /// (`TimedOut`).
    fn refuse(
        &mut self,
        cx: &mut Context<'_>,
        status: u16,
        reason: &'static str,
        kind: io::ErrorKind,
        counter: Option<&IntCounter>,
    ) -> io::Error {
        self.refused = true;
        if let Some(counter) = counter {
            counter.inc();
        }
        let meta = &self.conn.meta;
        tracing::debug!(peer = %meta.peer, listener = &*meta.listener, status, reason, "Request refused by the framing guard.");
        // hyper may be writing a response; then the connection is only
        // closed. Nothing written since the refused request's head, with
        // no earlier response still streaming, means nothing is.
        let (_, quiet) = self.conn.activity.observe();
        let current_only = self.conn.activity.in_flight() <= 1;
        let unanswered = quiet || (current_only && !self.wrote);
        if unanswered && status != 0 {
            let response = http1_refusal(status, reason);
            if let Some(stream) = self.inner.as_mut() {
                let _ = Pin::new(stream).poll_write(cx, response.as_bytes());
            }
        }
        io::Error::new(kind, reason)
    }
}

impl<IO: Transport> AsyncRead for GuardedStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.refused {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request refused",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(this.inner()?).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                let phase = this.framer.phase();
                match this.framer.feed(fresh) {
                    Ok(()) => {
                        if this.framer.phase() == Phase::Passthrough && this.framer.n_heads > 0 {
                            this.conn.flags.set(Flag::FramingStopped, true);
                        }
                        if this.framer.n_heads != this.heads_seen {
                            this.heads_seen = this.framer.n_heads;
                            this.wrote = false;
                        }
                        this.update_deadline(phase);
                        Poll::Ready(Ok(()))
                    }
                    Err(violation) => {
                        // Take the refused bytes back: hyper never sees them.
                        buf.set_filled(before);
                        let counters = this.counters.clone();
                        Poll::Ready(Err(this.refuse(
                            cx,
                            violation.status(),
                            violation.reason(),
                            io::ErrorKind::InvalidData,
                            counters.violation(violation),
                        )))
                    }
                }
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                let Some((deadline, guarding)) = this.deadline else {
                    return Poll::Pending;
                };
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                ready!(this.sleep.as_mut().poll(cx));
                this.deadline = None;
                let counters = this.counters.clone();
                let error = match guarding {
                    Phase::Body => this.refuse(
                        cx,
                        0,
                        "body_read_timeout",
                        io::ErrorKind::TimedOut,
                        Some(&counters.body_read_timeout),
                    ),
                    _ => this.refuse(
                        cx,
                        408,
                        "header_read_timeout",
                        io::ErrorKind::TimedOut,
                        Some(&counters.header_read_timeout),
                    ),
                };
                Poll::Ready(Err(error))
            }
        }
    }
}

use std::future::Future as _;

impl<IO: Transport> GuardedStream<IO> {
    /// The stream for hyper's writes: none after a refusal, since the
    /// guard's answer must be the last thing on the wire.
    fn writable(&mut self) -> io::Result<&mut IO> {
        if self.refused {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "request refused"));
        }
        self.wrote = true;
        self.inner()
    }
}

impl<IO: Transport> AsyncWrite for GuardedStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.writable()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.writable()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parking an idle connection ends hyper's session on it, not the
        // connection: the socket stays open for the client's next request.
        if self.conn.flags.get(Flag::Parking) {
            return Pin::new(self.inner()?).poll_flush(cx);
        }
        Pin::new(self.inner()?).poll_shutdown(cx)
    }
}

impl<IO: Transport> Drop for GuardedStream<IO> {
    fn drop(&mut self) {
        if !self.refused {
            return;
        }
        let (Some(mut stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _ = stream.shutdown().await;
            let mut scratch = [0u8; 4096];
            let mut drained = 0;
            let deadline = Instant::now() + LINGER;
            while drained < LINGER_BYTES {
                match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
                    Ok(Ok(n)) if n > 0 => drained += n,
                    _ => break,
                }
            }
        });
    }
}
