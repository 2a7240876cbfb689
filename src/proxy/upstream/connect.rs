//! Opening a connection to an upstream endpoint: the one [`Connect`] that
//! both the HTTP/1 pool and the HTTP/2 client dial through.
//!
//! It owns what every new upstream connection needs, whatever protocol
//! rides on it: the `connect_timeout`, `TCP_NODELAY`, the mapping of
//! connect failures to [`CallError`] (refused or unreachable →
//! `connect_error`; nothing within the timeout → `connect_timeout`), and
//! TLS when the upstream has `tls:` — so every client, and the health
//! checks that send through them, get it at once.
//!
//! **TLS.** The TCP connect and the TLS handshake share one
//! `connect_timeout`. ALPN offers what the client dialling needs (`h2` for
//! the HTTP/2 client, `http/1.1` for the pool). The server name is the
//! upstream's `tls.sni`, else the endpoint's host. The rustls configs sit
//! behind an `ArcSwap` in [`UpstreamTls`], shared by every endpoint of the
//! upstream: a reload re-reads the certificate files and swaps them in for
//! the next dial, while connections already open (and pooled) keep theirs.
//! A failed handshake (an untrusted certificate, a wrong name) is logged
//! as a warning — it is usually a config problem — and is a
//! `connect_error`.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamTls as UpstreamTlsConfig;
use crate::proxy::outcome::CallError;

/// The stream an upstream connection runs over: plain TCP, or TLS on it.
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: a TLS session is large and most upstreams are
    /// plain).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Which protocol a new connection is for: the ALPN it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`, for the HTTP/1 pool.
    Http1,
    /// `h2`, for the HTTP/2 client.
    Http2,
}

/// Dials upstream endpoints.
#[derive(Clone)]
pub struct Connect {
    timeout: Duration,
    tls: Option<Arc<UpstreamTls>>,
}

/// One upstream's TLS client: a connector per ALPN, swapped as a pair
/// when the files change, and the server name to ask for.
pub struct UpstreamTls {
    connectors: ArcSwap<Connectors>,
    sni: Option<ServerName<'static>>,
}

struct Connectors {
    http1: TlsConnector,
    http2: TlsConnector,
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// Reads the files `config` names and builds the client.
    pub fn load(config: &UpstreamTlsConfig) -> Result<UpstreamTls, String> {
        let sni = config
            .sni
            .as_deref()
            .map(crate::tls::server_name)
            .transpose()?;
        Ok(UpstreamTls {
            connectors: ArcSwap::from_pointee(Self::connectors(config)?),
            sni,
        })
    }

    /// Reads the files again and uses them for the next dial.
    pub fn reload(&self, config: &UpstreamTlsConfig) -> Result<(), String> {
        self.connectors.store(Arc::new(Self::connectors(config)?));
        Ok(())
    }

    fn connectors(config: &UpstreamTlsConfig) -> Result<Connectors, String> {
        let files = crate::tls::ClientFiles {
            ca: config.ca.as_deref().map(Path::new),
            identity: config
                .client_cert
                .as_deref()
                .zip(config.client_key.as_deref())
                .map(|(cert, key)| (Path::new(cert), Path::new(key))),
        };
        let build = |alpn: &[u8]| {
            crate::tls::client_config(files, &[alpn])
                .map(|config| TlsConnector::from(Arc::new(config)))
                .map_err(|error| error.to_string())
        };
        Ok(Connectors {
            http1: build(b"http/1.1")?,
            http2: build(b"h2")?,
        })
    }

    /// The name to ask `authority` for.
    fn server_name(&self, authority: &Authority) -> Option<ServerName<'static>> {
        match &self.sni {
            Some(name) => Some(name.clone()),
            None => crate::tls::server_name(authority.host()).ok(),
        }
    }
}

// === impl Connect ===

impl Connect {
    /// Connects with `timeout` per attempt (`connect_timeout`), in plain
    /// TCP.
    pub fn new(timeout: Duration) -> Self {
        Connect { timeout, tls: None }
    }

    /// The same, speaking TLS with `tls` on every connection.
    pub fn with_tls(mut self, tls: Arc<UpstreamTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The connect timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The TLS client, when the upstream speaks TLS.
    pub fn tls(&self) -> Option<&Arc<UpstreamTls>> {
        self.tls.as_ref()
    }

    /// Opens a connection to `authority` (`host:port`) for `alpn`.
    pub async fn connect(
        &self,
        authority: &Authority,
        alpn: Alpn,
    ) -> Result<UpstreamIo, CallError> {
        let deadline = Instant::now() + self.timeout;
        let connecting = TcpStream::connect(authority.as_str());
        let stream = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(endpoint = authority.as_str(), %error, "Upstream connect failed.");
                return Err(if error.kind() == io::ErrorKind::TimedOut {
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
        let Some(tls) = &self.tls else {
            return Ok(UpstreamIo::Plain(stream));
        };
        let Some(name) = tls.server_name(authority) else {
            tracing::warn!(
                endpoint = authority.as_str(),
                "Upstream host is not a valid TLS server name; set tls.sni."
            );
            return Err(CallError::Connect);
        };
        let connectors = tls.connectors.load();
        let connector = match alpn {
            Alpn::Http1 => &connectors.http1,
            Alpn::Http2 => &connectors.http2,
        };
        match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
            Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                tracing::warn!(endpoint = authority.as_str(), %error, "Upstream TLS handshake failed.");
                Err(CallError::Connect)
            }
            Err(_) => {
                tracing::debug!(endpoint = authority.as_str(), timeout = ?self.timeout, "Upstream TLS handshake timed out.");
                Err(CallError::ConnectTimeout)
            }
        }
    }
}

// === impl UpstreamIo ===

impl UpstreamIo {
    /// The protocol the TLS handshake agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamIo::Plain(_) => None,
            UpstreamIo::Tls(stream) => stream.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(stream) => stream.is_write_vectored(),
            UpstreamIo::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
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
            connect.connect(&authority, Alpn::Http1).await.err(),
            Some(CallError::Connect)
        );
    }

    #[tokio::test]
    async fn an_open_port_connects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let connect = Connect::new(Duration::from_secs(1));
        assert!(connect.connect(&authority, Alpn::Http1).await.is_ok());
    }

    #[tokio::test]
    async fn a_tls_upstream_that_does_not_answer_the_handshake_times_out_within_the_connect_timeout(
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        let tls = UpstreamTls::load(&UpstreamTlsConfig {
            sni: Some("app.internal".to_owned()),
            ca: None,
            client_cert: None,
            client_key: None,
        })
        .unwrap();
        let connect = Connect::new(Duration::from_millis(200)).with_tls(Arc::new(tls));
        let started = Instant::now();
        // Accepted by the kernel, never answered: the handshake hangs.
        assert_eq!(
            connect.connect(&authority, Alpn::Http2).await.err(),
            Some(CallError::ConnectTimeout)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }
}
