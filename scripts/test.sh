#!/usr/bin/env bash
# Runs breakwater's whole test suite: unit tests, the integration suite
# (real processes on 127.0.0.1) and the config/fuzz-corpus replays.
# Installs what a fresh Debian machine lacks; needs only the Rust toolchain
# and, for system packages, root or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
# `kill` (procps) sends signals in the integration tests.
command -v kill >/dev/null || need_packages+=(procps)
# Headless Chromium and its WebDriver drive the dashboard tests
# (tests/it/dashboard.rs); they fail, not skip, without them.
command -v chromium >/dev/null || need_packages+=(chromium)
command -v chromedriver >/dev/null || need_packages+=(chromium-driver)
# The interception tests (tests/it/netns.rs) run as root in their own
# network namespaces: `ip netns` and a veth pair (iproute2), both iptables
# backends (iptables), and `setpriv` to drop CAP_NET_ADMIN (util-linux).
export PATH="$PATH:/usr/sbin:/sbin"
command -v ip >/dev/null || need_packages+=(iproute2)
{ command -v iptables-legacy && command -v iptables-nft; } >/dev/null || need_packages+=(iptables)
command -v setpriv >/dev/null || need_packages+=(util-linux)
if [ ${#need_packages[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_packages[@]}"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# test-hooks: fault injection the panic-isolation tests need; release
# builds never have it.
cargo test --locked --features test-hooks "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's own last line is the
# doc-test run, which has no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
