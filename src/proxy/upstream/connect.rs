//! Opening a connection to an upstream endpoint: the one [`Connect`] that
//! both the HTTP/1 pool and the HTTP/2 client dial through.
//!
//! It owns what every new upstream connection needs, whatever protocol
//! rides on it: the `connect_timeout`, `TCP_NODELAY`, and the mapping of
//! connect failures to [`CallError`] (refused or unreachable →
//! `connect_error`; nothing within the timeout → `connect_timeout`).
//! Transport security to upstreams belongs here too, so that it applies to
//! every client at once.

use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;

use crate::proxy::outcome::CallError;

/// The stream an upstream connection runs over.
pub type UpstreamIo = TcpStream;

/// Dials upstream endpoints.
#[derive(Debug, Clone)]
pub struct Connect {
    timeout: Duration,
}

// === impl Connect ===

impl Connect {
    /// Connects with `timeout` per attempt (`connect_timeout`).
    pub fn new(timeout: Duration) -> Self {
        Connect { timeout }
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Opens a connection to `authority` (`host:port`).
    pub async fn connect(&self, authority: &Authority) -> Result<UpstreamIo, CallError> {
        let connecting = TcpStream::connect(authority.as_str());
        let stream = match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(endpoint = authority.as_str(), %error, "Upstream connect failed.");
                return Err(if error.kind() == std::io::ErrorKind::TimedOut {
                    CallError::ConnectTimeout
                } else {
                    CallError::Connect
                });
            }
            Err(_) => {
                tracing::debug!(endpoint = authority.as_str(), timeout = ?self.timeout, "Upstream connect timed out.");
                return Err(CallError::ConnectTimeout);
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        drop(listener);
        let connect = Connect::new(Duration::from_secs(1));
        assert_eq!(
            connect.connect(&authority).await.err(),
            Some(CallError::Connect)
        );
    }

    #[tokio::test]
    async fn an_open_port_connects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let connect = Connect::new(Duration::from_secs(1));
        assert!(connect.connect(&authority).await.is_ok());
    }
}
