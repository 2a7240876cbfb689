//! The command line: `check`, `run` on bad input, the embedded default.

use std::process::Command;
use std::time::Duration;

use crate::support::{bin, client, eventually, free_port, sim, Process};

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_lists_every_error_with_key_path_and_line() {
    let (ok, _, errors) = check(
        "admin:
  listen: 127.0.0.1:15000
  tokn: abc
listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes:
      - name: main
        upstream: missing
        timeouts: {request: 5 seconds}
upstreams:
  - name: app
    endpoints: [127.0.0.1:8080]
    connect_timeout: -1s
",
    );
    assert!(!ok);
    for expected in [
        "line 3: admin.tokn: unknown key",
        "line 10: listeners[0].routes[0].timeouts.request:",
        "line 14: upstreams[0].connect_timeout:",
        // Cross-section checks run in the same pass.
        "line 9: listeners[0].routes[0].upstream: no upstream named \"missing\"",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(errors.contains("4 errors"), "{errors}");

    // On its own, the dangling reference is reported the same way.
    let (ok, _, errors) = check(
        "listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes: [{name: main, upstream: missing}]
upstreams: [{name: app, endpoints: [127.0.0.1:8080]}]
",
    );
    assert!(!ok);
    assert!(
        errors.contains("line 4: listeners[0].routes[0].upstream: no upstream named \"missing\""),
        "{errors}"
    );
}

#[test]
fn check_prints_the_effective_config_without_secrets() {
    let (ok, printed, _) = check(
        "listeners:
  - name: inbound
    listen: 127.0.0.1:15006
    routes: [{name: main, upstream: app}]
upstreams: [{name: app, endpoints: [127.0.0.1:8080]}]
admin: {token: hunter2}
",
    );
    assert!(ok);
    for expected in [
        "request: \"15s\"",
        "connect_timeout: \"2s\"",
        "max_header_bytes: \"60KiB\"",
        "drain_timeout: \"20s\"",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected} in:\n{printed}"
        );
    }
    assert!(!printed.contains("hunter2"), "secrets are never printed");
    assert!(printed.contains("<redacted>"));
}

#[test]
fn check_without_a_file_checks_the_embedded_default_with_the_flags() {
    let output = Command::new(bin())
        .args([
            "check",
            "--listen",
            "127.0.0.1:16006",
            "--upstream",
            "127.0.0.1:3000",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{errors}");
    assert!(errors.contains("<embedded default>: ok"), "{errors}");
    for expected in [
        "listen: \"127.0.0.1:16006\"",
        "endpoints: [\"127.0.0.1:3000\"]",
        "threads: 2",
        "listen: \"127.0.0.1:15000\"",
        "path_prefix: \"/\"",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected} in:\n{printed}"
        );
    }

    // An error a flag causes names the flag, not a line of a file the
    // user never wrote.
    let output = Command::new(bin())
        .args(["check", "--admin", "10.255.255.1:15400"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        errors.contains("--admin 10.255.255.1:15400: admin address 10.255.255.1:15400 is not loopback: set admin.token"),
        "{errors}"
    );
    assert!(!errors.contains("line "), "{errors}");
}

#[test]
fn schema_prints_the_json_schema() {
    let output = Command::new(bin()).arg("schema").output().unwrap();
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["listeners"]["items"]["properties"]["routes"].is_object());
}

#[test]
fn env_substitution_feeds_values_and_names_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        "admin: {token: \"${BW_IT_TOKEN}\"}
listeners:
  - {name: inbound, listen: \"127.0.0.1:${BW_IT_PORT}\", routes: [{name: main, upstream: app}]}
upstreams: [{name: app, endpoints: [127.0.0.1:8080]}]
",
    )
    .unwrap();
    let output = Command::new(bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env("BW_IT_TOKEN", "s3cr3t-value")
        .env("BW_IT_PORT", "15999")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("127.0.0.1:15999"), "{printed}");
    assert!(!printed.contains("s3cr3t-value"), "{printed}");

    let output = Command::new(bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("BW_IT_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("environment variable \"BW_IT_TOKEN\" is not set"));
}

#[test]
fn the_shipped_configs_check_clean() {
    for file in ["config/breakwater.yaml", "config/demo.yaml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(bin())
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test]
async fn run_refuses_a_bad_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listeners: nope\n").unwrap();
    let mut process = Process::spawn(&["run", "--config", path.to_str().unwrap()], &[]);
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1));
    process
        .stderr
        .wait_for("listeners: expected a list", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn run_refuses_a_non_loopback_admin_without_a_token() {
    let port = free_port();
    let mut process = Process::spawn(
        &[
            "run",
            "--admin",
            &format!("0.0.0.0:{port}"),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &[],
    );
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1));
    process
        .stderr
        .wait_for("admin.token", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn run_on_the_embedded_default_with_flags() {
    let upstream = sim("app").run().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let process = Process::spawn(
        &[
            "--log-format",
            "json",
            "run",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--upstream",
            &upstream.address,
        ],
        &[],
    );
    let url = format!("http://{admin}/healthz");
    eventually("admin up", Duration::from_secs(15), || async {
        (client().get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    let response = client()
        .get(format!("http://{listen}/via-default"))
        .header("x-request-id", "json-log-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The access log is one JSON object per request.
    process
        .stderr
        .wait_for("json-log-check", Duration::from_secs(5))
        .await;
    let text = process.stderr.text();
    let line = text
        .lines()
        .find(|line| line.contains("json-log-check"))
        .unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert_eq!(entry["route"], "default");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["outcome"], "success");
    assert_eq!(entry["path"], "/via-default");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["schema", "--help"],
        vec!["sim", "--help"],
        vec!["demo", "--help"],
    ] {
        let output = Command::new(bin()).args(&args).output().unwrap();
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let output = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("breakwater "));
}
