#!/usr/bin/env bash
# Baseline benchmark: sluice vs nginx vs HAProxy, same machine, same load, same backends.
#
# Two nginx backends return a fixed 100-byte body. Three proxies (nginx with 2 workers,
# HAProxy with 2 threads, sluice with 2 threads) balance round robin over them with upstream
# keepalive. Each proxy gets a warm-up, then ROUNDS alternating rounds of
# `wrk -t1 -c$CONNECTIONS -d$DURATION` over HTTP/1.1 keepalive. For every run the proxy's CPU
# time (utime+stime from /proc/PID/stat of all its processes) is read before and after, and its
# RSS after. The table shows medians over rounds and ratios to nginx.
#
# Usage: bench/compare.sh [--write]      (--write or WRITE_RESULTS=1 also saves to bench/RESULTS.md)
# Env:   DURATION=10s CONNECTIONS=50 ROUNDS=3 SLUICE_BIN=target/release/sluice
#        ports: BACKEND1=19001 BACKEND2=19002 NGINX_PORT=19080 HAPROXY_PORT=19081
#               SLUICE_PORT=19082 SLUICE_ADMIN=19901
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
WRITE=${WRITE_RESULTS:-0}
for arg in "$@"; do
  case $arg in
    --write) WRITE=1 ;;
    *) echo "usage: $0 [--write]" >&2; exit 2 ;;
  esac
done

BACKEND1=${BACKEND1:-19001} BACKEND2=${BACKEND2:-19002}
NGINX_PORT=${NGINX_PORT:-19080} HAPROXY_PORT=${HAPROXY_PORT:-19081}
SLUICE_PORT=${SLUICE_PORT:-19082} SLUICE_ADMIN=${SLUICE_ADMIN:-19901}
PATH=$PATH:/usr/sbin:/sbin

install_missing() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -gt 0 ] || return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # nginx-light is enough where it exists (Debian <= 12); newer releases only ship nginx.
  if [ "${missing[0]}" = nginx ] && apt-cache show nginx-light >/dev/null 2>&1; then
    missing[0]=nginx-light
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
install_missing

ports="$BACKEND1 $BACKEND2 $NGINX_PORT $HAPROXY_PORT $SLUICE_PORT $SLUICE_ADMIN"
for port in $ports; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "port $port is already in use; set BACKEND1/BACKEND2/NGINX_PORT/HAPROXY_PORT/SLUICE_PORT/SLUICE_ADMIN" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
pids=() wrk_pid=
running() {  # true if any of the PIDs is alive and not a zombie
  local p; for p; do [ "$(awk '{ print $3 }' "/proc/$p/stat" 2>/dev/null)" = Z ] || [ ! -e "/proc/$p" ] || return 0; done; return 1
}
cleanup() {
  set +e
  local pid all=() _
  # The nginx master stops its workers itself; collect them anyway in case it does not.
  for pid in "${pids[@]}"; do all+=("$pid" $(pgrep -P "$pid")); done
  [ -z "$wrk_pid" ] || all+=("$wrk_pid")
  [ ${#all[@]} -gt 0 ] || { rm -rf "$tmp"; return; }
  kill "${all[@]}" 2>/dev/null
  for _ in $(seq 1 50); do running "${all[@]}" || break; sleep 0.1; done   # 5 s to exit, then SIGKILL
  for pid in "${all[@]}"; do running "$pid" && kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

body=$(printf 'x%.0s' $(seq 1 99))   # 99 bytes + "\n" = 100-byte body

# --- configs -------------------------------------------------------------------------------

nginx_common() {  # DIR: pid, error log and temp paths inside DIR (no /var/lib/nginx needed)
  cat <<EOC
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOC
}
http_common() {  # DIR
  cat <<EOC
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  access_log off;
  keepalive_requests 1000000; keepalive_timeout 300s;
EOC
}

mkdir -p "$tmp/backend" "$tmp/nginx"
# Backends: one single-process nginx (no master), two server blocks.
{
  echo "worker_processes 1; daemon off; master_process off;"
  nginx_common "$tmp/backend"
  echo "http {"; http_common "$tmp/backend"
  for port in $BACKEND1 $BACKEND2; do
    echo "  server { listen 127.0.0.1:$port; location / { default_type text/plain; return 200 \"$body\n\"; } }"
  done
  echo "}"
} > "$tmp/backend/nginx.conf"

# nginx proxy: master + 2 workers.
{
  echo "worker_processes 2; daemon off;"
  nginx_common "$tmp/nginx"
  echo "http {"; http_common "$tmp/nginx"
  echo "  upstream backends {"
  echo "    server 127.0.0.1:$BACKEND1; server 127.0.0.1:$BACKEND2;"
  echo "    keepalive 64; keepalive_requests 10000; keepalive_timeout 60s;"
  echo "  }"
  echo "  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://backends;"
  echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  echo "}"
} > "$tmp/nginx/nginx.conf"

# HAProxy: one process (no daemon, no master-worker), 2 threads, no logging.
cat > "$tmp/haproxy.cfg" <<EOC
global
  nbthread 2
  maxconn 4096
  pidfile $tmp/haproxy.pid
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
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
listeners: [ { name: web, listen: "127.0.0.1:$SLUICE_PORT", protocol: http } ]
routes: [ { name: bench, listener: web, paths: [ { prefix: / } ], upstream: backends } ]
upstreams:
  - name: backends
    endpoints: ["127.0.0.1:$BACKEND1", "127.0.0.1:$BACKEND2"]
    balance: round_robin
    keepalive: { max_idle: 128, idle_timeout: 60s, max_requests: 10000 }
EOC

# --- start ---------------------------------------------------------------------------------

wait_for() {  # URL PID LOG...: poll URL until 200 (up to 30 s); fail early if PID has exited
  local url=$1 pid=$2; shift 2
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    if ! running "$pid"; then
      echo "process $pid exited before $url answered; its log:" >&2; cat "$@" >&2 2>/dev/null || true; exit 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2; exit 1
}

nginx -e "$tmp/backend/error.log" -p "$tmp/backend" -c "$tmp/backend/nginx.conf" \
  2> "$tmp/backend.err" & pids+=($!); backend_pid=$!
wait_for "http://127.0.0.1:$BACKEND1/" $backend_pid "$tmp/backend.err" "$tmp/backend/error.log"
wait_for "http://127.0.0.1:$BACKEND2/" $backend_pid "$tmp/backend.err" "$tmp/backend/error.log"
size=$(curl -fsS "http://127.0.0.1:$BACKEND1/" | wc -c)
[ "$size" -eq 100 ] || { echo "backend body is $size bytes, expected 100" >&2; exit 1; }

proxies=(nginx haproxy)
nginx -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
  2> "$tmp/nginx.err" & pids+=($!); nginx_pid=$!
haproxy -f "$tmp/haproxy.cfg" > "$tmp/haproxy.err" 2>&1 & pids+=($!); haproxy_pid=$!
wait_for "http://127.0.0.1:$NGINX_PORT/" $nginx_pid "$tmp/nginx.err" "$tmp/nginx/error.log"
wait_for "http://127.0.0.1:$HAPROXY_PORT/" $haproxy_pid "$tmp/haproxy.err"
if [ -x "$SLUICE_BIN" ]; then
  RUST_LOG=warn "$SLUICE_BIN" -c "$tmp/sluice.yaml" > "$tmp/sluice.err" 2>&1 & pids+=($!); sluice_pid=$!
  wait_for "http://127.0.0.1:$SLUICE_ADMIN/readyz" $sluice_pid "$tmp/sluice.err"
  wait_for "http://127.0.0.1:$SLUICE_PORT/" $sluice_pid "$tmp/sluice.err"
  proxies+=(sluice)
else
  echo "warning: $SLUICE_BIN not found (run: cargo build --release); benchmarking nginx and haproxy only" >&2
fi

# --- measure -------------------------------------------------------------------------------

port_of() { case $1 in nginx) echo $NGINX_PORT;; haproxy) echo $HAPROXY_PORT;; sluice) echo $SLUICE_PORT;; esac; }
pid_of() { case $1 in nginx) echo "$nginx_pid";; haproxy) echo "$haproxy_pid";; sluice) echo "$sluice_pid";; esac; }
# The proxy's process and its children (the nginx workers; none for haproxy and sluice).
procs_of() { local p; p=$(pid_of "$1"); echo "$p" $(pgrep -P "$p" || true); }
cpu_ticks() {  # utime + stime (fields 14, 15; the comm field has no spaces for these binaries)
  local p; for p in $(procs_of "$1"); do cat "/proc/$p/stat"; done | awk '{ t += $14 + $15 } END { print t + 0 }'
}
rss_kb() {
  local p; for p in $(procs_of "$1"); do cat "/proc/$p/status"; done | awk '/^VmRSS:/ { t += $2 } END { print t + 0 }'
}
to_ms() {  # wrk latency such as 812.00us, 1.23ms, 1.05s, 1.20m
  awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "ms") n *= 1; else if (u == "s") n *= 1000;
    else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000;
    else { print "cannot parse wrk latency \"" v "\"" > "/dev/stderr"; exit 1 }
    printf "%.3f", n }'
}

ticks_per_s=$(getconf CLK_TCK)
results="$tmp/results.tsv"; : > "$results"

run() {  # PROXY DURATION warmup|record
  local proxy=$1 port cpu0 cpu1 out
  port=$(port_of "$proxy")
  cpu0=$(cpu_ticks "$proxy")
  # In the background so that INT/TERM interrupt `wait` at once and cleanup stops wrk too.
  wrk -t1 -c"$CONNECTIONS" -d"$2" --latency "http://127.0.0.1:$port/" > "$tmp/wrk.out" & wrk_pid=$!
  wait $wrk_pid; wrk_pid=
  out=$(cat "$tmp/wrk.out")
  cpu1=$(cpu_ticks "$proxy")
  [ "$3" = record ] || return 0
  local rps p50 p99 requests errors cpu
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  requests=$(awk '/ requests in / { print $1 }' <<<"$out")
  if [ -z "$rps" ] || [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
    echo "could not parse wrk output for $proxy:" >&2; echo "$out" >&2; exit 1
  fi
  errors=$(awk '/Non-2xx|Socket errors/ { sub(/^ +/, ""); printf "%s; ", $0 }' <<<"$out")
  [ -z "$errors" ] || echo "warning: $proxy: $errors" >&2
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks_per_s" 'BEGIN { printf "%.2f", (b - a) / t }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rps" "$p50" "$p99" "$requests" "$cpu" \
    "$(rss_kb "$proxy")" "${errors:--}" >> "$results"
}

echo "warm-up: ${proxies[*]} (2s each)" >&2
for proxy in "${proxies[@]}"; do run "$proxy" 2s warmup; done
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS: ${proxies[*]} ($DURATION each)" >&2
  for proxy in "${proxies[@]}"; do run "$proxy" "$DURATION" record; done
done

# --- report --------------------------------------------------------------------------------

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
column_of() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$results"; }
cpu_per_100k() { awk -F'\t' -v p="$1" '$1 == p { printf "%.4f\n", $6 / $5 * 100000 }' "$results"; }

report() {
  echo "# sluice baseline benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*version: //'); haproxy: $(haproxy -v | head -1 | awk '{ print $3 }'); $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }' || true)"
  if [ -x "$SLUICE_BIN" ]; then
    echo "- sluice: $("$SLUICE_BIN" --version) ($SLUICE_BIN)"
  else
    echo "- sluice: not run ($SLUICE_BIN not found)"
  fi
  echo "- load: wrk -t1 -c$CONNECTIONS -d$DURATION, HTTP/1.1 keepalive, 100-byte responses from two nginx backends, round robin, $ROUNDS alternating rounds after a 2 s warm-up; all on 127.0.0.1"
  echo "- proxies: nginx 2 workers (upstream keepalive 64), HAProxy 2 threads (http-reuse safe), sluice 2 threads (access log to a file, metrics on)"
  echo "- CPU: utime+stime of the proxy's processes during the run (/proc/PID/stat); RSS (VmRSS summed over the same processes) after the run"
  echo
  echo "| proxy | req/s | p50 ms | p99 ms | CPU s per 100k req | RSS MB | req/s vs nginx | CPU/100k vs nginx | p99 vs nginx |"
  echo "|---|---|---|---|---|---|---|---|---|"
  local base_rps base_cpu base_p99 proxy
  base_rps=$(column_of nginx 2 | median); base_cpu=$(cpu_per_100k nginx | median); base_p99=$(column_of nginx 4 | median)
  for proxy in "${proxies[@]}"; do
    local rps p50 p99 cpu rss
    rps=$(column_of "$proxy" 2 | median); p50=$(column_of "$proxy" 3 | median)
    p99=$(column_of "$proxy" 4 | median); cpu=$(cpu_per_100k "$proxy" | median)
    rss=$(column_of "$proxy" 7 | median)
    awk -v n="$proxy" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v m="$rss" \
        -v br="$base_rps" -v bc="$base_cpu" -v bp="$base_p99" '
      function ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "n/a" }
      BEGIN { printf "| %s | %.0f | %.3f | %.3f | %.3f | %.1f | %s | %s | %s |\n",
        n, r, a, b, c, m / 1024, ratio(r, br), ratio(c, bc), ratio(b, bp) }'
  done
  echo
  echo "Per run, in order (proxy, req/s, p50 ms, p99 ms, requests, CPU s, RSS kB, wrk errors):"
  echo
  echo '```'
  cat "$results"
  echo '```'
}

if [ "$WRITE" = 1 ]; then report | tee "$repo/bench/RESULTS.md"; else report; fi
