//! The bench's upstreams: the smallest fast hyper servers we can write.
//!
//! [`start`] answers every request with the same 30-byte body, over
//! HTTP/1.1 or h2c (prior knowledge) on one port. [`start_grpc`] answers
//! the gRPC part's one unary method (`grpc.rs`) with tonic's server codec
//! over hyper's HTTP/2 server. Both run inside the bench's own
//! one-thread event loop, beside the load generator, rather than as a
//! separate process on the same core: two processes sharing a core wait on
//! the kernel scheduler for each other (a few milliseconds at the tail),
//! which drowned the sub-millisecond differences this bench exists to show.
//! The cost is that its CPU counts as the generator's; the "direct" row has
//! no process of its own to weigh.

use std::convert::Infallible;
use std::future::{ready, Ready};
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
use tonic_prost::ProstCodec;

use crate::grpc;

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
    serve(listener, |stream| async move {
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service_fn(respond))
            .await;
    });
    Ok(addr)
}

/// The gRPC upstream: binds 127.0.0.1 on a free port and serves
/// [`grpc::METHOD`] there over h2c (HTTP/2 only, as gRPC is), on the
/// current runtime, until the runtime ends or [`MAX_LIFETIME`] passes.
/// Every other path gets `UNIMPLEMENTED`.
pub async fn start_grpc() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the gRPC upstream")?;
    let addr = listener.local_addr()?;
    serve(listener, |stream| async move {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service_fn(respond_grpc))
            .await;
    });
    Ok(addr)
}

/// Accepts on `listener` and spawns `connection` for each stream, for at
/// most [`MAX_LIFETIME`].
fn serve<F, C>(listener: TcpListener, connection: F)
where
    F: Fn(tokio::net::TcpStream) -> C + Send + 'static,
    C: std::future::Future<Output = ()> + Send + 'static,
{
    let accept_loop = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream));
        }
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(MAX_LIFETIME, accept_loop).await;
    });
}

async fn respond(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// One gRPC call: [`grpc::METHOD`] through tonic's unary handling (message
/// decoding, `grpc-status` trailers), anything else `UNIMPLEMENTED`.
async fn respond_grpc(
    request: Request<Incoming>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if request.uri().path() != grpc::METHOD {
        return Ok(tonic::Status::unimplemented("no such method").into_http());
    }
    let mut server = tonic::server::Grpc::new(ProstCodec::<String, String>::default());
    Ok(server.unary(Echo, request).await)
}

/// The unary method: the request's message, back.
struct Echo;

impl tonic::server::UnaryService<String> for Echo {
    type Response = String;
    type Future = Ready<Result<tonic::Response<String>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
        ready(Ok(tonic::Response::new(request.into_inner())))
    }
}
