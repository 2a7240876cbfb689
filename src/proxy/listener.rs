//! Accepting downstream connections on one listener.
//!
//! [`serve_listener`] runs the accept loop: each connection within the
//! listener's `limits.max_connections` gets a [`Conn`] and a task running
//! `conn::serve_connection`; one over the limit is closed at once and
//! counted (`breakwater_rejected_total{reason="max_connections"}`). The
//! limit is read from the live snapshot at every accept, so a reload that
//! changes it applies to the next connection. [`ListenerHandle::drained`]
//! waits until every connection has closed, for the graceful drain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

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
            let limit = plane
                .snapshot()
                .listener(&name)
                .map_or(usize::MAX, |plan| plan.limits.max_connections);
            let slot = OpenSlot(open.clone());
            if open.count.fetch_add(1, Ordering::AcqRel) >= limit {
                drop(slot);
                drop(stream);
                rejected.inc();
                tracing::debug!(listener = &*name, %peer, limit, "Connection refused: max_connections reached.");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let conn = Arc::new(Conn {
                plane: plane.clone(),
                meta: ConnMeta {
                    listener: name.clone(),
                    peer,
                    local,
                    original_dst: None,
                    scheme: "http",
                    alpn: None,
                },
                flags: ConnFlags::default(),
                activity: Activity::default(),
            });
            let counters = guard_counters.clone();
            tokio::spawn(async move {
                super::conn::serve_connection(conn, stream, counters).await;
                drop(slot);
            });
        }
        tracing::info!(listener = &*name, "Stopped accepting connections.");
    });
    handle
}
