//! A newcomer's first hour: what the binary says about itself (version,
//! completions, manual page), the demo's screen, a taken port, and the
//! metric families the README promises from the first scrape.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::support::{bin, client, eventually, free_port, proxy, Process, SIGHUP};

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(bin()).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let (ok, out, _) = run(&["--version"]);
    assert!(ok);
    let line = out.trim();
    let rest = line
        .strip_prefix(&format!(
            "breakwater {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", built "))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    let parts: Vec<&str> = date.split('-').collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert!(
        parts.iter().all(|part| part.parse::<u32>().is_ok()),
        "{line}"
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, errors) = run(&["completions", shell]);
        assert!(ok, "{shell}: {errors}");
        for word in ["breakwater", "demo", "check", "completions"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let (ok, _, errors) = run(&["completions", "tcsh"]);
    assert!(!ok);
    assert!(errors.contains("tcsh"), "{errors}");
}

#[test]
fn man_prints_a_manual_page() {
    let (ok, page, _) = run(&["man"]);
    assert!(ok);
    assert!(page.contains(".TH breakwater 1"), "{page}");
    assert!(page.contains(".SH NAME"), "{page}");
    for command in ["run", "check", "demo", "sim", "completions"] {
        assert!(page.contains(command), "the page lacks {command}");
    }
}

#[test]
fn help_names_no_internal_document() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
        vec!["sim", "--help"],
    ] {
        let (ok, help, _) = run(&args);
        assert!(ok);
        assert!(
            !help.contains("SPEC") && !help.contains('§') && !help.contains("shared/"),
            "{args:?}: {help}"
        );
    }
}

#[tokio::test]
async fn a_taken_port_is_named_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut second = Process::spawn(
        &[
            "run",
            "--listen",
            &address,
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
            "--upstream",
            "127.0.0.1:9",
        ],
        &[],
    );
    let status = second.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1));
    // The reader thread may still be draining stderr.
    second
        .stderr
        .wait_for("already in use", Duration::from_secs(5))
        .await;
    let errors = second.stderr.text();
    assert!(
        errors.contains(&format!("cannot listen on {address}")),
        "{errors}"
    );
    assert_eq!(errors.matches("already in use").count(), 1, "{errors}");
}

/// The `breakwater_*` and `process_*` names in README.md's metric table.
fn readme_metric_families() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name))
        .filter(|name| {
            (name.starts_with("breakwater_") || name.starts_with("process_"))
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_first_scrape_has_every_family_the_readme_lists_and_no_other() {
    let sim_address = format!("127.0.0.1:{}", free_port());
    let template = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app, rate_limit: {{rps: 100, burst: 10}}}}, {{name: rpc, upstream: grpc}}]}}
upstreams:
  - {{name: app, endpoints: [\"{sim_address}\"]}}
  - {{name: grpc, endpoints: [\"{sim_address}\"], protocol: http2}}
supervisor:
  upstream: app
  process:
    command: \"{}\"
    args: [sim, --listen, \"{sim_address}\"]
",
        bin()
    );
    let proxy = proxy(&template).run().await;
    // No request has been made: what is here is there from the start.
    let metrics = proxy.metrics().await;
    let scraped: BTreeSet<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let documented = readme_metric_families();
    assert_eq!(
        scraped.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "on /metrics but not in README.md"
    );
    assert_eq!(
        documented.difference(&scraped).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in README.md but not on /metrics"
    );
    for series in [
        "breakwater_circuit_breaker_transitions_total{route=\"main\",to=\"open\"} 0",
        "breakwater_shed_total{reason=\"full\",route=\"main\"} 0",
        "breakwater_shed_total{reason=\"rate_limited\",route=\"main\"} 0",
        "breakwater_shed_total{reason=\"breaker_open\",route=\"main\"} 0",
        "breakwater_config_reloads_total{result=\"error\"} 0",
        "breakwater_requests_total{code=\"503\",outcome=\"rejected\",route=\"main\"} 0",
        "breakwater_requests_total{code=\"502\",outcome=\"connect_error\",route=\"main\"} 0",
        "breakwater_supervisor_restarts_total{reason=\"exit\"} 0",
        "breakwater_recovery_attempts_total{action=\"restart\",result=\"started\"} 0",
        "breakwater_events_total{kind=\"breaker\"} 0",
        "breakwater_downstream_connections{listener=\"inbound\"} 0",
        "breakwater_grpc_responses_total{grpc_status=\"14\",route=\"rpc\"} 0",
        "breakwater_degraded_total{kind=\"level\",route=\"main\"} 0",
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }
    let build = format!(
        "breakwater_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        run(&["--version"])
            .1
            .split("(commit ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "missing {build} in:\n{metrics}");
}

/// The demo's fixed ports.
const DEMO_PORTS: [u16; 3] = [15006, 15000, 18080];

#[tokio::test]
async fn the_demo_fits_a_terminal_and_names_the_sim() {
    for port in DEMO_PORTS {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the demo's port {port} is taken: stop whatever uses it and run again"
        );
    }
    let mut command = Command::new(bin());
    command.arg("demo").env_remove("RUST_LOG");
    let mut demo = Process::spawn_command(command);
    demo.stdout
        .wait_for("breakwater demo:", Duration::from_secs(20))
        .await;
    demo.stdout
        .wait_for("__sim/crash", Duration::from_secs(5))
        .await;
    let screen = demo.stdout.text();
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "over 80 columns: {line}");
    }
    // Each breaking step says how to undo it, one command per line.
    for command in [
        "   curl -X POST 127.0.0.1:18080/__sim/reset",
        "   curl -X POST 127.0.0.1:15000/breakers/reset",
        "   curl -X POST 127.0.0.1:18080/__sim/config -d '{\"hang\":true}'",
    ] {
        assert!(
            screen.lines().any(|line| line == command),
            "{command} in:\n{screen}"
        );
    }
    // The steps are printed once the sim serves (or after 5s anyway).
    eventually(
        "a 200 through the demo",
        Duration::from_secs(20),
        || async {
            let response = client()
                .get("http://127.0.0.1:15006/")
                .header("x-request-id", "demo-access-log")
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;
    // The crash is the step whose log matters: the supervisor names the sim.
    let crashed = client()
        .post("http://127.0.0.1:18080/__sim/crash")
        .send()
        .await
        .unwrap();
    assert_eq!(crashed.status(), 202);
    demo.stderr
        .wait_for("process_exit app: pid", Duration::from_secs(10))
        .await;
    let log = demo.stderr.text();
    assert!(
        log.contains("process_start app: pid")
            && log.contains(": breakwater sim --listen 127.0.0.1:18080"),
        "{log}"
    );
    assert!(!log.contains("demo-access-log"), "access log on: {log}");
    for line in log.lines() {
        assert!(!line.contains("breakwater::"), "a target in: {line}");
    }
    // Closing its terminal stops the demo (and its sim) like Ctrl-C: the
    // fixed ports are free for the next one.
    demo.signal(SIGHUP);
    let status = demo.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
    for port in DEMO_PORTS {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken after the demo stopped"
        );
    }
}
