#!/usr/bin/env bash
# Baseline benchmark: sluice vs nginx vs HAProxy, same machine, same load, same backends.
#
# Two nginx backends return a fixed 100-byte body. Three proxies (nginx with 2 workers,
# HAProxy with 2 threads, sluice with 2 threads) balance round robin over them with upstream
# keepalive. Each proxy gets a warm-up, then ROUNDS alternating rounds of
# `wrk -t1 -c$CONNECTIONS -d$DURATION` over HTTP/1.1 keepalive. For every run the proxy's CPU
# time (utime+stime from /proc/PID/stat of all its processes) and RSS are read before and
# after. The table shows medians over rounds and ratios to nginx.
#
# Usage: bench/compare.sh [--write]      (--write also saves the output to bench/RESULTS.md)
# Env:   DURATION=10s CONNECTIONS=50 ROUNDS=3 SLUICE_BIN=target/release/sluice
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
WRITE=${WRITE_RESULTS:-0}
[ "${1:-}" = "--write" ] && WRITE=1

BACKEND1=19001 BACKEND2=19002 NGINX_PORT=19080 HAPROXY_PORT=19081 SLUICE_PORT=19082 SLUICE_ADMIN=19901

install_missing() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}
install_missing
PATH=$PATH:/usr/sbin

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

body=$(printf 'x%.0s' $(seq 1 99))   # 99 bytes + newline = 100-byte body

nginx_common() {
  cat <<EOC
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOC
}
http_temp_paths() {
  cat <<EOC
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  access_log off;
EOC
}

mkdir -p "$tmp/backend" "$tmp/nginx"
{
  echo "worker_processes 1; daemon off; master_process off;"
  nginx_common "$tmp/backend"
  echo "http {"; http_temp_paths "$tmp/backend"
  echo "  keepalive_requests 1000000; keepalive_timeout 300s;"
  for port in $BACKEND1 $BACKEND2; do
    echo "  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 \"$body\n\"; } }"
  done
  echo "}"
} > "$tmp/backend/nginx.conf"

{
  echo "worker_processes 2; daemon off;"
  nginx_common "$tmp/nginx"
  echo "http {"; http_temp_paths "$tmp/nginx"
  echo "  keepalive_requests 1000000;"
  echo "  upstream backends { server 127.0.0.1:$BACKEND1; server 127.0.0.1:$BACKEND2; keepalive 64; }"
  echo "  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://backends;"
  echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  echo "}"
} > "$tmp/nginx/nginx.conf"

cat > "$tmp/haproxy.cfg" <<EOC
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend web
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend backends
backend backends
  balance roundrobin
  http-reuse safe
  server b1 127.0.0.1:$BACKEND1
  server b2 127.0.0.1:$BACKEND2
EOC

cat > "$tmp/sluice.yaml" <<EOC
server: { threads: 2, grace_period: 1s, watch_config: false, upgrade_sock: $tmp/upgrade.sock, pid_file: $tmp/sluice.pid }
admin: { listen: "127.0.0.1:$SLUICE_ADMIN" }
access_log: { path: $tmp/sluice-access.log, format: json }
listeners: [ { name: web, listen: "127.0.0.1:$SLUICE_PORT" } ]
routes: [ { name: bench, listener: web, paths: [ { prefix: / } ], upstream: backends } ]
upstreams:
  - name: backends
    endpoints: ["127.0.0.1:$BACKEND1", "127.0.0.1:$BACKEND2"]
    balance: round_robin
    keepalive: { max_idle: 128, idle_timeout: 60s, max_requests: 1000000 }
EOC

wait_for() {  # URL
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" & pids+=($!)
wait_for "http://127.0.0.1:$BACKEND1/"; wait_for "http://127.0.0.1:$BACKEND2/"

proxies=(nginx haproxy)
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" & pids+=($!); nginx_pid=$!
haproxy -f "$tmp/haproxy.cfg" & pids+=($!); haproxy_pid=$!
wait_for "http://127.0.0.1:$NGINX_PORT/"; wait_for "http://127.0.0.1:$HAPROXY_PORT/"
if [ -x "$SLUICE_BIN" ]; then
  RUST_LOG=warn "$SLUICE_BIN" -c "$tmp/sluice.yaml" 2> "$tmp/sluice.err" & pids+=($!); sluice_pid=$!
  wait_for "http://127.0.0.1:$SLUICE_ADMIN/readyz"; wait_for "http://127.0.0.1:$SLUICE_PORT/"
  proxies+=(sluice)
else
  echo "warning: $SLUICE_BIN not found (run: cargo build --release); benchmarking nginx and haproxy only" >&2
fi

port_of() { case $1 in nginx) echo $NGINX_PORT;; haproxy) echo $HAPROXY_PORT;; sluice) echo $SLUICE_PORT;; esac; }
pid_of() { case $1 in nginx) echo "$nginx_pid";; haproxy) echo "$haproxy_pid";; sluice) echo "$sluice_pid";; esac; }
# The proxy's process and its children (nginx workers).
procs_of() { local p; p=$(pid_of "$1"); echo "$p" $(pgrep -P "$p" || true); }
cpu_ticks() { local t=0 p; for p in $(procs_of "$1"); do
  t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kb() { local t=0 p; for p in $(procs_of "$1"); do
  t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
  if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; printf "%.3f", n }'; }

ticks_per_s=$(getconf CLK_TCK)
results="$tmp/results.tsv"; : > "$results"

run() {  # PROXY DURATION RECORD
  local proxy=$1 port cpu0 cpu1 out
  port=$(port_of "$proxy")
  cpu0=$(cpu_ticks "$proxy")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$2" --latency "http://127.0.0.1:$port/")
  cpu1=$(cpu_ticks "$proxy")
  [ "$3" = record ] || return 0
  local rps p50 p99 requests errors cpu
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks_per_s" 'BEGIN { printf "%.2f", (b - a) / t }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rps" "$p50" "$p99" "$requests" "$cpu" \
    "$(rss_kb "$proxy")" "$errors" >> "$results"
}

for proxy in "${proxies[@]}"; do run "$proxy" 2s warmup; done
for round in $(seq 1 "$ROUNDS"); do
  for proxy in "${proxies[@]}"; do run "$proxy" "$DURATION" record; done
done

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
column_of() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$results"; }
cpu_per_100k() { awk -F'\t' -v p="$1" '$1 == p { printf "%.4f\n", $6 / $5 * 100000 }' "$results"; }

report() {
  echo "# sluice baseline benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*version: //'); haproxy: $(haproxy -v | head -1 | awk '{print $3}'); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
  [ -x "$SLUICE_BIN" ] && echo "- sluice: $("$SLUICE_BIN" --version) (release build)"
  echo "- load: wrk -t1 -c$CONNECTIONS -d$DURATION, HTTP/1.1 keepalive, 100-byte responses from two nginx backends, round robin, $ROUNDS alternating rounds after a 2 s warm-up; all on 127.0.0.1"
  echo "- proxies: nginx 2 workers (upstream keepalive 64), HAProxy 2 threads (http-reuse safe), sluice 2 threads (access log to a file, metrics on)"
  echo "- CPU: utime+stime of the proxy's processes during the run (/proc/PID/stat); RSS after the run"
  echo
  echo "| proxy | req/s | p50 ms | p99 ms | CPU s per 100k req | RSS MB | req/s vs nginx | CPU/100k vs nginx | p99 vs nginx |"
  echo "|---|---|---|---|---|---|---|---|---|"
  local base_rps base_cpu base_p99
  base_rps=$(column_of nginx 2 | median); base_cpu=$(cpu_per_100k nginx | median); base_p99=$(column_of nginx 4 | median)
  for proxy in "${proxies[@]}"; do
    local rps p50 p99 cpu rss
    rps=$(column_of "$proxy" 2 | median); p50=$(column_of "$proxy" 3 | median)
    p99=$(column_of "$proxy" 4 | median); cpu=$(cpu_per_100k "$proxy" | median)
    rss=$(column_of "$proxy" 7 | median)
    awk -v n="$proxy" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v m="$rss" \
        -v br="$base_rps" -v bc="$base_cpu" -v bp="$base_p99" 'BEGIN {
      printf "| %s | %.0f | %.3f | %.3f | %.3f | %.1f | %.2f | %.2f | %.2f |\n",
        n, r, a, b, c, m / 1024, r / br, c / bc, b / bp }'
  done
  echo
  echo "Per run (proxy, req/s, p50 ms, p99 ms, requests, CPU s, RSS kB, wrk errors):"
  echo
  echo '```'
  cat "$results"
  echo '```'
}

if [ "$WRITE" = 1 ]; then report | tee "$repo/bench/RESULTS.md"; else report; fi
