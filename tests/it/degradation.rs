//! Graceful degradation through the real binary: fallbacks on every
//! trigger, stale copies after the upstream dies, degradation levels by
//! route priority, and the automatic level under overload.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::support::{client, eventually, metric_value, proxy, Proxy};

/// An upstream written for these tests: `/…slow…` answers after 2 s,
/// `/…fail…` answers 503, `/…nostore…` answers with `cache-control:
/// no-store`, anything else `200 live {path}`. [`TestUpstream::stop`]
/// closes it and every connection to it, as a crash would.
struct TestUpstream {
    address: String,
    stop: watch::Sender<bool>,
}

impl TestUpstream {
    async fn start() -> TestUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            let mut stopping = stopped.clone();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopping.wait_for(|stop| *stop) => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let mut stopping = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async move {
                            let path = request.uri().path().to_owned();
                            let mut response = hyper::Response::new(Full::new(Bytes::from(
                                format!("live {path}"),
                            )));
                            if path.contains("slow") {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            if path.contains("fail") {
                                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            }
                            if path.contains("nostore") {
                                response
                                    .headers_mut()
                                    .insert("cache-control", "no-store".parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        },
                    );
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stopping.wait_for(|stop| *stop) => {}
                    }
                });
            }
        });
        TestUpstream { address, stop }
    }

    fn stop(&self) {
        self.stop.send_replace(true);
    }
}

const FALLBACK: &str = "fallback: {status: 200, content_type: application/json, body: '{\"items\":[]}', headers: {x-fallback: \"yes\"}}";

fn config(upstream: &str, routes: &str, extra: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
{routes}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"], outlier_detection: false}}
{extra}"
    )
}

async fn get(proxy: &Proxy, path: &str) -> reqwest::Response {
    proxy.get(path).await
}

async fn assert_fallback(proxy: &Proxy, path: &str, reason: &str) {
    let response = get(proxy, path).await;
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    assert_eq!(headers["x-breakwater-degraded"], "fallback", "{path}");
    assert_eq!(headers["x-breakwater-reason"], reason, "{path}");
    assert_eq!(headers["x-fallback"], "yes", "{path}");
    assert_eq!(headers["content-type"], "application/json", "{path}");
    assert_eq!(response.text().await.unwrap(), "{\"items\":[]}", "{path}");
}

async fn admin(
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> reqwest::Response {
    client()
        .request(method, proxy.admin_url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn events_of(proxy: &Proxy, kind: &str) -> Vec<serde_json::Value> {
    let events: serde_json::Value = client()
        .get(proxy.admin_url("/events?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_fallback_answers_each_trigger() {
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "      - {{name: breaker, match: {{path_prefix: /breaker}}, upstream: app, {FALLBACK}}}
      - {{name: shed, match: {{path_prefix: /shed}}, upstream: app, bulkhead: {{max_concurrent: 1, max_queue: 0}}, {FALLBACK}}}
      - {{name: rate, match: {{path_prefix: /rate}}, upstream: app, rate_limit: {{rps: 0.1, burst: 1}}, {FALLBACK}}}
      - {{name: timeout, match: {{path_prefix: /timeout}}, upstream: app, timeouts: {{request: 200ms}}, {FALLBACK}}}
      - {{name: failure, match: {{path_prefix: /failure}}, upstream: app, {FALLBACK}}}
      - {{name: degraded, match: {{path_prefix: /degraded}}, upstream: app, priority: best_effort, {FALLBACK}}}
      - {{name: plain, match: {{path_prefix: /}}, upstream: app}}"
    );
    let proxy = proxy(&config(
        &upstream.address,
        &routes,
        "degradation: {level: normal}\n",
    ))
    .run()
    .await;

    // Breaker open (forced by an operator).
    assert_eq!(get(&proxy, "/breaker/x").await.status(), 200);
    assert_eq!(
        admin(&proxy, reqwest::Method::POST, "/breakers/breaker/open", "")
            .await
            .status(),
        200
    );
    assert_fallback(&proxy, "/breaker/x", "breaker-open").await;

    // Shed: one slow request holds the only slot.
    let slow = {
        let url = proxy.url("/shed/slow");
        tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
    };
    eventually("the slot is taken", Duration::from_secs(5), || async {
        let status = proxy.status_json().await;
        let routes = status["listeners"][0]["routes"].as_array().unwrap().clone();
        let shed = routes.iter().find(|route| route["name"] == "shed").unwrap();
        (shed["bulkhead"]["in_flight"] == 1).then_some(())
    })
    .await;
    assert_fallback(&proxy, "/shed/x", "shed").await;
    assert_eq!(slow.await.unwrap(), 200);

    // Rate limited: the burst of one is spent.
    assert_eq!(
        get(&proxy, "/rate/x")
            .await
            .headers()
            .get("x-breakwater-degraded"),
        None
    );
    assert_fallback(&proxy, "/rate/x", "rate-limited").await;

    // Timeout.
    assert_fallback(&proxy, "/timeout/slow", "timeout").await;

    // The upstream fails (a failure status after the retries).
    assert_fallback(&proxy, "/failure/fail", "upstream-error").await;

    // Degraded: a best-effort route at `moderate`.
    assert_eq!(
        get(&proxy, "/degraded/x").await.text().await.unwrap(),
        "live /degraded/x"
    );
    assert_eq!(
        admin(
            &proxy,
            reqwest::Method::PUT,
            "/degradation",
            r#"{"level": "moderate"}"#
        )
        .await
        .status(),
        200
    );
    assert_fallback(&proxy, "/degraded/x", "degraded").await;

    // A route without a fallback answers as before.
    let plain = get(&proxy, "/fail").await;
    assert_eq!(plain.status(), 503);
    assert!(plain.headers().get("x-breakwater-degraded").is_none());

    let metrics = proxy.metrics().await;
    for route in ["breaker", "shed", "rate", "timeout", "failure", "degraded"] {
        assert_eq!(
            metric_value(
                &metrics,
                &format!(r#"breakwater_degraded_total{{kind="fallback",route="{route}"}}"#)
            ),
            Some(1.0),
            "{route}: {metrics}"
        );
    }
}

#[tokio::test]
async fn a_stale_copy_is_served_when_the_upstream_is_gone() {
    let upstream = TestUpstream::start().await;
    let routes = "      - {name: pages, match: {path_prefix: /}, upstream: app, stale_if_error: {max_entries: 20, max_bytes: 1MiB, max_stale: 10m}}";
    let proxy = proxy(&config(&upstream.address, routes, "")).run().await;
    assert_eq!(
        get(&proxy, "/page/a?v=1").await.text().await.unwrap(),
        "live /page/a"
    );
    let fresh = get(&proxy, "/page/nostore").await;
    assert_eq!(fresh.status(), 200);
    // Many distinct URLs: the store keeps at most its 20 entries.
    for n in 0..100 {
        assert_eq!(get(&proxy, &format!("/page/n{n}")).await.status(), 200);
    }
    let stale = &proxy.status_json().await["listeners"][0]["routes"][0]["stale"];
    assert!(stale["entries"].as_u64().unwrap() <= 20, "{stale}");
    assert!(stale["bytes"].as_u64().unwrap() <= 1 << 20, "{stale}");
    // Keep /page/a fresh in the store, then the upstream dies.
    assert_eq!(get(&proxy, "/page/a?v=1").await.status(), 200);
    upstream.stop();

    let response = get(&proxy, "/page/a?v=1").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-breakwater-degraded"], "stale");
    // Refused, or a kept-alive connection found broken: either way gone.
    let reason = headers["x-breakwater-reason"].to_str().unwrap();
    assert!(
        ["upstream-unavailable", "upstream-reset"].contains(&reason),
        "{reason}"
    );
    assert!(headers["age"].to_str().unwrap().parse::<u64>().unwrap() < 60);
    assert_eq!(response.text().await.unwrap(), "live /page/a");
    // A different query was never kept; a no-store answer is never served.
    assert_eq!(get(&proxy, "/page/a?v=2").await.status(), 502);
    let nostore = get(&proxy, "/page/nostore").await;
    assert_eq!(nostore.status(), 502);
    assert!(nostore.headers().get("x-breakwater-degraded").is_none());
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"breakwater_degraded_total{kind="stale",route="pages"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_level_sheds_the_right_priorities() {
    let upstream = TestUpstream::start().await;
    let routes =
        "      - {name: crit, match: {path_prefix: /crit}, upstream: app, priority: critical}
      - {name: norm, match: {path_prefix: /norm}, upstream: app}
      - {name: best, match: {path_prefix: /best}, upstream: app, priority: best_effort}";
    let proxy = proxy(&config(&upstream.address, routes, "")).run().await;
    let served = || async {
        let mut out = Vec::new();
        for path in ["/crit", "/norm", "/best"] {
            let response = get(&proxy, path).await;
            out.push(match response.status().as_u16() {
                200 => "served",
                503 => {
                    assert_eq!(response.headers()["x-breakwater-reason"], "degraded");
                    "shed"
                }
                other => panic!("{path}: {other}"),
            });
        }
        out
    };
    for (level, expected) in [
        ("normal", ["served", "served", "served"]),
        ("minimal", ["served", "served", "served"]),
        ("moderate", ["served", "served", "shed"]),
        ("severe", ["served", "shed", "shed"]),
        ("emergency", ["served", "shed", "shed"]),
        ("auto", ["served", "served", "served"]),
    ] {
        let body = format!("{{\"level\": \"{level}\"}}");
        let response = admin(&proxy, reqwest::Method::PUT, "/degradation", &body).await;
        assert_eq!(response.status(), 200, "{level}");
        assert_eq!(served().await, expected, "at {level}");
    }
    // A GET on a mutating path changes nothing; a bad level is refused.
    assert_eq!(
        admin(&proxy, reqwest::Method::GET, "/degradation", "")
            .await
            .status(),
        405
    );
    assert_eq!(
        admin(
            &proxy,
            reqwest::Method::PUT,
            "/degradation",
            r#"{"level": "panic"}"#
        )
        .await
        .status(),
        400
    );
    assert!(events_of(&proxy, "degradation").await.len() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_level_rises_under_overload_and_returns_without_flapping() {
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "      - {{name: busy, match: {{path_prefix: /}}, upstream: app, circuit_breaker: false, bulkhead: {{max_concurrent: 1, max_queue: 0}}, {FALLBACK}}}"
    );
    let proxy = proxy(&config(
        &upstream.address,
        &routes,
        "degradation: {level: auto, raise_after: 1s, lower_after: 2s}\n",
    ))
    .run()
    .await;
    // Ten callers against one slot: most are shed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..10)
        .map(|n| {
            let url = proxy.url(if n == 0 { "/slow" } else { "/x" });
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = client().get(&url).send().await;
                }
            })
        })
        .collect();
    eventually("the level rises", Duration::from_secs(20), || async {
        let level = proxy.status_json().await["degradation"]["level"].clone();
        (level != "normal").then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    eventually("back to normal", Duration::from_secs(30), || async {
        let degradation = proxy.status_json().await["degradation"].clone();
        (degradation["level"] == "normal").then_some(())
    })
    .await;
    // Up once, then down step by step: never up again in between.
    let levels: Vec<String> = events_of(&proxy, "degradation")
        .await
        .iter()
        .map(|event| event["subject"].as_str().unwrap().to_owned())
        .collect();
    let rank = |level: &str| {
        ["normal", "minimal", "moderate", "severe", "emergency"]
            .iter()
            .position(|l| *l == level)
            .unwrap()
    };
    let peak = levels.iter().map(|l| rank(l)).max().unwrap();
    let top = levels.iter().position(|l| rank(l) == peak).unwrap();
    assert!(
        levels[top..]
            .windows(2)
            .all(|pair| rank(&pair[1]) < rank(&pair[0])),
        "the level flapped: {levels:?}"
    );
    assert_eq!(
        levels.last().map(String::as_str),
        Some("normal"),
        "{levels:?}"
    );
    // The route announced that it started and stopped degrading.
    eventually("stopped degrading", Duration::from_secs(10), || async {
        let degraded = events_of(&proxy, "degraded").await;
        let started = degraded
            .iter()
            .any(|e| e["detail"].as_str().unwrap().starts_with("started"));
        let stopped = degraded
            .iter()
            .any(|e| e["detail"].as_str().unwrap().starts_with("stopped"));
        (started && stopped).then_some(())
    })
    .await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "breakwater_degradation_level"),
        Some(0.0),
        "{metrics}"
    );
}
