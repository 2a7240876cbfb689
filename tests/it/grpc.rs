//! gRPC through the real binary: a real gRPC server (tonic's server codec
//! and the standard health service, over hyper's HTTP/2 server on
//! 127.0.0.1) and tonic's client, with breakwater between them.
//!
//! The server is served by hyper directly, without tonic's transport
//! layer, so it never enforces `grpc-timeout` itself: the deadline test
//! sees breakwater's deadline, not the server's. Messages are prost's
//! built-in `String` (a `google.protobuf.StringValue`), so no protobuf
//! compiler is needed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_prost::ProstCodec;
use tower::{service_fn, Service};

use crate::support::{eventually, metric_value, proxy, Proxy};

type MessageStream = Pin<Box<dyn Stream<Item = Result<String, Status>> + Send>>;

/// What the test server has seen and how it behaves.
#[derive(Default)]
struct ServerState {
    /// Calls to the test service (health checks not counted).
    calls: AtomicUsize,
    /// The `grpc-timeout` of each call, as received.
    timeouts: Mutex<Vec<String>>,
    /// Answer every unary call with UNAVAILABLE.
    unavailable: AtomicBool,
}

/// A gRPC server on 127.0.0.1 with a test service `test.Echo` and the
/// standard `grpc.health.v1.Health`.
///
/// - `Unary`: `fail:N` fails with code N and trailing metadata
///   `x-detail: kept`; `sleep:MS` answers after MS ms; else `echo {text}`.
/// - `ServerStream`: `N` sends N messages; `N,fail` then ends with
///   UNAVAILABLE, details and metadata in the trailers.
/// - `ClientStream`: joins what it got with `+`.
/// - `Bidi`: answers each message with `re {message}` as it comes.
struct GrpcServer {
    address: SocketAddr,
    state: Arc<ServerState>,
    health: HealthReporter,
}

impl GrpcServer {
    async fn start() -> GrpcServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        let (health, health_service) = tonic_health::server::health_reporter();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                let health_service = health_service.clone();
                let service = hyper::service::service_fn(move |request| {
                    dispatch(state.clone(), health_service.clone(), request)
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        GrpcServer {
            address,
            state,
            health,
        }
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }
}

async fn dispatch<H>(
    state: Arc<ServerState>,
    mut health: H,
    request: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    H: Service<
        http::Request<Incoming>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
    >,
{
    let path = request.uri().path().to_owned();
    if path.starts_with("/grpc.health.v1.Health/") {
        return health.call(request).await;
    }
    state.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(timeout) = request.headers().get("grpc-timeout") {
        let timeout = timeout.to_str().unwrap_or("?").to_owned();
        state.timeouts.lock().unwrap().push(timeout);
    }
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, String>::default());
    let unavailable = state.unavailable.load(Ordering::SeqCst);
    Ok(match path.as_str() {
        "/test.Echo/Unary" => {
            let unary = service_fn(move |request: tonic::Request<String>| async move {
                if unavailable {
                    return Err(Status::unavailable("this instance is down"));
                }
                unary(request.into_inner()).await
            });
            grpc.unary(unary, request).await
        }
        "/test.Echo/ServerStream" => {
            grpc.server_streaming(service_fn(server_stream), request)
                .await
        }
        "/test.Echo/ClientStream" => {
            grpc.client_streaming(service_fn(client_stream), request)
                .await
        }
        "/test.Echo/Bidi" => grpc.streaming(service_fn(bidi), request).await,
        _ => Status::unimplemented("no such method").into_http(),
    })
}

fn kept_metadata() -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-detail", "kept".parse().unwrap());
    metadata
}

async fn unary(text: String) -> Result<tonic::Response<String>, Status> {
    if let Some(code) = text.strip_prefix("fail:") {
        let code = Code::from_i32(code.parse().unwrap());
        return Err(Status::with_metadata(
            code,
            "failed on purpose",
            kept_metadata(),
        ));
    }
    if let Some(ms) = text.strip_prefix("sleep:") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        return Ok(tonic::Response::new("slept".to_owned()));
    }
    Ok(tonic::Response::new(format!("echo {text}")))
}

async fn server_stream(
    request: tonic::Request<String>,
) -> Result<tonic::Response<MessageStream>, Status> {
    let text = request.into_inner();
    let (count, fail) = match text.split_once(',') {
        Some((count, _)) => (count.parse::<usize>().unwrap(), true),
        None => (text.parse::<usize>().unwrap(), false),
    };
    let messages = (0..count).map(|n| Ok(format!("message {n}")));
    let ending = fail.then(|| {
        Err(Status::with_details_and_metadata(
            Code::Unavailable,
            "stream broke",
            bytes::Bytes::from_static(b"\x01\x02details"),
            kept_metadata(),
        ))
    });
    let stream = futures_util::stream::iter(messages.chain(ending));
    Ok(tonic::Response::new(Box::pin(stream) as MessageStream))
}

async fn client_stream(
    request: tonic::Request<tonic::Streaming<String>>,
) -> Result<tonic::Response<String>, Status> {
    let mut stream = request.into_inner();
    let mut parts = Vec::new();
    while let Some(message) = stream.next().await {
        parts.push(message?);
    }
    Ok(tonic::Response::new(parts.join("+")))
}

async fn bidi(
    request: tonic::Request<tonic::Streaming<String>>,
) -> Result<tonic::Response<MessageStream>, Status> {
    let stream = request
        .into_inner()
        .map(|message| message.map(|text| format!("re {text}")));
    Ok(tonic::Response::new(Box::pin(stream) as MessageStream))
}

/// A gRPC client of `proxy`.
async fn connect(proxy: &Proxy) -> Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{}", proxy.listen))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Grpc::new(channel)
}

/// A gRPC client of `proxy` over a plain HTTP/2 client. tonic's `Channel`
/// enforces a call's `grpc-timeout` itself, so a test of breakwater's own
/// deadline sends the same header over this one, which does not.
async fn connect_plain(
    proxy: &Proxy,
) -> Grpc<hyper_util::client::legacy::Client<HttpConnector, tonic::body::Body>> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{}", proxy.listen).parse().unwrap();
    Grpc::with_origin(client, origin)
}

async fn call<T>(
    client: &mut Grpc<T>,
    text: &str,
    timeout: Option<Duration>,
) -> Result<tonic::Response<String>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    call_path(client, "/test.Echo/Unary", text, timeout).await
}

async fn call_path<T>(
    client: &mut Grpc<T>,
    path: &'static str,
    text: &str,
    timeout: Option<Duration>,
) -> Result<tonic::Response<String>, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    assert!(client.ready().await.is_ok(), "the client is ready");
    let mut request = tonic::Request::new(text.to_owned());
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    client
        .unary(
            request,
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        )
        .await
}

async fn server_streaming(client: &mut Grpc<Channel>, text: &str) -> (Vec<String>, Option<Status>) {
    client.ready().await.unwrap();
    let response = client
        .server_streaming(
            tonic::Request::new(text.to_owned()),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            ProstCodec::<String, String>::default(),
        )
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return (messages, None),
            Err(status) => return (messages, Some(status)),
        }
    }
}

fn reason(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get("x-breakwater-reason")
        .and_then(|value| value.to_str().ok())
}

fn config(upstreams: &[SocketAddr], route_extra: &str, upstream_extra: &str) -> String {
    let endpoints: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
    format!(
        "admin:
  listen: {{admin}}
listeners:
  - name: inbound
    listen: {{listen}}
    routes:
      - name: grpc
        match: {{path_prefix: /test.Echo/}}
        upstream: svc
        timeouts: {{request: 10s}}
{route_extra}
upstreams:
  - name: svc
    endpoints: [{}]
    protocol: http2
{upstream_extra}
",
        endpoints.join(", ")
    )
}

#[tokio::test]
async fn grpc_calls_of_every_kind_pass_through_with_their_trailers() {
    let server = GrpcServer::start().await;
    let proxy = proxy(&config(&[server.address], "", "")).run().await;
    let mut client = connect(&proxy).await;

    // Unary.
    let response = call(&mut client, "hello", None).await.unwrap();
    assert_eq!(response.into_inner(), "echo hello");

    // Server streaming.
    let (messages, status) = server_streaming(&mut client, "3").await;
    assert_eq!(messages, ["message 0", "message 1", "message 2"]);
    assert!(status.is_none(), "{status:?}");

    // Client streaming.
    client.ready().await.unwrap();
    let parts = futures_util::stream::iter(["a", "b", "c"].map(str::to_owned));
    let joined = client
        .client_streaming(
            tonic::Request::new(parts),
            PathAndQuery::from_static("/test.Echo/ClientStream"),
            ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap();
    assert_eq!(joined.into_inner(), "a+b+c");

    // Bidi streaming, in lock step: each message is sent only after the
    // answer to the one before came back, so nothing may be held back.
    client.ready().await.unwrap();
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(1);
    let outgoing = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (message, receiver))
    });
    sender.send("one".to_owned()).await.unwrap();
    let mut answers = client
        .streaming(
            tonic::Request::new(outgoing),
            PathAndQuery::from_static("/test.Echo/Bidi"),
            ProstCodec::<String, String>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    for next in ["two", "three"] {
        let answer = tokio::time::timeout(Duration::from_secs(5), answers.message())
            .await
            .expect("an answer before the next message is sent");
        assert!(answer.unwrap().unwrap().starts_with("re "));
        sender.send(next.to_owned()).await.unwrap();
    }
    assert_eq!(answers.message().await.unwrap().unwrap(), "re three");
    drop(sender);
    assert_eq!(answers.message().await.unwrap(), None);

    // An error after two messages: status, details and metadata arrive
    // intact in the trailers.
    let (messages, status) = server_streaming(&mut client, "2,fail").await;
    assert_eq!(messages.len(), 2);
    let status = status.expect("the stream ends with an error");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "stream broke");
    assert_eq!(status.details(), b"\x01\x02details");
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");

    // A unary error (trailers-only): code and metadata intact.
    let status = call(&mut client, "fail:9", None).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "failed on purpose");
    assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");
    assert_eq!(reason(&status), None, "the upstream's own answer");

    // Counted by grpc-status; the failure in the trailers as grpc_error.
    let metrics = proxy.metrics().await;
    let count = |series: &str| metric_value(&metrics, series).unwrap_or(0.0);
    assert_eq!(
        count("breakwater_grpc_responses_total{grpc_status=\"0\",route=\"grpc\"}"),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        count("breakwater_grpc_responses_total{grpc_status=\"14\",route=\"grpc\"}"),
        1.0
    );
    assert_eq!(
        count("breakwater_grpc_responses_total{grpc_status=\"9\",route=\"grpc\"}"),
        1.0
    );
    assert_eq!(
        count("breakwater_requests_total{code=\"200\",outcome=\"grpc_error\",route=\"grpc\"}"),
        1.0
    );
}

#[tokio::test]
async fn grpc_status_failures_open_the_breaker_and_clients_see_unavailable() {
    let server = GrpcServer::start().await;
    let route = "        circuit_breaker: {consecutive_failures: 3, open_duration: 60s}";
    let proxy = proxy(&config(&[server.address], route, "")).run().await;
    let mut client = connect(&proxy).await;

    // Three failures inside HTTP 200s: two trailers-only, one in the
    // trailers after a message (counted when the stream ends).
    for _ in 0..2 {
        let status = call(&mut client, "fail:14", None).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "failed on purpose");
    }
    let (messages, status) = server_streaming(&mut client, "1,fail").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(status.unwrap().code(), Code::Unavailable);

    eventually("the breaker opens", Duration::from_secs(5), || async {
        let status = proxy.status_json().await;
        (status["listeners"][0]["routes"][0]["breaker"]["state"] == "open").then_some(())
    })
    .await;
    let before = server.calls();
    let status = call(&mut client, "hello", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "breaker-open");
    assert_eq!(reason(&status), Some("breaker-open"));
    assert_eq!(server.calls(), before, "the upstream was not called");
}

#[tokio::test]
async fn a_grpc_deadline_caps_the_route_timeout_and_shrinks_for_the_upstream() {
    let server = GrpcServer::start().await;
    let proxy = proxy(&config(&[server.address], "", "")).run().await;
    let mut client = connect_plain(&proxy).await;

    let start = Instant::now();
    let status = call(&mut client, "sleep:5000", Some(Duration::from_millis(400)))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "timeout");
    assert_eq!(reason(&status), Some("timeout"));
    // Answered at the client's deadline, not the route's 10 s, nor when
    // the upstream finished.
    assert!(waited < Duration::from_secs(4), "{waited:?}");

    // The upstream was told how much of the deadline was left.
    let seen = server.state.timeouts.lock().unwrap().clone();
    let [timeout] = seen.as_slice() else {
        panic!("one call, one grpc-timeout: {seen:?}");
    };
    let value = http::HeaderValue::from_str(timeout).unwrap();
    let left = breakwater::grpc::parse_timeout(&value).unwrap();
    assert!(
        left > Duration::ZERO && left < Duration::from_millis(400),
        "{timeout}"
    );

    // A deadline shorter than slow_call_duration (1s) is the client's own:
    // counted as deadline_exceeded, never against the upstream.
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "breakwater_requests_total{code=\"200\",outcome=\"deadline_exceeded\",route=\"grpc\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "breakwater_grpc_responses_total{grpc_status=\"4\",route=\"grpc\"}"
        ),
        Some(1.0)
    );
    let status = proxy.status_json().await;
    assert_eq!(
        status["listeners"][0]["routes"][0]["breaker"]["state"],
        "closed"
    );

    // A call within its deadline passes, and the upstream sees it.
    let response = call(&mut client, "hi", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(response.into_inner(), "echo hi");
}

#[tokio::test]
async fn grpc_refusals_are_grpc_statuses() {
    let server = GrpcServer::start().await;
    let route = "        rate_limit: {rps: 0.01, burst: 1}";
    let proxy = proxy(&config(&[server.address], route, "")).run().await;
    let mut client = connect(&proxy).await;

    assert!(call(&mut client, "first", None).await.is_ok());
    let status = call(&mut client, "second", None).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "rate-limited");
    assert_eq!(reason(&status), Some("rate-limited"));

    let status = call_path(&mut client, "/other.Service/Method", "x", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "no-route");
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn a_grpc_fallback_answers_with_its_own_message() {
    let server = GrpcServer::start().await;
    // The fallback's body is one serialized response message: a
    // StringValue `fallback` (field 1, length-delimited).
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("fallback.bin");
    std::fs::write(&message, b"\x0a\x08fallback").unwrap();
    let route = format!(
        "        fallback: {{grpc_status: ok, body_file: {}, when: [breaker_open]}}",
        message.display()
    );
    let proxy = proxy(&config(&[server.address], &route, "")).run().await;
    let mut client = connect(&proxy).await;

    let opened = crate::support::client()
        .post(proxy.admin_url("/breakers/grpc/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let response = call(&mut client, "hello", None).await.unwrap();
    assert_eq!(
        response.metadata().get("x-breakwater-degraded").unwrap(),
        "fallback"
    );
    assert_eq!(response.into_inner(), "fallback");
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn a_listed_grpc_status_is_retried_on_another_endpoint() {
    let down = GrpcServer::start().await;
    down.state.unavailable.store(true, Ordering::SeqCst);
    let up = GrpcServer::start().await;
    let route = "        retry: {attempts: 2, retry_on: [unavailable]}";
    let proxy = proxy(&config(&[down.address, up.address], route, ""))
        .run()
        .await;
    let mut client = connect(&proxy).await;

    for n in 0..4 {
        let response = call(&mut client, &format!("call {n}"), None).await;
        assert_eq!(response.unwrap().into_inner(), format!("echo call {n}"));
    }
    assert!(down.calls() >= 1, "round robin sent first tries to both");
    let metrics = proxy.metrics().await;
    let retries = metric_value(&metrics, "breakwater_retries_total{route=\"grpc\"}");
    assert_eq!(retries, Some(down.calls() as f64), "{metrics}");
}

#[tokio::test]
async fn a_grpc_health_check_takes_the_endpoint_out_and_back() {
    let first = GrpcServer::start().await;
    let second = GrpcServer::start().await;
    let upstream = "    health_check:
      grpc: {service: \"\"}
      interval: 100ms
      timeout: 100ms
      unhealthy_threshold: 1
      healthy_threshold: 1";
    let proxy = proxy(&config(&[first.address, second.address], "", upstream))
        .run()
        .await;
    let mut client = connect(&proxy).await;
    let healthy = |endpoint: SocketAddr| {
        let proxy = &proxy;
        async move {
            let metrics = proxy.metrics().await;
            metric_value(
                &metrics,
                &format!("breakwater_endpoint_healthy{{endpoint=\"{endpoint}\",upstream=\"svc\"}}"),
            )
        }
    };

    first.set_serving(false).await;
    eventually(
        "the endpoint leaves rotation",
        Duration::from_secs(5),
        || async { (healthy(first.address).await == Some(0.0)).then_some(()) },
    )
    .await;
    let before = first.calls();
    for n in 0..6 {
        assert!(call(&mut client, &format!("{n}"), None).await.is_ok());
    }
    assert_eq!(
        first.calls(),
        before,
        "no traffic to a NOT_SERVING endpoint"
    );
    assert_eq!(healthy(second.address).await, Some(1.0));

    first.set_serving(true).await;
    eventually(
        "the endpoint comes back",
        Duration::from_secs(5),
        || async { (healthy(first.address).await == Some(1.0)).then_some(()) },
    )
    .await;
    for n in 0..6 {
        assert!(call(&mut client, &format!("{n}"), None).await.is_ok());
    }
    assert!(first.calls() > before, "traffic again once SERVING");
}
