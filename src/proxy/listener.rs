//! Accepting downstream connections on one listener.
//!
//! [`serve_listener`] runs the accept loop: each connection within the
//! listener's `limits.max_connections` gets a [`Conn`] and a task running
//! `conn::serve_connection`; one over the limit is closed at once and
//! counted (`breakwater_rejected_total{reason="max_connections"}`). The
//! limit is read from the live snapshot at every accept, so a reload that
//! changes it applies to the next connection. [`ListenerHandle::drained`]
//! waits until every connection has closed, for the graceful drain.
//!
//! Each accepted connection's task then learns what its [`ConnMeta`]
//! says: on a transparent listener the original destination
//! (`SO_ORIGINAL_DST`), and on a TLS listener the handshake — within
//! `limits.header_read`, like a request head, so a client that opens
//! connections and never finishes the handshake holds nothing for long —
//! with the ALPN agreed. A failed or timed-out handshake is counted
//! (`breakwater_rejected_total{reason="tls_handshake"}`). The TLS config
//! is read from the live snapshot at every accept, so a reload with a
//! renewed certificate applies to the next handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::guard::GuardCounters;
use super::meta::{Activity, Conn, ConnFlags, ConnMeta};
use super::plane::DataPlane;

/// The open connections of one listener.
#[derive(Debug, Default)]
struct Open {
    count: AtomicUsize,
    all_closed: Notify,
}

/// One open connection's place in its listener's count.
struct OpenSlot(Arc<Open>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// A running listener, for drain.
pub struct ListenerHandle {
    /// Listener name.
    pub name: Arc<str>,
    open: Arc<Open>,
}

impl ListenerHandle {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.count.load(Ordering::Acquire)
    }

    /// Waits until every connection of this listener has closed.
    pub async fn drained(&self) {
        loop {
            let closed = self.open.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open_connections() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// How one accepted connection is taken in, read from the snapshot at its
/// accept.
struct Accept {
    tls: Option<Arc<rustls::ServerConfig>>,
    transparent: bool,
    handshake_within: Duration,
    tls_failed: IntCounter,
}

impl Accept {
    /// Fills in what the connection's [`ConnMeta`] still lacks and serves it.
    async fn serve(
        mut self,
        plane: Arc<DataPlane>,
        stream: TcpStream,
        mut meta: ConnMeta,
        counters: Arc<GuardCounters>,
    ) {
        if self.transparent {
            meta.original_dst = crate::intercept::original_dst(&stream);
        }
        match self.tls.take() {
            None => super::conn::serve_connection(conn(plane, meta), stream, counters).await,
            Some(config) => self.serve_tls(config, plane, stream, meta, counters).await,
        }
    }

    /// The TLS handshake, then the connection over it, built straight into
    /// one box. Not `async` itself: a TLS session and its handshake are
    /// large (kilobytes), and whatever an async fn builds, even to box it,
    /// or borrows keeps room in its state, so inline in `serve` they would
    /// size every connection's task, plain ones included (measured: a
    /// plain connection's task 2.5 KiB with them inline, 1.1 KiB without,
    /// held as long as the connection is open).
    fn serve_tls(
        self,
        config: Arc<rustls::ServerConfig>,
        plane: Arc<DataPlane>,
        stream: TcpStream,
        mut meta: ConnMeta,
        counters: Arc<GuardCounters>,
    ) -> Pin<Box<impl Future<Output = ()> + Send>> {
        Box::pin(async move {
            let handshake = TlsAcceptor::from(config).accept(stream);
            let tls = match tokio::time::timeout(self.handshake_within, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    self.tls_failed.inc();
                    tracing::debug!(listener = &*meta.listener, peer = %meta.peer, %error, "TLS handshake failed.");
                    return;
                }
                Err(_) => {
                    self.tls_failed.inc();
                    tracing::debug!(listener = &*meta.listener, peer = %meta.peer, "TLS handshake timed out.");
                    return;
                }
            };
            meta.scheme = "https";
            meta.alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            super::conn::serve_connection(conn(plane, meta), tls, counters).await;
        })
    }
}

/// The shared state of one accepted connection.
fn conn(plane: Arc<DataPlane>, meta: ConnMeta) -> Arc<Conn> {
    Arc::new(Conn {
        plane,
        meta,
        flags: ConnFlags::default(),
        activity: Activity::default(),
    })
}

/// Starts accepting on `listener`; returns at once. The loop stops when
/// shutdown begins, and each open connection is then closed gracefully.
pub fn serve_listener(plane: Arc<DataPlane>, listener: TcpListener, name: &str) -> ListenerHandle {
    let name: Arc<str> = Arc::from(name);
    let open = Arc::new(Open::default());
    let handle = ListenerHandle {
        name: name.clone(),
        open: open.clone(),
    };
    let mut shutdown = plane.watch_shutdown();
    let rejected = plane
        .metrics
        .rejected_total
        .with_label_values(&[&*name, "max_connections"]);
    let guard_counters = Arc::new(GuardCounters::new(&plane.metrics, &name));
    let tls_failed = plane
        .metrics
        .rejected_total
        .with_label_values(&[&*name, "tls_handshake"]);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stopping| *stopping) => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(listener = &*name, %error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let snapshot = plane.snapshot();
            let plan = snapshot.listener(&name);
            let limit = plan.map_or(usize::MAX, |plan| plan.limits.max_connections);
            let accept = Accept {
                tls: plan.and_then(|plan| plan.tls.clone()),
                transparent: plan.is_some_and(|plan| plan.transparent),
                handshake_within: plan
                    .map_or(Duration::from_secs(10), |plan| plan.limits.header_read),
                tls_failed: tls_failed.clone(),
            };
            drop(snapshot);
            let slot = OpenSlot(open.clone());
            if open.count.fetch_add(1, Ordering::AcqRel) >= limit {
                // Counted before the close, so whoever sees the close
                // sees the count.
                rejected.inc();
                drop(slot);
                drop(stream);
                tracing::debug!(listener = &*name, %peer, limit, "Connection refused: max_connections reached.");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let meta = ConnMeta {
                listener: name.clone(),
                peer,
                local,
                original_dst: None,
                scheme: "http",
                alpn: None,
            };
            let counters = guard_counters.clone();
            let plane = plane.clone();
            tokio::spawn(async move {
                accept.serve(plane, stream, meta, counters).await;
                drop(slot);
            });
        }
        tracing::info!(listener = &*name, "Stopped accepting connections.");
    });
    handle
}
