//! The dashboard at the admin port's `GET /`, in a real browser: headless
//! Chromium loads it from a running breakwater, watches a breaker open
//! when the upstream fails, and clicks the buttons an operator would.
//!
//! `BREAKWATER_DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps the picture
//! taken mid-failure (README shows it); without it the PNG is only checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::browser::Browser;
use crate::support::{bin, client, eventually, free_port, proxy, sim, Proxy};

/// Long enough for a loaded two-core machine; every wait ends sooner when
/// the page is right.
const WAIT: Duration = Duration::from_secs(20);

fn route(name: &str) -> String {
    format!("#routes tr[data-route=\"{name}\"]")
}

fn breaker_state(name: &str) -> String {
    format!("{} [data-field=\"breaker\"] .pill", route(name))
}

async fn breaker_in_status(proxy: &Proxy, name: &str) -> String {
    let status = proxy.status_json().await;
    status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|listener| listener["routes"].as_array().unwrap().iter())
        .find(|route| route["name"] == name)
        .map(|route| route["breaker"]["state"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn ready(proxy: &Proxy) {
    let url = proxy.admin_url("/readyz");
    eventually("the proxy is ready", WAIT, || async {
        (client().get(&url).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
}

/// Waits until the last action's answer had `status`, then returns what
/// the page says about it.
async fn action_answered(browser: &Browser, status: &str) -> String {
    browser
        .wait_attribute(
            &format!("an action answered {status}"),
            "#action",
            "data-status",
            status,
            WAIT,
        )
        .await;
    browser.text("#action").await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_failure_and_steers_the_recovery() {
    let started = tokio::time::Instant::now();
    let upstream = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    routes:
      - {{name: checkout, match: {{path_prefix: /checkout}}, upstream: app, priority: critical, circuit_breaker: {{consecutive_failures: 3, open_duration: 60s}}}}
      - {{name: search, match: {{path_prefix: /search}}, upstream: app, stale_if_error: {{max_entries: 100}}, circuit_breaker: {{consecutive_failures: 0, window: {{type: count, size: 1000}}, minimum_calls: 1000}}}}
      - {{name: recommendations, match: {{path_prefix: /recommendations}}, upstream: app, priority: best_effort, fallback: {{status: 200, body: '{{\"items\": []}}', content_type: application/json}}}}
upstreams:
  - {{name: app, endpoints: [\"{upstream}\"], outlier_detection: false}}
supervisor:
  process:
    command: \"{bin}\"
    args: [sim, --listen, \"{upstream}\", --name, app]
    backoff: {{initial: 50ms, max: 400ms, multiplier: 2, jitter: 0}}
",
        bin = bin()
    );
    let mut proxy = proxy(&config).run().await;
    ready(&proxy).await;
    let sim_control = |body: &'static str| {
        let url = format!("http://{upstream}/__sim/config");
        async move {
            let response = client().post(url).body(body).send().await.unwrap();
            assert!(response.status().is_success(), "sim control {body}");
        }
    };

    // The page itself: one self-contained document under a strict policy.
    let page = client().get(proxy.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'nonce-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(!page.text().await.unwrap().contains("{{nonce}}"));
    let posted = client().post(proxy.admin_url("/")).send().await.unwrap();
    assert_eq!(posted.status(), 405);

    let browser = Browser::start().await;
    let browser_ready = started.elapsed();
    browser.goto(&proxy.admin_url("/")).await;
    // The script ran under that policy and drew every route.
    browser
        .wait_text("the header line", "#summary", WAIT, |text| {
            text == "3 routes, 0 breakers open, level normal"
        })
        .await;
    for name in ["checkout", "search", "recommendations"] {
        browser
            .wait_text(
                &format!("{name} closed"),
                &breaker_state(name),
                WAIT,
                |text| text == "closed",
            )
            .await;
    }
    browser
        .wait_text(
            "the supervisor",
            "#supervisor [data-field=\"state\"]",
            WAIT,
            |text| text == "running",
        )
        .await;
    browser
        .wait_text("the event stream", "#stream-state", WAIT, |text| {
            text == "live"
        })
        .await;

    // Restart the supervised process from its upstream's card.
    browser
        .click("[data-upstream=\"app\"] button[data-action=\"restart\"]")
        .await;
    let said = action_answered(&browser, "202").await;
    assert!(said.contains("restart app"), "{said}");
    browser
        .wait_text(
            "one restart",
            "#supervisor [data-field=\"restarts\"]",
            WAIT,
            |text| text == "1",
        )
        .await;
    ready(&proxy).await;

    // The upstream fails: the checkout breaker opens, and the page sees it.
    sim_control(r#"{"status": 503}"#).await;
    eventually("the checkout breaker opens", WAIT, || async {
        let _ = proxy.get("/checkout/cart").await;
        (breaker_in_status(&proxy, "checkout").await == "open").then_some(())
    })
    .await;
    browser
        .wait_text("checkout open", &breaker_state("checkout"), WAIT, |text| {
            text == "open"
        })
        .await;
    browser
        .wait_text("one breaker open", "#summary", WAIT, |text| {
            text.starts_with("3 routes, 1 breaker open, level ")
        })
        .await;

    // An operator raises the level: best-effort routes give way.
    browser
        .click("#level-buttons [data-level=\"moderate\"]")
        .await;
    action_answered(&browser, "200").await;
    browser
        .wait_text("level moderate", "#summary", WAIT, |text| {
            text == "3 routes, 1 breaker open, level moderate"
        })
        .await;
    assert_eq!(
        proxy.status_json().await["degradation"]["level"],
        "moderate"
    );

    // Traffic keeps coming (bounded: it stops on its own after 60 s); the
    // best-effort route no longer reaches the upstream.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let base = proxy.url("");
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut tick = tokio::time::interval(Duration::from_millis(40));
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                tick.tick().await;
                for path in ["/checkout/pay", "/search?q=boots", "/recommendations/home"] {
                    let _ = client().get(format!("{base}{path}")).send().await;
                }
            }
        })
    };

    // Rates from successive samples: fallbacks served by the best-effort
    // route, errors on the failing search route.
    let degrading = format!("{} [data-field=\"degrading\"]", route("recommendations"));
    assert_eq!(
        browser
            .attribute(&degrading, "data-degrading")
            .await
            .unwrap(),
        "true"
    );
    browser
        .wait_text(
            "recommendations degraded replies per second",
            &degrading,
            WAIT,
            |text| text.starts_with("gives waydegraded ") && text.contains("/s"),
        )
        .await;
    browser
        .wait_text(
            "search errors",
            &format!("{} [data-field=\"err\"] .num", route("search")),
            WAIT,
            |text| text != "–" && text != "0%",
        )
        .await;
    for kind in ["breaker", "degradation", "process_start"] {
        browser
            .wait_text(
                &format!("a {kind} event"),
                &format!("#events li[data-kind=\"{kind}\"] .kind"),
                WAIT,
                |text| text == kind,
            )
            .await;
    }
    browser.fit_window_to_page().await;
    let png = browser.screenshot().await;
    if let Some(path) = std::env::var_os("BREAKWATER_DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &png).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();

    // Recovery: the upstream heals, the operator resets the breaker.
    sim_control(r#"{"status": 200}"#).await;
    browser
        .click(&format!(
            "{} button[data-action=\"reset\"]",
            route("checkout")
        ))
        .await;
    let said = action_answered(&browser, "200").await;
    assert!(said.contains("reset breaker checkout"), "{said}");
    browser
        .wait_text(
            "checkout closed again",
            &breaker_state("checkout"),
            WAIT,
            |text| text == "closed",
        )
        .await;
    assert_eq!(breaker_in_status(&proxy, "checkout").await, "closed");
    browser.click("#level-buttons [data-level=\"auto\"]").await;
    browser
        .wait_text("the level is automatic", "#level-source", WAIT, |text| {
            text.starts_with("automatic")
        })
        .await;
    assert_eq!(proxy.status_json().await["degradation"]["source"], "auto");

    // A refused action says why: this upstream has no backups.
    browser
        .click("[data-upstream=\"app\"] button[data-action=\"failover\"]")
        .await;
    let said = action_answered(&browser, "409").await;
    assert!(said.contains("has no backup endpoints"), "{said}");
    assert_eq!(
        browser.attribute("#action", "class").await.unwrap(),
        "error"
    );

    // The admin port stops answering: the page says its figures are stale.
    assert_eq!(
        browser.attribute("#stale-banner", "class").await.unwrap(),
        "banner hidden"
    );
    proxy.process.child.kill().unwrap();
    proxy.process.wait_exit(WAIT).await;
    browser
        .wait_text("the stale banner", "#stale-banner", WAIT, |text| {
            text.starts_with("STALE")
        })
        .await;
    assert_eq!(
        browser.attribute("#stale-banner", "class").await.unwrap(),
        "banner"
    );
    browser.quit().await;
    eprintln!(
        "dashboard test: browser ready after {browser_ready:?}, whole test {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_dashboard_shows_the_refusal_then_acts_with_the_pasted_token() {
    let upstream = sim("app").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\", token: s3cret-token}}
listeners:
  - {{name: inbound, listen: \"{{listen}}\", routes: [{{name: api, upstream: app}}]}}
upstreams:
  - {{name: app, endpoints: [\"{}\"], outlier_detection: false}}
",
        upstream.address
    );
    let proxy = proxy(&config).run().await;
    let browser = Browser::start().await;
    // Reading needs no token.
    browser.goto(&proxy.admin_url("/")).await;
    browser
        .wait_text("the header line", "#summary", WAIT, |text| {
            text == "1 route, 0 breakers open, level normal"
        })
        .await;
    assert_eq!(browser.text("#token-state").await.unwrap(), "no token");

    // Without the token: the page shows the 401, and nothing changed.
    let open = format!("{} button[data-action=\"open\"]", route("api"));
    browser.click(&open).await;
    let said = action_answered(&browser, "401").await;
    assert!(said.contains("a valid bearer token is required"), "{said}");
    assert!(said.contains("needs a token"), "{said}");
    assert_eq!(breaker_in_status(&proxy, "api").await, "closed");

    // A wrong token is refused too, and said so.
    browser.type_into("#token", "not-it").await;
    browser.click("#token-save").await;
    browser.click(&open).await;
    browser
        .wait_text("the wrong token refused", "#action", WAIT, |text| {
            text.contains("the token was refused")
        })
        .await;
    assert_eq!(breaker_in_status(&proxy, "api").await, "closed");

    // With the pasted token it works, and the page shows the new state.
    browser.click("#token-clear").await;
    browser.type_into("#token", "s3cret-token").await;
    browser.click("#token-save").await;
    assert_eq!(
        browser.text("#token-state").await.unwrap(),
        "token set for this tab"
    );
    // The field is emptied; the token lives in sessionStorage only.
    assert_eq!(
        browser
            .script(
                "return document.getElementById('token').value;",
                serde_json::json!([])
            )
            .await,
        ""
    );
    browser.click(&open).await;
    action_answered(&browser, "200").await;
    browser
        .wait_text("api forced open", &breaker_state("api"), WAIT, |text| {
            text == "forced open"
        })
        .await;
    assert_eq!(breaker_in_status(&proxy, "api").await, "forced_open");
    browser
        .click(&format!("{} button[data-action=\"reset\"]", route("api")))
        .await;
    browser
        .wait_text("api closed", &breaker_state("api"), WAIT, |text| {
            text == "closed"
        })
        .await;
    assert_eq!(breaker_in_status(&proxy, "api").await, "closed");
    browser.quit().await;
}
