//! One downstream connection, from accept to close.
//!
//! The first bytes (read through the framing guard) tell HTTP/2 with prior
//! knowledge (the h2c preface) from HTTP/1.x. An h2c connection is served
//! by hyper's HTTP/2 server until it closes, idles out or drains.
//!
//! An HTTP/1 connection is served one hyper session at a time and
//! **parked** between requests. hyper's HTTP/1 connection keeps an 8 KiB
//! read buffer, an 8 KiB header write buffer and its dispatch state for
//! the connection's whole life — about 18 KiB per idle keep-alive
//! connection, measured on a bare hyper server — so 10 000 idle clients
//! would cost ~180 MiB (SPEC §10 allows 64). When the last request in
//! flight ends and nothing follows for `PARK_AFTER`, the loop asks hyper
//! to finish its session, keeps the socket
//! open (the guard turns hyper's shutdown into a flush), and drops the
//! session with its buffers. A parked connection holds only the socket, the
//! guard and this loop, until the client sends again: then a new session
//! starts, fed first with any bytes the last one had read ahead (a
//! pipelined request). A connection that must close after its response
//! (`connection: close` either way, an upgrade) is never parked.
//!
//! The loop works over any [`Transport`] and knows the connection only by
//! its [`Conn`]: the same code serves plain TCP, TLS and intercepted
//! connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::framing::HeadLimits;
use super::guard::{GuardCounters, GuardTimeouts, GuardedStream, Transport};
use super::meta::{Conn, Flag};
use super::service;
use crate::config::Limits;

/// HTTP/2 flow-control windows (SPEC §11): 64 KiB per stream, 1 MiB per
/// connection, so one client cannot make us buffer much.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How long an HTTP/1 connection stays quiet before it is parked. Busy
/// connections keep their session (rebuilding it costs ~5 % of
/// throughput when done after every request); idle ones give their
/// buffers back within this.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one downstream connection until it closes, the client is idle
/// for `limits.idle`, or shutdown asks it to finish.
pub async fn serve_connection<IO: Transport>(
    conn: Arc<Conn>,
    stream: IO,
    guard_counters: Arc<GuardCounters>,
) {
    let plane = conn.plane.clone();
    let limits = plane
        .snapshot()
        .listener(&conn.meta.listener)
        .map(|listener| listener.limits.clone())
        .unwrap_or_default();
    let gauge = plane
        .metrics
        .downstream_connections
        .with_label_values(&[&*conn.meta.listener]);
    gauge.inc();

    let head_limits = HeadLimits {
        max_request_line: usize::try_from(limits.max_request_line.0).unwrap_or(usize::MAX),
        max_header_bytes: usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX),
        max_headers: limits.max_headers,
        max_body_bytes: limits.max_body_bytes.map(|size| size.0),
    };
    let timeouts = GuardTimeouts {
        header_read: limits.header_read,
        body_read_idle: limits.body_read_idle,
    };
    let mut stream =
        GuardedStream::new(stream, conn.clone(), head_limits, timeouts, guard_counters);
    match sniff(&mut stream).await {
        // Both sessions boxed: inline, this function's state kept room for
        // both side by side (3.5 KiB; 0.5 KiB with both boxed), and an
        // idle connection holds its task's state for its whole life.
        Ok((true, first)) => {
            let session = Box::pin(serve_h2(&conn, &limits, Resumed::new(first, stream)));
            session.await;
        }
        Ok((false, first)) => {
            let session = Box::pin(serve_http1(&conn, &limits, Resumed::new(first, stream)));
            session.await;
        }
        // Closed, refused by the guard, or timed out before a request.
        Err(error) => {
            tracing::debug!(peer = %conn.meta.peer, %error, "Connection ended before a request.");
        }
    }
    gauge.dec();
}

/// Reads until the first bytes decide the protocol: `true` for the h2c
/// preface. Returns the bytes read, which the session then reads first.
async fn sniff<IO: Transport>(stream: &mut GuardedStream<IO>) -> io::Result<(bool, Bytes)> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    loop {
        let n = stream.read(&mut first[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        let h2 = first[..len] == H2_PREFACE[..len];
        if !h2 || len == H2_PREFACE.len() {
            return Ok((h2, Bytes::copy_from_slice(&first[..len])));
        }
    }
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // The guard (guard.rs) enforces header_read itself, with a 408.
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        // A backstop only: the guard has already refused larger heads.
        .max_buf_size(
            usize::try_from(limits.max_header_bytes.0)
                .unwrap_or(usize::MAX)
                .max(8192),
        );
    builder
}

fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes.0).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// HTTP/1: one hyper session per burst of requests, parked in between.
async fn serve_http1<IO: Transport>(conn: &Arc<Conn>, limits: &Limits, mut io: Resumed<IO>) {
    let builder = http1_builder(limits);
    let mut shutdown = conn.plane.watch_shutdown();
    // One timer for the connection's life, re-armed at most once per
    // PARK_AFTER, not once per request.
    let park_timer = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(park_timer);
    loop {
        conn.flags.set(Flag::Parking, false);
        let service_conn = conn.clone();
        let service = service_fn(move |request| service::handle(service_conn.clone(), request));
        let mut session = Box::pin(
            builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        let mut closing = false;
        // The activity generation the park timer was armed at.
        let mut armed: Option<u64> = None;
        let ended = loop {
            tokio::select! {
                biased;
                result = session.as_mut() => break result,
                _ = shutdown.wait_for(|stopping| *stopping), if !closing => {
                    session.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = conn.activity.quiet(), if !closing && armed.is_none() => {
                    let (generation, quiet) = conn.activity.observe();
                    if quiet {
                        park_timer.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                        armed = Some(generation);
                    }
                }
                _ = park_timer.as_mut(), if !closing && armed.is_some() => {
                    let (generation, quiet) = conn.activity.observe();
                    if !quiet {
                        // Busy again: the next quiet moment re-arms.
                        armed = None;
                    } else if armed != Some(generation) {
                        // Requests came and went: quiet for less than PARK_AFTER.
                        park_timer.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                        armed = Some(generation);
                    } else if !conn.flags.get(Flag::CloseAfter) {
                        conn.flags.set(Flag::Parking, true);
                        session.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(peer = %conn.meta.peer, %error, "Connection ended with an error.");
            return;
        }
        // Only a session this loop parked hands the socket back; one that
        // ended on its own (close, upgrade, drain) is over.
        let parked = conn.flags.get(Flag::Parking) && !*shutdown.borrow();
        let Some(parts) = Pin::into_inner(session).into_parts().filter(|_| parked) else {
            return;
        };
        let http1::Parts {
            io: session_io,
            read_buf,
            ..
        } = parts;
        io = session_io.into_inner();
        // The read-ahead is copied out: it is a view into the session's
        // whole read buffer, which must not stay allocated while parked.
        io.prefix = Bytes::copy_from_slice(&read_buf);
        drop(read_buf);
        tracing::trace!(peer = %conn.meta.peer, read_ahead = io.prefix.len(), "Parked an idle connection.");
        if io.prefix.is_empty() {
            // Parked: wait for the next request with nothing buffered.
            tokio::select! {
                readable = io.stream.readable() => if readable.is_err() { return },
                _ = tokio::time::sleep(limits.idle) => {
                    tracing::debug!(peer = %conn.meta.peer, "Closing idle connection.");
                    return;
                }
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
        }
    }
}

/// h2c: one hyper session for the connection's life.
async fn serve_h2<IO: Transport>(conn: &Arc<Conn>, limits: &Limits, io: Resumed<IO>) {
    let service_conn = conn.clone();
    let service = service_fn(move |request| service::handle(service_conn.clone(), request));
    let connection = http2_builder(limits).serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shutdown = conn.plane.watch_shutdown();
    let mut idle_check = tokio::time::interval(limits.idle / 2);
    idle_check.tick().await;
    let mut last_seen = conn.activity.observe().0;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %conn.meta.peer, %error, "Connection ended with an error.");
                }
                return;
            }
            _ = shutdown.wait_for(|stopping| *stopping), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick(), if !closing => {
                let (generation, quiet) = conn.activity.observe();
                if quiet && generation == last_seen {
                    tracing::debug!(peer = %conn.meta.peer, "Closing idle connection.");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                last_seen = generation;
            }
        }
    }
}

/// The guarded socket, with bytes already read from it served first.
struct Resumed<IO: Transport> {
    prefix: Bytes,
    stream: GuardedStream<IO>,
}

impl<IO: Transport> Resumed<IO> {
    fn new(prefix: Bytes, stream: GuardedStream<IO>) -> Self {
        Resumed { prefix, stream }
    }
}

impl<IO: Transport> AsyncRead for Resumed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<IO: Transport> AsyncWrite for Resumed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
