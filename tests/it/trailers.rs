//! HTTP/1.1 trailers through the real binary, on raw sockets both sides:
//! a chunked request's trailers reach the upstream, and a chunked
//! response's trailers reach a client that said `te: trailers`. (HTTP/2
//! trailers are what every gRPC test in `grpc.rs` rides on.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{proxy, raw_exchange};

/// An upstream that reads one chunked request (up to the blank line after
/// its last chunk and trailers), records it, and answers with a chunked
/// body whose trailers declare themselves in `trailer:`.
async fn chunked_upstream() -> (String, Arc<Mutex<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(String::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the request ended early");
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request);
            if let Some(body) = text.split_once("\r\n\r\n").map(|(_, body)| body) {
                if body.contains("0\r\n") && body.ends_with("\r\n\r\n") {
                    break;
                }
            }
        }
        *record.lock().unwrap() = String::from_utf8_lossy(&request).into_owned();
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\
                  connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n",
            )
            .await
            .unwrap();
        let _ = stream.shutdown().await;
    });
    (address, seen)
}

#[tokio::test]
async fn http1_trailers_pass_both_ways() {
    let (upstream, seen) = chunked_upstream().await;
    let proxy = proxy(&format!(
        "admin:
  listen: {{admin}}
listeners:
  - name: inbound
    listen: {{listen}}
    routes:
      - {{name: main, upstream: app}}
upstreams:
  - {{name: app, endpoints: [{upstream}]}}
"
    ))
    .run()
    .await;

    let request = b"POST /upload HTTP/1.1\r\nhost: shop.example\r\nte: trailers\r\n\
        trailer: x-request-sum\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
        3\r\nabc\r\n0\r\nx-request-sum: 99\r\n\r\n";
    let listen = proxy.listen;
    let response =
        tokio::task::spawn_blocking(move || raw_exchange(listen, request, Duration::from_secs(5)))
            .await
            .unwrap();

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        body.ends_with("0\r\nx-checksum: abc123\r\n\r\n"),
        "the response trailers arrive after the last chunk: {response:?}"
    );
    let request = seen.lock().unwrap().clone();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("trailer: x-request-sum"),
        "{head}"
    );
    assert!(
        body.ends_with("0\r\nx-request-sum: 99\r\n\r\n"),
        "the request trailers reach the upstream: {body:?}"
    );
}
