//! Transparent listeners (SPEC §9) without interception: a connection made
//! to the listener directly has no original destination, so a route that
//! forwards to it would loop — breakwater refuses it with 508 — while
//! routes naming an upstream serve as usual. The interception itself, with
//! iptables in a network namespace, is `netns.rs`.

use crate::support::{proxy, sim};

#[tokio::test]
async fn a_direct_connection_to_a_transparent_listener_cannot_loop() {
    let upstream = sim("beside").run().await;
    let config = format!(
        "admin: {{listen: \"{{admin}}\"}}
listeners:
  - name: inbound
    listen: \"{{listen}}\"
    transparent: true
    routes:
      - {{name: direct, match: {{path_prefix: /direct}}, upstream: app}}
      - {{name: by-port, match: {{port: 9}}, upstream: app}}
      - {{name: rest}}
upstreams:
  - {{name: app, endpoints: [\"{}\"]}}
",
        upstream.address
    );
    let proxy = proxy(&config).run().await;
    let direct = proxy.get("/direct").await;
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.headers()["x-sim-name"], "beside");

    // Not redirected: the original destination is the listener itself,
    // so neither `port: 9` matches nor may `rest` forward there.
    let looped = proxy.get("/elsewhere").await;
    assert_eq!(looped.status(), 508);
    assert_eq!(looped.headers()["x-breakwater-reason"], "loop");
    assert!(looped.headers().contains_key("x-request-id"));
    assert_eq!(upstream.requests().await, 1);

    // The effective config shows where `rest` goes.
    let status = proxy.status_json().await;
    let text = status.to_string();
    assert!(text.contains("original-dst"), "{text}");
}

#[test]
fn iptables_print_shows_the_rules_without_running_them() {
    let output = std::process::Command::new(crate::support::bin())
        .args([
            "iptables",
            "print",
            "--inbound-ports",
            "8080,9090",
            "--outbound",
            "--proxy-uid",
            "1337",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "-w -t nat -N BREAKWATER_INBOUND",
        "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 15006",
        "-w -t nat -A BREAKWATER_INBOUND -p tcp --dport 9090 -j REDIRECT --to-ports 15006",
        "-w -t nat -A PREROUTING -p tcp -j BREAKWATER_INBOUND",
        "-w -t nat -A BREAKWATER_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
        "-w -t nat -A BREAKWATER_OUTBOUND -p tcp -j REDIRECT --to-ports 15001",
        "-w -t nat -A OUTPUT -p tcp -j BREAKWATER_OUTBOUND",
    ] {
        assert!(
            script.contains(expected),
            "missing {expected:?} in:\n{script}"
        );
    }
}

#[test]
fn iptables_refuses_options_that_would_capture_its_own_ports_before_running_anything() {
    for (args, says) in [
        (&["--inbound-ports", "8080,15000"][..], "admin port"),
        (&["--outbound"][..], "--proxy-uid"),
    ] {
        let output = std::process::Command::new(crate::support::bin())
            .args(["iptables", "install"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing was run");
    }
}
