//! The admin port: read endpoints, the token rule, method and CSRF rules.

use crate::support::{client, metric_value, proxy, sim};

fn config(upstream: &str, admin_extra: &str) -> String {
    format!(
        "admin: {{listen: \"{{admin}}\"{admin_extra}}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: main, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"], backup: [\"127.0.0.1:9\"]}}
"
    )
}

#[tokio::test]
async fn read_endpoints() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, "")).run().await;
    let _ = proxy.get("/").await;

    let health = client()
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let status = proxy.status_json().await;
    assert_eq!(status["config_version"], 1);
    assert_eq!(status["listeners"][0]["name"], "inbound");
    assert_eq!(status["listeners"][0]["routes"][0]["name"], "main");
    assert_eq!(status["listeners"][0]["routes"][0]["upstream"], "app");
    let endpoints = status["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["address"], upstream.address.as_str());
    assert_eq!(endpoints[0]["role"], "primary");
    assert_eq!(endpoints[1]["role"], "backup");

    let metrics = client()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    for family in [
        "breakwater_requests_total",
        "breakwater_request_duration_seconds_bucket",
        "breakwater_upstream_duration_seconds_bucket",
        "breakwater_downstream_connections",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }

    let missing = client().get(proxy.admin_url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn mutations_need_the_token_when_one_is_set() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, ", token_env: BW_ADMIN_TOKEN"))
        .env("BW_ADMIN_TOKEN", "t0ken-value")
        .run()
        .await;
    let reload = proxy.admin_url("/config/reload");

    let none = client().post(&reload).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = client()
        .post(&reload)
        .bearer_auth("t0ken-valuX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .post(&reload)
        .bearer_auth("t0ken-value")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // Reads stay open; the token never appears in /status.
    let status = client()
        .get(proxy.admin_url("/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!status.contains("t0ken-value"));
}

#[tokio::test]
async fn without_a_token_loopback_mutations_are_allowed() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, "")).run().await;
    let response = client()
        .post(proxy.admin_url("/config/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_get_on_a_mutating_path_is_405_and_changes_nothing() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, "")).run().await;
    let response = client()
        .get(proxy.admin_url("/config/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let metrics = proxy.metrics().await;
    assert!(
        ["success", "error"].iter().all(|result| metric_value(
            &metrics,
            &format!("breakwater_config_reloads_total{{result=\"{result}\"}}")
        ) == Some(0.0)),
        "no reload happened"
    );
}

#[tokio::test]
async fn cross_site_mutations_are_refused() {
    let upstream = sim("app").run().await;
    let proxy = proxy(&config(&upstream.address, "")).run().await;
    let response = client()
        .post(proxy.admin_url("/config/reload"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let same_origin = client()
        .post(proxy.admin_url("/config/reload"))
        .header("origin", format!("http://{}", proxy.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), 200);
}
