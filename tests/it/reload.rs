//! Live reload: admin, SIGHUP, file watch (including a ConfigMap-style
//! symlink swap); bad files are refused and the old config keeps serving.

use std::time::Duration;

use crate::support::{self, client, eventually, proxy, sim, Proxy, SIGHUP};

fn routing_to(upstream: &str, name: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - {{name: {name}, match: {{path_prefix: /}}, upstream: app}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"]}}
"
    )
}

async fn served_by(proxy: &Proxy) -> String {
    let response = proxy.get("/").await;
    response
        .headers()
        .get("x-sim-name")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn reload_via_admin(proxy: &Proxy) -> (u16, serde_json::Value) {
    let response = client()
        .post(proxy.admin_url("/config/reload"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn admin_reload_of_a_good_file_changes_routing() {
    let blue = sim("blue").run().await;
    let green = sim("green").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    assert_eq!(served_by(&proxy).await, "blue");
    proxy.rewrite(&routing_to(&green.address, "main"));
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    assert_eq!(served_by(&proxy).await, "green");
    assert_eq!(proxy.status_json().await["config_version"], 2);
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_config_reloads_total{result="success"}"#));
}

#[tokio::test]
async fn a_bad_file_is_refused_and_the_old_routing_keeps_serving() {
    let blue = sim("blue").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    let broken = routing_to(&blue.address, "main")
        .replace("upstream: app", "upstream: nowhere")
        .replace("- {name: app", "- {name: app, colour: red");
    proxy.rewrite(&broken);
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["result"], "error");
    assert_eq!(body["config_version"], 1);
    let errors = body["errors"].as_array().unwrap();
    let paths: Vec<&str> = errors
        .iter()
        .map(|error| error["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"upstreams[0].colour"), "{body}");
    assert!(
        errors.iter().all(|error| error["line"].as_u64().is_some()),
        "every error has a line: {body}"
    );
    // Still serving the old config.
    assert_eq!(served_by(&proxy).await, "blue");
    assert_eq!(proxy.status_json().await["config_version"], 1);
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_config_reloads_total{result="error"}"#));
    proxy
        .process
        .stderr
        .wait_for("config_reload_failed", Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn sighup_reloads() {
    let blue = sim("blue").run().await;
    let green = sim("green").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    // Write in place (no rename) and signal at once; either trigger may win.
    std::fs::write(
        &proxy.config_path,
        support::fill(
            &routing_to(&green.address, "main"),
            proxy.listen,
            proxy.admin,
        ),
    )
    .unwrap();
    proxy.process.signal(SIGHUP);
    eventually(
        "SIGHUP reload routes to green",
        Duration::from_secs(10),
        || async { (served_by(&proxy).await == "green").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let blue = sim("blue").run().await;
    let green = sim("green").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    proxy.rewrite(&routing_to(&green.address, "renamed"));
    eventually("file watch reload", Duration::from_secs(10), || async {
        (served_by(&proxy).await == "green").then_some(())
    })
    .await;
    let status = proxy.status_json().await;
    assert_eq!(status["listeners"][0]["routes"][0]["name"], "renamed");
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    // Kubernetes mounts: config.yaml -> ..data/config.yaml, ..data -> ..v1;
    // an update writes ..v2 and atomically renames a new ..data symlink.
    let blue = sim("blue").run().await;
    let green = sim("green").run().await;
    let mount = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let admin = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let version = |name: &str, upstream: &str| {
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            support::fill(&routing_to(upstream, "main"), listen, admin),
        )
        .unwrap();
    };
    version("..v1", &blue.address);
    std::os::unix::fs::symlink("..v1", mount.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", mount.path().join("config.yaml")).unwrap();
    let path = mount.path().join("config.yaml");
    let process = support::Process::spawn(&["run", "--config", path.to_str().unwrap()], &[]);
    let mut proxy = Proxy {
        process,
        dir: tempfile::tempdir().unwrap(),
        config_path: path,
        listen,
        admin,
    };
    proxy.wait_healthy().await;
    assert_eq!(served_by(&proxy).await, "blue");

    version("..v2", &green.address);
    std::os::unix::fs::symlink("..v2", mount.path().join("..data_tmp")).unwrap();
    std::fs::rename(mount.path().join("..data_tmp"), mount.path().join("..data")).unwrap();
    std::fs::remove_dir_all(mount.path().join("..v1")).unwrap();
    eventually("symlink swap reload", Duration::from_secs(10), || async {
        (served_by(&proxy).await == "green").then_some(())
    })
    .await;
}

#[tokio::test]
async fn changing_a_listener_address_needs_a_restart() {
    let blue = sim("blue").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    let moved = routing_to(&blue.address, "main").replace(
        "\"{listen}\"",
        &format!("\"127.0.0.1:{}\"", support::free_port()),
    );
    proxy.rewrite(&moved);
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("needs a restart"),
        "{body}"
    );
    assert_eq!(served_by(&proxy).await, "blue");
}

#[tokio::test]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    let slow_blue = sim("blue").arg("--latency").arg("800ms").run().await;
    let green = sim("green").run().await;
    let proxy = proxy(&routing_to(&slow_blue.address, "main")).run().await;
    let url = proxy.url("/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    eventually("request reaches blue", Duration::from_secs(5), || async {
        (slow_blue.stats().await["in_flight"].as_u64() == Some(1)).then_some(())
    })
    .await;
    proxy.rewrite(&routing_to(&green.address, "main"));
    let (status, _) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200);
    assert_eq!(served_by(&proxy).await, "green");
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.headers()["x-sim-name"], "blue");
}

fn supervised(address: &str, name: &str, extra: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{address}\"]}}
supervisor:
  process:
    command: \"{}\"
    args: [sim, --listen, \"{address}\", --name, {name}]
    stop_grace: 5s
{extra}",
        support::bin()
    )
}

/// The supervisor follows its section: a new process spec restarts the
/// child with it; other settings apply without a restart.
#[tokio::test]
async fn a_changed_process_spec_restarts_the_child_with_it() {
    let address = format!("127.0.0.1:{}", support::free_port());
    let proxy = proxy(&supervised(&address, "one", "")).run().await;
    eventually("serving", Duration::from_secs(20), || async {
        (served_by(&proxy).await == "one").then_some(())
    })
    .await;
    let pid = proxy.status_json().await["supervisor"]["pid"].clone();

    // A setting that is not the spec: applied, no restart.
    proxy.rewrite(&supervised(
        &address,
        "one",
        "    backoff: {initial: 100ms, max: 1s, multiplier: 2, jitter: 0}\n",
    ));
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.status_json().await["supervisor"]["pid"], pid);

    // A new spec: the child is restarted with it.
    proxy.rewrite(&supervised(&address, "two", ""));
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "served by the new spec",
        Duration::from_secs(20),
        || async { (served_by(&proxy).await == "two").then_some(()) },
    )
    .await;
    let supervisor = &proxy.status_json().await["supervisor"];
    assert_ne!(supervisor["pid"], pid);
    assert_eq!(supervisor["restarts"], 1);
    assert!(proxy
        .metrics()
        .await
        .contains(r#"breakwater_supervisor_restarts_total{reason="config"} 1"#));
}

/// `alerts.webhooks` follow a reload: a webhook added by it receives the
/// reload's own event.
#[tokio::test]
async fn webhooks_follow_a_reload() {
    let blue = sim("blue").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    let (url, received) = support::webhook_receiver().await;
    let with_hook = format!(
        "{}alerts:\n  webhooks: [{{url: \"{url}\", min_severity: info}}]\n",
        routing_to(&blue.address, "main")
    );
    proxy.rewrite(&with_hook);
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the new webhook got the reload event",
        Duration::from_secs(10),
        || async {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|event| event["kind"] == "config_reload")
                .then_some(())
        },
    )
    .await;
}

/// `limits.max_connections` follows a reload at the next accept.
#[tokio::test]
async fn max_connections_follows_a_reload() {
    use std::io::{Read, Write};
    let blue = sim("blue").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    proxy.rewrite(&format!(
        "{}limits: {{max_connections: 1}}\n",
        routing_to(&blue.address, "main")
    ));
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 200, "{body}");
    let mut held = std::net::TcpStream::connect(proxy.listen).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    held.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // The held connection is the one allowed: the next is closed at once.
    let (response, closed) = support::raw_exchange_closed(
        proxy.listen,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed && response.is_empty(), "{response}");
    let metrics = proxy.metrics().await;
    let rejected = support::metric_value(
        &metrics,
        r#"breakwater_rejected_total{listener="inbound",reason="max_connections"}"#,
    );
    assert!(rejected >= Some(1.0), "{metrics}");
}

/// What a running process cannot change is refused, naming the key.
#[tokio::test]
async fn changing_worker_threads_needs_a_restart_and_names_the_key() {
    let blue = sim("blue").run().await;
    let proxy = proxy(&routing_to(&blue.address, "main")).run().await;
    proxy.rewrite(&format!(
        "{}runtime: {{threads: 3}}\n",
        routing_to(&blue.address, "main")
    ));
    let (status, body) = reload_via_admin(&proxy).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["path"], "runtime.threads", "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("needs a restart"));
    assert_eq!(served_by(&proxy).await, "blue");
}
