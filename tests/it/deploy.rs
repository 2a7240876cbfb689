//! deploy/: what breakwater itself can check without a cluster or a
//! container engine — the configs the examples ship pass `breakwater
//! check`, and the dashboard and alert rules name only metrics breakwater
//! exports. The Kubernetes schemas, the compose schema, the Dockerfile
//! lint and the PromQL are checked by scripts/check-deploy.sh.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use yaml_rust2::YamlLoader;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn check(name: &str, config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.yaml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(crate::support::bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env("BREAKWATER_ADMIN_TOKEN", "a-token")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_shipped_sidecar_configs_pass_breakwater_check() {
    check(
        "deploy/compose/breakwater.yaml",
        &read("deploy/compose/breakwater.yaml"),
    );
    let manifests = YamlLoader::load_from_str(&read("deploy/kubernetes/configmap.yaml")).unwrap();
    let embedded = manifests
        .iter()
        .find(|doc| doc["kind"].as_str() == Some("ConfigMap"))
        .and_then(|doc| doc["data"]["breakwater.yaml"].as_str())
        .expect("the ConfigMap holds breakwater.yaml");
    check("deploy/kubernetes/configmap.yaml", embedded);
}

/// Every `breakwater_*` metric family named in `text`, histogram series
/// folded into their family.
fn metric_families(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("breakwater_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_and_alerts_name_only_metrics_breakwater_exports() {
    let exported = read("src/metrics.rs");
    let dashboard = read("deploy/grafana/breakwater-dashboard.json");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert_eq!(parsed["uid"], "breakwater");
    let alerts = read("deploy/prometheus/breakwater-alerts.yaml");
    YamlLoader::load_from_str(&alerts).unwrap();
    for (file, text) in [("dashboard", &dashboard), ("alerts", &alerts)] {
        let names = metric_families(text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            let registered = format!("\"{}\"", &name["breakwater_".len()..]);
            assert!(
                exported.contains(&registered),
                "{file} names {name}, which src/metrics.rs does not register"
            );
        }
    }
}
