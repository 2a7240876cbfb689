//! The SPEC §3 policies on live traffic: breaker, bulkhead, retries with a
//! budget, rate limit, outlier ejection and active health checks.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{client, eventually, free_port, metric_value, proxy, sim, Proxy};

fn one_route(upstreams: &[&str], route_extra: &str, upstream_extra: &str) -> String {
    let endpoints: Vec<String> = upstreams
        .iter()
        .map(|address| format!("\"{address}\""))
        .collect();
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - name: main
        upstream: app
{route_extra}
upstreams:
  - name: app
    endpoints: [{}]
{upstream_extra}
",
        endpoints.join(", ")
    )
}

async fn breaker_state(proxy: &Proxy) -> String {
    proxy.status_json().await["listeners"][0]["routes"][0]["breaker"]["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn breaker_trips_after_consecutive_failures_and_fails_fast_without_contacting_the_upstream() {
    let upstream = sim("app").arg("--status").arg("503").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: {consecutive_failures: 3, open_duration: 30s}",
        "    outlier_detection: false",
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..3 {
        assert_eq!(proxy.get("/").await.status(), 503);
    }
    assert_eq!(upstream.requests().await, 3);
    let started = Instant::now();
    for _ in 0..20 {
        let response = proxy.get("/").await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-breakwater-reason"], "breaker-open");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
    }
    eprintln!(
        "20 requests against an open breaker took {:?} (client round trips included)",
        started.elapsed()
    );
    assert_eq!(
        upstream.requests().await,
        3,
        "no upstream contact while open"
    );
    assert_eq!(breaker_state(&proxy).await, "open");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"breakwater_circuit_breaker_state{route="main"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"breakwater_circuit_breaker_transitions_total{route="main",to="open"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"breakwater_shed_total{reason="breaker_open",route="main"} 20"#),
        "{metrics}"
    );
    proxy
        .process
        .stderr
        .wait_for("breakwater::event: breaker ", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn half_open_probes_close_the_breaker_after_recovery() {
    let upstream = sim("app").arg("--status").arg("500").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: {consecutive_failures: 2, open_duration: 300ms, half_open_max_calls: 1, half_open_successes: 2}",
        "    outlier_detection: false",
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..2 {
        assert_eq!(proxy.get("/").await.status(), 500);
    }
    assert_eq!(breaker_state(&proxy).await, "open");
    upstream.control(r#"{"status": 200}"#).await;
    eventually(
        "breaker closes after probes succeed",
        Duration::from_secs(10),
        || async {
            let _ = proxy.get("/").await;
            (breaker_state(&proxy).await == "closed").then_some(())
        },
    )
    .await;
    assert_eq!(proxy.get("/").await.status(), 200);
    let metrics = proxy.metrics().await;
    for to in ["open", "half_open", "closed"] {
        assert!(
            metrics.contains(&format!(r#"to="{to}"}}"#)),
            "no transition to {to}:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn failure_rate_trips_only_once_minimum_calls_are_in_the_window() {
    let upstream = sim("app").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: {consecutive_failures: 1000, failure_rate: 0.5, minimum_calls: 10, window: {type: count, size: 10}, open_duration: 30s}",
        "    outlier_detection: false",
    );
    let proxy = proxy(&config).run().await;
    // Alternate success and failure, never two failures in a row.
    for i in 0..9 {
        let status = if i % 2 == 1 { 500 } else { 200 };
        upstream
            .control(&format!(r#"{{"status": {status}}}"#))
            .await;
        let _ = proxy.get("/").await;
        assert_eq!(
            breaker_state(&proxy).await,
            "closed",
            "tripped before minimum_calls at call {}",
            i + 1
        );
    }
    upstream.control(r#"{"status": 200}"#).await;
    let _ = proxy.get("/").await; // 10th call: 4 failures of 10, rate 0.4 → still closed
    assert_eq!(breaker_state(&proxy).await, "closed");
    upstream.control(r#"{"status": 500}"#).await;
    let _ = proxy.get("/").await; // the last 10 calls hold 5 failures: rate 0.5 → trips
    assert_eq!(breaker_state(&proxy).await, "open");
    assert!(proxy.metrics().await.contains(r#"to="open"} 1"#));
}

#[tokio::test]
async fn slow_calls_trip_the_breaker() {
    let upstream = sim("app").arg("--latency").arg("150ms").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: {slow_call_rate: 0.5, slow_call_duration: 50ms, minimum_calls: 4, window: {type: count, size: 4}, open_duration: 30s}",
        "",
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..4 {
        assert_eq!(proxy.get("/").await.status(), 200);
    }
    assert_eq!(breaker_state(&proxy).await, "open");
    let response = proxy.get("/").await;
    assert_eq!(response.headers()["x-breakwater-reason"], "breaker-open");
    assert!(proxy
        .metrics()
        .await
        .contains(r#"outcome="slow",route="main"} 4"#));
}

#[tokio::test]
async fn admin_forces_breakers_open_and_resets_them_with_the_token() {
    let upstream = sim("app").run().await;
    let config = one_route(&[&upstream.address], "", "").replace(
        "admin: {listen: \"{admin}\"}",
        "admin: {listen: \"{admin}\", token: s3cret}",
    );
    let proxy = proxy(&config).run().await;
    let post = |path: &str, token: Option<&str>| {
        let request = client().post(proxy.admin_url(path));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    assert_eq!(post("/breakers/main/open", None).await.status(), 401);
    assert_eq!(breaker_state(&proxy).await, "closed");
    assert_eq!(
        post("/breakers/main/open", Some("s3cret")).await.status(),
        200
    );
    assert_eq!(breaker_state(&proxy).await, "forced_open");
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-breakwater-reason"], "breaker-open");
    assert_eq!(upstream.requests().await, 0);
    assert_eq!(
        post("/breakers/main/reset", Some("s3cret")).await.status(),
        200
    );
    assert_eq!(proxy.get("/").await.status(), 200);
    assert_eq!(
        post("/breakers/main/close", Some("s3cret")).await.status(),
        200
    );
    assert_eq!(breaker_state(&proxy).await, "forced_closed");
    assert_eq!(post("/breakers/reset", Some("s3cret")).await.status(), 200);
    assert_eq!(breaker_state(&proxy).await, "closed");
    let missing = post("/breakers/nope/open", Some("s3cret")).await;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"));
    assert_eq!(
        client()
            .get(proxy.admin_url("/breakers/main/open"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test]
async fn breaker_state_survives_a_reload_that_does_not_change_it() {
    let upstream = sim("app").run().await;
    let config = one_route(&[&upstream.address], "        timeouts: {request: 5s}", "");
    let proxy = proxy(&config).run().await;
    assert_eq!(
        client()
            .post(proxy.admin_url("/breakers/main/open"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    proxy.rewrite(&config.replace("request: 5s", "request: 6s"));
    assert_eq!(
        client()
            .post(proxy.admin_url("/config/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(proxy.status_json().await["config_version"], 2);
    assert_eq!(breaker_state(&proxy).await, "forced_open");
}

#[tokio::test]
async fn bulkhead_admits_exactly_its_limit_and_queue_and_sheds_the_rest_at_once() {
    let upstream = sim("slow").arg("--latency").arg("1500ms").run().await;
    let config = one_route(
        &[&upstream.address],
        "        bulkhead: {max_concurrent: 3, max_queue: 2, queue_timeout: 10s}",
        "",
    );
    let proxy = proxy(&config).run().await;
    let url = proxy.url("/");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let response = client().get(url).send().await.unwrap();
                (
                    response.status().as_u16(),
                    response
                        .headers()
                        .get("x-breakwater-reason")
                        .map(|v| v.to_str().unwrap().to_owned()),
                    started.elapsed(),
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for task in tasks {
        let (status, reason, elapsed) = task.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(reason.as_deref(), Some("shed"));
                assert!(
                    elapsed < Duration::from_millis(1000),
                    "shed must be immediate, took {elapsed:?}"
                );
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, shed), (5, 5));
    assert_eq!(upstream.requests().await, 5);
    let status = proxy.status_json().await;
    assert_eq!(
        status["listeners"][0]["routes"][0]["bulkhead"]["in_flight"], 0,
        "every permit released"
    );
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_shed_total{reason="full",route="main"} 5"#));
}

#[tokio::test]
async fn queued_requests_are_shed_at_queue_timeout() {
    let upstream = sim("slow").arg("--latency").arg("2s").run().await;
    let config = one_route(
        &[&upstream.address],
        "        bulkhead: {max_concurrent: 1, max_queue: 1, queue_timeout: 200ms}",
        "",
    );
    let proxy = proxy(&config).run().await;
    let first = tokio::spawn({
        let url = proxy.url("/first");
        async move { client().get(url).send().await.unwrap().status() }
    });
    eventually(
        "first request holds the slot",
        Duration::from_secs(5),
        || async { (upstream.stats().await["in_flight"].as_u64() == Some(1)).then_some(()) },
    )
    .await;
    let response = proxy.get("/second").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-breakwater-reason"], "shed");
    assert!(proxy
        .metrics()
        .await
        .contains(r#"reason="queue_timeout",route="main"} 1"#));
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn a_client_that_goes_away_releases_its_permit() {
    let upstream = sim("slow").arg("--latency").arg("3s").run().await;
    let config = one_route(
        &[&upstream.address],
        "        bulkhead: {max_concurrent: 1, max_queue: 0}",
        "",
    );
    let proxy = proxy(&config).run().await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient.get(proxy.url("/")).send().await.is_err());
    eventually("the permit comes back", Duration::from_secs(5), || async {
        (proxy.status_json().await["listeners"][0]["routes"][0]["bulkhead"]["in_flight"] == 0)
            .then_some(())
    })
    .await;
    upstream.control(r#"{"latency": "0ms"}"#).await;
    assert_eq!(proxy.get("/").await.status(), 200, "the slot is free again");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            r#"breakwater_requests_total{code="499",outcome="cancelled",route="main"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"code="200",outcome="rejected""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn retries_go_to_another_endpoint_and_succeed() {
    let live = sim("live").run().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let config = one_route(
        &[&dead, &live.address],
        "        retry: {attempts: 2, retry_on: [connect_error]}",
        "    outlier_detection: false",
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..20 {
        let response = proxy.get("/").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sim-name"], "live");
    }
    let metrics = proxy.metrics().await;
    let retries: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"breakwater_retries_total{route="main"} "#))
        .and_then(|value| value.parse().ok())
        .unwrap();
    assert_eq!(
        retries, 10,
        "every other request started on the dead endpoint"
    );
}

#[tokio::test]
async fn retries_on_a_dead_upstream_stay_within_the_budget() {
    let upstream = sim("down").arg("--status").arg("503").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: false\n        retry: {attempts: 3, retry_on: [http_5xx], budget: {ratio: 0.2, min_per_sec: 1}, backoff: {base: 1ms, max: 2ms}}",
        "    outlier_detection: false",
    );
    let proxy = proxy(&config).run().await;
    const N: u64 = 100;
    let started = Instant::now();
    for _ in 0..N {
        assert_eq!(proxy.get("/").await.status(), 503);
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as u64;
    let attempts = upstream.requests().await;
    // (1 + ratio) × requests + min_per_sec × seconds (window of 10s).
    let bound = N + N / 5 + 10 + seconds;
    assert!(
        attempts <= bound,
        "{attempts} upstream attempts for {N} requests exceeds the budget bound {bound}"
    );
    assert!(attempts > N, "some retries were made");
    let exhausted = metric_value(
        &proxy.metrics().await,
        "breakwater_retry_budget_exhausted_total",
    )
    .expect("the budget counter is exported");
    assert!(
        exhausted >= 1.0,
        "retries the budget refused were counted: {exhausted}"
    );
    eprintln!("dead upstream: {N} requests → {attempts} attempts (bound {bound})");
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_after_being_sent() {
    let upstream = sim("down").arg("--status").arg("503").run().await;
    let config = one_route(
        &[&upstream.address],
        "        circuit_breaker: false\n        retry: {attempts: 3, retry_on: [http_5xx]}",
        "",
    );
    let proxy = proxy(&config).run().await;
    let response = client()
        .post(proxy.url("/order"))
        .body("pay")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.requests().await, 1);
    let response = client()
        .put(proxy.url("/order"))
        .body("set")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        upstream.requests().await,
        4,
        "PUT is idempotent: three tries"
    );
}

#[tokio::test]
async fn rate_limit_answers_429_beyond_the_bucket() {
    let upstream = sim("app").run().await;
    let config = one_route(
        &[&upstream.address],
        "        rate_limit: {rps: 2, burst: 5}",
        "",
    );
    let proxy = proxy(&config).run().await;
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let response = proxy.get("/").await;
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(response.headers()["x-breakwater-reason"], "rate-limited");
                assert!(response.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((5..=7).contains(&ok), "burst 5 at 2 rps admitted {ok}");
    assert_eq!(ok + limited, 20);
    assert_eq!(upstream.requests().await, ok);
    let tokens = proxy.status_json().await["listeners"][0]["routes"][0]["rate_limit"]["tokens"]
        .as_f64()
        .unwrap();
    assert!(tokens < 5.0);
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back() {
    let good = sim("good").run().await;
    let bad = sim("bad").arg("--status").arg("502").run().await;
    let config = one_route(
        &[&good.address, &bad.address],
        "        circuit_breaker: false",
        "    outlier_detection: {consecutive_failures: 3, base_ejection_time: 1s, max_ejection_percent: 50}",
    );
    let proxy = proxy(&config).run().await;
    for _ in 0..6 {
        let _ = proxy.get("/").await;
    }
    assert_eq!(bad.requests().await, 3);
    let endpoint = |status: &serde_json::Value| status["upstreams"][0]["endpoints"][1].clone();
    let status = proxy.status_json().await;
    assert_eq!(endpoint(&status)["ejected"], true, "{status}");
    assert_eq!(endpoint(&status)["times_ejected"], 1);
    for _ in 0..10 {
        assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "good");
    }
    assert_eq!(bad.requests().await, 3, "no traffic to an ejected endpoint");
    assert!(proxy.metrics().await.contains(&format!(
        r#"breakwater_endpoint_healthy{{endpoint="{}",upstream="app"}} 0"#,
        bad.address
    )));
    bad.control(r#"{"status": 200}"#).await;
    eventually(
        "the endpoint comes back after its ejection time",
        Duration::from_secs(10),
        || async { (endpoint(&proxy.status_json().await)["available"] == true).then_some(()) },
    )
    .await;
    eventually(
        "traffic reaches it again",
        Duration::from_secs(10),
        || async {
            let _ = proxy.get("/").await;
            (bad.requests().await > 3).then_some(())
        },
    )
    .await;
    proxy
        .process
        .stderr
        .wait_for("breakwater::event: ejection ", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_back() {
    let steady = sim("steady").run().await;
    let flaky = sim("flaky").run().await;
    let config = one_route(
        &[&steady.address, &flaky.address],
        "",
        "    health_check: {http: {path: /healthz}, interval: 100ms, timeout: 90ms, unhealthy_threshold: 2, healthy_threshold: 2}",
    );
    let proxy = proxy(&config).run().await;
    flaky.control(r#"{"fail_health": true}"#).await;
    let endpoint =
        |status: &serde_json::Value| status["upstreams"][0]["endpoints"][1]["healthy"].clone();
    eventually(
        "flaky marked unhealthy",
        Duration::from_secs(10),
        || async { (endpoint(&proxy.status_json().await) == false).then_some(()) },
    )
    .await;
    let before = flaky.requests().await;
    for _ in 0..10 {
        assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "steady");
    }
    assert_eq!(flaky.requests().await, before);
    flaky.control(r#"{"fail_health": false}"#).await;
    eventually("flaky healthy again", Duration::from_secs(10), || async {
        (endpoint(&proxy.status_json().await) == true).then_some(())
    })
    .await;
    proxy
        .process
        .stderr
        .wait_for("breakwater::event: health ", Duration::from_secs(5))
        .await;
}

/// Sends `head` (and whatever follows in it) on a fresh connection and
/// waits until the upstream has seen one more request: the request is in
/// flight through the proxy. Returns the open connection.
async fn in_flight(
    proxy: &Proxy,
    upstream: &crate::support::Sim,
    head: &str,
) -> std::net::TcpStream {
    use std::io::Write;
    let before = upstream.requests().await;
    let mut stream = std::net::TcpStream::connect(proxy.listen).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    eventually(
        "the request reached the upstream",
        Duration::from_secs(5),
        || async { (upstream.requests().await > before).then_some(()) },
    )
    .await;
    stream
}

/// A flaky mobile client, or a malformed one, must never open the breaker
/// for everyone: a request body cut short or framed badly is the client's
/// failure (499 / 400), counted by no breaker, outlier detector or retry.
#[tokio::test]
async fn a_clients_broken_body_never_counts_against_the_upstream() {
    use std::io::{Read, Write};
    let upstream = sim("slow").arg("--latency").arg("300ms").run().await;
    let proxy = proxy(&one_route(
        &[&upstream.address],
        "        circuit_breaker: {consecutive_failures: 3}",
        "    outlier_detection: {consecutive_failures: 3}",
    ))
    .run()
    .await;

    // Bodies cut short: 100 bytes declared, 10 sent, then the client is gone.
    for path in ["/", "/echo", "/", "/echo"] {
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789");
        drop(in_flight(&proxy, &upstream, &head).await);
    }
    // A malformed chunk-size line in one write: refused before anything
    // is forwarded.
    for _ in 0..4 {
        let (response, closed) = crate::support::raw_exchange_closed(
            proxy.listen,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        assert_eq!(
            crate::support::raw_header(&response, "x-breakwater-reason"),
            Some("bad-chunk")
        );
        assert!(closed);
    }
    // The same after the request is already on its way upstream: still a
    // 400 for the client, and the exchange is the client's failure.
    for _ in 0..4 {
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = in_flight(&proxy, &upstream, head).await;
        stream.write_all(b"5\tx\r\nhello\r\n0\r\n\r\n").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
        assert_eq!(
            crate::support::raw_header(&response, "x-breakwater-reason"),
            Some("bad-chunk")
        );
    }

    // The upstream was never at fault: its breaker stayed closed, nothing
    // was ejected, and the next request is served.
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    let status = proxy.status_json().await;
    let breaker = &status["listeners"][0]["routes"][0]["breaker"];
    assert_eq!(breaker["state"], "closed");
    assert_eq!(breaker["consecutive_failures"], 0, "{breaker}");
    assert_eq!(breaker["n_trips"], 0);
    assert_eq!(status["upstreams"][0]["endpoints"][0]["times_ejected"], 0);
    let metrics = proxy.metrics().await;
    let count = |outcome: &str, code: &str| {
        metric_value(
            &metrics,
            &format!(
                r#"breakwater_requests_total{{code="{code}",outcome="{outcome}",route="main"}}"#
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("cancelled", "499"), 4.0, "{metrics}");
    assert_eq!(count("client_error", "400"), 4.0, "{metrics}");
    assert_eq!(count("reset", "502"), 0.0, "{metrics}");
}

/// p99 of the upstream's time to response headers on `route`, from the
/// histogram's buckets (the upper bound of the bucket holding it).
fn upstream_p99(metrics: &str, route: &str) -> f64 {
    let prefix = format!("breakwater_upstream_duration_seconds_bucket{{route=\"{route}\",le=\"");
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    buckets
        .iter()
        .find(|(_, count)| *count >= total * 0.99)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// 64 callers for `seconds` against an upstream of 8 workers (20 ms
/// each): with a fixed high limit everything waits in the upstream's own
/// queue; an adaptive limit keeps the queue in front of the bulkhead and
/// settles near the upstream's 8 workers.
async fn load_a_worker_pool(route_extra: &str, seconds: u64) -> (Proxy, crate::support::Sim) {
    let upstream = sim("pool")
        .arg("--workers")
        .arg("8")
        .arg("--latency")
        .arg("20ms")
        .arg("--no-record")
        .run()
        .await;
    let proxy = proxy(&one_route(&[&upstream.address], route_extra, ""))
        .run()
        .await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let url = proxy.url("/");
            tokio::spawn(async move {
                let client = client();
                while Instant::now() < deadline {
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    (proxy, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_settles_near_the_upstreams_workers() {
    let adaptive = "        circuit_breaker: false\n        timeouts: {request: 30s}\n        bulkhead: {adaptive: true, max_concurrent: 256, max_queue: 1024, queue_timeout: 30s}";
    let (proxy, _upstream) = load_a_worker_pool(adaptive, 6).await;
    let status = proxy.status_json().await;
    let bulkhead = &status["listeners"][0]["routes"][0]["bulkhead"];
    let limit = bulkhead["limit"].as_u64().unwrap();
    assert!(
        (8..=24).contains(&limit),
        "the limit settles near the upstream's 8 workers: {bulkhead}"
    );
    let baseline = bulkhead["adaptive"]["baseline_ms"].as_f64().unwrap();
    assert!(
        baseline >= 20.0,
        "the baseline is the unloaded latency: {bulkhead}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"breakwater_bulkhead_limit{route="main"}"#),
        Some(limit as f64)
    );
    let adaptive_p99 = upstream_p99(&metrics, "main");

    let fixed = "        circuit_breaker: false\n        timeouts: {request: 30s}\n        bulkhead: {max_concurrent: 256, max_queue: 1024, queue_timeout: 30s}";
    let (proxy, _upstream) = load_a_worker_pool(fixed, 4).await;
    let fixed_p99 = upstream_p99(&proxy.metrics().await, "main");
    eprintln!(
        "8 workers × 20 ms, 64 callers: adaptive limit {limit} (baseline {baseline} ms), upstream p99 ≤ {adaptive_p99}s; fixed limit 256: upstream p99 ≤ {fixed_p99}s"
    );
}
