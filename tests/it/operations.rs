//! Operations (SPEC §12) through the real binary, each with a real
//! supervised `breakwater sim` child: fault injection that ends by itself
//! and leaves the breaker alone, a kill drill timed to recovery, a broken
//! deploy rolled back under traffic, a child gated on its dependency,
//! maintenance holding the supervisor, and a backoff that does not grow
//! across crashes after healthy runs.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{bin, client, eventually, free_port, metric_value, proxy, Proxy};

/// A proxy in front of one supervised sim on `address`. `route` is added
/// to the route, `supervisor` to the supervisor section, `process` to the
/// process.
fn config(address: &str, route: &str, supervisor: &str, process: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - name: main
        upstream: app
        circuit_breaker: {{consecutive_failures: 3, minimum_calls: 1000}}
{route}upstreams:
  - name: app
    endpoints: [\"{address}\"]
    outlier_detection: false
    health_check: {{http: {{path: /healthz}}, interval: 100ms, timeout: 80ms, unhealthy_threshold: 2, healthy_threshold: 1}}
supervisor:
  startup_timeout: 20s
  recovery: {{ladder: [restart, escalate], max_attempts: 5, cooldown: 200ms}}
{supervisor}  process:
    command: \"{bin}\"
    args: [sim, --listen, \"{address}\", --name, child]
    stop_grace: 2s
    backoff: {{initial: 200ms, max: 5s, multiplier: 2, jitter: 0}}
{process}",
        bin = bin()
    )
}

async fn supervisor(proxy: &Proxy) -> serde_json::Value {
    proxy.status_json().await["supervisor"].clone()
}

async fn ready(proxy: &Proxy) {
    let url = proxy.admin_url("/readyz");
    eventually("proxy ready", Duration::from_secs(20), || async {
        (client().get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
}

async fn events(proxy: &Proxy, kind: &str) -> Vec<String> {
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

async fn wait_event(proxy: &Proxy, kind: &str, needle: &str, limit: Duration) -> String {
    eventually(
        &format!("a {kind} event with {needle:?}"),
        limit,
        || async {
            events(proxy, kind)
                .await
                .into_iter()
                .find(|detail| detail.contains(needle))
        },
    )
    .await
}

async fn admin(
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let response = client()
        .request(method, proxy.admin_url(path))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn kill(pid: u64) {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

/// GETs in a loop until `stop` flips, counting failures (anything but 200).
fn traffic(
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let client = client();
        let (mut served, mut failures) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(60);
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
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (served, failures)
    })
}

#[tokio::test]
async fn an_injected_fault_flows_leaves_the_breaker_closed_and_ends_by_its_ttl() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, "", "", "")).run().await;
    ready(&proxy).await;
    let (status, body) = admin(
        &proxy,
        reqwest::Method::PUT,
        "/faults/main",
        r#"{"abort": {"percent": 100, "status": 503}, "ttl": "2s"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fault"]["source"], "admin");
    let route_status = &proxy.status_json().await["listeners"][0]["routes"][0];
    assert_eq!(route_status["fault"]["abort"]["percent"], 100.0);
    // Twice the breaker's consecutive_failures, all aborted by the fault.
    for _ in 0..6 {
        let response = proxy.get("/").await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-breakwater-fault"], "abort");
        assert_eq!(response.headers()["x-breakwater-reason"], "fault-injected");
    }
    let status = proxy.status_json().await;
    assert_eq!(
        status["listeners"][0]["routes"][0]["breaker"]["state"], "closed",
        "injected faults are not the upstream's failures"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"breakwater_faults_injected_total{kind="abort",route="main"}"#
        ),
        Some(6.0)
    );
    assert_eq!(supervisor(&proxy).await["restarts"], 0);
    // It ends by itself; traffic flows as before.
    wait_event(&proxy, "fault", "ttl ran out", Duration::from_secs(10)).await;
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-breakwater-fault").is_none());
    assert!(proxy.status_json().await["listeners"][0]["routes"][0]["fault"].is_null());

    // A delay holds the request, then it goes through, marked.
    let (status, _) = admin(
        &proxy,
        reqwest::Method::PUT,
        "/faults/main",
        r#"{"delay": {"percent": 100, "duration": "300ms"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let started = Instant::now();
    let response = proxy.get("/").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-breakwater-fault"], "delay");
    // A header cannot trigger or skip it; DELETE ends it at once.
    let (status, body) = admin(&proxy, reqwest::Method::DELETE, "/faults/main", "").await;
    assert_eq!((status, &body["ended"]), (200, &serde_json::json!(true)));
    assert!(proxy
        .get("/")
        .await
        .headers()
        .get("x-breakwater-fault")
        .is_none());
    // Bad faults are refused with the config's words.
    let (status, body) = admin(
        &proxy,
        reqwest::Method::PUT,
        "/faults/main",
        r#"{"abort": {"percent": 10}, "ttl": "2h"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("ttl"), "{body}");
    assert_eq!(
        admin(&proxy, reqwest::Method::PUT, "/faults/nope", "{}")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_config_fault_survives_a_reload_of_its_route() {
    let address = format!("127.0.0.1:{}", free_port());
    let fault = "        fault: {abort: {percent: 100, status: 418}, ttl: 1h}\n";
    let template = config(&address, fault, "", "");
    let proxy = proxy(&template).run().await;
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.status(), 418);
    let before = proxy.status_json().await["listeners"][0]["routes"][0]["fault"].clone();
    assert_eq!(before["source"], "config");
    // Another change to the route: the same fault, with its clock, stays.
    proxy.rewrite(&template.replace("consecutive_failures: 3", "consecutive_failures: 4"));
    eventually("reloaded", Duration::from_secs(10), || async {
        (proxy.status_json().await["config_version"] == 2).then_some(())
    })
    .await;
    let after = proxy.status_json().await["listeners"][0]["routes"][0]["fault"].clone();
    assert_eq!(
        after["until"], before["until"],
        "the same fault, not a new one"
    );
    assert_eq!(proxy.get("/").await.status(), 418);
    // Taken out of the config, it ends.
    proxy.rewrite(&config(&address, "", "", ""));
    eventually("fault gone", Duration::from_secs(10), || async {
        (proxy.get("/").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_kill_drill_is_recorded_with_its_recovery_time() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, "", "", "")).run().await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let (status, body) = admin(
        &proxy,
        reqwest::Method::POST,
        "/upstreams/app/drill",
        r#"{"action": "kill"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pid"], pid);
    let drill = eventually("the drill recovered", Duration::from_secs(20), || async {
        let drill = supervisor(&proxy).await["last_drill"].clone();
        (drill["state"] == "recovered").then_some(drill)
    })
    .await;
    assert_eq!(drill["action"], "kill");
    assert_eq!(drill["detected_by"], "exit");
    let detection = drill["detection_seconds"].as_f64().unwrap();
    let recovery = drill["recovery_seconds"].as_f64().unwrap();
    assert!(
        detection < 1.0 && recovery > 0.0 && recovery < 10.0,
        "{drill}"
    );
    let detail = wait_event(&proxy, "drill", "serving again", Duration::from_secs(5)).await;
    assert!(detail.contains("detected by exit"), "{detail}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"breakwater_drill_recovery_seconds_count{action="kill"}"#
        ),
        Some(1.0)
    );
    assert_ne!(supervisor(&proxy).await["pid"].as_u64(), Some(pid));
    assert_eq!(proxy.get("/").await.status(), 200);
    eprintln!("kill drill: detected in {detection:.3}s, serving again in {recovery:.3}s");
    // Nothing to drill without a supervised process; bad actions are refused.
    assert_eq!(
        admin(
            &proxy,
            reqwest::Method::POST,
            "/upstreams/nope/drill",
            r#"{"action": "kill"}"#
        )
        .await
        .0,
        409
    );
    assert_eq!(
        admin(
            &proxy,
            reqwest::Method::POST,
            "/upstreams/app/drill",
            r#"{"action": "boom"}"#
        )
        .await
        .0,
        400
    );
}

#[tokio::test]
async fn a_hang_drill_is_seen_by_the_health_check_and_the_child_replaced() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, "", "", "")).run().await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let (status, _) = admin(
        &proxy,
        reqwest::Method::POST,
        "/upstreams/app/drill",
        r#"{"action": "hang"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let drill = eventually(
        "the hang drill recovered",
        Duration::from_secs(20),
        || async {
            let drill = supervisor(&proxy).await["last_drill"].clone();
            (drill["state"] == "recovered").then_some(drill)
        },
    )
    .await;
    assert_eq!(drill["detected_by"], "health_check", "{drill}");
    assert_ne!(supervisor(&proxy).await["pid"].as_u64(), Some(pid));
    // The stopped child was continued so it could honour its stop signal.
    proxy
        .process
        .stderr
        .wait_for("received SIGTERM", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_broken_deploy_is_rolled_back_while_traffic_flows() {
    let address = format!("127.0.0.1:{}", free_port());
    let rollback = "  rollback: {stable_for: 1s, window: 1m}\n";
    let good = config(&address, "", rollback, "");
    let proxy = proxy(&good).run().await;
    ready(&proxy).await;
    // Stable for a while: the spec a rollback restores.
    eventually("stable", Duration::from_secs(10), || async {
        (supervisor(&proxy).await["uptime_seconds"].as_f64()? > 1.5).then_some(())
    })
    .await;
    let good_pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = traffic(proxy.url("/"), stopped);
    eventually("traffic flows", Duration::from_secs(5), || async {
        (proxy.get("/").await.status() == 200).then_some(())
    })
    .await;
    // The deploy: a spec that dies at once.
    let broken = good.replace(
        &format!(
            "    command: \"{}\"\n    args: [sim, --listen, \"{address}\", --name, child]\n",
            bin()
        ),
        "    command: sh\n    args: [-c, \"echo bad build; exit 3\"]\n",
    );
    assert_ne!(broken, good);
    proxy.rewrite(&broken);
    let detail = wait_event(&proxy, "rollback", "rolled back", Duration::from_secs(20)).await;
    assert!(
        detail.contains("sh -c") && detail.contains("exited before it was ready"),
        "{detail}"
    );
    eventually(
        "the good spec serves again",
        Duration::from_secs(20),
        || async {
            let status = supervisor(&proxy).await;
            (status["state"] == "running"
                && status["pid"].as_u64()? != good_pid
                && status["command"].as_str()?.contains("sim"))
            .then_some(())
        },
    )
    .await;
    eventually("traffic served again", Duration::from_secs(10), || async {
        (proxy.get("/").await.status() == 200).then_some(())
    })
    .await;
    stop.send_replace(true);
    let (served, failures) = load.await.unwrap();
    let status = supervisor(&proxy).await;
    assert_eq!(
        status["rollback"]["to"]
            .as_str()
            .map(|to| to.contains("sim")),
        Some(true)
    );
    assert!(status["refused_spec"].as_str().unwrap().starts_with("sh"));
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"breakwater_rollbacks_total{kind="process"}"#),
        Some(1.0)
    );
    eprintln!(
        "rollback under traffic: {served} served, {} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The same bad spec is not tried again on another reload.
    let pid = status["pid"].as_u64();
    let (code, _) = admin(&proxy, reqwest::Method::POST, "/config/reload", "").await;
    assert_eq!(code, 200);
    // Another change that still names the bad spec: the spec stays refused.
    proxy.rewrite(&broken.replace("consecutive_failures: 3", "consecutive_failures: 4"));
    wait_event(
        &proxy,
        "config_reload",
        "not tried again",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(supervisor(&proxy).await["pid"].as_u64(), pid);
    assert_eq!(proxy.get("/").await.status(), 200);
}

#[tokio::test]
async fn a_child_waits_for_its_dependency_and_is_not_restarted_while_it_is_down() {
    let address = format!("127.0.0.1:{}", free_port());
    let dependency = format!("127.0.0.1:{}", free_port());
    let dependencies = format!(
        "  dependencies:\n    - {{name: db, tcp: {{address: \"{dependency}\"}}, interval: 100ms, timeout: 80ms, unhealthy_threshold: 1}}\n"
    );
    let proxy = proxy(&config(&address, "", &dependencies, "")).run().await;
    wait_event(&proxy, "dependency_down", "db", Duration::from_secs(10)).await;
    let status = supervisor(&proxy).await;
    assert_eq!(status["state"], "waiting", "{status}");
    assert!(status["pid"].is_null());
    assert!(status["held_because"].as_str().unwrap().contains("db"));
    assert_eq!(status["dependencies"][0]["up"], false);
    assert!(
        events(&proxy, "process_start").await.is_empty(),
        "not started"
    );
    let response = proxy.get("/").await;
    assert_eq!(response.headers()["x-breakwater-reason"], "starting");

    // The dependency comes up: the child starts.
    let listener = tokio::net::TcpListener::bind(&dependency).await.unwrap();
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.status(), 200);
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();

    // It dies; the child fails its health check: the ladder holds.
    accept.abort();
    let _ = accept.await;
    eventually("db down again", Duration::from_secs(10), || async {
        (events(&proxy, "dependency_down").await.len() == 2).then_some(())
    })
    .await;
    let fail = format!("http://{address}/__sim/config");
    client()
        .post(&fail)
        .body(r#"{"fail_health": true}"#)
        .send()
        .await
        .unwrap();
    wait_event(&proxy, "recovery_held", "db down", Duration::from_secs(10)).await;
    let status = supervisor(&proxy).await;
    assert_eq!(status["pid"].as_u64(), Some(pid), "not restarted");
    assert_eq!(status["restarts"], 0);
    assert!(
        events(&proxy, "recovery").await.is_empty(),
        "the ladder took no action"
    );

    // Back: recovery resumes (the failing health check restarts the child).
    let listener = tokio::net::TcpListener::bind(&dependency).await.unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    wait_event(&proxy, "dependency_up", "db", Duration::from_secs(10)).await;
    eventually(
        "restarted once the dependency is back",
        Duration::from_secs(20),
        || async {
            let status = supervisor(&proxy).await;
            (status["pid"].as_u64()? != pid && status["state"] == "running").then_some(())
        },
    )
    .await;
    assert_eq!(proxy.get("/").await.status(), 200);
}

#[tokio::test]
async fn maintenance_holds_recovery_and_ends_by_its_ttl() {
    let address = format!("127.0.0.1:{}", free_port());
    let proxy = proxy(&config(&address, "", "", "")).run().await;
    ready(&proxy).await;
    let pid = supervisor(&proxy).await["pid"].as_u64().unwrap();
    let (status, body) = admin(
        &proxy,
        reqwest::Method::PUT,
        "/maintenance",
        r#"{"upstream": "app", "on": true, "reason": "db migration", "ttl": "3s"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response = proxy.get("/").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-breakwater-reason"], "maintenance");
    let upstream = proxy.status_json().await["upstreams"][0]["maintenance"].clone();
    assert_eq!(upstream["on"], true);
    assert_eq!(upstream["reason"], "db migration");
    assert!(upstream["until"].as_str().unwrap().ends_with('Z'));
    // No drills while the operator works.
    assert_eq!(
        admin(
            &proxy,
            reqwest::Method::POST,
            "/upstreams/app/drill",
            r#"{"action": "kill"}"#
        )
        .await
        .0,
        409
    );
    // A failing health check is a trigger the ladder does not act on, and
    // a killed child is not restarted.
    client()
        .post(format!("http://{address}/__sim/config"))
        .body(r#"{"fail_health": true}"#)
        .send()
        .await
        .unwrap();
    kill(pid);
    wait_event(
        &proxy,
        "process_exit",
        "in maintenance",
        Duration::from_secs(10),
    )
    .await;
    let status = supervisor(&proxy).await;
    assert_eq!(status["state"], "maintenance");
    assert_eq!(status["restarts"], 0);
    assert!(events(&proxy, "recovery").await.is_empty());
    // The TTL ends it; the supervisor starts the child and traffic returns.
    wait_event(
        &proxy,
        "maintenance",
        "ttl ran out",
        Duration::from_secs(10),
    )
    .await;
    eventually(
        "serving after maintenance",
        Duration::from_secs(20),
        || async { (proxy.get("/").await.status() == 200).then_some(()) },
    )
    .await;
    assert_ne!(supervisor(&proxy).await["pid"].as_u64(), Some(pid));
    assert_eq!(
        proxy.status_json().await["upstreams"][0]["maintenance"]["on"],
        false
    );
}

#[tokio::test]
async fn crashes_after_healthy_runs_restart_after_the_initial_backoff_every_time() {
    let address = format!("127.0.0.1:{}", free_port());
    // Critical: the outages must not raise the automatic degradation
    // level into this route's way; the restart delays are the point.
    let route = "        priority: critical\n";
    let proxy = proxy(&config(&address, route, "", "      reset_after: 500ms\n").replace(
        "    backoff: {initial: 200ms, max: 5s, multiplier: 2, jitter: 0}\n      reset_after: 500ms\n",
        "    backoff: {initial: 200ms, max: 5s, multiplier: 2, jitter: 0, reset_after: 500ms}\n",
    ))
    .run()
    .await;
    ready(&proxy).await;
    for round in 0..4u64 {
        // Serving, and up past reset_after.
        let pid = eventually("healthy for a while", Duration::from_secs(20), || async {
            let status = supervisor(&proxy).await;
            let up = status["uptime_seconds"].as_f64()?;
            (status["state"] == "running" && status["restarts"] == round && up > 0.8)
                .then(|| status["pid"].as_u64())
                .flatten()
        })
        .await;
        let response = proxy.get("/").await;
        assert_eq!(
            response.status(),
            200,
            "{:?}",
            response.headers().get("x-breakwater-reason")
        );
        kill(pid);
    }
    eventually("the fourth restart", Duration::from_secs(20), || async {
        (supervisor(&proxy).await["restarts"] == 4).then_some(())
    })
    .await;
    let delays: Vec<String> = events(&proxy, "process_exit")
        .await
        .iter()
        .filter_map(|detail| detail.split("restarting in ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(delays, ["200ms"; 4], "not 200ms, 400ms, 800ms, 1.6s");
}

#[tokio::test]
async fn a_reload_that_brings_errors_is_rolled_back_and_refused_until_the_file_changes() {
    let address = format!("127.0.0.1:{}", free_port());
    let dead = format!("127.0.0.1:{}", free_port());
    let template = |upstream: &str| {
        config(&address, "", "  upstream: app\n", "")
            .replace("        upstream: app\n", &format!("        upstream: {upstream}\n"))
            .replace(
                "upstreams:\n",
                &format!(
                    "config_rollback: {{window: 30s, error_rate: 0.5, min_requests: 10}}\nupstreams:\n  - {{name: dead, endpoints: [\"{dead}\"], outlier_detection: false}}\n"
                ),
            )
    };
    let good = template("app");
    let proxy = proxy(&good).run().await;
    ready(&proxy).await;
    assert_eq!(proxy.get("/").await.status(), 200);
    // A reload that sends the route to an upstream that is not there.
    proxy.rewrite(&template("dead"));
    eventually("the bad config serves", Duration::from_secs(10), || async {
        (proxy.get("/").await.status() == 502).then_some(())
    })
    .await;
    for _ in 0..12 {
        let _ = proxy.get("/").await;
    }
    let detail = wait_event(&proxy, "rollback", "rolled back", Duration::from_secs(10)).await;
    assert!(detail.contains("5xx"), "{detail}");
    // The previous config serves (once the breaker the errors opened lets
    // a probe through).
    eventually(
        "the previous config serves",
        Duration::from_secs(15),
        || async { (proxy.get("/").await.status() == 200).then_some(()) },
    )
    .await;
    let status = proxy.status_json().await;
    assert_eq!(status["config_rollback"]["rolled_back_version"], 2);
    assert_eq!(status["config_version"], 3);
    assert_eq!(
        metric_value(
            &proxy.metrics().await,
            r#"breakwater_rollbacks_total{kind="config"}"#
        ),
        Some(1.0)
    );
    // The same file is refused until it changes.
    let (code, body) = admin(&proxy, reqwest::Method::POST, "/config/reload", "").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("rolled back"), "{body}");
    assert_eq!(proxy.get("/").await.status(), 200);
    proxy.rewrite(&good.replace("consecutive_failures: 3", "consecutive_failures: 4"));
    eventually(
        "a changed file is taken",
        Duration::from_secs(10),
        || async { (proxy.status_json().await["config_version"] == 4).then_some(()) },
    )
    .await;
}
