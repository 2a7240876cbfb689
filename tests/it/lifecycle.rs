//! Start and stop: SIGTERM/SIGINT drain with requests in flight.

use std::time::Duration;

use crate::support::{client, eventually, proxy, sim, SIGINT, SIGTERM};

fn config(upstream: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"]}}
supervisor: {{drain_timeout: 20s}}
"
    )
}

async fn drains_on(signal: i32) {
    let upstream = sim("slow").arg("--latency").arg("1500ms").run().await;
    let mut proxy = proxy(&config(&upstream.address)).run().await;
    const N: u64 = 20;
    let requests: Vec<_> = (0..N)
        .map(|i| {
            let url = proxy.url(&format!("/work/{i}"));
            tokio::spawn(async move {
                client()
                    .get(url)
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
            })
        })
        .collect();
    eventually(
        "all requests reach the upstream",
        Duration::from_secs(10),
        || async { (upstream.stats().await["in_flight"].as_u64() == Some(N)).then_some(()) },
    )
    .await;

    proxy.process.signal(signal);
    let ready = proxy.admin_url("/readyz");
    eventually(
        "/readyz turns 503 while draining",
        Duration::from_secs(5),
        || async {
            let response = client().get(&ready).send().await.ok()?;
            (response.status() == 503).then_some(())
        },
    )
    .await;
    let listen = proxy.listen;
    eventually(
        "new connections are refused",
        Duration::from_secs(5),
        || async {
            tokio::net::TcpStream::connect(listen)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;

    for request in requests {
        let status = request
            .await
            .unwrap()
            .expect("an in-flight request was dropped during drain");
        assert_eq!(status, 200);
    }
    let exit = proxy.process.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "breakwater exited with {exit}");
    assert!(proxy
        .process
        .stderr
        .contains("Drained: all connections closed."));
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    drains_on(SIGTERM).await;
}

#[tokio::test]
async fn sigint_drains_too() {
    drains_on(SIGINT).await;
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait() {
    let upstream = sim("hung").arg("--hang").run().await;
    let template = config(&upstream.address)
        .replace("drain_timeout: 20s", "drain_timeout: 500ms")
        .replace(
            "routes: [{name: main, upstream: app}]",
            "routes: [{name: main, upstream: app, timeouts: {request: 60s}}]",
        );
    let mut proxy = proxy(&template).run().await;
    let url = proxy.url("/");
    let stuck = tokio::spawn(async move { client().get(url).send().await });
    eventually(
        "request reaches the upstream",
        Duration::from_secs(5),
        || async { (upstream.stats().await["in_flight"].as_u64() == Some(1)).then_some(()) },
    )
    .await;
    proxy.process.signal(SIGTERM);
    let exit = proxy.process.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success());
    assert!(proxy.process.stderr.contains("Drain timeout reached"));
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request is cut when the drain time is up"
    );
}
