#!/usr/bin/env bash
# A burst of clients against a small, healthy service, through breakwater
# (its embedded default), nginx and HAProxy (their defaults), one after the
# other in the same run: how many of 2000 requests each served, how many
# failed, and how long the burst took.
#
# The service is tests/it/fixtures/small_service.py: Python's
# ThreadingHTTPServer as it ships (listen backlog 5, HTTP/1.0), 5 ms per
# request, started fresh for every proxy and burst. Traffic stays on
# 127.0.0.1. Needs h2load (nghttp2-client), nginx and haproxy; breakwater
# is target/release/breakwater (cargo build --release).
#
#   scripts/burst.sh [CLIENTS…]        # default: 40 200 1000
#
# Measured on the 2-core dev machine (release build, one run, 2026-12-07):
#
#   proxy      clients   served  failed  seconds
#   breakwater      40     2000       0     4.13
#   nginx           40     2000       0     4.15
#   haproxy         40     2000       0     4.86
#   breakwater     200     2000       0     3.89
#   nginx          200     1865     135   123.99
#   haproxy        200     1899     101    38.98
#   breakwater    1000     2000       0     3.58
#   nginx         1000      809    1191   123.29
#   haproxy       1000      914    1086    63.25
#
# Before part 9 breakwater served 216 of 2000 at 40 clients and 230 at 200:
# one dial per concurrent request overflowed the service's accept queue.
set -euo pipefail
cd "$(dirname "$0")/.."

clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(40 200 1000)
for tool in h2load nginx haproxy python3; do
  command -v "$tool" >/dev/null || { echo "burst.sh: needs $tool" >&2; exit 1; }
done
breakwater=target/release/breakwater
[ -x "$breakwater" ] || { echo "burst.sh: build $breakwater first (cargo build --release)" >&2; exit 1; }

service_port=18181
proxy_port=18182
admin_port=18183
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most 5 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "burst.sh: nothing listens on port $1" >&2
  return 1
}

cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work;
  proxy_temp_path $work;
  fastcgi_temp_path $work;
  uwsgi_temp_path $work;
  scgi_temp_path $work;
  server {
    listen 127.0.0.1:$proxy_port;
    location / { proxy_pass http://127.0.0.1:$service_port; }
  }
}
EOF
cat >"$work/haproxy.cfg" <<EOF
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend inbound
  bind 127.0.0.1:$proxy_port
  default_backend app
backend app
  server app 127.0.0.1:$service_port
EOF

# Starts proxy $1 in the background; its pid in $proxy_pid.
start_proxy() {
  case "$1" in
    breakwater)
      RUST_LOG=warn "$breakwater" run --upstream "127.0.0.1:$service_port" \
        --listen "127.0.0.1:$proxy_port" --admin "127.0.0.1:$admin_port" \
        >"$work/breakwater.log" 2>&1 &
      ;;
    nginx) nginx -c "$work/nginx.conf" -g 'daemon off;' >"$work/nginx.log" 2>&1 & ;;
    haproxy) haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 & ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
}

printf '%-10s %7s %8s %7s %8s\n' proxy clients served failed seconds
for c in "${clients[@]}"; do
  for proxy in breakwater nginx haproxy; do
    python3 tests/it/fixtures/small_service.py "$service_port" 5 >/dev/null 2>&1 &
    service=$!
    pids+=("$service")
    wait_port "$service_port"
    start_proxy "$proxy"
    wait_port "$proxy_port"
    out=$(h2load --h1 -c "$c" -n 2000 "http://127.0.0.1:$proxy_port/" 2>&1 || true)
    served=$(grep -oE 'status codes: [0-9]+ 2xx' <<<"$out" | grep -oE '[0-9]+' | head -1)
    total=$(grep -oE 'requests: [0-9]+ total' <<<"$out" | grep -oE '[0-9]+' | head -1)
    seconds=$(grep -oE 'finished in [0-9.]+s' <<<"$out" | grep -oE '[0-9.]+')
    printf '%-10s %7s %8s %7s %8s\n' "$proxy" "$c" "${served:-0}" "$(( ${total:-2000} - ${served:-0} ))" "${seconds:-?}"
    kill "$proxy_pid" "$service" 2>/dev/null || true
    wait "$proxy_pid" "$service" 2>/dev/null || true
  done
done
