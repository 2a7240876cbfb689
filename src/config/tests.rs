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
        "        upstream: app\n        circuit_breaker: {}\n        colour: red\n",
    );
    let error = load(&text).unwrap_err();
    let messages = error.to_string();
    assert!(
        messages.contains("circuit_breaker: is in the breakwater spec but not supported"),
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
