//! Hostile input (SPEC §11), proven with raw bytes on a socket — never
//! through a client library that would tidy them up — against a recording
//! upstream that must see nothing of a refused request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::{
    self, client, eventually, proxy, raw_exchange_closed, raw_header, sim, Proxy, Sim,
};

fn config(upstream: &str, limits: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
limits: {{{limits}}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app, timeouts: {{request: 5s}}}}]}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"]}}
"
    )
}

async fn guarded(limits: &str) -> (Sim, Proxy) {
    let upstream = sim("recorder").run().await;
    let proxy = proxy(&config(&upstream.address, limits)).run().await;
    (upstream, proxy)
}

/// Every HTTP/1 row of SPEC §11: the status, the reason header, a closed
/// connection, and not one request at the upstream.
#[tokio::test]
async fn every_framing_and_size_violation_is_refused_before_the_upstream() {
    let (upstream, proxy) = guarded("max_body_bytes: 1MiB").await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(61 * 1024)
    );
    let many_headers = {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..101 {
            head.push_str(&format!("X-{i}: 1\r\n"));
        }
        head + "\r\n"
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("content-length with transfer-encoding", b"POST /cl-te HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400, "content-length-with-transfer-encoding"),
        ("transfer-encoding then content-length", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n".to_vec(), 400, "content-length-with-transfer-encoding"),
        ("differing content-lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(), 400, "bad-content-length"),
        ("known coding not chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc".to_vec(), 400, "transfer-encoding-not-chunked"),
        ("chunked not last", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(), 400, "transfer-encoding-not-chunked"),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xyz, chunked\r\n\r\n0\r\n\r\n".to_vec(), 501, "unknown-transfer-coding"),
        ("whitespace before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n".to_vec(), 400, "header-whitespace"),
        ("invalid header name", b"GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n".to_vec(), 400, "invalid-header-name"),
        ("control byte in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x07b\r\n\r\n".to_vec(), 400, "invalid-header-value"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n  folded\r\n\r\n".to_vec(), 400, "obs-fold"),
        ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n".to_vec(), 400, "bare-line-feed"),
        ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400, "bad-host"),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400, "bad-host"),
        ("transfer-encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400, "transfer-encoding-in-http10"),
        ("bad chunk", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n".to_vec(), 400, "bad-chunk"),
        ("request line over 8 KiB", long_target.into_bytes(), 414, "request-line-too-long"),
        ("header block over 60 KiB", big_head.into_bytes(), 431, "header-too-large"),
        ("more than 100 headers", many_headers.into_bytes(), 431, "too-many-headers"),
        ("declared body over max_body_bytes", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n".to_vec(), 413, "body-too-large"),
        ("CONNECT", b"CONNECT internal:22 HTTP/1.1\r\nHost: internal:22\r\n\r\n".to_vec(), 501, "connect-not-supported"),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), 505, "unsupported-version"),
    ];
    for (name, bytes, status, reason) in &cases {
        let (response, closed) = raw_exchange_closed(proxy.listen, bytes, Duration::from_secs(10));
        let status_line = response.lines().next().unwrap_or("");
        assert!(
            status_line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{name}: got {status_line:?}"
        );
        assert_eq!(
            raw_header(&response, "x-breakwater-reason"),
            Some(*reason),
            "{name}"
        );
        assert!(closed, "{name}: the connection must be closed");
    }
    assert_eq!(
        upstream.requests().await,
        0,
        "nothing of a refused request may reach the upstream"
    );

    // And a normal request right after is served.
    let (response, _) = raw_exchange_closed(
        proxy.listen,
        b"GET /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert_eq!(upstream.requests().await, 1);
    let metrics = proxy.metrics().await;
    for reason in [
        "content_length_with_transfer_encoding",
        "bad_host",
        "request_line_too_long",
        "header_too_large",
        "body_too_large",
    ] {
        assert!(
            !metrics.contains(&format!("reason=\"{reason}\"}} 0")),
            "{reason} not counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_chunked_body_over_max_body_bytes_ends_the_connection() {
    let (upstream, proxy) = guarded("max_body_bytes: 1KiB").await;
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'x'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (response, closed) = raw_exchange_closed(proxy.listen, &request, Duration::from_secs(10));
    assert!(closed);
    assert!(
        !response.contains("2048"),
        "the whole body must not have been echoed: {response}"
    );
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_rejected_total{listener="inbound",reason="body_too_large"} 1"#));
    let _ = upstream;
}

#[tokio::test]
async fn a_silent_connection_gets_408_at_header_read() {
    let (upstream, proxy) = guarded("header_read: 500ms").await;
    let (response, closed) = raw_exchange_closed(proxy.listen, b"", Duration::from_secs(10));
    assert!(response.starts_with("HTTP/1.1 408 "), "{response:?}");
    assert_eq!(
        raw_header(&response, "x-breakwater-reason"),
        Some("header-read-timeout")
    );
    assert!(closed);
    let (response, _) = raw_exchange_closed(
        proxy.listen,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Half: ",
        Duration::from_secs(10),
    );
    assert!(response.starts_with("HTTP/1.1 408 "), "{response:?}");
    assert_eq!(upstream.requests().await, 0);
}

#[tokio::test]
async fn a_stalled_body_is_cut_at_body_read_idle() {
    let (upstream, proxy) = guarded("body_read_idle: 500ms").await;
    let mut stream = TcpStream::connect(proxy.listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-some")
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let result = stream.read_to_end(&mut sink);
    assert!(
        result.is_ok()
            || result
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed by the proxy, not by our read timeout"
    );
    assert!(proxy
        .metrics()
        .await
        .contains(r#"reason="body_read_timeout"} 1"#));
    let _ = upstream;
}

/// 1 000 clients send their headers one byte at a time; every one is cut
/// at `header_read` with a 408 while a normal client is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_at_header_read_while_others_are_served() {
    rlimit::increase_nofile_limit(16_384).unwrap();
    let (upstream, proxy) = guarded("header_read: 2s").await;
    const N: usize = 1000;
    let address = proxy.listen;
    let slow: Vec<_> = (0..N)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
                let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                let deadline = Instant::now() + Duration::from_secs(30);
                for byte in head.iter() {
                    if stream.write_all(std::slice::from_ref(byte)).await.is_err() || Instant::now() > deadline {
                        break;
                    }
                    // Pacing of the attack itself, not a wait for a result.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                let mut response = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
                Some(String::from_utf8_lossy(&response).into_owned())
            })
        })
        .collect();

    // A well-behaved client keeps being served while the attack runs.
    let mut served = 0;
    let normal_deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < normal_deadline {
        let response = client().get(proxy.url("/normal")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 10);

    let mut cut = 0;
    for task in slow {
        if let Some(response) = task.await.unwrap() {
            assert!(
                response.starts_with("HTTP/1.1 408 "),
                "a slow client got {response:?}"
            );
            cut += 1;
        }
    }
    assert_eq!(cut, N, "every slow client connected and was cut");
    assert_eq!(upstream.requests().await, served);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"breakwater_rejected_total{{listener="inbound",reason="header_read_timeout"}} {N}"#
        )),
        "{metrics}"
    );
    eprintln!(
        "slow-client test: proxy peak RSS {} KiB with {N} slow connections",
        proxy.process.peak_rss_kib()
    );
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut frame = vec![
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        kind,
        flags,
    ];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// HPACK: :method GET, :scheme http, :path /, :authority "a".
const GET_HEADERS: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

/// Writes `frames` from one task while another reads frames until a GOAWAY
/// or EOF; returns (saw GOAWAY, bytes written before the end).
async fn flood(
    address: std::net::SocketAddr,
    frames: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> (bool, usize) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let written = tokio::spawn(async move {
        let mut total = 0usize;
        let _ = writer.write_all(PREFACE).await;
        let _ = writer.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await;
        for frame in frames {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
            total += frame.len();
        }
        total
    });
    let mut saw_goaway = false;
    let mut buffer = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            // Walk complete frames looking for GOAWAY.
            let mut at = 0;
            while buffer.len() >= at + 9 {
                let length = (usize::from(buffer[at]) << 16)
                    | (usize::from(buffer[at + 1]) << 8)
                    | usize::from(buffer[at + 2]);
                if buffer[at + 3] == GOAWAY {
                    saw_goaway = true;
                }
                at += 9 + length;
            }
            if saw_goaway {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the flood connection must end within 20s");
    let written = tokio::time::timeout(Duration::from_secs(20), written)
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    (saw_goaway, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_flood_ends_in_goaway_with_bounded_work() {
    let (upstream, proxy) = guarded("").await;
    let normal = {
        let url = proxy.url("/normal");
        tokio::spawn(async move {
            let h2 = reqwest::Client::builder()
                .no_proxy()
                .http2_prior_knowledge()
                .build()
                .unwrap();
            let mut ok = 0;
            for _ in 0..50 {
                if h2.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                    ok += 1;
                }
            }
            ok
        })
    };
    let frames = (0..10_000u32).flat_map(|i| {
        let stream = 2 * i + 1;
        [
            h2_frame(HEADERS, 0x5, stream, GET_HEADERS),
            h2_frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()),
        ]
    });
    let (saw_goaway, written) = flood(proxy.listen, frames).await;
    assert!(
        saw_goaway,
        "rapid reset must end in GOAWAY (wrote {written} bytes)"
    );
    assert_eq!(
        normal.await.unwrap(),
        50,
        "another connection is served normally meanwhile"
    );
    let reached = upstream.requests().await.saturating_sub(50);
    assert!(
        reached <= 100,
        "{reached} flood requests reached the upstream"
    );
    eprintln!("rapid reset: GOAWAY after {written} bytes; {reached} flood requests reached the upstream; proxy peak RSS {} KiB", proxy.process.peak_rss_kib());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_ends_with_bounded_work() {
    let (upstream, proxy) = guarded("").await;
    // An endless header block: HEADERS without END_HEADERS, then
    // CONTINUATION frames of literal headers, never ending.
    let literal: Vec<u8> = {
        let mut field = vec![0x00, 0x03, b'x', b'-', b'a', 0x7e];
        field.extend_from_slice(&[b'v'; 126]);
        field
    };
    let payload: Vec<u8> = literal
        .iter()
        .copied()
        .cycle()
        .take(literal.len() * 120)
        .collect();
    let first = h2_frame(HEADERS, 0x1, 1, GET_HEADERS);
    let frames = std::iter::once(first).chain(std::iter::repeat_n(
        h2_frame(CONTINUATION, 0, 1, &payload),
        4000,
    ));
    let (saw_goaway, written) = flood(proxy.listen, frames).await;
    assert!(
        saw_goaway,
        "an endless header block must end in GOAWAY (wrote {written} bytes)"
    );
    assert!(
        written < 8 << 20,
        "the proxy kept reading an endless header block: {written} bytes"
    );
    assert_eq!(upstream.requests().await, 0);
    let response = client().get(proxy.url("/after")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    eprintln!("CONTINUATION flood: ended after {written} bytes (GOAWAY: {saw_goaway}); proxy peak RSS {} KiB", proxy.process.peak_rss_kib());
}

#[tokio::test]
async fn the_overload_ladder_engages_in_order_and_releases() {
    let upstream = sim("app").run().await;
    let template = |memory: &str| {
        config(&upstream.address, "").replace(
            "limits: {}",
            &format!("limits: {{}}\noverload: {{memory: {memory}}}"),
        )
    };
    let proxy = proxy(&template("1GiB")).run().await;
    let reload = |memory: String| {
        let text = support::fill(&template(&memory), proxy.listen, proxy.admin);
        support::write_atomically(&proxy.config_path, &text);
        let url = proxy.admin_url("/config/reload");
        async move { assert_eq!(client().post(url).send().await.unwrap().status(), 200) }
    };
    let level = |proxy: &Proxy| {
        let url = proxy.admin_url("/metrics");
        async move {
            let text = client().get(url).send().await.ok()?.text().await.ok()?;
            text.lines()
                .find_map(|line| line.strip_prefix("breakwater_overload_level "))
                .and_then(|v| v.trim().parse::<u8>().ok())
        }
    };
    assert_eq!(proxy.get("/").await.headers().get("connection"), None);

    // RSS at 90% of the limit: keep-alive stops, requests still served.
    let rss = proxy.process.rss_kib();
    reload(format!("{}KiB", rss * 10 / 9)).await;
    eventually("level 1", Duration::from_secs(10), || async {
        (level(&proxy).await == Some(1)).then_some(())
    })
    .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");

    // Far past the limit: new requests are shed.
    let rss = proxy.process.rss_kib();
    reload(format!("{}KiB", (rss * 2 / 3).max(1024))).await;
    eventually("level 2", Duration::from_secs(10), || async {
        (level(&proxy).await == Some(2)).then_some(())
    })
    .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-breakwater-reason"], "overload");

    // Room again: released, in one sample.
    reload("1GiB".to_owned()).await;
    eventually("level 0", Duration::from_secs(10), || async {
        (level(&proxy).await == Some(0)).then_some(())
    })
    .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("connection"), None);
    let log = proxy.process.stderr.text();
    let order: Vec<usize> = [
        "breakwater::event: overload stop_keep_alive:",
        "breakwater::event: overload shed:",
        "breakwater::event: overload normal:",
    ]
    .iter()
    .map(|needle| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no event {needle}:\n{log}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "events out of order: {order:?}"
    );
}

// The fault hook exists only in builds with the `test-hooks` feature,
// which scripts/test.sh turns on; release builds never obey it.
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn a_panic_while_serving_is_isolated() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, ""))
        .env("BREAKWATER_FAULT_PANIC_PATH", "/__panic")
        .run()
        .await;
    let response = client()
        .get(proxy.url("/__panic"))
        .header("x-request-id", "panic-probe-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-breakwater-reason"], "internal");
    assert_eq!(response.headers()["x-request-id"], "panic-probe-1");
    assert_eq!(proxy.get("/after").await.status(), 200);
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("breakwater_panics_total 1"));
    assert!(
        metrics.contains(r#"breakwater_requests_total{code="500",outcome="rejected",route=""} 1"#),
        "{metrics}"
    );
    proxy
        .process
        .stderr
        .wait_for("panic-probe-1", Duration::from_secs(5))
        .await;
    assert_eq!(
        proxy.status_json().await["in_flight"],
        0,
        "the panicked request released its accounting"
    );
}

/// Found by fuzzing: an upgrade request whose `connection` value has a
/// byte ≥ 0x80 made the guard stop framing while the proxy did not treat
/// it as an upgrade, so a smuggled request behind it reached the upstream.
#[tokio::test]
async fn a_refused_upgrade_ends_the_connection_so_nothing_unframed_follows() {
    let (upstream, proxy) = guarded("").await;
    let mut bytes =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade, \xa8\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let (response, closed) = raw_exchange_closed(proxy.listen, &bytes, Duration::from_secs(10));
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert_eq!(raw_header(&response, "connection"), Some("close"));
    assert!(closed);
    assert_eq!(
        upstream.requests().await,
        1,
        "only the first request reached the upstream"
    );
    assert_eq!(upstream.stats().await["last_request"]["path"], "/ws");
}
