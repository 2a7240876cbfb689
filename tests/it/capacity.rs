//! The proxy never causes the outage: bursts of clients against a small,
//! healthy, real service — Python's `ThreadingHTTPServer` as it ships
//! (listen backlog 5, HTTP/1.0, a thread per connection, a few ms per
//! request) — through breakwater on its embedded default. And the other
//! side of the same rule: a dead or black-holed upstream still opens the
//! breaker within its count and fails fast after.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::{client, eventually, free_port, Process};

/// The small service, killed when dropped.
struct SmallService {
    child: Child,
    address: String,
}

impl Drop for SmallService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn small_service(work_ms: u32) -> SmallService {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/small_service.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(work_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the small service");
    let address = format!("127.0.0.1:{port}");
    let probe = address.clone();
    eventually("the small service listens", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move { TcpStream::connect(&probe).await.ok().map(|_| ()) }
    })
    .await;
    SmallService { child, address }
}

/// breakwater on its embedded default in front of `upstream`.
struct Sidecar {
    _process: Process,
    listen: SocketAddr,
    admin: SocketAddr,
}

async fn sidecar(upstream: &str) -> Sidecar {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let process = Process::spawn(
        &[
            "run",
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--upstream",
            upstream,
        ],
        &[("RUST_LOG", "warn")],
    );
    let url = format!("http://{admin}/healthz");
    eventually("admin up", Duration::from_secs(15), || async {
        (client().get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    Sidecar {
        _process: process,
        listen,
        admin,
    }
}

impl Sidecar {
    async fn status(&self) -> serde_json::Value {
        client()
            .get(format!("http://{}/status", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn breaker(&self) -> serde_json::Value {
        self.status().await["listeners"][0]["routes"][0]["breaker"].clone()
    }
}

/// What a burst got back: statuses, and the reason of every reply
/// breakwater made itself, with whether it carried `retry-after`.
#[derive(Debug, Default)]
struct Tally {
    statuses: BTreeMap<u16, usize>,
    reasons: BTreeMap<String, usize>,
    without_retry_after: usize,
    transport_errors: usize,
}

/// `clients` clients at once, each on its own keep-alive connection
/// (reopened if the proxy closes it), each sending `requests` GETs in a
/// row.
async fn burst(proxy: SocketAddr, clients: usize, requests: usize) -> Tally {
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut sender = None;
                for _ in 0..requests {
                    let mut connection = match sender.take() {
                        Some(open) => open,
                        None => match connect(proxy).await {
                            Some(open) => open,
                            None => {
                                tally.lock().unwrap().transport_errors += 1;
                                continue;
                            }
                        },
                    };
                    let request = http::Request::get("/")
                        .header("host", "service")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let response = match connection.send_request(request).await {
                        Ok(response) => response,
                        Err(_) => {
                            tally.lock().unwrap().transport_errors += 1;
                            continue;
                        }
                    };
                    let status = response.status().as_u16();
                    let reason = response
                        .headers()
                        .get("x-breakwater-reason")
                        .map(|value| value.to_str().unwrap_or("").to_owned());
                    let retry_after = response.headers().contains_key("retry-after");
                    let _ = response.into_body().collect().await;
                    {
                        let mut tally = tally.lock().unwrap();
                        *tally.statuses.entry(status).or_default() += 1;
                        if let Some(reason) = reason {
                            *tally.reasons.entry(reason).or_default() += 1;
                            if !retry_after {
                                tally.without_retry_after += 1;
                            }
                        }
                    }
                    if !connection.is_closed() {
                        sender = Some(connection);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

async fn connect(
    proxy: SocketAddr,
) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(proxy).await.ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(16_384);
}

/// Bursts of 40 and 200 clients are all served, with the breaker closed
/// throughout; at 1 000 nothing fails because of breakwater's own
/// connection handling — whatever is not served is a fast 503 shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_against_a_small_service_are_served_not_turned_into_an_outage() {
    raise_fd_limit();
    let service = small_service(5).await;
    let proxy = sidecar(&service.address).await;

    for (clients, requests) in [(40, 10), (200, 5)] {
        let started = tokio::time::Instant::now();
        let tally = burst(proxy.listen, clients, requests).await;
        eprintln!(
            "{clients} clients × {requests}: {tally:?} in {:?}",
            started.elapsed()
        );
        assert_eq!(
            tally.statuses.get(&200).copied(),
            Some(clients * requests),
            "every request of the {clients}-client burst served: {tally:?}"
        );
        assert_eq!(tally.transport_errors, 0, "{tally:?}");
    }

    let started = tokio::time::Instant::now();
    let tally = burst(proxy.listen, 1000, 2).await;
    eprintln!("1000 clients × 2: {tally:?} in {:?}", started.elapsed());
    assert_eq!(tally.transport_errors, 0, "{tally:?}");
    let served = tally.statuses.get(&200).copied().unwrap_or(0);
    let shed = tally.statuses.get(&503).copied().unwrap_or(0);
    assert_eq!(served + shed, 2000, "only 200s and 503s: {tally:?}");
    for reason in tally.reasons.keys() {
        assert!(
            ["shed", "upstream-queue-full", "upstream-queue-timeout"].contains(&reason.as_str()),
            "a 503 that is not a shed: {tally:?}"
        );
    }
    assert_eq!(tally.without_retry_after, 0, "{tally:?}");

    let breaker = proxy.breaker().await;
    assert_eq!(breaker["state"], "closed", "{breaker}");
    assert_eq!(breaker["n_trips"], 0, "the breaker never opened: {breaker}");
    let status = proxy.status().await;
    let connections = &status["upstreams"][0]["endpoints"][0]["connections"];
    assert_eq!(
        connections["congested_dials_total"], 0,
        "no dial ever had to wait out a dropped SYN: {connections}"
    );
}

/// A listener whose accept queue is full and never drained: further SYNs
/// are dropped, as by a black hole. The held connections keep it full.
async fn black_hole() -> (String, Vec<TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let address = listener.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(address)).await
    {
        held.push(stream);
    }
    (address.to_string(), held, listener)
}

async fn breaker_opens_then_fails_fast(proxy: &Sidecar, failure: &str) {
    // Ten callers at once: each fails as the upstream's failure, and the
    // breaker (5 consecutive failures by default) opens.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let url = format!("http://{}/", proxy.listen);
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                let reason = response.headers()["x-breakwater-reason"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (response.status().as_u16(), reason)
            })
        })
        .collect();
    for call in calls {
        let (status, reason) = call.await.unwrap();
        assert!(
            (status, reason.as_str()) == (502, failure)
                || (status, reason.as_str()) == (503, "breaker-open"),
            "{status} {reason}"
        );
    }
    let breaker = proxy.breaker().await;
    assert_eq!(breaker["state"], "open", "{breaker}");
    assert_eq!(breaker["n_trips"], 1);
    // From now on callers fail fast without the upstream.
    for _ in 0..5 {
        let response = client()
            .get(format!("http://{}/", proxy.listen))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-breakwater-reason"], "breaker-open");
        assert!(response.headers().contains_key("retry-after"));
    }
}

#[tokio::test]
async fn a_refusing_upstream_still_opens_the_breaker_within_its_count() {
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = sidecar(&dead).await;
    breaker_opens_then_fails_fast(&proxy, "upstream-unavailable").await;
}

#[tokio::test]
async fn a_black_holed_upstream_still_opens_the_breaker_within_its_count() {
    let (address, _held, _listener) = black_hole().await;
    let proxy = sidecar(&address).await;
    breaker_opens_then_fails_fast(&proxy, "upstream-unavailable").await;
    let connections = &proxy.status().await["upstreams"][0]["endpoints"][0]["connections"];
    assert_eq!(
        connections["pending"], 0,
        "no request is left waiting on a dead endpoint: {connections}"
    );
}
