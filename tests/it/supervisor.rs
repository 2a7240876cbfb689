//! The embedded supervisor with real processes: restart after kill -9,
//! crash-loop escalation, startup gating, drain then stop, and no orphan.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{bin, client, eventually, free_port, proxy, sim_stats_at, Proxy, SIGTERM};

fn config(upstream: &str, process: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app, circuit_breaker: false}}]}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"], outlier_detection: false}}
supervisor:
  drain_timeout: 20s
  startup_timeout: 20s
{process}"
    )
}

fn sim_process(address: &str, extra: &str) -> String {
    format!(
        "  process:
    command: \"{}\"
    args: [sim, --listen, \"{address}\", --name, child{extra}]
    stop_grace: 5s
    backoff: {{initial: 50ms, max: 400ms, multiplier: 2, jitter: 0}}
",
        bin()
    )
}

async fn supervisor(proxy: &Proxy) -> serde_json::Value {
    proxy.status_json().await["supervisor"].clone()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

async fn ready(proxy: &Proxy) {
    let url = proxy.admin_url("/readyz");
    eventually("proxy ready", Duration::from_secs(20), || async {
        (client().get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_worker_thread_proxies_supervises_and_answers_the_admin_port() {
    // `--threads 1` (a sidecar's usual single core): proxying, supervision
    // and the admin port all share that one worker.
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, &sim_process(&address, "")))
        .arg("--threads")
        .arg("1")
        .run()
        .await;
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "child");
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    eventually("restarted and serving", Duration::from_secs(20), || async {
        let status = supervisor(&proxy).await;
        let serving = proxy.get("/").await.status() == 200;
        (serving && status["restarts"] == 1 && status["state"] == "running").then_some(())
    })
    .await;
    assert_ne!(supervisor(&proxy).await["pid"].as_u64(), Some(pid));
}

#[tokio::test]
async fn a_killed_child_is_restarted_and_serving_resumes() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, &sim_process(&address, "")))
        .run()
        .await;
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "child");
    let before = supervisor(&proxy).await;
    assert_eq!(before["state"], "running");
    let pid = before["pid"].as_u64().unwrap();

    let killed_at = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    eventually(
        "serving again after kill -9",
        Duration::from_secs(20),
        || async { (proxy.get("/").await.status() == 200).then_some(()) },
    )
    .await;
    eprintln!("kill -9 → first 200 after {:?}", killed_at.elapsed());
    let after = supervisor(&proxy).await;
    assert_ne!(after["pid"].as_u64().unwrap(), pid, "a new process");
    assert_eq!(after["restarts"], 1);
    assert_eq!(after["last_exit"], "signal 9");
    let mttr = after["mttr_seconds"]
        .as_f64()
        .expect("one recovery measured");
    assert!(mttr > 0.0 && mttr < 20.0, "{mttr}");
    let availability = after["availability"].as_f64().unwrap();
    assert!(availability > 0.0 && availability < 1.0, "{availability}");
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_upstream_up{upstream="app"} 1"#));
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_supervisor_restarts_total{reason="signal"} 1"#));
}

#[tokio::test]
async fn a_crash_loop_backs_off_then_escalates_without_a_restart_storm() {
    let address = format!("127.0.0.1:{}", free_port());
    let process = "  process:
    command: sh
    args: [-c, \"echo crashing; exit 3\"]
    restart: always
    backoff: {initial: 50ms, max: 2s, multiplier: 2, jitter: 0}
    crash_loop: {max_restarts: 4, window: 60s}
";
    let proxy = proxy(&config(&address, process)).run().await;
    eventually("escalation", Duration::from_secs(20), || async {
        (supervisor(&proxy).await["state"] == "needs_intervention").then_some(())
    })
    .await;
    let status = supervisor(&proxy).await;
    assert_eq!(
        status["restarts"], 4,
        "exactly max_restarts restarts, no storm"
    );
    assert_eq!(status["last_exit"], "exit 3");
    let log = proxy.process.stderr.text();
    assert!(log.contains("breakwater::event: escalation "), "{log}");
    let delays: Vec<u128> = log
        .lines()
        .filter_map(|line| line.split("restarting in ").nth(1))
        .filter_map(|rest| {
            rest.trim_end_matches('"')
                .strip_suffix("ms")
                .and_then(|ms| ms.parse::<f64>().ok())
        })
        .map(|ms| ms as u128)
        .collect();
    assert_eq!(
        delays,
        [50, 100, 200, 400],
        "backoff doubles between attempts"
    );
    // While the upstream is down for good, traffic and /readyz say so.
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-breakwater-reason"],
        "needs-intervention"
    );
    let readyz = client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let readyz: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(readyz["reason"], "needs_intervention");

    // An operator's restart starts it again, with the crash loop forgotten:
    // it is restarted with backoff again before escalating a second time.
    let restart = operator_restart(&proxy).await;
    assert_eq!(restart, 202);
    eventually(
        "escalated a second time",
        Duration::from_secs(20),
        || async {
            let status = supervisor(&proxy).await;
            (status["state"] == "needs_intervention" && status["restarts"] == 4 + 1 + 4)
                .then_some(())
        },
    )
    .await;
}

async fn operator_restart(proxy: &Proxy) -> u16 {
    client()
        .post(proxy.admin_url("/upstreams/app/restart"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn event_details(proxy: &Proxy, kind: &str) -> Vec<String> {
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
        .map(|event| event["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_operator_restart_starts_a_process_that_exited_with_restart_never() {
    let address = format!("127.0.0.1:{}", free_port());
    let process = sim_process(&address, ", --crash-after, 1s").replace(
        "    stop_grace: 5s\n",
        "    stop_grace: 5s\n    restart: never\n",
    );
    let proxy = proxy(&config(&address, &process)).run().await;
    ready(&proxy).await;
    let first = supervisor(&proxy).await["pid"].as_u64().unwrap();
    eventually("stopped for good", Duration::from_secs(20), || async {
        (supervisor(&proxy).await["state"] == "stopped").then_some(())
    })
    .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-breakwater-reason"],
        "needs-intervention"
    );
    assert_eq!(operator_restart(&proxy).await, 202);
    eventually("running again", Duration::from_secs(20), || async {
        let status = supervisor(&proxy).await;
        let pid = status["pid"].as_u64()?;
        (pid != first && status["state"] == "running").then_some(())
    })
    .await;
    assert_eq!(proxy.get("/").await.status(), 200);
    assert_eq!(event_details(&proxy, "process_start").await.len(), 2);
}

#[tokio::test]
async fn a_command_that_does_not_exist_is_named_and_needs_intervention() {
    let address = format!("127.0.0.1:{}", free_port());
    let process = "  process:\n    command: no-such-service-binary\n    args: [--port, \"8080\"]\n";
    let proxy = proxy(&config(&address, process)).run().await;
    eventually("gave up", Duration::from_secs(10), || async {
        (supervisor(&proxy).await["state"] == "needs_intervention").then_some(())
    })
    .await;
    let failed = event_details(&proxy, "process_start_failed").await;
    assert!(
        failed
            .iter()
            .any(|detail| detail.contains("no-such-service-binary")
                && detail.contains("not found on PATH")),
        "{failed:?}"
    );
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["x-breakwater-reason"],
        "needs-intervention"
    );
    let readyz: serde_json::Value = client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["reason"], "needs_intervention");
    // An operator's restart tries again (and says so again).
    assert_eq!(operator_restart(&proxy).await, 202);
    eventually("tried again", Duration::from_secs(10), || async {
        (event_details(&proxy, "process_start_failed").await.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_child_that_never_becomes_ready_goes_to_the_ladder_at_startup_timeout() {
    let address = format!("127.0.0.1:{}", free_port());
    // Binds only after a minute: never ready within startup_timeout.
    let process = sim_process(&address, ", --slow-start, 60s");
    let config = config(&address, &process)
        .replace("  startup_timeout: 20s\n", "  startup_timeout: 500ms\n  recovery: {ladder: [restart, escalate], max_attempts: 1, cooldown: 100ms}\n");
    let proxy = proxy(&config).run().await;
    eventually(
        "escalated after two startup timeouts",
        Duration::from_secs(20),
        || async { (supervisor(&proxy).await["state"] == "needs_intervention").then_some(()) },
    )
    .await;
    assert_eq!(event_details(&proxy, "startup_timeout").await.len(), 2);
    let recovery = event_details(&proxy, "recovery").await;
    assert_eq!(
        recovery,
        ["startup_timeout: restart", "startup_timeout: escalate"],
        "the ladder acted on each startup timeout"
    );
    let status = supervisor(&proxy).await;
    assert_eq!(status["restarts"], 1);
    assert_eq!(status["escalated"], true);
}

#[tokio::test]
async fn traffic_waits_for_a_slow_starting_child() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(
        &address,
        &sim_process(&address, ", --slow-start, 1500ms"),
    ))
    .run()
    .await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-breakwater-reason"], "starting");
    assert_eq!(
        client()
            .get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_fifty_requests_then_stops_the_child_then_exits_zero() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut proxy = proxy(&config(&address, &sim_process(&address, ", --latency, 2s")))
        .run()
        .await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let requests: Vec<_> = (0..50)
        .map(|i| {
            let url = proxy.url(&format!("/slow/{i}"));
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    eventually(
        "50 requests at the child",
        Duration::from_secs(10),
        || async {
            let stats = sim_stats_at(&address).await?;
            (stats["in_flight"].as_u64() == Some(50)).then_some(())
        },
    )
    .await;
    proxy.process.signal(SIGTERM);
    for request in requests {
        assert_eq!(request.await.unwrap().expect("dropped during drain"), 200);
    }
    let exit = proxy.process.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.success(), "{exit}");
    let log = proxy.process.stderr.text();
    let drained = log
        .find("Drained: all connections closed.")
        .expect("drained");
    let child_stopped = log
        .find("received SIGTERM")
        .expect("the child got its stop signal");
    assert!(
        drained < child_stopped,
        "the child is stopped only after the drain"
    );
    eventually("child gone", Duration::from_secs(5), || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_sigkilled_breakwater_leaves_no_child_behind() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut proxy = proxy(&config(&address, &sim_process(&address, "")))
        .run()
        .await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    assert!(alive(pid));
    proxy.process.signal(9);
    let _ = proxy.process.wait_exit(Duration::from_secs(5)).await;
    eventually(
        "the child dies with its parent",
        Duration::from_secs(5),
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn run_dash_dash_command_supervises_it_on_the_embedded_default() {
    let upstream = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let process = crate::support::Process::spawn(
        &[
            "run",
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--upstream",
            &upstream,
            "--",
            bin(),
            "sim",
            "--listen",
            &upstream,
            "--name",
            "cli-child",
        ],
        &[],
    );
    let ready_url = format!("http://{admin}/readyz");
    eventually("ready", Duration::from_secs(20), || async {
        (client().get(&ready_url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    let response = client()
        .get(format!("http://{listen}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-sim-name"], "cli-child");
    process
        .stderr
        .wait_for("cli-child listening", Duration::from_secs(5))
        .await;
}

fn with_backup(primary: &str, backup: &str, process: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - name: main
        upstream: app
        circuit_breaker: false
        retry: {{attempts: 3, retry_on: [connect_error, connect_timeout, reset], backoff: {{base: 1ms, max: 5ms}}}}
upstreams:
  - name: app
    endpoints: [\"{primary}\"]
    backup: [\"{backup}\"]
    outlier_detection: {{consecutive_failures: 2, base_ejection_time: 1s}}
supervisor:
  startup_timeout: 20s
{process}"
    )
}

/// GETs in a loop until `stop` flips, counting statuses by upstream name.
fn client_loop(
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let client = client();
        let mut served = 0;
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !*stop.borrow() && Instant::now() < deadline {
            match client.get(&url).send().await {
                Ok(response) if response.status() == 200 => served += 1,
                Ok(response) => failures.push(format!(
                    "{} {:?}",
                    response.status(),
                    response.headers().get("x-breakwater-reason")
                )),
                Err(error) => failures.push(error.to_string()),
            }
        }
        (served, failures)
    })
}

#[tokio::test]
async fn killing_the_primary_with_a_healthy_backup_fails_no_request_and_traffic_returns() {
    let primary_address = format!("127.0.0.1:{}", free_port());
    let backup = crate::support::sim("backup").run().await;
    let spawn_primary = || {
        crate::support::Process::spawn(
            &["sim", "--listen", &primary_address, "--name", "primary"],
            &[],
        )
    };
    let primary = spawn_primary();
    primary
        .stdout
        .wait_for("listening on", Duration::from_secs(10))
        .await;
    let proxy = proxy(&with_backup(&primary_address, &backup.address, ""))
        .run()
        .await;
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "primary");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let looping = client_loop(proxy.url("/"), stopped);
    eventually(
        "some traffic before the kill",
        Duration::from_secs(5),
        || async {
            let _ = proxy.status_json().await;
            (proxy
                .metrics()
                .await
                .contains(r#"code="200",outcome="success",route="main"}"#))
            .then_some(())
        },
    )
    .await;
    drop(primary); // SIGKILL
    eventually(
        "the backup takes the traffic",
        Duration::from_secs(10),
        || async { (backup.requests().await > 20).then_some(()) },
    )
    .await;
    // The primary comes back; after its ejection time, traffic returns.
    let revived = spawn_primary();
    revived
        .stdout
        .wait_for("listening on", Duration::from_secs(10))
        .await;
    eventually(
        "traffic fails back to the primary",
        Duration::from_secs(15),
        || async {
            let stats = sim_stats_at(&primary_address).await?;
            (stats["requests"].as_u64()? > 10).then_some(())
        },
    )
    .await;
    stop.send_replace(true);
    let (served, failures) = looping.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        served + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "failover: {served} requests, 0 failed, {} went to the backup",
        backup.requests().await
    );
}

#[tokio::test]
async fn a_supervised_primary_restarting_behind_a_backup_fails_no_request() {
    let primary_address = format!("127.0.0.1:{}", free_port());
    let backup = crate::support::sim("backup").run().await;
    let proxy = proxy(&with_backup(
        &primary_address,
        &backup.address,
        &sim_process(&primary_address, ""),
    ))
    .run()
    .await;
    ready(&proxy).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let looping = client_loop(proxy.url("/"), stopped);
    for round in 0..3 {
        let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        eventually("restarted", Duration::from_secs(20), || async {
            let status = supervisor(&proxy).await;
            (status["state"] == "running" && status["restarts"] == round + 1).then_some(())
        })
        .await;
    }
    stop.send_replace(true);
    let (served, failures) = looping.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        backup.requests().await > 0,
        "the backup served during the restarts"
    );
    eprintln!("3 supervised restarts behind a backup: {served} requests, 0 failed");
}

#[tokio::test]
async fn operators_fail_over_fail_back_and_restart() {
    let primary_address = format!("127.0.0.1:{}", free_port());
    let backup = crate::support::sim("backup").run().await;
    let proxy = proxy(&with_backup(
        &primary_address,
        &backup.address,
        &sim_process(&primary_address, ""),
    ))
    .run()
    .await;
    ready(&proxy).await;
    let post = |path: &str| {
        let url = proxy.admin_url(path);
        async move { client().post(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "child");
    assert_eq!(post("/upstreams/app/failover").await, 200);
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["failed_over"],
        true
    );
    for _ in 0..5 {
        assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "backup");
    }
    assert_eq!(post("/upstreams/app/failback").await, 200);
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "child");
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    assert_eq!(post("/upstreams/app/restart").await, 202);
    eventually(
        "restarted by the operator",
        Duration::from_secs(20),
        || async {
            let status = supervisor(&proxy).await;
            (status["state"] == "running" && status["pid"].as_u64() != Some(pid)).then_some(())
        },
    )
    .await;
    // One operator restart is one restart.
    assert_eq!(supervisor(&proxy).await["restarts"], 1);
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_supervisor_restarts_total{reason="admin"} 1"#));
    assert_eq!(post("/upstreams/nope/failover").await, 404);
    assert_eq!(
        client()
            .get(proxy.admin_url("/upstreams/app/failover"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    let log = proxy.process.stderr.text();
    for kind in ["failover", "failback", "process_restart"] {
        assert!(
            log.contains(&format!("breakwater::event: {kind} ")),
            "no {kind} event"
        );
    }
}

fn with_triggers(
    address: &str,
    backup: Option<&str>,
    sim_extra: &str,
    process_extra: &str,
    recovery: &str,
) -> String {
    let backup = backup
        .map(|b| format!("\n    backup: [\"{b}\"]"))
        .unwrap_or_default();
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app, circuit_breaker: false, timeouts: {{request: 2s}}}}]}}
upstreams:
  - name: app
    endpoints: [\"{address}\"]{backup}
    outlier_detection: false
    health_check: {{http: {{path: /healthz}}, interval: 100ms, timeout: 80ms, unhealthy_threshold: 2, healthy_threshold: 1}}
supervisor:
  startup_timeout: 20s
  recovery: {recovery}
  process:
    command: \"{}\"
    args: [sim, --listen, \"{address}\", --name, child{sim_extra}]
    stop_grace: 2s
{process_extra}",
        bin()
    )
}

async fn restarted_by(proxy: &Proxy, old_pid: u64, reason: &str) {
    eventually(
        &format!("restart by {reason}"),
        Duration::from_secs(20),
        || async {
            let status = supervisor(proxy).await;
            (status["state"] == "running"
                && status["pid"].as_u64().is_some_and(|pid| pid != old_pid))
            .then_some(())
        },
    )
    .await;
    proxy
        .process
        .stderr
        .wait_for(&format!("restarted ({reason})"), Duration::from_secs(5))
        .await;
    assert!(proxy.metrics().await.contains(&format!(
        r#"breakwater_supervisor_restarts_total{{reason="{reason}"}} 1"#
    )));
}

#[tokio::test]
async fn a_hung_child_fails_its_health_check_and_is_restarted() {
    let address = format!("127.0.0.1:{}", free_port());
    let recovery = "{ladder: [restart, escalate], max_attempts: 3, cooldown: 1s}";
    let proxy = proxy(&with_triggers(&address, None, "", "", recovery))
        .run()
        .await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let control = format!("http://{address}/__sim/config");
    assert!(client()
        .post(&control)
        .body(r#"{"hang": true}"#)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    restarted_by(&proxy, pid, "health_check").await;
    eventually("serving again", Duration::from_secs(10), || async {
        (proxy.get("/").await.status() == 200).then_some(())
    })
    .await;
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_recovery_attempts_total{action="restart",result="started"} 1"#));
}

#[tokio::test]
async fn memory_over_the_limit_restarts_the_child() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&with_triggers(
        &address,
        None,
        "",
        "    memory_limit: 64MiB\n",
        "{cooldown: 1s}",
    ))
    .run()
    .await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let grow = format!("http://{address}/__sim/memory?mib=100");
    // The restart may cut this very request off: its answer is not the point.
    let _ = client().post(&grow).send().await;
    restarted_by(&proxy, pid, "memory_limit").await;
}

#[tokio::test]
async fn a_log_line_matching_a_pattern_restarts_the_child() {
    let address = format!("127.0.0.1:{}", free_port());
    let patterns =
        "    log_patterns: [{regex: \"OutOfMemoryError|panicked at\", action: restart}]\n";
    let proxy = proxy(&with_triggers(
        &address,
        None,
        "",
        patterns,
        "{cooldown: 1s}",
    ))
    .run()
    .await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let log = format!("http://{address}/__sim/log");
    assert!(client()
        .post(&log)
        .body("java.lang.OutOfMemoryError: heap")
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    restarted_by(&proxy, pid, "log_pattern").await;
}

#[tokio::test]
async fn the_ladder_climbs_from_restart_to_failover_to_escalation() {
    let address = format!("127.0.0.1:{}", free_port());
    let backup = crate::support::sim("backup").run().await;
    // The child hangs from birth: restarting cannot fix it.
    let recovery = "{ladder: [restart, failover, escalate], max_attempts: 1, cooldown: 300ms, stable_for: 60s}";
    let proxy = proxy(&with_triggers(
        &address,
        Some(&backup.address),
        ", --hang",
        "",
        recovery,
    ))
    .run()
    .await;
    eventually("escalated", Duration::from_secs(30), || async {
        (supervisor(&proxy).await["state"] == "needs_intervention").then_some(())
    })
    .await;
    let log = proxy.process.stderr.text();
    let order: Vec<usize> = [
        "health_check: restart",
        "health_check: failover",
        "recovery ladder exhausted",
    ]
    .iter()
    .map(|needle| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "out of order: {order:?}"
    );
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["failed_over"],
        true
    );
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-sim-name"],
        "backup",
        "fallback to the backup keeps serving"
    );
}

#[tokio::test]
async fn an_error_rate_over_the_window_restarts_the_child() {
    let address = format!("127.0.0.1:{}", free_port());
    let config = with_triggers(&address, None, ", --status, 503", "", "{cooldown: 1s}").replace(
        "  startup_timeout: 20s\n",
        "  startup_timeout: 20s\n  triggers: {error_rate: {threshold: 0.5, window: 10s, min_requests: 5}}\n",
    );
    let proxy = proxy(&config).run().await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    for _ in 0..5 {
        assert_eq!(proxy.get("/").await.status(), 503);
    }
    restarted_by(&proxy, pid, "error_rate").await;
}

#[tokio::test]
async fn a_ladder_failover_fails_back_once_the_primary_is_stable() {
    let address = format!("127.0.0.1:{}", free_port());
    let backup = crate::support::sim("backup").run().await;
    let patterns = "    log_patterns: [{regex: \"FAILOVER-NOW\", action: failover}]\n";
    let config = with_triggers(
        &address,
        Some(&backup.address),
        "",
        patterns,
        "{cooldown: 1s}",
    )
    .replace(
        "  startup_timeout: 20s\n",
        "  startup_timeout: 20s\n  failback: {stable_for: 500ms}\n",
    );
    let proxy = proxy(&config).run().await;
    ready(&proxy).await;
    let log = format!("http://{address}/__sim/log");
    assert!(client()
        .post(&log)
        .body("FAILOVER-NOW please")
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    proxy
        .process
        .stderr
        .wait_for("breakwater::event: failover ", Duration::from_secs(10))
        .await;
    proxy
        .process
        .stderr
        .wait_for("breakwater::event: failback ", Duration::from_secs(10))
        .await;
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["failed_over"],
        false
    );
    assert_eq!(proxy.get("/").await.headers()["x-sim-name"], "child");
}
