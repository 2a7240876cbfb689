//! Tests for the event bus, the SSE body and webhook delivery.
//!
//! Ring and channel behaviour runs without a runtime or under a paused
//! clock. Webhooks talk to a real hyper server on `127.0.0.1:0` with real
//! time, because delivery is real socket I/O; every wait there polls with
//! a deadline instead of sleeping and hoping.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounterVec, Opts};
use proptest::prelude::*;
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};

use super::sse::sse_body_with_keepalive;
use super::*;

fn counter() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new("events_total", "Events emitted, by kind."),
        &["kind"],
    )
    .unwrap()
}

fn bus(capacity: usize) -> Arc<EventBus> {
    EventBus::new(capacity, counter(), Vec::new())
}

fn ids(events: &[Event]) -> Vec<u64> {
    events.iter().map(|event| event.id).collect()
}

// === ring ===

#[test]
fn ids_start_at_one_and_increase() {
    let bus = bus(10);
    assert_eq!(bus.latest_id(), 0);
    let emitted: Vec<u64> = (0..5)
        .map(|n| bus.emit("breaker", "checkout", Severity::Info, &format!("n={n}")))
        .collect();
    assert_eq!(emitted, vec![1, 2, 3, 4, 5]);
    assert_eq!(bus.latest_id(), 5);
    assert_eq!(ids(&bus.since(None, 100)), emitted);
}

#[test]
fn ring_keeps_the_newest_capacity_events() {
    let bus = bus(3);
    for _ in 0..5 {
        bus.emit("restart", "api", Severity::Warning, "restarted");
    }
    assert_eq!(ids(&bus.since(None, 100)), vec![3, 4, 5]);
    // Ids keep counting past what the ring forgot.
    assert_eq!(bus.emit("restart", "api", Severity::Warning, "again"), 6);
    assert_eq!(ids(&bus.since(Some(1), 100)), vec![4, 5, 6]);
}

#[test]
fn zero_capacity_keeps_one() {
    let bus = bus(0);
    bus.emit("a", "s", Severity::Info, "");
    bus.emit("a", "s", Severity::Info, "");
    assert_eq!(ids(&bus.since(None, 10)), vec![2]);
}

#[test]
fn since_and_limit() {
    let bus = bus(100);
    for _ in 0..10 {
        bus.emit("health", "api", Severity::Info, "");
    }
    assert_eq!(ids(&bus.since(Some(4), 100)), vec![5, 6, 7, 8, 9, 10]);
    assert_eq!(
        ids(&bus.since(Some(4), 3)),
        vec![8, 9, 10],
        "newest `limit`, oldest first"
    );
    assert_eq!(ids(&bus.since(Some(0), 2)), vec![9, 10]);
    assert_eq!(ids(&bus.since(None, 3)), vec![8, 9, 10]);
    assert!(bus.since(Some(10), 100).is_empty());
    assert!(bus.since(Some(99), 100).is_empty());
    assert!(bus.since(None, 0).is_empty());
}

#[test]
fn emit_counts_events_total_by_kind() {
    let events_total = counter();
    let bus = EventBus::new(10, events_total.clone(), Vec::new());
    bus.emit("breaker", "a", Severity::Info, "");
    bus.emit("breaker", "b", Severity::Critical, "");
    bus.emit("failover", "c", Severity::Warning, "");
    assert_eq!(events_total.with_label_values(&["breaker"]).get(), 2);
    assert_eq!(events_total.with_label_values(&["failover"]).get(), 1);
}

#[test]
fn event_json_shape() {
    let bus = bus(10);
    bus.emit(
        "escalation",
        "api",
        Severity::Critical,
        "needs \"a\" human\nnow",
    );
    let event = bus.since(None, 1).remove(0);
    let json: serde_json::Value = serde_json::to_value(&event).unwrap();
    assert_eq!(json["id"], 1);
    assert_eq!(json["kind"], "escalation");
    assert_eq!(json["subject"], "api");
    assert_eq!(json["severity"], "critical");
    assert_eq!(json["detail"], "needs \"a\" human\nnow");
    let time = json["time"].as_str().unwrap();
    assert_eq!(time.len(), "2024-05-01T12:00:00.123Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert!(time >= "2024", "{time}");
}

#[test]
fn severity_order_and_names() {
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
        assert_eq!(Severity::from_name(severity.as_str()), Some(severity));
        assert_eq!(
            serde_json::to_value(severity).unwrap(),
            serde_json::Value::from(severity.as_str())
        );
    }
    assert_eq!(Severity::from_name("Critical"), None);
}

proptest! {
    /// `since` against a model: the ring is the last `capacity` ids, and
    /// the answer is the newest `limit` of those above `since`.
    #[test]
    fn since_matches_model(
        capacity in 1usize..20,
        n_events in 0u64..50,
        since in proptest::option::of(0u64..60),
        limit in 0usize..30,
    ) {
        let bus = bus(capacity);
        for _ in 0..n_events {
            bus.emit("k", "s", Severity::Info, "");
        }
        let kept: Vec<u64> = (n_events.saturating_sub(capacity as u64) + 1..=n_events).collect();
        let above: Vec<u64> = kept.into_iter().filter(|id| since.is_none_or(|since| *id > since)).collect();
        let expected: Vec<u64> = above[above.len().saturating_sub(limit)..].to_vec();
        prop_assert_eq!(ids(&bus.since(since, limit)), expected);
    }
}

// === broadcast ===

#[test]
fn subscribers_get_live_events_and_close_with_the_bus() {
    let bus = bus(10);
    bus.emit("before", "s", Severity::Info, "");
    let mut live = bus.subscribe();
    let id = bus.emit("after", "s", Severity::Warning, "x");
    let event = live.try_recv().unwrap();
    assert_eq!(
        (event.id, event.kind, event.severity),
        (id, "after", Severity::Warning)
    );
    assert!(live.try_recv().is_err(), "only events after subscribing");
    drop(bus);
    assert!(matches!(
        live.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Closed)
    ));
}

#[test]
fn without_a_runtime_webhooks_are_skipped_and_emit_works() {
    let webhook = WebhookConfig::new(
        "http://127.0.0.1:9/hook",
        WebhookFormat::Json,
        Severity::Info,
    )
    .unwrap();
    let bus = EventBus::new(10, counter(), vec![webhook]);
    assert_eq!(bus.emit("k", "s", Severity::Critical, ""), 1);
    assert_eq!(bus.webhook_dropped(), 0);
}

// === SSE ===

/// The next data frame of `body` as text, within `wait` (tokio time).
async fn next_frame(body: &mut SseBody, wait: Duration) -> Option<String> {
    let frame = timeout(wait, body.frame())
        .await
        .expect("no SSE frame in time")?
        .unwrap();
    let data = frame.into_data().unwrap();
    Some(String::from_utf8(data.to_vec()).unwrap())
}

/// `(id, kind)` parsed back out of an event frame, checking its layout.
fn parse_event_frame(frame: &str) -> (u64, String) {
    let mut lines = frame
        .strip_suffix("\n\n")
        .expect("frame ends with a blank line")
        .lines();
    let id = lines
        .next()
        .unwrap()
        .strip_prefix("id: ")
        .unwrap()
        .parse()
        .unwrap();
    let kind = lines
        .next()
        .unwrap()
        .strip_prefix("event: ")
        .unwrap()
        .to_owned();
    let data: serde_json::Value =
        serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert!(lines.next().is_none(), "three lines: {frame:?}");
    assert_eq!(
        (data["id"].as_u64(), data["kind"].as_str()),
        (Some(id), Some(kind.as_str()))
    );
    (id, kind)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sse_replays_then_streams_live() {
    let bus = bus(100);
    for kind in ["one", "two", "three"] {
        bus.emit(kind, "s", Severity::Info, "");
    }
    let mut body = sse_body(&bus, Some(1));
    let wait = Duration::from_secs(1);
    assert_eq!(
        parse_event_frame(&next_frame(&mut body, wait).await.unwrap()),
        (2, "two".into())
    );
    assert_eq!(
        parse_event_frame(&next_frame(&mut body, wait).await.unwrap()),
        (3, "three".into())
    );
    bus.emit("four", "s", Severity::Critical, "multi\nline");
    assert_eq!(
        parse_event_frame(&next_frame(&mut body, wait).await.unwrap()),
        (4, "four".into())
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sse_without_since_is_live_only() {
    let bus = bus(100);
    bus.emit("old", "s", Severity::Info, "");
    let mut body = sse_body(&bus, None);
    bus.emit("new", "s", Severity::Info, "");
    let frame = next_frame(&mut body, Duration::from_secs(1)).await.unwrap();
    assert_eq!(parse_event_frame(&frame), (2, "new".into()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sse_sends_keepalive_when_idle() {
    let bus = bus(100);
    let started = Instant::now();
    let mut body = sse_body_with_keepalive(&bus, None, SSE_KEEPALIVE);
    let frame = next_frame(&mut body, SSE_KEEPALIVE * 2).await.unwrap();
    assert_eq!(frame, ": keep-alive\n\n");
    assert!(started.elapsed() >= SSE_KEEPALIVE);
    // An event resets the idle timer; the next keep-alive follows it.
    bus.emit("k", "s", Severity::Info, "");
    assert!(next_frame(&mut body, Duration::from_secs(1))
        .await
        .unwrap()
        .starts_with("id: 1\n"));
    assert_eq!(
        next_frame(&mut body, SSE_KEEPALIVE * 2).await.unwrap(),
        ": keep-alive\n\n"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sse_reports_lag_and_continues() {
    let bus = bus(2_000);
    let mut body = sse_body(&bus, None);
    // The pump task has not run yet (one thread, no yield), so all of these
    // pile up in the broadcast channel, which keeps only the newest 256.
    for _ in 0..1_000 {
        bus.emit("flood", "s", Severity::Info, "");
    }
    let wait = Duration::from_secs(5);
    let missed = 1_000 - BROADCAST_CAPACITY as u64;
    assert_eq!(
        next_frame(&mut body, wait).await.unwrap(),
        format!("event: lagged\ndata: {{\"missed\": {missed}}}\n\n")
    );
    for id in missed + 1..=1_000 {
        assert_eq!(
            parse_event_frame(&next_frame(&mut body, wait).await.unwrap()).0,
            id
        );
    }
    bus.emit("after", "s", Severity::Info, "");
    assert_eq!(
        parse_event_frame(&next_frame(&mut body, wait).await.unwrap()).0,
        1_001
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sse_ends_when_the_bus_is_dropped() {
    let bus = bus(10);
    bus.emit("k", "s", Severity::Info, "");
    let mut body = sse_body(&bus, Some(0));
    drop(bus);
    // What was already replayed is still delivered, then the body ends.
    assert!(next_frame(&mut body, Duration::from_secs(1))
        .await
        .is_some());
    assert_eq!(next_frame(&mut body, Duration::from_secs(1)).await, None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sse_task_ends_when_the_client_leaves() {
    let bus = bus(10);
    let body = sse_body(&bus, None);
    tokio::task::yield_now().await;
    assert_eq!(bus.live.receiver_count(), 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(1);
    while bus.live.receiver_count() > 0 {
        assert!(Instant::now() < deadline, "SSE task outlived its client");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn sse_without_a_runtime_holds_the_replay_then_ends() {
    let bus = bus(10);
    bus.emit("k", "s", Severity::Info, "");
    let mut body = sse_body(&bus, Some(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(next_frame(&mut body, Duration::from_secs(1))
            .await
            .is_some());
        assert_eq!(next_frame(&mut body, Duration::from_secs(1)).await, None);
    });
}

// === webhook config ===

#[test]
fn webhook_urls_are_checked() {
    let config = |url: &str| WebhookConfig::new(url, WebhookFormat::Slack, Severity::Warning);
    let ok = config("http://hooks.example:8080/services/T000/SECRET").unwrap();
    assert_eq!(ok.name(), "http://hooks.example:8080");
    assert_eq!(ok.url(), "http://hooks.example:8080/services/T000/SECRET");
    assert_eq!(
        (ok.format(), ok.min_severity()),
        (WebhookFormat::Slack, Severity::Warning)
    );
    assert!(!format!("{ok:?}").contains("SECRET"));

    let https = config("https://hooks.slack.com/services/SECRET").unwrap();
    assert_eq!(https.name(), "https://hooks.slack.com");
    assert!(!format!("{https:?}").contains("SECRET"));
    let ftp = config("ftp://example/SECRET").unwrap_err();
    assert!(ftp.to_string().contains("http:// or https://"), "{ftp}");
    assert!(!ftp.to_string().contains("SECRET"));
    assert!(matches!(
        config("ftp://example/x"),
        Err(WebhookError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        config("/relative/path"),
        Err(WebhookError::InvalidUrl { .. })
    ));
    assert!(matches!(
        config("http://exa mple/"),
        Err(WebhookError::InvalidUrl { .. })
    ));
    assert_eq!(
        config("http://user:pw@example/").unwrap_err(),
        WebhookError::Credentials
    );
    assert_eq!(
        WebhookFormat::from_name("slack"),
        Some(WebhookFormat::Slack)
    );
    assert_eq!(WebhookFormat::from_name("json"), Some(WebhookFormat::Json));
    assert_eq!(WebhookFormat::from_name("xml"), None);
}

// === webhook delivery against a real receiver ===

/// What the receiver answers to its `n`th request (0-based).
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// Read the request, then never answer.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    content_type: Option<String>,
    body: serde_json::Value,
}

/// A webhook receiver on `127.0.0.1:0`, answering per `script`.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/SECRET", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(script);
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (log, script) = (log.clone(), script.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (log, script) = (log.clone(), script.clone());
                    async move {
                        let content_type = request
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .map(|value| value.to_str().unwrap().to_owned());
                        let bytes = request.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&bytes).unwrap();
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(Received { content_type, body });
                            log.len() - 1
                        };
                        match script(n) {
                            Reply::Status(status) => Ok::<_, Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .header(http::header::LOCATION, "http://127.0.0.1:9/elsewhere")
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            ),
                            Reply::Hang => std::future::pending().await,
                        }
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Receiver { url, received }
    }

    fn webhook(&self, format: WebhookFormat, min_severity: Severity) -> WebhookConfig {
        WebhookConfig::new(&self.url, format, min_severity).unwrap()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests arrived; returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} webhook requests arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_json_format_posts_the_event() {
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let bus = EventBus::new(
        10,
        counter(),
        vec![receiver.webhook(WebhookFormat::Json, Severity::Info)],
    );
    bus.emit("restart", "api", Severity::Critical, "exit status 137");
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/json")
    );
    let expected = serde_json::to_value(&bus.since(None, 1)[0]).unwrap();
    assert_eq!(received[0].body, expected);
    assert_eq!(received[0].body["severity"], "critical");
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_slack_format_posts_text() {
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let bus = EventBus::new(
        10,
        counter(),
        vec![receiver.webhook(WebhookFormat::Slack, Severity::Info)],
    );
    bus.emit(
        "breaker",
        "checkout",
        Severity::Warning,
        "opened: 12 of 20 failed",
    );
    let received = receiver.wait_for(1).await;
    assert_eq!(
        received[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        received[0].body,
        serde_json::json!({"text": "[WARNING] breaker checkout: opened: 12 of 20 failed"})
    );
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_retries_until_success_in_three_tries() {
    let receiver = Receiver::start(|n| Reply::Status(if n < 2 { 500 } else { 200 })).await;
    let bus = EventBus::new(
        10,
        counter(),
        vec![receiver.webhook(WebhookFormat::Json, Severity::Info)],
    );
    let first = bus.emit("failover", "api", Severity::Warning, "to backup");
    let received = receiver.wait_for(3).await;
    assert!(received.iter().all(|request| request.body["id"] == first));
    // Delivered on the third try, so the next request is the next event.
    let second = bus.emit("failback", "api", Severity::Info, "to primary");
    let received = receiver.wait_for(4).await;
    assert_eq!(received[3].body["id"], second);
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_gives_up_after_three_tries_and_follows_no_redirect() {
    let receiver = Receiver::start(|_| Reply::Status(302)).await;
    let bus = EventBus::new(
        10,
        counter(),
        vec![receiver.webhook(WebhookFormat::Json, Severity::Info)],
    );
    let first = bus.emit("k", "s", Severity::Info, "");
    let second = bus.emit("k", "s", Severity::Info, "");
    let received = receiver.wait_for(6).await;
    let sent: Vec<_> = received
        .iter()
        .map(|request| request.body["id"].as_u64().unwrap())
        .collect();
    assert_eq!(sent, vec![first, first, first, second, second, second]);
}

#[tokio::test(flavor = "current_thread")]
async fn webhook_min_severity_filters() {
    let receiver = Receiver::start(|_| Reply::Status(200)).await;
    let bus = EventBus::new(
        10,
        counter(),
        vec![receiver.webhook(WebhookFormat::Json, Severity::Warning)],
    );
    bus.emit("k", "s", Severity::Info, "");
    let warning = bus.emit("k", "s", Severity::Warning, "");
    bus.emit("k", "s", Severity::Info, "");
    let critical = bus.emit("k", "s", Severity::Critical, "");
    let received = receiver.wait_for(2).await;
    let sent: Vec<_> = received
        .iter()
        .map(|request| request.body["id"].as_u64().unwrap())
        .collect();
    assert_eq!(sent, vec![warning, critical]);
    // The info events took no queue space: nothing is left to send.
    assert!(bus.lock().webhooks[0].is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn hung_webhook_never_blocks_emit_and_drops_oldest() {
    let receiver = Receiver::start(|_| Reply::Hang).await;
    let bus = EventBus::new(
        2_000,
        counter(),
        vec![receiver.webhook(WebhookFormat::Json, Severity::Info)],
    );
    bus.emit("k", "s", Severity::Critical, "first");
    // The delivery task now waits on a receiver that never answers.
    receiver.wait_for(1).await;
    let started = Instant::now();
    for n in 0..1_000 {
        bus.emit("k", "s", Severity::Critical, &format!("n={n}"));
    }
    let took = started.elapsed();
    assert!(took < WEBHOOK_TRY_TIMEOUT, "1000 emits took {took:?}");
    assert_eq!(
        bus.since(None, 5_000).len(),
        1_001,
        "every event is in the ring"
    );
    assert_eq!(
        bus.webhook_dropped(),
        (1_000 - WEBHOOK_QUEUE_CAPACITY) as u64
    );
    let queued = bus.lock().webhooks[0].queued_ids();
    assert_eq!(queued.len(), WEBHOOK_QUEUE_CAPACITY);
    assert_eq!(
        queued.first(),
        Some(&(1_001 - WEBHOOK_QUEUE_CAPACITY as u64 + 1)),
        "oldest dropped"
    );
    assert_eq!(queued.last(), Some(&1_001));
}
