//! The connection wrapper that enforces HTTP/1 framing and slow-client
//! limits before hyper parses anything (SPEC §11).
//!
//! [`GuardedStream`] sits between the TCP socket and hyper. Every chunk the
//! client sends goes through [`Framer::feed`] first; a chunk that completes
//! a refused head is taken back out of hyper's buffer, so hyper never holds
//! a complete bad request and nothing of it can reach an upstream. The
//! guard then writes its own error response (only when no response of
//! hyper's can be in progress), fails the read so hyper drops the
//! connection, and lingers briefly on close so the client reads the answer
//! instead of a reset.
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
use super::service::ConnContext;
use crate::metrics::Metrics;

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

/// A TCP stream whose request bytes are framed and checked first.
pub struct GuardedStream {
    inner: Option<TcpStream>,
    framer: Framer,
    context: Arc<ConnContext>,
    counters: Arc<GuardCounters>,
    timeouts: GuardTimeouts,
    /// Deadline of the running timer and what it guards.
    deadline: Option<(Instant, Phase)>,
    /// Allocated at accept with the connection's other long-lived state,
    /// not later among a request's short-lived buffers (which would leave
    /// it pinning their pages after they are freed).
    sleep: Pin<Box<Sleep>>,
    refused: bool,
}

impl GuardedStream {
    /// Wraps a freshly accepted connection.
    pub fn new(
        stream: TcpStream,
        context: Arc<ConnContext>,
        limits: HeadLimits,
        timeouts: GuardTimeouts,
        counters: Arc<GuardCounters>,
    ) -> Self {
        // The first head must arrive within header_read of the accept.
        let deadline = Some((Instant::now() + timeouts.header_read, Phase::Head));
        GuardedStream {
            inner: Some(stream),
            framer: Framer::new(limits),
            context,
            counters,
            timeouts,
            deadline,
            sleep: Box::pin(tokio::time::sleep_until(
                deadline.map_or_else(Instant::now, |(at, _)| at),
            )),
            refused: false,
        }
    }

    /// Waits until the client sent something (or closed), without reading.
    pub async fn readable(&self) -> io::Result<()> {
        match &self.inner {
            Some(stream) => stream.readable().await,
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )),
        }
    }

    fn inner(&mut self) -> io::Result<&mut TcpStream> {
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

    /// Answers a refused request (when nothing else can be writing), counts
    /// it, and fails the read so hyper drops the connection.
    fn refuse(
        &mut self,
        cx: &mut Context<'_>,
        status: u16,
        reason: &'static str,
        counter: Option<&IntCounter>,
    ) -> io::Error {
        self.refused = true;
        if let Some(counter) = counter {
            counter.inc();
        }
        tracing::debug!(peer = %self.context.peer, listener = &*self.context.listener, status, reason, "Request refused before routing.");
        // A response of hyper's may be on the wire while a request is in
        // flight; then the connection is only closed.
        let (_, quiet) = self.context.activity.observe();
        if quiet && status != 0 {
            let response = error_response(status, reason);
            if let Some(stream) = self.inner.as_mut() {
                let _ = Pin::new(stream).poll_write(cx, response.as_bytes());
            }
        }
        io::Error::new(io::ErrorKind::InvalidData, reason)
    }
}

/// The complete bytes of a refusal response.
fn error_response(status: u16, reason: &str) -> String {
    let phrase = match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let header_reason = reason.replace('_', "-");
    let body = format!("{{\"error\":\"{header_reason}\",\"status\":{status}}}\n");
    format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\nx-breakwater-reason: {header_reason}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl AsyncRead for GuardedStream {
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
                            this.context
                                .framing_stopped
                                .store(true, std::sync::atomic::Ordering::Release);
                        }
                        this.update_deadline(phase);
                        Poll::Ready(Ok(()))
                    }
                    Err(violation) => {
                        // Take the refused bytes back: hyper never sees them.
                        buf.set_filled(before);
                        let counters = this.counters.clone();
                        let status = if phase == Phase::Body {
                            0
                        } else {
                            violation.status()
                        };
                        Poll::Ready(Err(this.refuse(
                            cx,
                            status,
                            violation.reason(),
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
                        Some(&counters.body_read_timeout),
                    ),
                    _ => this.refuse(
                        cx,
                        408,
                        "header_read_timeout",
                        Some(&counters.header_read_timeout),
                    ),
                };
                Poll::Ready(Err(error))
            }
        }
    }
}

use std::future::Future as _;

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.inner()?).poll_write_vectored(cx, bufs)
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
        if self
            .context
            .parking
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Pin::new(self.inner()?).poll_flush(cx);
        }
        Pin::new(self.inner()?).poll_shutdown(cx)
    }
}

impl Drop for GuardedStream {
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

#[cfg(test)]
mod tests {
    use super::error_response;

    #[test]
    fn refusals_are_complete_http_responses() {
        let response = error_response(400, "content_length_with_transfer_encoding");
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(response.contains("x-breakwater-reason: content-length-with-transfer-encoding\r\n"));
        assert!(response.contains("connection: close\r\n"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
