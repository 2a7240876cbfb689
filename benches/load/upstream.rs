//! The bench's upstream: the smallest fast hyper server we can write.
//!
//! It answers every request with the same 30-byte body, over HTTP/1.1 or
//! h2c (prior knowledge) on one port. It runs inside the bench's own
//! one-thread event loop, beside the load generator, rather than as a
//! separate process on the same core: two processes sharing a core wait on
//! the kernel scheduler for each other (a few milliseconds at the tail),
//! which drowned the sub-millisecond differences this bench exists to show.
//! The cost is that its CPU counts as the generator's; the "direct" row has
//! no process of its own to weigh.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The fixed response body.
pub const BODY: &[u8] = b"hello from the bench upstream\n";

/// The longest the upstream serves, whatever else happens.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Binds 127.0.0.1 on a free port and serves there, on the current
/// runtime, until the runtime ends or [`MAX_LIFETIME`] passes.
pub async fn start() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the upstream")?;
    let addr = listener.local_addr()?;
    let accept_loop = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(respond))
                    .await;
            });
        }
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(MAX_LIFETIME, accept_loop).await;
    });
    Ok(addr)
}

async fn respond(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}
