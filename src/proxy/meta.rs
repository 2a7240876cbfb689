//! What one downstream connection shares between its parts: where it came
//! from ([`ConnMeta`]), the few facts its parts tell each other
//! ([`ConnFlags`]), and its request activity ([`Activity`]).
//!
//! The accept path fills [`ConnMeta`] once — on a transparent listener
//! with the original destination, on a TLS listener with `https` and the
//! ALPN agreed — and the framing guard, the connection loop and each
//! request read it, whatever the transport. The flags are one atomic byte, written by the part that learns
//! the fact and read by the others.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use super::plane::DataPlane;

/// Where a downstream connection came from and how it speaks.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    /// The listener that accepted it.
    pub listener: Arc<str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address it connected to (this side of the socket).
    pub local: SocketAddr,
    /// The destination the client meant, when the connection was
    /// redirected to breakwater transparently; `None` otherwise.
    pub original_dst: Option<SocketAddr>,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub scheme: &'static str,
    /// The protocol agreed by TLS ALPN, when there was a handshake.
    pub alpn: Option<Vec<u8>>,
}

/// Facts about a connection that its parts tell each other.
#[derive(Debug, Default)]
pub struct ConnFlags(AtomicU8);

/// One fact in [`ConnFlags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flag {
    /// The guard stopped framing this HTTP/1 connection after an upgrade
    /// request: unless the upgrade happens, it must close after the
    /// response.
    FramingStopped = 1,
    /// The connection must end after the current response: the client
    /// asked, breakwater answered `connection: close`, or it is being
    /// upgraded. Such a connection is never parked.
    CloseAfter = 2,
    /// The connection loop is parking the idle connection: the guard keeps
    /// the socket open when hyper shuts its side down.
    Parking = 4,
}

impl ConnFlags {
    /// Whether `flag` is set.
    pub fn get(&self, flag: Flag) -> bool {
        self.0.load(Ordering::Acquire) & flag as u8 != 0
    }

    /// Sets or clears `flag`.
    pub fn set(&self, flag: Flag, on: bool) {
        if on {
            self.0.fetch_or(flag as u8, Ordering::AcqRel);
        } else {
            self.0.fetch_and(!(flag as u8), Ordering::AcqRel);
        }
    }
}

/// Counts requests on one connection so an idle one can be parked or
/// closed, and wakes the connection loop when the last one in flight ends.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Bumped at every request start and end.
    generation: AtomicU64,
    quiet: tokio::sync::Notify,
}

impl Activity {
    /// A request started.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended.
    pub fn end(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        if before == 1 {
            self.quiet.notify_one();
        }
    }

    /// Resolves after the last request in flight ended (at once if that
    /// happened since the previous call).
    pub async fn quiet(&self) {
        self.quiet.notified().await;
    }

    /// Requests in flight now (a response still streaming counts).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A token that changes whenever a request starts or ends, and whether
    /// the connection has no request in flight.
    pub fn observe(&self) -> (u64, bool) {
        (
            self.generation.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed) == 0,
        )
    }
}

/// One downstream connection, shared by its guard, its loop and its
/// requests.
pub struct Conn {
    /// The data plane it belongs to.
    pub plane: Arc<DataPlane>,
    /// Where it came from.
    pub meta: ConnMeta,
    /// What its parts tell each other.
    pub flags: ConnFlags,
    /// Its requests in flight.
    pub activity: Activity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_independent() {
        let flags = ConnFlags::default();
        flags.set(Flag::CloseAfter, true);
        flags.set(Flag::Parking, true);
        assert!(flags.get(Flag::CloseAfter) && flags.get(Flag::Parking));
        assert!(!flags.get(Flag::FramingStopped));
        flags.set(Flag::Parking, false);
        assert!(flags.get(Flag::CloseAfter) && !flags.get(Flag::Parking));
    }
}
