//! The data plane: routing, headers, streaming, protocols, upstream failures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, client, eventually, proxy, raw_exchange, sim};

fn single_route(upstream: &str, extra_route: &str, extra_upstream: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
{extra_route}      - name: main
        match: {{path_prefix: /}}
        upstream: app
        timeouts: {{request: 1s}}
upstreams:
  - name: app
    endpoints: [\"{upstream}\"]
    connect_timeout: 300ms
{extra_upstream}"
    )
}

#[tokio::test]
async fn forwards_with_clean_attributed_headers() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let response = client()
        .get(proxy.url("/orders/7?x=1"))
        .header("x-breakwater-reason", "forged")
        .header("x-breakwater-degraded", "stale")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-forwarded-for", "192.0.2.9")
        .header("x-forwarded-proto", "https")
        .header("keep-alive", "timeout=1")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sim-name"], "app");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(request_id.len(), 36, "a generated UUID v4: {request_id}");
    assert_eq!(response.text().await.unwrap(), "hello from sim\n");

    let seen = upstream.stats().await["last_request"].clone();
    let headers = &seen["headers"];
    assert_eq!(seen["path"], "/orders/7");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-forwarded-for"], "192.0.2.9, 127.0.0.1");
    assert_eq!(
        headers["x-forwarded-proto"], "http",
        "client's x-forwarded-proto is not trusted"
    );
    assert_eq!(headers["x-forwarded-host"], proxy.listen.to_string());
    assert_eq!(
        headers["host"],
        proxy.listen.to_string(),
        "the client's Host is kept"
    );
    assert_eq!(headers["x-request-id"], request_id.as_str());
    for dropped in [
        "x-breakwater-reason",
        "x-breakwater-degraded",
        "x-hop",
        "keep-alive",
        "connection",
    ] {
        assert!(
            headers.get(dropped).is_none(),
            "{dropped} must not reach the upstream: {headers}"
        );
    }
}

#[tokio::test]
async fn a_client_request_id_is_kept_and_echoed() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let response = client()
        .get(proxy.url("/"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(
        upstream.stats().await["last_request"]["headers"]["x-request-id"],
        "trace-abc-123"
    );
}

#[tokio::test]
async fn routes_match_in_order_and_unmatched_requests_get_404() {
    let api = sim("api").run().await;
    let web = sim("web").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - name: api-write
        match: {{path_prefix: /api, methods: [POST]}}
        upstream: web
      - name: api
        match: {{path_prefix: /api}}
        upstream: api
      - name: canary
        match: {{path_exact: /home, headers: {{x-env: canary}}}}
        upstream: api
      - name: home
        match: {{path_exact: /home}}
        upstream: web
upstreams:
  - {{name: api, endpoints: [\"{}\"]}}
  - {{name: web, endpoints: [\"{}\"]}}
",
        api.address, web.address
    );
    let proxy = proxy(&config).run().await;
    let name = |response: &reqwest::Response| {
        response.headers()["x-sim-name"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(name(&proxy.get("/api/items").await), "api");
    assert_eq!(
        name(&client().post(proxy.url("/api/items")).send().await.unwrap()),
        "web"
    );
    assert_eq!(name(&proxy.get("/home").await), "web");
    assert_eq!(
        name(
            &client()
                .get(proxy.url("/home"))
                .header("x-env", "canary")
                .send()
                .await
                .unwrap()
        ),
        "api"
    );

    let response = proxy.get("/nothing/here").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-breakwater-reason"], "no-route");
    assert!(response.headers().contains_key("x-request-id"));
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"breakwater_requests_total{code="404",outcome="rejected",route=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"breakwater_requests_total{code="200",outcome="success",route="api"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn endpoints_are_used_round_robin() {
    let one = sim("one").run().await;
    let two = sim("two").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: all, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{}\", \"{}\"]}}
",
        one.address, two.address
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..10 {
        assert_eq!(proxy.get("/").await.status(), 200);
    }
    assert_eq!(one.requests().await, 5);
    assert_eq!(two.requests().await, 5);
}

#[tokio::test]
async fn streams_an_8_mib_body_both_ways_without_holding_it() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let _ = proxy.get("/").await;
    let rss_before = proxy.process.peak_rss_kib();

    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 128; // 8 MiB
    let chunks = (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; CHUNK]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = client()
        .post(proxy.url("/echo"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (offset, byte) in chunk.iter().enumerate() {
            let position = received + offset;
            assert_eq!(
                *byte,
                ((position / CHUNK) % 251) as u8,
                "byte {position} corrupted"
            );
        }
        received += chunk.len();
    }
    assert_eq!(received, CHUNK * CHUNKS);
    let growth_kib = proxy.process.peak_rss_kib().saturating_sub(rss_before);
    assert!(
        growth_kib < 4 * 1024,
        "proxy peak RSS grew {growth_kib} KiB for an 8 MiB body: it was buffered"
    );
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let responses = futures_util::future::join_all(
        (0..20).map(|i| h2.get(proxy.url(&format!("/h2/{i}"))).send()),
    )
    .await;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello from sim\n");
    }
    assert_eq!(upstream.requests().await, 20);
    assert_eq!(
        upstream.stats().await["last_request"]["version"],
        "HTTP/1.1",
        "upstream protocol defaults to http1"
    );
}

#[tokio::test]
async fn speaks_h2c_to_an_http2_upstream() {
    let upstream = sim("app").run().await;
    let config = single_route(&upstream.address, "", "").replace(
        "connect_timeout: 300ms",
        "connect_timeout: 300ms\n    protocol: http2",
    );
    let proxy = proxy(&config).run().await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.stats().await["last_request"]["version"],
        "HTTP/2.0"
    );
}

#[tokio::test]
async fn passes_websocket_upgrades_through() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = socket.send(message).await;
                    }
                }
            });
        }
    });
    let proxy = proxy(&single_route(&ws_address.to_string(), "", ""))
        .run()
        .await;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.listen))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "breakwater"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn refused_upstream_is_502_upstream_unavailable() {
    let closed_port = support::free_port();
    let proxy = proxy(&single_route(&format!("127.0.0.1:{closed_port}"), "", ""))
        .run()
        .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-breakwater-reason"],
        "upstream-unavailable"
    );
    assert_eq!(response.headers()["retry-after"], "1");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            r#"breakwater_requests_total{code="502",outcome="connect_error",route="main"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_after_the_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs, so a
    // connect to it hangs: a real connect timeout on loopback.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let proxy = proxy(&single_route(&address.to_string(), "", ""))
        .run()
        .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["x-breakwater-reason"],
        "upstream-unavailable"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"outcome="connect_timeout",route="main"} 1"#),
        "{metrics}"
    );
    drop(listener);
}

#[tokio::test]
async fn hung_upstream_is_504_timeout() {
    let upstream = sim("app").arg("--hang").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let response = proxy.get("/slow").await;
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-breakwater-reason"], "timeout");
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .contains(r#"breakwater_requests_total{code="504",outcome="timeout",route="main"} 1"#),
        "{metrics}"
    );
    // The proxy still serves once the upstream recovers.
    upstream.control(r#"{"hang": false}"#).await;
    assert_eq!(proxy.get("/").await.status(), 200);
}

#[tokio::test]
async fn upstream_errors_pass_through_with_their_status() {
    let upstream = sim("app").arg("--status").arg("503").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert!(
        !response.headers().contains_key("x-breakwater-reason"),
        "the upstream's own answer"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .contains(r#"breakwater_requests_total{code="503",outcome="http_5xx",route="main"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn absolute_form_targets_go_to_the_configured_upstream() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", "")).run().await;
    let response = raw_exchange(
        proxy.listen,
        b"GET http://evil.example:9999/steal HTTP/1.1\r\nHost: evil.example:9999\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-sim-name: app"), "{response}");
    assert_eq!(upstream.stats().await["last_request"]["path"], "/steal");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = sim("app").run().await;
    let config = single_route(&upstream.address, "", "")
        .replace("listeners:", "limits: {idle: 300ms}\nlisteners:");
    let proxy = proxy(&config).run().await;
    let mut stream = TcpStream::connect(proxy.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    // Reads the response, then EOF when the proxy closes the idle connection.
    let read = stream.read_to_end(&mut response);
    assert!(
        read.is_ok(),
        "connection was not closed by the proxy: {read:?}"
    );
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let upstream = sim("app").run().await;
    let config = single_route(&upstream.address, "", "")
        .replace("listeners:", "limits: {max_connections: 2}\nlisteners:");
    let proxy = proxy(&config).run().await;
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(proxy.listen).unwrap())
        .collect();
    let metrics_url = proxy.admin_url("/metrics");
    eventually(
        "two connections counted",
        Duration::from_secs(5),
        || async {
            let text = client()
                .get(&metrics_url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains(r#"breakwater_downstream_connections{listener="inbound"} 2"#)
                .then_some(())
        },
    )
    .await;
    let refused = raw_exchange(
        proxy.listen,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        refused, "",
        "the third connection must be closed without a response"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .contains(r#"breakwater_rejected_total{listener="inbound",reason="max_connections"}"#),
        "{metrics}"
    );
    drop(held);
    eventually("a slot frees up", Duration::from_secs(5), || async {
        raw_exchange(
            proxy.listen,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .starts_with("HTTP/1.1 200")
        .then_some(())
    })
    .await;
}

/// Reads from `stream` until `count` complete bodiless responses arrived.
fn read_heads(stream: &mut TcpStream, count: usize) -> String {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("\r\n\r\n").count() < count {
        let n = stream.read(&mut chunk).expect("read a response");
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn parked_keep_alive_connections_keep_serving() {
    // An idle HTTP/1 connection is parked (hyper's session and buffers
    // dropped, the socket kept); the client must not notice.
    let upstream = sim("app").run().await;
    let proxy = proxy(&single_route(&upstream.address, "", ""))
        .env("RUST_LOG", "info,breakwater::proxy::conn=trace")
        .run()
        .await;
    let mut stream = TcpStream::connect(proxy.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"HEAD /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_heads(&mut stream, 1);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    proxy
        .process
        .stderr
        .wait_for("Parked an idle connection.", Duration::from_secs(5))
        .await;

    // Two pipelined requests after the park, then one that closes.
    stream
        .write_all(b"HEAD /two HTTP/1.1\r\nHost: x\r\n\r\nHEAD /three HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let pipelined = read_heads(&mut stream, 2);
    assert_eq!(pipelined.matches("HTTP/1.1 200").count(), 2, "{pipelined}");
    stream
        .write_all(b"HEAD /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut last = Vec::new();
    stream
        .read_to_end(&mut last)
        .expect("the proxy closes after connection: close");
    let last = String::from_utf8_lossy(&last);
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert_eq!(upstream.stats().await["last_request"]["path"], "/four");
    assert_eq!(upstream.requests().await, 4);
}

/// An upstream as Python's `http.server` ships: it answers every request
/// as HTTP/1.0 and closes the connection.
fn http10_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n",
                );
            });
        }
    });
    address
}

/// Reads one HTTP/1 response with a `content-length` body from `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed");
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let length: usize = support::raw_header(&head, "content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[tokio::test]
async fn an_http10_upstream_answers_a_keep_alive_client_in_its_own_version() {
    let upstream = http10_upstream();
    let proxy = proxy(&single_route(&upstream, "", "")).run().await;
    let listen = proxy.listen;
    // Two requests, one after the other, on one connection: both answered
    // as HTTP/1.1, and the connection stays open between them.
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(listen).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for i in 0..2 {
            stream
                .write_all(format!("GET /{i} HTTP/1.1\r\nhost: app\r\n\r\n").as_bytes())
                .unwrap();
            let response = read_response(&mut stream);
            assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
            assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
            assert_ne!(
                support::raw_header(&response, "connection"),
                Some("close"),
                "{response}"
            );
        }
    })
    .await
    .unwrap();

    // An HTTP/1.0 client still gets HTTP/1.0, and an HTTP/2 client HTTP/2.
    let response = raw_exchange(
        proxy.listen,
        b"GET /old HTTP/1.0\r\nhost: app\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(response.starts_with("HTTP/1.0 200 "), "{response}");
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(proxy.url("/h2")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "ok\n");
}
