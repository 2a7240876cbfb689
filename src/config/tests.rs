use std::time::Duration;

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str(text, "test.yaml", &Overrides::default())
}

const MINIMAL: &str = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: all
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
";

#[test]
fn embedded_default_is_valid_and_matches_spec() {
    let config = load_str(DEFAULT_CONFIG, "<embedded default>", &Overrides::default()).unwrap();
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:15000");
    assert_eq!(config.listeners[0].listen.to_string(), "0.0.0.0:15006");
    assert_eq!(config.upstreams[0].endpoints, ["127.0.0.1:8080"]);
    assert_eq!(config.upstreams[0].connect_timeout, Duration::from_secs(1));
    assert_eq!(
        config.listeners[0].routes[0].timeouts.request,
        Duration::from_secs(15)
    );
}

#[test]
fn defaults_are_filled_in() {
    let config = load(MINIMAL).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.limits.max_headers, 100);
    assert_eq!(listener.limits.max_header_bytes.0, 60 * 1024);
    assert_eq!(listener.limits.header_read, Duration::from_secs(10));
    assert_eq!(config.supervisor.drain_timeout, Duration::from_secs(20));
    assert_eq!(config.upstreams[0].protocol, Protocol::Http1);
    assert!(!listener.trust_forwarded);
}

#[test]
fn every_error_is_reported_with_path_and_line() {
    let text = "\
admin:
  listen: 127.0.0.1:15000
  colour: blue
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: all
        upstream: nowhere
        timeouts: {request: soon}
      - name: api
        match: {path_prefix: api}
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1]
    protocol: http3
";
    let error = load(text).unwrap_err();
    let found: Vec<(String, Option<usize>)> = error
        .issues
        .iter()
        .map(|issue| (issue.path.clone(), issue.line))
        .collect();
    let expect = |path: &str, line: usize| {
        assert!(
            found.contains(&(path.to_owned(), Some(line))),
            "missing {path} at line {line} in {found:#?}"
        );
    };
    expect("admin.colour", 3);
    expect("listeners[0].routes[0].timeouts.request", 10);
    expect("listeners[0].routes[1].match.path_prefix", 12);
    expect("upstreams[0].endpoints[0]", 16);
    expect("upstreams[0].protocol", 17);
    assert!(error.to_string().contains("test.yaml: 5 errors"), "{error}");
}

#[test]
fn dangling_references_and_duplicates() {
    let text = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: all
        upstream: nowhere
      - name: all
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
";
    let error = load(text).unwrap_err();
    let messages = error.to_string();
    assert!(
        messages.contains("line 6: listeners[0].routes[0].upstream: no upstream named \"nowhere\""),
        "{messages}"
    );
    assert!(
        messages.contains("line 7: listeners[0].routes[1].name: duplicate route name"),
        "{messages}"
    );
}

#[test]
fn unknown_and_later_keys_are_errors() {
    let text = MINIMAL.replace(
        "        upstream: app\n",
        "        upstream: app\n        fallback: {status: 503}\n        colour: red\n",
    );
    let error = load(&text).unwrap_err();
    let messages = error.to_string();
    assert!(
        messages.contains("fallback: is in the breakwater spec but not supported"),
        "{messages}"
    );
    assert!(
        messages.contains("colour: unknown key; expected one of"),
        "{messages}"
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let text = format!("admin: {{listen: 0.0.0.0:15000}}\n{MINIMAL}");
    let error = load(&text).unwrap_err();
    assert!(error.to_string().contains("admin.listen"), "{error}");
    let text = format!("admin: {{listen: 0.0.0.0:15000, token: hunter2}}\n{MINIMAL}");
    let config = load(&text).unwrap();
    assert!(!config.to_yaml().contains("hunter2"));
}

#[test]
fn overrides_apply() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:9999".parse().unwrap()),
        upstream: Some("127.0.0.1:7777".to_owned()),
        admin: Some("127.0.0.1:9998".parse().unwrap()),
        threads: Some(2),
        command: vec![],
    };
    let config = load_str(MINIMAL, "t", &overrides).unwrap();
    assert_eq!(config.listeners[0].listen.port(), 9999);
    assert_eq!(config.upstreams[0].endpoints, ["127.0.0.1:7777"]);
    assert_eq!(config.admin.listen.port(), 9998);
    assert_eq!(config.runtime.threads, Some(2));
    let bad = Overrides {
        upstream: Some("nope".to_owned()),
        ..Overrides::default()
    };
    assert!(load_str(MINIMAL, "t", &bad).is_err());
}

#[test]
fn effective_config_round_trips() {
    let config = load(MINIMAL).unwrap();
    let printed = config.to_yaml();
    let again = load(&printed).unwrap_or_else(|error| panic!("{error}\n{printed}"));
    assert_eq!(config, again);
    let demo = load_str(
        include_str!("../../config/demo.yaml"),
        "demo",
        &Overrides::default(),
    )
    .unwrap();
    let printed = demo.to_yaml();
    assert_eq!(
        load(&printed).unwrap_or_else(|error| panic!("{error}\n{printed}")),
        demo
    );
}

#[test]
fn shipped_reference_config_is_valid() {
    let result = load_str(
        include_str!("../../config/breakwater.yaml"),
        "breakwater.yaml",
        &Overrides::default(),
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn empty_and_garbage_files() {
    assert!(load("").unwrap_err().to_string().contains("listeners"));
    assert!(load("[1, 2").is_err());
    assert!(load("just a string")
        .unwrap_err()
        .to_string()
        .contains("expected a mapping"));
}

const WITH_POLICIES: &str = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: checkout
        upstream: app
        timeouts: {request: 2s, per_try: 800ms}
        retry: {attempts: 3, retry_on: [connect_error, http_5xx, 429], budget: {ratio: 0.2, min_per_sec: 10}}
        circuit_breaker:
          consecutive_failures: 5
          failure_rate: 0.5
          slow_call_rate: 0.8
          slow_call_duration: 1s
          window: {type: time, size: 10s}
          minimum_calls: 20
          open_duration: 5s
          open_backoff: 2
          max_open_duration: 60s
          half_open_max_calls: 3
          half_open_successes: 3
          failure_statuses: [500, 502, 503, 504]
        bulkhead: {max_concurrent: 64, max_queue: 128, queue_timeout: 100ms}
        rate_limit: {rps: 500, burst: 100}
      - name: catalog
        upstream: app
        circuit_breaker: false
        bulkhead: false
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
    health_check:
      http: {path: /healthz, expect_status: [200, 204]}
      interval: 2s
      timeout: 1s
      unhealthy_threshold: 3
      healthy_threshold: 2
    outlier_detection: {consecutive_failures: 5, base_ejection_time: 30s, max_ejection_percent: 50}
";

#[test]
fn policies_decode_with_defaults_and_round_trip() {
    use policy::{BreakerWindow, Probe, RetryOn, Toggle};
    let config = load(WITH_POLICIES).unwrap();
    let checkout = &config.listeners[0].routes[0];
    let breaker = checkout.circuit_breaker.on().unwrap();
    assert_eq!(breaker.window, BreakerWindow::Time(Duration::from_secs(10)));
    assert_eq!(breaker.slow_call_rate, Some(0.8));
    assert_eq!(
        checkout.retry.retry_on,
        [
            RetryOn::ConnectError,
            RetryOn::Http5xx,
            RetryOn::Status(429)
        ]
    );
    assert_eq!(checkout.timeouts.per_try, Some(Duration::from_millis(800)));
    assert_eq!(checkout.bulkhead.on().unwrap().max_queue, 128);
    assert_eq!(checkout.rate_limit.as_ref().unwrap().burst, 100);
    let catalog = &config.listeners[0].routes[1];
    assert_eq!(catalog.circuit_breaker, Toggle::Off);
    assert_eq!(catalog.bulkhead, Toggle::Off);
    assert_eq!(catalog.retry.attempts, 1);
    let upstream = &config.upstreams[0];
    assert!(
        matches!(&upstream.health_check.as_ref().unwrap().probe, Probe::Http { expect_status, .. } if expect_status == &[200, 204])
    );
    // Defaults: a minimal route has a breaker and a bulkhead, an upstream outlier detection.
    let minimal = load(MINIMAL).unwrap();
    assert!(minimal.listeners[0].routes[0]
        .circuit_breaker
        .on()
        .is_some());
    assert_eq!(
        minimal.listeners[0].routes[0]
            .bulkhead
            .on()
            .unwrap()
            .max_concurrent,
        1024
    );
    assert!(minimal.upstreams[0].outlier_detection.on().is_some());

    let printed = config.to_yaml();
    assert_eq!(
        load(&printed).unwrap_or_else(|error| panic!("{error}\n{printed}")),
        config
    );
}

#[test]
fn policy_values_are_range_checked_all_at_once() {
    let text = WITH_POLICIES
        .replace("failure_rate: 0.5", "failure_rate: 1.5")
        .replace("half_open_max_calls: 3", "half_open_max_calls: 0")
        .replace(
            "bulkhead: {max_concurrent: 64, max_queue: 128, queue_timeout: 100ms}",
            "bulkhead: {max_queue: 128}",
        )
        .replace("attempts: 3", "attempts: 0")
        .replace("429]", "teapot]")
        .replace("per_try: 800ms", "per_try: 5s")
        .replace("max_ejection_percent: 50", "max_ejection_percent: 150");
    let error = load(&text).unwrap_err();
    let paths: Vec<&str> = error
        .issues
        .iter()
        .map(|issue| issue.path.as_str())
        .collect();
    for expected in [
        "listeners[0].routes[0].circuit_breaker.failure_rate",
        "listeners[0].routes[0].circuit_breaker.half_open_max_calls",
        "listeners[0].routes[0].bulkhead.max_queue",
        "listeners[0].routes[0].retry.attempts",
        "listeners[0].routes[0].retry.retry_on[2]",
        "listeners[0].routes[0].timeouts.per_try",
        "upstreams[0].outlier_detection.max_ejection_percent",
    ] {
        assert!(
            paths.contains(&expected),
            "missing {expected} in {paths:#?}"
        );
    }
    assert!(
        error.issues.iter().all(|issue| issue.line.is_some()),
        "{error}"
    );
}

#[test]
fn signals_parse() {
    assert_eq!(
        Signal::parse("SIGTERM").map(Signal::number),
        Ok(libc::SIGTERM)
    );
    assert_eq!(Signal::parse("INT").map(Signal::number), Ok(libc::SIGINT));
    assert_eq!(Signal::parse("9").map(Signal::number), Ok(9));
    assert!(Signal::parse("SIGNOPE").is_err());
    assert!(Signal::parse("0").is_err());
    assert_eq!(Signal::parse("15").unwrap().to_string(), "SIGTERM");
    assert_eq!(Signal::parse("TERM").unwrap().to_string(), "SIGTERM");
}
