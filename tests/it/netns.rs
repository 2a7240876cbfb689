//! Transparent interception for real (SPEC §9): a network namespace joined
//! to this one by a veth pair, a plain upstream on port 8080 inside it,
//! breakwater's transparent listener beside it, and `breakwater iptables
//! install` redirecting the namespace's inbound 8080 to breakwater. The
//! test talks to the namespace's address from outside, as a client on
//! another host would.
//!
//! It needs root (`ip netns`, iptables), as CI has. A machine that forbids
//! network namespaces fails these tests loudly rather than passing them
//! silently. Every name is unique per process and test, so parallel runs
//! cannot collide, and a drop guard deletes the namespace — and with it
//! the veth pair, the processes' sockets and every rule in it — however
//! the test ends.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::support::{bin, client, metric_value, Process};

/// A network namespace with a veth link to this one; deleted on drop.
struct Netns {
    name: String,
    /// The host end of the veth pair.
    host_link: String,
    /// The host end's address.
    host_ip: String,
    /// The namespace end's address: what clients call.
    ip: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// Runs a setup command that must succeed; otherwise fails the test with
/// what the system said.
fn must(program: &str, args: &[&str]) {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "`{program} {}` failed — these tests need root and network namespaces \
         (run as root, as CI does; they never pass by skipping): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Netns {
    /// Creates the namespace and the link: 198.18.0.0/15 (RFC 2544's
    /// benchmarking range, never routed), a /30 per namespace chosen from
    /// the process id and a counter.
    fn new() -> Netns {
        let pid = std::process::id();
        let index = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bw{pid}n{index}");
        // Interface names hold at most 15 bytes.
        let host_link = format!("bwh{}n{index}", pid % 10_000_000);
        let peer_link = format!("bwp{}n{index}", pid % 10_000_000);
        let octet2 = 18 + (pid / 256) % 2;
        let octet3 = pid % 256;
        let base = (index % 64) * 4;
        let netns = Netns {
            host_ip: format!("198.{octet2}.{octet3}.{}", base + 1),
            ip: format!("198.{octet2}.{octet3}.{}", base + 2),
            name,
            host_link,
        };
        must("ip", &["netns", "add", &netns.name]);
        // From here on the guard cleans up, even if a step below fails.
        must(
            "ip",
            &[
                "link",
                "add",
                &netns.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &peer_link,
            ],
        );
        must("ip", &["link", "set", &peer_link, "netns", &netns.name]);
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", netns.host_ip),
                "dev",
                &netns.host_link,
            ],
        );
        must("ip", &["link", "set", &netns.host_link, "up"]);
        netns.exec_must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", netns.ip),
            "dev",
            &peer_link,
        ]);
        netns.exec_must(&["ip", "link", "set", &peer_link, "up"]);
        netns.exec_must(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    fn exec_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        all
    }

    /// Runs a command inside the namespace.
    fn exec(&self, args: &[&str]) -> Output {
        run("ip", &self.exec_args(args))
    }

    fn exec_must(&self, args: &[&str]) {
        must("ip", &self.exec_args(args));
    }

    /// Starts a long-running program inside the namespace.
    fn spawn(&self, args: &[&str]) -> Process {
        let mut command = Command::new("ip");
        command.args(self.exec_args(args));
        Process::spawn_command(command)
    }

    /// The namespace's nat table, as `save` (an `iptables-save`) prints
    /// it, without its comment lines (they carry a timestamp).
    fn nat_rules(&self, save: &str) -> String {
        let output = self.exec(&[save, "-t", "nat"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}:{port}{path}", self.ip)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and a
        // veth pair dies with either end. Its rules die with it.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_link]);
    }
}

/// breakwater's config inside the namespace: a transparent listener whose
/// route for port 8080 forwards to the original port on loopback (the
/// built-in `original-dst` upstream), with a breaker that trips quickly;
/// admin on the namespace's address (so it needs a token) and never
/// redirected.
fn sidecar_config(ns_ip: &str) -> String {
    format!(
        "admin:
  listen: \"{ns_ip}:15000\"
  token: netns-test
listeners:
  - name: inbound
    listen: 0.0.0.0:15006
    transparent: true
    routes:
      - name: app
        match: {{port: 8080}}
        circuit_breaker: {{consecutive_failures: 3, open_duration: 1m}}
"
    )
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

async fn metrics(netns: &Netns) -> String {
    get(&netns.url(15000, "/metrics"))
        .await
        .text()
        .await
        .unwrap()
}

fn served(metrics: &str, code: u16, outcome: &str) -> f64 {
    metric_value(
        metrics,
        &format!(
            "breakwater_requests_total{{code=\"{code}\",outcome=\"{outcome}\",route=\"app\"}}"
        ),
    )
    .unwrap_or(0.0)
}

fn breakwater_iptables(netns: &Netns, args: &[&str]) -> Output {
    let mut all = vec![bin(), "iptables"];
    all.extend_from_slice(args);
    let output = netns.exec(&all);
    assert!(
        output.status.success(),
        "breakwater iptables {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn inbound_traffic_is_intercepted_protected_and_released() {
    let netns = Netns::new();
    let upstream = netns.spawn(&[bin(), "sim", "--listen", "0.0.0.0:8080", "--name", "in-ns"]);
    upstream
        .stdout
        .wait_for("listening on", Duration::from_secs(10))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("breakwater.yaml");
    std::fs::write(&config, sidecar_config(&netns.ip)).unwrap();
    let mut sidecar = netns.spawn(&[bin(), "run", "--config", config.to_str().unwrap()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = sidecar.child.try_wait() {
            panic!("breakwater exited ({status}):\n{}", sidecar.stderr.text());
        }
        let healthz = client().get(netns.url(15000, "/healthz")).send().await;
        if healthz.is_ok_and(|response| response.status() == 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breakwater's admin port in the namespace did not answer:\n{}",
            sidecar.stderr.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Before interception: the upstream answers directly.
    let direct = get(&netns.url(8080, "/")).await;
    assert_eq!(direct.headers()["x-sim-name"], "in-ns");
    assert!(!direct.headers().contains_key("x-request-id"));

    let installed = breakwater_iptables(&netns, &["install", "--inbound-ports", "8080"]);
    let commands = String::from_utf8_lossy(&installed.stdout);
    assert!(
        commands.contains("--dport 8080 -j REDIRECT --to-ports 15006"),
        "{commands}"
    );
    // Idempotent: a second install leaves the same table.
    let once = netns.nat_rules("iptables-save");
    breakwater_iptables(&netns, &["install", "--inbound-ports", "8080"]);
    let rules = netns.nat_rules("iptables-save");
    assert_eq!(
        rules
            .lines()
            .filter(|line| line.starts_with('-'))
            .collect::<Vec<_>>(),
        once.lines()
            .filter(|line| line.starts_with('-'))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        rules
            .matches("-A PREROUTING -p tcp -j BREAKWATER_INBOUND")
            .count(),
        1,
        "{rules}"
    );

    // Through breakwater: its request id on the reply (the sim only
    // echoes one), and its metrics count the requests.
    for _ in 0..3 {
        let response = get(&netns.url(8080, "/through")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sim-name"], "in-ns");
        assert!(response.headers().contains_key("x-request-id"));
    }
    assert_eq!(served(&metrics(&netns).await, 200, "success"), 3.0);

    // Make the upstream fail (the control call itself goes through
    // breakwater to the sim); three failures trip the breaker.
    let control = client()
        .post(netns.url(8080, "/__sim/config"))
        .body(r#"{"status": 503}"#)
        .send()
        .await
        .unwrap();
    assert!(control.status().is_success());
    for _ in 0..3 {
        let failed = get(&netns.url(8080, "/fail")).await;
        assert_eq!(failed.status(), 503);
        assert!(!failed.headers().contains_key("x-breakwater-reason"));
    }
    let open = get(&netns.url(8080, "/fail")).await;
    assert_eq!(open.status(), 503);
    assert_eq!(open.headers()["x-breakwater-reason"], "breaker-open");
    assert!(
        !open.headers().contains_key("x-sim-name"),
        "the upstream was not called"
    );
    let page = metrics(&netns).await;
    assert_eq!(
        metric_value(&page, "breakwater_circuit_breaker_state{route=\"app\"}"),
        Some(2.0),
        "{page}"
    );

    // remove: exactly breakwater's chains and jumps go, and traffic goes
    // straight to the upstream again (its 503, not the breaker's).
    breakwater_iptables(&netns, &["remove"]);
    let rules = netns.nat_rules("iptables-save");
    assert!(!rules.contains("BREAKWATER"), "{rules}");
    let released = get(&netns.url(8080, "/after")).await;
    assert_eq!(released.status(), 503);
    assert_eq!(released.headers()["x-sim-name"], "in-ns");
    assert!(!released.headers().contains_key("x-breakwater-reason"));
    assert!(!released.headers().contains_key("x-request-id"));
    let page = metrics(&netns).await;
    assert_eq!(served(&page, 503, "http_5xx"), 3.0, "{page}");

    drop(sidecar);
    drop(upstream);
    let (name, host_link) = (netns.name.clone(), netns.host_link.clone());
    drop(netns);
    let namespaces = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    assert!(!namespaces.contains(&name), "{namespaces}");
    assert!(
        !run("ip", &["link", "show", &host_link]).status.success(),
        "the veth pair is gone"
    );
}

#[tokio::test]
async fn both_iptables_backends_install_and_remove_only_their_own_rules() {
    let netns = Netns::new();
    for (backend, save) in [
        ("legacy", "iptables-legacy-save"),
        ("nft", "iptables-nft-save"),
    ] {
        // Someone else's rule, which remove must leave alone.
        let iptables = format!("iptables-{backend}");
        netns.exec_must(&[
            &iptables,
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            "2222",
            "-j",
            "REDIRECT",
            "--to-ports",
            "22",
        ]);
        breakwater_iptables(
            &netns,
            &[
                "install",
                "--backend",
                backend,
                "--inbound-ports",
                "all",
                "--exclude-inbound-ports",
                "22",
                "--outbound",
                "--proxy-uid",
                "1337",
            ],
        );
        let rules = netns.nat_rules(save);
        for expected in [
            "-A PREROUTING -p tcp -j BREAKWATER_INBOUND",
            "-A OUTPUT -p tcp -j BREAKWATER_OUTBOUND",
            "-A BREAKWATER_INBOUND -p tcp -m tcp --dport 15000 -j RETURN",
            "-A BREAKWATER_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
            "-A BREAKWATER_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            "-A BREAKWATER_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
        ] {
            assert!(
                rules.contains(expected),
                "{backend}: no {expected:?} in\n{rules}"
            );
        }
        // Without --outbound now: the outbound chain goes, the rest stays.
        breakwater_iptables(
            &netns,
            &["install", "--backend", backend, "--inbound-ports", "8080"],
        );
        let rules = netns.nat_rules(save);
        assert!(
            !rules.contains("BREAKWATER_OUTBOUND"),
            "{backend}:\n{rules}"
        );
        assert!(
            rules.contains("--dport 8080 -j REDIRECT --to-ports 15006"),
            "{backend}:\n{rules}"
        );

        breakwater_iptables(&netns, &["remove", "--backend", backend]);
        let rules = netns.nat_rules(save);
        assert!(!rules.contains("BREAKWATER"), "{backend}:\n{rules}");
        assert!(
            rules.contains("--dport 2222 -j REDIRECT --to-ports 22"),
            "{backend}: someone else's rule was removed:\n{rules}"
        );
    }
}

#[tokio::test]
async fn without_cap_net_admin_install_says_so_and_changes_nothing() {
    let netns = Netns::new();
    let before = netns.nat_rules("iptables-nft-save");
    let output = netns.exec(&[
        "setpriv",
        "--inh-caps",
        "-net_admin",
        "--bounding-set",
        "-net_admin",
        bin(),
        "iptables",
        "install",
        "--inbound-ports",
        "8080",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CAP_NET_ADMIN"), "{stderr}");
    assert_eq!(netns.nat_rules("iptables-nft-save"), before);
}
