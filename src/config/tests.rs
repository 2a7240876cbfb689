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
    assert_eq!(config.upstreams[0].connect_timeout, Duration::from_secs(2));
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
    // The cross-section check runs too: route 0 still decoded (its bad
    // timeout kept the default), and its upstream does not exist.
    expect("listeners[0].routes[0].upstream", 9);
    assert!(error.to_string().contains("test.yaml: 6 errors"), "{error}");
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
        "        upstream: app\n        hedge: {max: 1}\n        colour: red\n",
    );
    let error = load(&text).unwrap_err();
    let messages = error.to_string();
    assert!(
        messages.contains("hedge: is in the breakwater spec but not supported"),
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

#[test]
fn decoding_and_cross_section_errors_in_one_run() {
    let text = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    colour: blue
    routes:
      - name: all
        upstream: nowhere
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
";
    let error = load(text).unwrap_err();
    let rendered = error.to_string();
    assert!(rendered.contains("test.yaml: 2 errors"), "{rendered}");
    assert!(
        rendered.contains("line 4: listeners[0].colour: unknown key; expected one of: name,"),
        "{rendered}"
    );
    assert!(
        rendered.contains(
            "line 7: listeners[0].routes[0].upstream: no upstream named \"nowhere\"; defined: app"
        ),
        "{rendered}"
    );
}

#[test]
fn no_follow_on_errors_from_what_failed_to_decode() {
    // The upstream `app` fails (bad timeout... no: no endpoints key), the
    // first route fails (no name): neither the route naming `app` nor the
    // listener whose only good route is left gets a second complaint.
    let text = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - upstream: app
      - name: ok
        upstream: app
  - name: other
    listen: 127.0.0.1:15007
    routes:
      - upstream: app
upstreams:
  - name: app
    protocol: http1
  - name: spare
    endpoints: [127.0.0.1:8081]
supervisor:
  upstream: [not, a, name]
";
    let error = load(text).unwrap_err();
    let paths: Vec<(&str, Option<usize>)> = error
        .issues
        .iter()
        .map(|issue| (issue.path.as_str(), issue.line))
        .collect();
    assert_eq!(
        paths,
        [
            ("listeners[0].routes[0].name", Some(5)),
            ("listeners[1].routes[0].name", Some(11)),
            ("upstreams[0].endpoints", Some(13)),
            ("supervisor.upstream", Some(18)),
        ],
        "{error}"
    );
}

#[test]
fn indices_of_later_items_stay_those_of_the_file() {
    // listeners[0] fails; the duplicate route name is in listeners[1] of
    // the file, even though it is the first listener decoded.
    let text = "\
listeners:
  - name: broken
    routes: [{name: x, upstream: app}]
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - {name: dup, upstream: app}
      - {name: dup, upstream: app}
upstreams: [{name: app, endpoints: [127.0.0.1:8080]}]
";
    let error = load(text).unwrap_err().to_string();
    assert!(
        error.contains("listeners[0]: required key is missing")
            || error.contains("listeners[0].listen: required key is missing"),
        "{error}"
    );
    assert!(
        error.contains("line 8: listeners[1].routes[1].name: duplicate route name \"dup\""),
        "{error}"
    );
}

#[test]
fn flag_errors_name_the_flag() {
    let overrides = Overrides {
        admin: Some("10.255.255.1:15400".parse().unwrap()),
        threads: Some(0),
        ..Overrides::default()
    };
    let error = load_str(DEFAULT_CONFIG, "<embedded default>", &overrides).unwrap_err();
    let rendered = error.to_string();
    assert!(
        rendered.contains("\n  --admin 10.255.255.1:15400: admin address 10.255.255.1:15400 is not loopback: set admin.token"),
        "{rendered}"
    );
    assert!(
        rendered.contains("\n  --threads 0: must be between 1 and 1024"),
        "{rendered}"
    );
    assert!(error.issues.iter().all(|issue| issue.line.is_none()));
    assert!(!rendered.contains("line 4"), "{rendered}");

    let two = format!("{MINIMAL}  - name: second\n    endpoints: [127.0.0.1:8081]\n",);
    let overrides = Overrides {
        upstream: Some("127.0.0.1:9000".to_owned()),
        ..Overrides::default()
    };
    let error = load_str(&two, "t", &overrides).unwrap_err().to_string();
    assert!(
        error.contains("--upstream 127.0.0.1:9000: needs a config with exactly one upstream"),
        "{error}"
    );

    // A flag's value collides with the file: the flag is named.
    let overrides = Overrides {
        listen: Some("127.0.0.1:15000".parse().unwrap()),
        ..Overrides::default()
    };
    let error = load_str(MINIMAL, "t", &overrides).unwrap_err().to_string();
    assert!(
        error.contains("--listen 127.0.0.1:15000: address 127.0.0.1:15000 is already used"),
        "{error}"
    );
}

#[test]
fn the_command_flag_supervises_with_every_default() {
    let overrides = Overrides {
        command: vec!["./app".to_owned(), "--port".to_owned(), "8080".to_owned()],
        ..Overrides::default()
    };
    let config = load_str(MINIMAL, "t", &overrides).unwrap();
    let process = config.supervisor.process.unwrap();
    assert_eq!(process.command, "./app");
    assert_eq!(process.args, ["--port", "8080"]);
    assert_eq!(process.restart, RestartPolicy::OnFailure);
    assert_eq!(process.stop_signal, Signal::TERM);
    assert_eq!(process.backoff, RestartBackoff::default());
    assert_eq!(
        Process::from_command(&["./app".to_owned()]).map(|p| p.stop_grace),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn listener_limits_override_the_global_ones_key_by_key() {
    let text = "\
limits:
  max_headers: 50
  idle: 5s
  h2: {max_concurrent_streams: 10}
listeners:
  - name: a
    listen: 127.0.0.1:15006
    limits: {max_connections: 7, h2: {}}
    routes: [{name: r1, upstream: app}]
  - name: b
    listen: 127.0.0.1:15007
    routes: [{name: r2, upstream: app}]
upstreams: [{name: app, endpoints: [127.0.0.1:8080]}]
";
    let config = load(text).unwrap();
    let a = &config.listeners[0].limits;
    assert_eq!(a.max_connections, 7);
    assert_eq!(a.max_headers, 50, "absent keys keep the global value");
    assert_eq!(a.idle, Duration::from_secs(5));
    assert_eq!(a.h2.max_concurrent_streams, 10);
    assert_eq!(a.max_header_bytes, Limits::default().max_header_bytes);
    assert_eq!(config.listeners[1].limits, config.limits);
    assert_eq!(config.limits.max_headers, 50);
}

#[test]
fn declared_defaults_are_what_an_empty_section_reads_as() {
    let text = "\
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: all
        upstream: app
        circuit_breaker: true
        bulkhead: {}
        retry: {}
        timeouts: {}
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
    outlier_detection: {}
supervisor: {triggers: {}, recovery: {}, failback: {}}
limits: {}
overload: {}
runtime: {}
admin:
";
    let config = load(text).unwrap();
    let route = &config.listeners[0].routes[0];
    assert_eq!(route.circuit_breaker, Toggle::On(CircuitBreaker::default()));
    assert_eq!(route.bulkhead, Toggle::On(Bulkhead::default()));
    assert_eq!(route.retry, Retry::default());
    assert_eq!(route.timeouts, RouteTimeouts::default());
    assert_eq!(
        config.upstreams[0].outlier_detection,
        Toggle::On(OutlierDetection::default())
    );
    assert_eq!(config.supervisor, Supervisor::default());
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.overload, Overload::default());
    assert_eq!(config.runtime, Runtime::default());
    assert_eq!(config.admin, Admin::default());
    // And they are the SPEC's.
    let breaker = CircuitBreaker::default();
    assert_eq!(
        (breaker.consecutive_failures, breaker.minimum_calls),
        (5, 20)
    );
    assert_eq!(breaker.window, BreakerWindow::Count(100));
    assert_eq!(Bulkhead::default().max_concurrent, 1024);
    assert_eq!(Limits::default().max_header_bytes, ByteSize(60 << 10));
}

const EVERYTHING: &str = "\
runtime: {threads: 3}
admin: {listen: 127.0.0.1:15100}
limits: {max_body_bytes: 1MiB, h2: {max_concurrent_streams: 50}}
overload: {memory: 128MiB}
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    trust_forwarded: true
    limits: {max_headers: 20}
    routes:
      - name: api
        match: {host: API.example, path_exact: /v1, methods: [GET], headers: {X-B: '2', x-a: '1'}}
        upstream: app
        rate_limit: {rps: 2.5}
        circuit_breaker: {window: {type: time, size: 10s}, slow_call_rate: 0.5}
        bulkhead: {max_concurrent: 10}
        retry: {attempts: 2, retry_on: [reset, 503], backoff: {base: 1s}}
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080, localhost:8081]
    backup: [127.0.0.1:9090]
    protocol: auto
    outlier_detection: false
    health_check: {exec: [check, '{endpoint}'], interval: 5s}
  - name: tcp
    endpoints: [127.0.0.1:8082]
    health_check: {tcp: {}}
supervisor:
  upstream: app
  process:
    command: ./svc
    args: [--port, '8080']
    env: {B: two, A: one}
    cwd: /tmp
    restart: always
    stop_signal: '2'
    backoff: {initial: 1m}
    crash_loop: {max_restarts: 2, window: 10s}
    memory_limit: 1GiB
    log_patterns: [{regex: 'panic(ked)?', action: failover}, {regex: oom}]
  triggers: {error_rate: {threshold: 0.25}}
  recovery: {ladder: [exec, escalate], exec: [page, me]}
alerts:
  webhooks: []
";

#[test]
fn effective_config_of_every_kind_of_value_round_trips() {
    let config = load(EVERYTHING).unwrap();
    let route = &config.listeners[0].routes[0];
    assert_eq!(route.matcher.host.as_deref(), Some("api.example"));
    assert_eq!(
        route.matcher.headers,
        [
            ("x-b".to_owned(), "2".to_owned()),
            ("x-a".to_owned(), "1".to_owned())
        ]
    );
    assert_eq!(route.rate_limit.as_ref().map(|limit| limit.burst), Some(3));
    assert_eq!(route.bulkhead.on().map(|b| b.max_queue), Some(0));
    assert_eq!(route.retry.backoff.max, Duration::from_secs(1));
    let process = config.supervisor.process.as_ref().unwrap();
    assert_eq!(process.stop_signal.number(), libc::SIGINT);
    assert_eq!(process.backoff.max, Duration::from_secs(60));
    assert_eq!(process.env[0], ("B".to_owned(), "two".to_owned()));
    assert_eq!(process.log_patterns[1].action, RecoveryAction::Restart);
    assert!(process.log_patterns[0]
        .regex()
        .unwrap()
        .is_match("panicked"));
    assert_eq!(
        config.listeners[0].limits.max_body_bytes,
        Some(ByteSize(1 << 20))
    );

    let printed = config.to_yaml();
    let again = load(&printed).unwrap_or_else(|error| panic!("{error}\n{printed}"));
    assert_eq!(again, config, "{printed}");
    assert!(printed.contains("stop_signal: \"SIGINT\""), "{printed}");
}

#[test]
fn reference_config_round_trips() {
    let config = load_str(
        include_str!("../../config/breakwater.yaml"),
        "breakwater.yaml",
        &Overrides::default(),
    )
    .unwrap();
    let printed = config.to_yaml();
    assert_eq!(
        load(&printed).unwrap_or_else(|error| panic!("{error}\n{printed}")),
        config
    );
}

#[test]
fn toggles_and_word_sets_say_what_they_accept() {
    let text = MINIMAL.replace(
        "        upstream: app\n",
        "        upstream: app\n        bulkhead: sometimes\n        circuit_breaker: {window: {type: sliding}}\n",
    );
    let error = load(&text).unwrap_err().to_string();
    assert!(
        error.contains("bulkhead: expected true, false or a mapping, found \"sometimes\""),
        "{error}"
    );
    assert!(
        error.contains("window.type: expected one of count, time, found \"sliding\""),
        "{error}"
    );
}

/// Every way `text` breaks `breakwater schema`, as "path: error".
fn schema_errors(text: &str) -> Vec<String> {
    let validator = jsonschema::draft7::new(&schema()).unwrap();
    let tree = yaml::parse(text, &|_| None).unwrap();
    let instance = tree.to_json();
    validator
        .iter_errors(&instance)
        .map(|error| format!("{}: {error}", error.instance_path()))
        .collect()
}

#[test]
fn schema_accepts_the_shipped_configs() {
    for (name, text) in [
        (
            "config/breakwater.yaml",
            include_str!("../../config/breakwater.yaml"),
        ),
        ("config/demo.yaml", include_str!("../../config/demo.yaml")),
        ("src/config/default.yaml", DEFAULT_CONFIG),
        ("EVERYTHING", EVERYTHING),
        ("WITH_POLICIES", WITH_POLICIES),
        ("MINIMAL", MINIMAL),
    ] {
        assert_eq!(schema_errors(text), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn schema_rejects_what_the_loader_rejects() {
    for (what, text) in [
        (
            "an unknown key",
            MINIMAL.replace("    endpoints:", "    endpoint: [x:1]\n    endpoints:"),
        ),
        (
            "a key of a later part",
            MINIMAL.replace(
                "        upstream: app\n",
                "        upstream: app\n        hedge: {max: 1}\n",
            ),
        ),
        (
            "a wrong type",
            format!("{MINIMAL}limits: {{max_headers: lots}}\n"),
        ),
        ("a list for a mapping", format!("{MINIMAL}runtime: [1]\n")),
        (
            "a bad duration",
            format!("{MINIMAL}supervisor: {{drain_timeout: 5}}\n"),
        ),
        (
            "a bad word",
            format!("{MINIMAL}alerts: {{webhooks: [{{url: 'http://a:1/', format: xml}}]}}\n"),
        ),
        (
            "out of range",
            format!("{MINIMAL}runtime: {{threads: 0}}\n"),
        ),
        (
            "a missing required key",
            MINIMAL.replace("        upstream: app\n", ""),
        ),
        (
            "two probes",
            format!("{MINIMAL}    health_check: {{tcp: {{}}, exec: [true]}}\n"),
        ),
    ] {
        assert!(load(&text).is_err(), "the loader accepts {what}");
        assert!(
            !schema_errors(&text).is_empty(),
            "the schema accepts {what}:\n{text}"
        );
    }
}

#[test]
fn schema_says_what_the_docs_say() {
    let schema = schema();
    let breaker = &schema["properties"]["listeners"]["items"]["properties"]["routes"]["items"]
        ["properties"]["circuit_breaker"]["anyOf"][1];
    assert_eq!(breaker["additionalProperties"], false);
    let failures = &breaker["properties"]["consecutive_failures"];
    assert_eq!(failures["default"], 5);
    assert!(failures["description"]
        .as_str()
        .unwrap()
        .starts_with("Failures in a row"));
    let rate = &breaker["properties"]["failure_rate"];
    assert_eq!(
        (rate["exclusiveMinimum"].clone(), rate["maximum"].clone()),
        (0.into(), 1.into())
    );
    let protocol = &schema["properties"]["upstreams"]["items"]["properties"]["protocol"];
    assert_eq!(
        protocol["enum"],
        serde_json::json!(["http1", "http2", "auto"])
    );
}

/// `docs/CONFIG.md` is generated from the declarations; this keeps the
/// checked-in file current. `BREAKWATER_BLESS=1` rewrites it.
#[test]
fn config_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
    let generated = reference_markdown();
    assert!(
        !generated.contains("shared/"),
        "user docs never link the spec"
    );
    if std::env::var_os("BREAKWATER_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "docs/CONFIG.md is stale; regenerate it with:\n  BREAKWATER_BLESS=1 cargo test config_reference_is_current"
    );
}

#[test]
fn config_reference_documents_every_key() {
    let markdown = reference_markdown();
    for section in reference() {
        for key in &section.keys {
            assert!(
                markdown.contains(&format!("| `{}` |", key.name)),
                "{}.{} is not in the reference",
                section.path,
                key.name
            );
            assert!(
                !key.doc.is_empty(),
                "{}.{} has no doc",
                section.path,
                key.name
            );
        }
        assert!(!section.doc.is_empty(), "{} has no doc", section.path);
    }
}

// === the reference config states the code's defaults ===

/// A key line of the reference config, commented out or not.
struct RefLine<'t> {
    number: usize,
    commented: bool,
    indent: usize,
    dash: bool,
    key: &'t str,
    value: &'t str,
    comment: &'t str,
}

/// Splits `  - key: value  # comment` (or the same behind one `# `).
fn ref_line(number: usize, raw: &str) -> Option<RefLine<'_>> {
    let trimmed = raw.trim_start();
    let (commented, indent, text) = match trimmed.strip_prefix('#') {
        Some(rest) => {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let inner = rest.trim_start();
            let indent = raw.len() - trimmed.len() + rest.len() - inner.len();
            (true, indent, inner)
        }
        None => (false, raw.len() - trimmed.len(), trimmed),
    };
    let (dash, text, indent) = match text.strip_prefix("- ") {
        Some(rest) => (true, rest, indent + 2),
        None => (false, text, indent),
    };
    let colon = text.find(':')?;
    let key = &text[..colon];
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let rest = &text[colon + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    // The comment starts at a `#` after a space, outside quotes.
    let (mut quote, mut comment_at) = (None, rest.len());
    let bytes = rest.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        match (quote, byte) {
            (None, b'"' | b'\'') => quote = Some(byte),
            (Some(open), _) if open == byte => quote = None,
            (None, b'#') if at == 0 || bytes[at - 1] == b' ' => {
                comment_at = at;
                break;
            }
            _ => {}
        }
    }
    Some(RefLine {
        number,
        commented,
        indent,
        dash,
        key,
        value: rest[..comment_at].trim(),
        comment: rest[comment_at..].trim_start_matches('#').trim(),
    })
}

/// What a comment says the default is: `(default)` → `Some(None)`, the value
/// on the line; `(default X)` or `(default: X)` → `Some(Some(X))`.
fn default_marker(comment: &str) -> Option<Option<&str>> {
    let at = comment.find("(default")?;
    let rest = &comment[at + "(default".len()..];
    let end = rest.rfind(')')?;
    let stated = rest[..end].trim_start_matches(':').trim();
    Some((!stated.is_empty()).then_some(stated))
}

/// JSON equality with numbers compared by value (`2` = `2.0`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(a), J::Number(b)) => a.as_f64() == b.as_f64(),
        (J::Array(a), J::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (J::Object(a), J::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| same_json(a, b)))
        }
        (a, b) => a == b,
    }
}

/// `config/breakwater.yaml` says "(default)" after a value that is the
/// default and "(default X)" where the default is X. Each such statement,
/// on a live or a commented-out line, must match the declarations; and
/// each live line of a key with a default must make one, so a default
/// changed in code and not in the file fails here.
#[test]
fn reference_config_states_the_code_defaults() {
    let text = include_str!("../../config/breakwater.yaml");
    let sections = reference();
    let section_paths: Vec<&str> = sections.iter().map(|s| s.path.as_str()).collect();
    let key_doc = |path: &str| {
        let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
        sections
            .iter()
            .find(|s| s.path == section)
            .and_then(|s| s.keys.iter().find(|k| k.name == key))
    };
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (index, raw) in text.lines().enumerate() {
        let marker_here = raw.contains("(default");
        let Some(line) = ref_line(index + 1, raw) else {
            // Prose comments may speak of defaults; a value line may not
            // without naming its key.
            if marker_here && !raw.trim_start().starts_with('#') {
                problems.push(format!("line {}: a default stated on no key", index + 1));
            }
            continue;
        };
        let column = if line.dash {
            line.indent - 2
        } else {
            line.indent
        };
        while stack.last().is_some_and(|(indent, _)| *indent >= column) {
            stack.pop();
        }
        let mut parent = stack.last().map_or(String::new(), |(_, path)| path.clone());
        if line.dash {
            parent.push_str("[]");
            stack.push((column, parent.clone()));
        }
        let path = if parent.is_empty() {
            line.key.to_owned()
        } else {
            format!("{parent}.{}", line.key)
        };
        let Some(key) = key_doc(&path) else {
            if marker_here || !line.commented {
                problems.push(format!("line {}: {path} is not a key", line.number));
            }
            continue;
        };
        stack.push((line.indent, path.clone()));
        let is_section = section_paths.contains(&path.as_str())
            || section_paths.contains(&format!("{path}[]").as_str());
        let where_ = format!("line {}: {path}", line.number);
        match default_marker(line.comment) {
            Some(stated) => {
                checked += 1;
                let Some(default) = &key.default else {
                    problems.push(format!("{where_} is required; it has no default"));
                    continue;
                };
                let matches = match stated {
                    Some(text) if key.default_text == Some(text) => true,
                    Some("none") => default.is_null(),
                    Some(text) => yaml::parse(text, &|_| None)
                        .ok()
                        .and_then(|node| (key.normalize)(&node))
                        .is_some_and(|stated| same_json(&stated, default)),
                    None => yaml::parse(line.value, &|_| None)
                        .ok()
                        .and_then(|node| (key.normalize)(&node))
                        .is_some_and(|value| same_json(&value, default)),
                };
                if !matches {
                    let code = key
                        .default_text
                        .map_or_else(|| reference::flow(default), str::to_owned);
                    problems.push(format!(
                        "{where_}: the file says the default is {:?}, the code says {code}",
                        stated.unwrap_or(line.value)
                    ));
                }
            }
            None => {
                let states_something = key.default_text.is_some()
                    || key.default.as_ref().is_some_and(|default| {
                        !default.is_null()
                            && default.as_array().is_none_or(|items| !items.is_empty())
                    });
                let override_ = path.starts_with("listeners[].limits");
                if !line.commented && !is_section && states_something && !override_ {
                    problems.push(format!(
                        "{where_}: say \"(default)\" or \"(default X)\" in the comment"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 40, "only {checked} defaults stated");
}

#[test]
fn reference_lines_parse() {
    let line = ref_line(1, "  #   restart: on-failure   # a | b (default)").unwrap();
    assert!(line.commented);
    assert_eq!(
        (line.indent, line.key, line.value),
        (4, "restart", "on-failure")
    );
    assert_eq!(default_marker(line.comment), Some(None));
    let line = ref_line(2, "      - name: x # y (default: 1; 0 when z)").unwrap();
    assert!(line.dash);
    assert_eq!(line.indent, 8);
    assert_eq!(default_marker(line.comment), Some(Some("1; 0 when z")));
    let line = ref_line(3, "    regex: \"a # b\"  # c").unwrap();
    assert_eq!(line.value, "\"a # b\"");
    assert!(ref_line(4, "# Durations: 250ms, 5s").is_none());
    assert!(ref_line(5, "  # A non-loopback admin address is refused.").is_none());
}

#[test]
fn every_bad_item_of_a_list_is_reported_at_its_own_index() {
    let text = MINIMAL.replace(
        "    endpoints: [127.0.0.1:8080]\n",
        "    endpoints: [{}, 'x:0', 127.0.0.1:8080, 'a@b:1']\n    backup: []\n",
    );
    let error = load(&text).unwrap_err();
    let paths: Vec<&str> = error
        .issues
        .iter()
        .map(|issue| issue.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "upstreams[0].endpoints[0]",
            "upstreams[0].endpoints[1]",
            "upstreams[0].endpoints[3]",
        ],
        "{error}"
    );
    // A rule on the list as a whole is not applied once an item failed:
    // the only route failing does not also make "no routes".
    let text = MINIMAL.replace("      - name: all\n", "      - name: [all]\n");
    let error = load(&text).unwrap_err();
    assert_eq!(error.issues.len(), 1, "{error}");
}

#[test]
fn operations_keys_decode_and_refuse_what_they_cannot_do() {
    let text = format!(
        "{}config_rollback: {{error_rate: 0.5}}
supervisor:
  rollback: {{}}
  dependencies:
    - {{name: db, tcp: {{address: 127.0.0.1:5432}}}}
    - {{name: search, http: {{url: \"http://127.0.0.1:9200/_health\"}}, required: false}}
    - {{name: disk, exec: [test, -d, /tmp], interval: 5s}}
  process: {{command: app, backoff: {{reset_after: 3s}}}}
",
        MINIMAL.replace(
            "        upstream: app\n",
            "        upstream: app\n        fault: {abort: {percent: 10}, delay: {percent: 5, duration: 200ms}}\n",
        )
    );
    let config = load(&text).unwrap();
    let fault = config.listeners[0].routes[0].fault.clone().unwrap();
    assert_eq!(fault.ttl, Duration::from_secs(300));
    assert_eq!(fault.abort.unwrap().status, 503);
    let supervisor = &config.supervisor;
    assert_eq!(
        supervisor.rollback.clone().unwrap().window,
        Duration::from_secs(120)
    );
    assert_eq!(supervisor.dependencies.len(), 3);
    assert_eq!(
        supervisor.dependencies[1].check,
        DependencyCheck::Http {
            address: "127.0.0.1:9200".into(),
            path: "/_health".into(),
            expect_status: vec![200],
        }
    );
    assert!(!supervisor.dependencies[1].required);
    let process = supervisor.process.clone().unwrap();
    assert_eq!(process.backoff.reset_after, Duration::from_secs(3));
    assert_eq!(config.config_rollback.clone().unwrap().min_requests, 20);
    // What reads back prints back.
    assert_eq!(load(&config.to_yaml()).unwrap().supervisor, *supervisor);

    let bad = format!(
        "{}supervisor:
  dependencies:
    - {{name: db, tcp: {{address: nowhere}}, exec: [/bin/true]}}
    - {{name: db, http: {{url: \"ftp://x/\"}}}}
    - {{name: dup, exec: [/bin/true]}}
    - {{name: dup, exec: [/bin/true]}}
",
        MINIMAL.replace(
            "        upstream: app\n",
            "        upstream: app\n        fault: {ttl: 2h, abort: {percent: 150, grpc_status: 17}}\n",
        )
    );
    let messages = load(&bad).unwrap_err().to_string();
    for needle in [
        "fault.ttl",
        "fault.abort.percent",
        "expected a gRPC status code like unavailable or 14, found \"17\"",
        "give exactly one of tcp, http, grpc or exec",
        "expected host:port",
        "expected http://host:port/path",
        "\"dup\" is used twice",
    ] {
        assert!(messages.contains(needle), "no {needle:?} in {messages}");
    }
}

// === transparent listeners and TLS ===

const TRANSPARENT: &str = "\
listeners:
  - name: inbound
    listen: 0.0.0.0:15006
    transparent: true
    routes:
      - name: api
        match: {port: 9090}
        upstream: app
      - name: rest
upstreams:
  - name: app
    endpoints: [127.0.0.1:9091]
";

#[test]
fn a_transparent_route_without_upstream_goes_to_the_builtin_original_dst() {
    let config = load(TRANSPARENT).unwrap();
    let routes = &config.listeners[0].routes;
    assert_eq!(routes[0].matcher.port, Some(9090));
    assert_eq!(routes[1].upstream(), ORIGINAL_DST_UPSTREAM);
    let builtin = config.upstream(ORIGINAL_DST_UPSTREAM).unwrap();
    assert_eq!(*builtin, Upstream::original_dst());
    assert!(builtin.endpoints.is_empty());
    // The effective config names it, and loads back to the same config.
    let printed = config.to_yaml();
    assert!(printed.contains("upstream: \"original-dst\""), "{printed}");
    assert!(printed.contains("original_dst: \"loopback\""), "{printed}");
    assert_eq!(load(&printed).unwrap(), config);
}

#[test]
fn the_builtin_original_dst_is_what_its_declaration_decodes_to() {
    let text = TRANSPARENT.replace(
        "    endpoints: [127.0.0.1:9091]\n",
        "    endpoints: [127.0.0.1:9091]\n  - {name: original-dst, original_dst: loopback}\n",
    );
    let config = load(&text).unwrap();
    assert_eq!(config.upstreams.len(), 2, "the file's definition is used");
    assert_eq!(config.upstreams[1], Upstream::original_dst());
}

#[test]
fn only_transparent_listeners_may_leave_out_the_upstream_or_use_original_dst() {
    let missing = MINIMAL.replace("        upstream: app\n", "");
    let error = load(&missing).unwrap_err();
    assert_eq!(error.issues.len(), 1, "{error}");
    assert_eq!(error.issues[0].path, "listeners[0].routes[0].upstream");
    assert!(error.issues[0].message.contains("transparent"), "{error}");

    let forwarding = format!("{MINIMAL}  - {{name: out, original_dst: address}}\n")
        .replace("upstream: app", "upstream: out");
    let error = load(&forwarding).unwrap_err();
    assert_eq!(error.issues.len(), 1, "{error}");
    assert!(
        error.issues[0].message.contains("transparent: true"),
        "{error}"
    );
}

#[test]
fn original_dst_upstreams_take_no_fixed_addresses() {
    let both = format!(
        "{TRANSPARENT}  - name: both\n    original_dst: loopback\n    endpoints: [127.0.0.1:1]\n    health_check: {{tcp: {{}}}}\n"
    );
    let error = load(&both).unwrap_err();
    let paths: Vec<&str> = error.issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["upstreams[1].endpoints", "upstreams[1].health_check"],
        "{error}"
    );
    let neither = format!("{MINIMAL}  - {{name: none}}\n");
    let error = load(&neither).unwrap_err();
    assert_eq!(error.issues[0].path, "upstreams[1].endpoints", "{error}");
    assert!(error.issues[0].message.contains("at least one endpoint"));
}

/// A CA, a certificate it signs for `app.internal`, and the key.
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.internal".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn tls_files_are_read_and_every_bad_one_is_named_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let good = MINIMAL.replace(
        "    listen: 127.0.0.1:15006\n",
        &format!(
            "    listen: 127.0.0.1:15006\n    tls: {{cert: {cert}, key: {key}, client_ca: {ca}}}\n"
        ),
    ) + &format!(
        "    tls: {{sni: app.internal, ca: {ca}, client_cert: {cert}, client_key: {key}}}\n"
    );
    let config = load(&good).unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.client_ca.as_deref(), Some(ca.as_str()));
    assert_eq!(
        config.upstreams[0].tls.as_ref().unwrap().sni.as_deref(),
        Some("app.internal")
    );

    let missing = dir.path().join("missing.pem").display().to_string();
    let bad = MINIMAL.replace(
        "    listen: 127.0.0.1:15006\n",
        &format!("    listen: 127.0.0.1:15006\n    tls: {{cert: {missing}, key: {cert}, client_ca: {key}}}\n"),
    ) + &format!(
        "    tls: {{sni: 'not a name', client_cert: {cert}}}\nalerts: {{webhooks: [{{url: 'https://hooks.example/x', ca: {missing}}}]}}\n"
    );
    let error = load(&bad).unwrap_err();
    let issues: Vec<(&str, &str)> = error
        .issues
        .iter()
        .map(|issue| (issue.path.as_str(), issue.message.as_str()))
        .collect();
    let paths: Vec<&str> = issues.iter().map(|(path, _)| *path).collect();
    assert_eq!(
        paths,
        [
            "listeners[0].tls.cert",
            "listeners[0].tls.key",
            "listeners[0].tls.client_ca",
            "upstreams[0].tls.sni",
            "upstreams[0].tls.client_key",
            "alerts.webhooks[0].ca",
        ],
        "{error}"
    );
    assert!(issues[0].1.contains("missing.pem"), "{error}");
    assert!(issues[1].1.contains("no PEM private key"), "{error}");
    assert!(issues[2].1.contains("no PEM certificate"), "{error}");
}
