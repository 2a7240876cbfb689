//! Events: the ring at `/events`, the live SSE stream, and webhooks.

use std::time::Duration;

use futures_util::StreamExt;

use crate::support::{bin, client, eventually, free_port, proxy, sim};

#[tokio::test]
async fn breaker_transitions_are_listed_and_streamed_live() {
    let upstream = sim("app").arg("--status").arg("503").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app, circuit_breaker: {{consecutive_failures: 2, open_duration: 30s}}}}]}}
upstreams:
  - {{name: app, endpoints: [\"{}\"], outlier_detection: false}}
",
        upstream.address
    );
    let proxy = proxy(&config).run().await;

    // A real SSE client, connected before anything happens.
    let response = client()
        .get(proxy.admin_url("/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    for _ in 0..2 {
        let _ = proxy.get("/").await;
    }
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: breaker") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an SSE frame in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("\"subject\":\"main\""), "{seen}");
    assert!(seen.contains("closed -> open"), "{seen}");

    let listed: serde_json::Value = client()
        .get(proxy.admin_url("/events?limit=10"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = listed["events"].as_array().unwrap();
    let breaker = events
        .iter()
        .find(|event| event["kind"] == "breaker")
        .expect("breaker event listed");
    assert_eq!(breaker["severity"], "warning");
    let id = breaker["id"].as_u64().unwrap();
    let after: serde_json::Value = client()
        .get(proxy.admin_url(&format!("/events?since={id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(after["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|event| event["id"].as_u64().unwrap() > id));
}

#[tokio::test]
async fn a_crash_loop_escalation_reaches_json_and_slack_webhooks() {
    let (json_url, json_received) = crate::support::webhook_receiver().await;
    let (slack_url, slack_received) = crate::support::webhook_receiver().await;
    let address = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{address}\"]}}
supervisor:
  process:
    command: sh
    args: [-c, \"exit 7\"]
    restart: always
    backoff: {{initial: 20ms, max: 50ms, jitter: 0}}
    crash_loop: {{max_restarts: 3, window: 60s}}
alerts:
  webhooks:
    - {{url: \"{json_url}\", format: json, min_severity: critical}}
    - {{url: \"{slack_url}\", format: slack, min_severity: warning}}
"
    );
    let proxy = proxy(&config).run().await;
    eventually(
        "escalation delivered to the JSON webhook",
        Duration::from_secs(20),
        || async {
            json_received
                .lock()
                .unwrap()
                .iter()
                .any(|event| event["kind"] == "escalation")
                .then_some(())
        },
    )
    .await;
    let json = json_received.lock().unwrap().clone();
    assert!(
        json.iter().all(|event| event["severity"] == "critical"),
        "min_severity filters: {json:?}"
    );
    eventually("Slack text delivered", Duration::from_secs(20), || async {
        slack_received
            .lock()
            .unwrap()
            .iter()
            .any(|m| {
                m["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("[CRITICAL] escalation"))
            })
            .then_some(())
    })
    .await;
    let slack = slack_received.lock().unwrap().clone();
    assert!(
        slack.iter().any(|m| m["text"]
            .as_str()
            .is_some_and(|t| t.contains("process_exit"))),
        "warnings reach the Slack hook: {slack:?}"
    );
    // The webhook URLs never appear in /status or the effective config.
    let status = client()
        .get(proxy.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!status.contains("/hook"));
    let _ = bin();
}
