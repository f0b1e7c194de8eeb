#!/usr/bin/env bash
# Benchmark: sluice vs nginx vs HAProxy, same machine, same load, same backends.
#
# Two nginx backends return a fixed 100-byte body. The proxies (nginx with 2 workers, HAProxy
# with 2 threads, sluice with 2 threads) pick the backend by consistent hashing of the request
# URI, with upstream keepalive. sluice runs in three forms:
#   sluice       every feature on: routing, consistent hashing, access log to a file, metrics;
#   sluice-lean  features off: round robin, no access log (metrics cannot be turned off);
#   sluice-big   like `sluice` with 100 routes and 1,000 endpoints (127.0.x.y addresses, all
#                served by the same backend nginx) instead of 1 and 2.
# filters+header match (FILTERS=1, issue #16): nginx-filters, haproxy-filters and sluice-filters
#   are nginx, HAProxy and `sluice` with a second route that the header X-Tenant: blue selects
#   and that sets X-Env, removes X-Secret and adds X-Served-By to the response (nginx: maps,
#   HAProxy: an acl and a backend with http-request/http-response rules); their load sends
#   X-Tenant: blue and X-Secret, so every request is the filtered route's. Parts 1, 2, 5 and 6.
# 1. Throughput: each proxy gets a warm-up, then ROUNDS alternating rounds of
#    `wrk -t1 -c$CONNECTIONS -d$DURATION` over HTTP/1.1 keepalive; CPU time (utime+stime from
#    /proc/PID/stat of all its processes) before and after, RSS after. Medians, ratios to nginx.
# 2. Moderate load: one round of `wrk -t1 -c$MODERATE_CONNECTIONS` for the p99 when the
#    machine is not saturated (closed loop: Debian's wrk has no fixed-rate -R; see README.md).
# 3. Idle connections: IDLE_CONNECTIONS keepalive connections, each after one request, held
#    IDLE_HOLD seconds; RSS growth per connection; over HTTP and over TLS (the TLS ports of
#    part 4).
# 4. TLS termination (same ECDSA P-256 certificate, TLS 1.3 only, for every proxy):
#    new connections per second with one request each (wrk -H "Connection: close"; wrk's
#    OpenSSL client resumes sessions, as browsers do, and every proxy allows it), HTTPS
#    keepalive req/s (wrk), and HTTP/2 over TLS req/s (h2load -c$H2_CONNECTIONS
#    -m$H2_STREAMS). One run each, CPU per 100k requests as above.
# 5. Upstream connections opened per 100k proxied requests in the throughput rounds, from
#    the backend nginx's stub_status `accepts` counter.
# 6. Instructions per request: each proxy with one worker/thread under callgrind; after
#    CALLGRIND_WARMUP requests, CALLGRIND_REQUESTS sequential keepalive requests are counted
#    (user-space instructions, all threads). Skipped with CALLGRIND=0.
#
# Usage: bench/compare.sh [--write]      (--write or WRITE_RESULTS=1 also saves to bench/RESULTS.md)
# Env:   DURATION=10s CONNECTIONS=50 ROUNDS=3 SLUICE_BIN=target/release/sluice
#        MODERATE_CONNECTIONS=8 IDLE_CONNECTIONS=5000 IDLE_HOLD=10
#        TLS_CONNECTIONS=20 H2_CONNECTIONS=10 H2_STREAMS=10
#        CALLGRIND=1 CALLGRIND_WARMUP=200 CALLGRIND_REQUESTS=2000 FILTERS=1
#        ports: BACKEND1=19001 BACKEND2=19002 (BACKEND_STATUS=19003) NGINX_PORT=19080 HAPROXY_PORT=19081
#               TLS ports: NGINX_TLS=19443 HAPROXY_TLS=19444 SLUICE_TLS=19445
#               SLUICE_PORT=19082 (and the next two for sluice-lean, sluice-big)
#               SLUICE_ADMIN=19901 (and the next three: sluice-lean, sluice-big, sluice-filters)
#               filters: NGINX_FILTERS=19085 HAPROXY_FILTERS=19086 SLUICE_FILTERS=19087
#               callgrind runs use 19180-19182, 19911
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
ROUNDS=${ROUNDS:-3}
SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
MODERATE_CONNECTIONS=${MODERATE_CONNECTIONS:-8}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
IDLE_HOLD=${IDLE_HOLD:-10}
TLS_CONNECTIONS=${TLS_CONNECTIONS:-20}
H2_CONNECTIONS=${H2_CONNECTIONS:-10}
H2_STREAMS=${H2_STREAMS:-10}
CALLGRIND=${CALLGRIND:-1}
CALLGRIND_WARMUP=${CALLGRIND_WARMUP:-200}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-2000}
FILTERS=${FILTERS:-1}
WRITE=${WRITE_RESULTS:-0}
for arg in "$@"; do
  case $arg in
    --write) WRITE=1 ;;
    *) echo "usage: $0 [--write]" >&2; exit 2 ;;
  esac
done

BACKEND1=${BACKEND1:-19001} BACKEND2=${BACKEND2:-19002} BACKEND_STATUS=${BACKEND_STATUS:-19003}
NGINX_TLS=${NGINX_TLS:-19443} HAPROXY_TLS=${HAPROXY_TLS:-19444} SLUICE_TLS=${SLUICE_TLS:-19445}
NGINX_PORT=${NGINX_PORT:-19080} HAPROXY_PORT=${HAPROXY_PORT:-19081}
SLUICE_PORT=${SLUICE_PORT:-19082} SLUICE_ADMIN=${SLUICE_ADMIN:-19901}
LEAN_PORT=$((SLUICE_PORT + 1)) BIG_PORT=$((SLUICE_PORT + 2))
LEAN_ADMIN=$((SLUICE_ADMIN + 1)) BIG_ADMIN=$((SLUICE_ADMIN + 2))
# sluice-traced (TRACING=1, issue #20): `sluice` with every request traced and exported.
TRACING=${TRACING:-1}
TRACED_PORT=${TRACED_PORT:-19088} TRACED_ADMIN=${TRACED_ADMIN:-19915}
# sluice-global (GLOBAL_LIMIT=1, issue #21): `sluice` with a fleet-wide rate limit counted in a
# redis-server started here, high enough to admit every request: the cost of the limit itself.
GLOBAL_LIMIT=${GLOBAL_LIMIT:-1}
GLOBAL_PORT=${GLOBAL_PORT:-19089} GLOBAL_ADMIN=${GLOBAL_ADMIN:-19916} REDIS_PORT=${REDIS_PORT:-19379}
NGINX_FILTERS=${NGINX_FILTERS:-19085} HAPROXY_FILTERS=${HAPROXY_FILTERS:-19086} SLUICE_FILTERS=${SLUICE_FILTERS:-19087}
FILTERS_ADMIN=$((SLUICE_ADMIN + 3))
CG_NGINX=19180 CG_HAPROXY=19181 CG_SLUICE=19182 CG_ADMIN=19911
PATH=$PATH:/usr/sbin:/sbin
# Idle-connection test: the client, and every proxy started from here, need the descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
[ "$FD_LIMIT" -ge $((2 * IDLE_CONNECTIONS + 200)) ] || {
  echo "open file limit $FD_LIMIT is too low for IDLE_CONNECTIONS=$IDLE_CONNECTIONS" >&2; exit 1; }

install_missing() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v python3 >/dev/null || missing+=(python3)
  [ "$CALLGRIND" = 0 ] || command -v valgrind >/dev/null || missing+=(valgrind)
  [ "$GLOBAL_LIMIT" = 0 ] || command -v redis-server >/dev/null || missing+=(redis-server)
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

ports="$BACKEND1 $BACKEND2 $BACKEND_STATUS $NGINX_TLS $HAPROXY_TLS $SLUICE_TLS $NGINX_PORT $HAPROXY_PORT $SLUICE_PORT $LEAN_PORT $BIG_PORT $SLUICE_ADMIN $LEAN_ADMIN $BIG_ADMIN"
[ "$FILTERS" = 0 ] || ports+=" $NGINX_FILTERS $HAPROXY_FILTERS $SLUICE_FILTERS $FILTERS_ADMIN"
[ "$TRACING" = 0 ] || ports+=" $TRACED_PORT $TRACED_ADMIN"
[ "$GLOBAL_LIMIT" = 0 ] || ports+=" $GLOBAL_PORT $GLOBAL_ADMIN $REDIS_PORT"
for port in $ports; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "port $port is already in use; set BACKEND1/BACKEND2/NGINX_PORT/HAPROXY_PORT/SLUICE_PORT/SLUICE_ADMIN/*_FILTERS" >&2
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
worker_rlimit_nofile $FD_LIMIT;
events { worker_connections 16384; }
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

mkdir -p "$tmp/backend" "$tmp/nginx" "$tmp/nginx-filters"
# Backends: one single-process nginx (no master), two server blocks, on every loopback
# address (sluice-big's 1,000 endpoints are 127.0.x.y addresses of the first one).
{
  echo "worker_processes 1; daemon off; master_process off;"
  nginx_common "$tmp/backend"
  echo "http {"; http_common "$tmp/backend"
  for port in $BACKEND1 $BACKEND2; do
    # /v1/traces: the OTLP collector sluice-traced exports to (takes the spans, answers 200).
    echo "  server { listen $port; location / { default_type text/plain; return 200 \"$body\n\"; } location = /v1/traces { return 200; } }"
  done
  # Connections accepted from the proxies: upstream connections opened.
  echo "  server { listen 127.0.0.1:$BACKEND_STATUS; location / { stub_status; } }"
  echo "}"
} > "$tmp/backend/nginx.conf"

# TLS: one ECDSA P-256 certificate for every proxy (HAProxy wants certificate and key in
# one file).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$tmp/tls-key.pem" -out "$tmp/tls-cert.pem" 2> "$tmp/openssl.err"
cat "$tmp/tls-cert.pem" "$tmp/tls-key.pem" > "$tmp/tls-combined.pem"

nginx_proxy_conf() {  # DIR PORT WORKERS [MASTER [TLS_PORT [filters]]]
  local filters=""
  echo "worker_processes $3; daemon off;${4:+ master_process $4;}"
  nginx_common "$1"
  echo "http {"; http_common "$1"
  echo "  upstream backends {"
  echo "    hash \$request_uri consistent;"
  echo "    server 127.0.0.1:$BACKEND1; server 127.0.0.1:$BACKEND2;"
  echo "    keepalive 64; keepalive_requests 10000; keepalive_timeout 60s;"
  echo "  }"
  if [ "${6:-}" = filters ]; then
    # sluice's "filtered" route: X-Tenant: blue gets X-Env set, X-Secret removed and X-Served-By
    # on the response; any other request passes as on the plain route.
    echo "  map \$http_x_tenant \$filtered_env { blue prod; default \$http_x_env; }"
    echo "  map \$http_x_tenant \$filtered_secret { blue \"\"; default \$http_x_secret; }"
    echo "  map \$http_x_tenant \$filtered_by { blue sluice; default \"\"; }"
    filters=" proxy_set_header X-Env \$filtered_env; proxy_set_header X-Secret \$filtered_secret;"
    filters+=" add_header X-Served-By \$filtered_by always;"
  fi
  echo "  server { listen 127.0.0.1:$2; location / { proxy_pass http://backends;"
  echo "    proxy_http_version 1.1; proxy_set_header Connection \"\";$filters } }"
  if [ -n "${5:-}" ]; then
    echo "  server { listen 127.0.0.1:$5 ssl http2; ssl_protocols TLSv1.3;"
    echo "    ssl_certificate $tmp/tls-cert.pem; ssl_certificate_key $tmp/tls-key.pem;"
    echo "    location / { proxy_pass http://backends;"
    echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  fi
  echo "}"
}
# nginx proxy: master + 2 workers.
nginx_proxy_conf "$tmp/nginx" "$NGINX_PORT" 2 on "$NGINX_TLS" > "$tmp/nginx/nginx.conf"
nginx_proxy_conf "$tmp/nginx-filters" "$NGINX_FILTERS" 2 on "" filters > "$tmp/nginx-filters/nginx.conf"

# HAProxy: one process (no daemon, no master-worker), 2 threads, no logging.
haproxy_conf() {  # PORT THREADS [TLS_PORT [filters]]
  local tls_bind="" use_filtered=""
  [ -z "${3:-}" ] || tls_bind="  bind 127.0.0.1:$3 ssl crt $tmp/tls-combined.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3"
  [ "${4:-}" != filters ] || use_filtered=$'  acl tenant_blue req.hdr(x-tenant) -m str blue\n  use_backend filtered if tenant_blue'
  cat <<EOC
global
  nbthread $2
  maxconn $(( (FD_LIMIT - 100) / 2 ))
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend web
  bind 127.0.0.1:$1
$tls_bind
$use_filtered
  default_backend backends
backend backends
  balance uri
  hash-type consistent
  http-reuse safe
  server b1 127.0.0.1:$BACKEND1
  server b2 127.0.0.1:$BACKEND2
EOC
  [ -n "$use_filtered" ] || return 0
  # sluice's "filtered" route (see nginx_proxy_conf).
  cat <<EOC
backend filtered
  balance uri
  hash-type consistent
  http-reuse safe
  http-request set-header X-Env prod
  http-request del-header X-Secret
  http-response add-header X-Served-By sluice
  server b1 127.0.0.1:$BACKEND1
  server b2 127.0.0.1:$BACKEND2
EOC
}
haproxy_conf "$HAPROXY_PORT" 2 "$HAPROXY_TLS" > "$tmp/haproxy.cfg"
haproxy_conf "$HAPROXY_FILTERS" 2 "" filters > "$tmp/haproxy-filters.cfg"

sluice_conf() {  # NAME PORT ADMIN THREADS FORM (full | lean | big | filters: full + the filtered route)
  local name=$1 port=$2 admin=$3 threads=$4 form=$5 log balance endpoints i tls_listener="" tls_route=""
  log="{ path: $tmp/$name-access.log, format: json }"
  balance=$'balance: consistent_hash\n    hash_key: "$request_uri"'
  endpoints="\"127.0.0.1:$BACKEND1\", \"127.0.0.1:$BACKEND2\""
  [ "$form" = lean ] && log="{ path: \"off\" }" && balance="balance: round_robin"
  if [ "$form" = full ] && [ "$name" = sluice ]; then
    # keepalive.max_requests raised as nginx's keepalive_requests is: h2load does not
    # reconnect after a GOAWAY, so a connection closed at 10,000 requests ends its share.
    tls_listener=", { name: webtls, listen: \"127.0.0.1:$SLUICE_TLS\", keepalive: { max_requests: 1000000 }, tls: { certificates: [ { cert: \"$tmp/tls-cert.pem\", key: \"$tmp/tls-key.pem\" } ] } }"
    tls_route="  - { name: bench-tls, listener: webtls, paths: [ { prefix: / } ], upstream: backends }"
  fi
  if [ "$form" = big ]; then
    endpoints="\"127.0.0.1:$BACKEND1\", \"127.0.0.1:$BACKEND2\""
    for i in $(seq 2 999); do endpoints+=", \"127.0.$((i / 250)).$((i % 250 + 2)):$BACKEND1\""; done
  fi
  # Every request sampled and its spans exported to the backend nginx (the worst case).
  [ "$form" != traced ] || echo "tracing: { otlp_endpoint: \"http://127.0.0.1:$BACKEND1/v1/traces\", sampling: { ratio: 1 } }"
  # Every request counted against one key (wrk's address); nothing is refused.
  local limit=""
  if [ "$form" = global ]; then
    echo "redis: { address: \"127.0.0.1:$REDIS_PORT\" }"
    limit=", global_rate_limit: { requests: 1000000000, window: 1s, by: client_ip }"
  fi
  cat <<EOC
server: { threads: $threads, grace_period: 1s, drain_delay: 0s, watch_config: false, upgrade_sock: $tmp/$name-upgrade.sock, pid_file: $tmp/$name.pid }
admin: { listen: "127.0.0.1:$admin" }
access_log: $log
listeners: [ { name: web, listen: "127.0.0.1:$port", protocol: http }$tls_listener ]
routes:
EOC
  [ -z "$tls_route" ] || echo "$tls_route"
  [ "$form" != filters ] || echo "  - { name: filtered, listener: web, headers: [ { name: x-tenant, exact: blue } ], upstream: backends, request_headers: { set: { x-env: prod }, remove: [ x-secret ] }, response_headers: { add: { x-served-by: sluice } } }"
  if [ "$form" = big ]; then
    for i in $(seq 1 99); do
      echo "  - { name: r$i, listener: web, hosts: [ \"app$i.bench.test\" ], paths: [ { prefix: /api/v$i }, { regex: \"^/static/$i/.*[.]css$\" } ], upstream: backends }"
    done
  fi
  cat <<EOC
  - { name: bench, listener: web, paths: [ { prefix: / } ], upstream: backends$limit }
upstreams:
  - name: backends
    endpoints: [ $endpoints ]
    $balance
    keepalive: { max_idle: 128, idle_timeout: 60s, max_requests: 10000 }
EOC
}
sluice_conf sluice "$SLUICE_PORT" "$SLUICE_ADMIN" 2 full > "$tmp/sluice.yaml"
sluice_conf sluice-lean "$LEAN_PORT" "$LEAN_ADMIN" 2 lean > "$tmp/sluice-lean.yaml"
sluice_conf sluice-big "$BIG_PORT" "$BIG_ADMIN" 2 big > "$tmp/sluice-big.yaml"
sluice_conf sluice-filters "$SLUICE_FILTERS" "$FILTERS_ADMIN" 2 filters > "$tmp/sluice-filters.yaml"
sluice_conf sluice-traced "$TRACED_PORT" "$TRACED_ADMIN" 2 traced > "$tmp/sluice-traced.yaml"
sluice_conf sluice-global "$GLOBAL_PORT" "$GLOBAL_ADMIN" 2 global > "$tmp/sluice-global.yaml"

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
declare -A proxy_pid
proxy_pid[nginx]=$nginx_pid proxy_pid[haproxy]=$haproxy_pid
if [ -x "$SLUICE_BIN" ]; then
  forms="sluice:$SLUICE_PORT:$SLUICE_ADMIN sluice-lean:$LEAN_PORT:$LEAN_ADMIN sluice-big:$BIG_PORT:$BIG_ADMIN"
  [ "$TRACING" = 0 ] || forms+=" sluice-traced:$TRACED_PORT:$TRACED_ADMIN"
  if [ "$GLOBAL_LIMIT" != 0 ]; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      > "$tmp/redis.err" 2>&1 & pids+=($!)
    for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    forms+=" sluice-global:$GLOBAL_PORT:$GLOBAL_ADMIN"
  fi
  for form in $forms; do
    IFS=: read -r name port admin <<<"$form"
    RUST_LOG=warn "$SLUICE_BIN" -c "$tmp/$name.yaml" > "$tmp/$name.err" 2>&1 & pids+=($!); proxy_pid[$name]=$!
    wait_for "http://127.0.0.1:$admin/readyz" "${proxy_pid[$name]}" "$tmp/$name.err"
    wait_for "http://127.0.0.1:$port/" "${proxy_pid[$name]}" "$tmp/$name.err"
    proxies+=("$name")
  done
else
  echo "warning: $SLUICE_BIN not found (run: cargo build --release); benchmarking nginx and haproxy only" >&2
fi
if [ "$FILTERS" != 0 ]; then
  nginx -e "$tmp/nginx-filters/error.log" -p "$tmp/nginx-filters" -c "$tmp/nginx-filters/nginx.conf" \
    2> "$tmp/nginx-filters.err" & pids+=($!); proxy_pid[nginx-filters]=$!
  haproxy -f "$tmp/haproxy-filters.cfg" > "$tmp/haproxy-filters.err" 2>&1 & pids+=($!); proxy_pid[haproxy-filters]=$!
  wait_for "http://127.0.0.1:$NGINX_FILTERS/" "${proxy_pid[nginx-filters]}" "$tmp/nginx-filters.err" "$tmp/nginx-filters/error.log"
  wait_for "http://127.0.0.1:$HAPROXY_FILTERS/" "${proxy_pid[haproxy-filters]}" "$tmp/haproxy-filters.err"
  proxies+=(nginx-filters haproxy-filters)
  if [ -x "$SLUICE_BIN" ]; then
    RUST_LOG=warn "$SLUICE_BIN" -c "$tmp/sluice-filters.yaml" > "$tmp/sluice-filters.err" 2>&1 & pids+=($!); proxy_pid[sluice-filters]=$!
    wait_for "http://127.0.0.1:$FILTERS_ADMIN/readyz" "${proxy_pid[sluice-filters]}" "$tmp/sluice-filters.err"
    wait_for "http://127.0.0.1:$SLUICE_FILTERS/" "${proxy_pid[sluice-filters]}" "$tmp/sluice-filters.err"
    proxies+=(sluice-filters)
  fi
fi

# --- measure -------------------------------------------------------------------------------

port_of() {
  case $1 in nginx) echo $NGINX_PORT;; haproxy) echo $HAPROXY_PORT;; sluice) echo $SLUICE_PORT;;
    sluice-lean) echo $LEAN_PORT;; sluice-big) echo $BIG_PORT;; nginx-filters) echo $NGINX_FILTERS;;
    haproxy-filters) echo $HAPROXY_FILTERS;; sluice-filters) echo $SLUICE_FILTERS;;
    sluice-traced) echo $TRACED_PORT;; sluice-global) echo $GLOBAL_PORT;; esac
}
pid_of() { echo "${proxy_pid[$1]}"; }
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

tls_port_of() {
  case $1 in nginx) echo $NGINX_TLS;; haproxy) echo $HAPROXY_TLS;; sluice) echo $SLUICE_TLS;; esac
}
backend_accepts() {  # connections the backend nginx has accepted so far (stub_status)
  curl -fsS --max-time 5 "http://127.0.0.1:$BACKEND_STATUS/" | awk 'NR == 3 { print $1 }'
}

# wrk's report: requests/s, requests made, and its error lines (empty when none).
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' <<<"$1"; }
wrk_requests() { awk '/ requests in / { print $1 }' <<<"$1"; }
wrk_errors() { awk '/Non-2xx|Socket errors/ { sub(/^ +/, ""); printf "%s; ", $0 }' <<<"$1"; }

# The load on the filters+header match forms: the header their route matches, and one it removes.
filter_headers=(-H "X-Tenant: blue" -H "X-Secret: 1")
served_by() {  # PORT [CURL ARGS...]: the response's X-Served-By (set by the filtered route only)
  local port=$1; shift
  curl -fsS -o /dev/null -D - --max-time 5 "$@" "http://127.0.0.1:$port/" |
    awk -F': *' 'tolower($1) == "x-served-by" { sub(/\r$/, "", $2); print $2 }'
}
for proxy in "${proxies[@]}"; do
  [[ $proxy == *-filters ]] || continue
  if [ "$(served_by "$(port_of "$proxy")" "${filter_headers[@]}")" != sluice ] ||
     [ -n "$(served_by "$(port_of "$proxy")")" ]; then
    echo "$proxy: the load's headers do not select the filtered route, or not only they do" >&2; exit 1
  fi
done

ticks_per_s=$(getconf CLK_TCK)
results="$tmp/results.tsv"; : > "$results"

run() {  # PROXY DURATION warmup|record [CONNECTIONS [RESULTS]]
  local proxy=$1 port cpu0 cpu1 out connections=${4:-$CONNECTIONS} into=${5:-$results} accepts0 accepts1 headers=()
  port=$(port_of "$proxy")
  [[ $proxy != *-filters ]] || headers=("${filter_headers[@]}")
  accepts0=$(backend_accepts)
  cpu0=$(cpu_ticks "$proxy")
  # In the background so that INT/TERM interrupt `wait` at once and cleanup stops wrk too.
  wrk -t1 -c"$connections" -d"$2" --latency "${headers[@]}" "http://127.0.0.1:$port/" > "$tmp/wrk.out" & wrk_pid=$!
  wait $wrk_pid; wrk_pid=
  out=$(cat "$tmp/wrk.out")
  cpu1=$(cpu_ticks "$proxy")
  # Less one: the status request itself is a new connection.
  accepts1=$(( $(backend_accepts) - 1 ))
  [ "$3" = record ] || return 0
  local rps p50 p99 requests errors cpu
  rps=$(wrk_rps "$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  requests=$(wrk_requests "$out")
  if [ -z "$rps" ] || [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
    echo "could not parse wrk output for $proxy:" >&2; echo "$out" >&2; exit 1
  fi
  errors=$(wrk_errors "$out")
  [ -z "$errors" ] || echo "warning: $proxy: $errors" >&2
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks_per_s" 'BEGIN { printf "%.2f", (b - a) / t }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$rps" "$p50" "$p99" "$requests" "$cpu" \
    "$(rss_kb "$proxy")" "${errors:--}" "$((accepts1 - accepts0))" >> "$into"
}

tls_results="$tmp/tls.tsv"; : > "$tls_results"
run_tls() {  # PROXY new|keepalive|h2 warmup|record
  local proxy=$1 kind=$2 port cpu0 cpu1 out rps requests errors seconds
  port=$(tls_port_of "$proxy")
  seconds=${DURATION%s}
  [ "$3" = record ] || seconds=2
  cpu0=$(cpu_ticks "$proxy")
  case $kind in
    new) wrk -t1 -c"$TLS_CONNECTIONS" -d"${seconds}s" -H "Connection: close" "https://127.0.0.1:$port/" > "$tmp/tls.out" & wrk_pid=$! ;;
    keepalive) wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" "https://127.0.0.1:$port/" > "$tmp/tls.out" & wrk_pid=$! ;;
    h2) h2load -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -D"$seconds" "https://127.0.0.1:$port/" > "$tmp/tls.out" & wrk_pid=$! ;;
  esac
  wait $wrk_pid; wrk_pid=
  cpu1=$(cpu_ticks "$proxy")
  [ "$3" = record ] || return 0
  out=$(cat "$tmp/tls.out")
  if [ "$kind" = h2 ]; then
    rps=$(awk '/^finished in/ { sub(/,/, "", $4); print $4 }' <<<"$out")
    requests=$(awk '/^requests:/ { print $8 }' <<<"$out")
    errors=$(awk '/^requests:/ && ($10 + $12 + $14) > 0 { printf "%s failed, %s errored, %s timeout", $10, $12, $14 }' <<<"$out")
  else
    rps=$(wrk_rps "$out")
    requests=$(wrk_requests "$out")
    errors=$(wrk_errors "$out")
  fi
  if [ -z "$rps" ] || [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
    echo "could not parse the $kind TLS output for $proxy:" >&2; echo "$out" >&2; exit 1
  fi
  [ -z "$errors" ] || echo "warning: $proxy ($kind TLS): $errors" >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$kind" "$rps" "$requests" \
    "$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks_per_s" 'BEGIN { printf "%.2f", (b - a) / t }')" "${errors:--}" >> "$tls_results"
}

echo "warm-up: ${proxies[*]} (2s each)" >&2
for proxy in "${proxies[@]}"; do run "$proxy" 2s warmup; done
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS: ${proxies[*]} ($DURATION each)" >&2
  for proxy in "${proxies[@]}"; do run "$proxy" "$DURATION" record; done
done

moderate="$tmp/moderate.tsv"; : > "$moderate"
echo "moderate load: ${proxies[*]} (-c$MODERATE_CONNECTIONS, $DURATION each)" >&2
for proxy in "${proxies[@]}"; do run "$proxy" "$DURATION" record "$MODERATE_CONNECTIONS" "$moderate"; done

tls_proxies=(nginx haproxy)
[[ " ${proxies[*]} " == *" sluice "* ]] && tls_proxies+=(sluice)
for proxy in "${tls_proxies[@]}"; do
  echo "TLS: $proxy (new connections, keepalive, HTTP/2; $DURATION each)" >&2
  run_tls "$proxy" keepalive warmup
  for kind in new keepalive h2; do run_tls "$proxy" "$kind" record; done
done

idle="$tmp/idle.tsv"; : > "$idle"
idle_runs=()
# Not the filters+header match forms: an idle connection has no route.
for proxy in "${proxies[@]}"; do [[ $proxy == *-filters ]] || idle_runs+=("$proxy:http"); done
for proxy in "${tls_proxies[@]}"; do idle_runs+=("$proxy:tls"); done
for idle_run in "${idle_runs[@]}"; do
  IFS=: read -r proxy transport <<<"$idle_run"
  echo "idle connections: $proxy over $transport ($IDLE_CONNECTIONS held ${IDLE_HOLD}s)" >&2
  before=$(rss_kb "$proxy")
  if [ "$transport" = tls ]; then
    hold_args=(--tls "$(tls_port_of "$proxy")")
  else
    hold_args=("$(port_of "$proxy")")
  fi
  rm -f "$tmp/hold.out"
  python3 "$here/hold_connections.py" "${hold_args[@]}" "$IDLE_CONNECTIONS" "$IDLE_HOLD" > "$tmp/hold.out" &
  holder=$!
  for _ in $(seq 1 600); do grep -q ready "$tmp/hold.out" 2>/dev/null && break; running $holder || break; sleep 0.1; done
  grep -q ready "$tmp/hold.out" || { echo "holding connections to $proxy failed" >&2; exit 1; }
  sleep 1
  held=$(rss_kb "$proxy")
  wait $holder
  printf '%s\t%s\t%s\t%.2f\n' "$proxy ($transport)" "$before" "$held" \
    "$(awk -v a="$before" -v b="$held" -v n="$IDLE_CONNECTIONS" 'BEGIN { print (b - a) / n }')" >> "$idle"
done

# Instructions per request under callgrind: one worker/thread each, on their own ports.
callgrind="$tmp/callgrind.tsv"; : > "$callgrind"
count_instructions() {  # NAME PORT PID [HEADER...]: Ir of CALLGRIND_REQUESTS requests, all threads
  local name=$1 port=$2 pid=$3 out
  shift 3
  pids+=("$pid")
  for _ in $(seq 1 600); do curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.2; done
  python3 "$here/sequential_requests.py" "$port" "$CALLGRIND_WARMUP" "$@"
  callgrind_control -i on "$pid" > /dev/null
  python3 "$here/sequential_requests.py" "$port" "$CALLGRIND_REQUESTS" "$@"
  callgrind_control -i off "$pid" > /dev/null
  callgrind_control -d "$pid" > /dev/null
  local dump
  for _ in $(seq 1 300); do
    dump=$(ls "$tmp/cg-$name".out.*.1 2>/dev/null | head -1)
    [ -n "$dump" ] && grep -q '^totals:' "$dump" && break
    sleep 0.1
  done
  out=$(awk '/^totals:/ { print $2; exit }' "$dump")
  printf '%s\t%s\t%.0f\n' "$name" "$out" "$(awk -v t="$out" -v n="$CALLGRIND_REQUESTS" 'BEGIN { print t / n }')" >> "$callgrind"
  # The counts are dumped; a graceful stop under valgrind can take long (sluice drains).
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}
if [ "$CALLGRIND" != 0 ]; then
  vg=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no)
  mkdir -p "$tmp/cg-nginx"
  nginx_proxy_conf "$tmp/cg-nginx" "$CG_NGINX" 1 off > "$tmp/cg-nginx/nginx.conf"
  echo "callgrind: nginx (1 worker)" >&2
  "${vg[@]}" --callgrind-out-file="$tmp/cg-nginx.out.%p" nginx -e "$tmp/cg-nginx/error.log" \
    -p "$tmp/cg-nginx" -c "$tmp/cg-nginx/nginx.conf" 2> "$tmp/cg-nginx.err" &
  count_instructions nginx "$CG_NGINX" $!
  haproxy_conf "$CG_HAPROXY" 1 > "$tmp/cg-haproxy.cfg"
  echo "callgrind: haproxy (1 thread)" >&2
  "${vg[@]}" --callgrind-out-file="$tmp/cg-haproxy.out.%p" haproxy -f "$tmp/cg-haproxy.cfg" 2> "$tmp/cg-haproxy.err" &
  count_instructions haproxy "$CG_HAPROXY" $!
  if [ "$FILTERS" != 0 ]; then
    mkdir -p "$tmp/cg-nginx-filters"
    nginx_proxy_conf "$tmp/cg-nginx-filters" "$CG_NGINX" 1 off "" filters > "$tmp/cg-nginx-filters/nginx.conf"
    echo "callgrind: nginx-filters (1 worker)" >&2
    "${vg[@]}" --callgrind-out-file="$tmp/cg-nginx-filters.out.%p" nginx -e "$tmp/cg-nginx-filters/error.log" \
      -p "$tmp/cg-nginx-filters" -c "$tmp/cg-nginx-filters/nginx.conf" 2> "$tmp/cg-nginx-filters.err" &
    count_instructions nginx-filters "$CG_NGINX" $! "X-Tenant: blue" "X-Secret: 1"
    haproxy_conf "$CG_HAPROXY" 1 "" filters > "$tmp/cg-haproxy-filters.cfg"
    echo "callgrind: haproxy-filters (1 thread)" >&2
    "${vg[@]}" --callgrind-out-file="$tmp/cg-haproxy-filters.out.%p" haproxy -f "$tmp/cg-haproxy-filters.cfg" 2> "$tmp/cg-haproxy-filters.err" &
    count_instructions haproxy-filters "$CG_HAPROXY" $! "X-Tenant: blue" "X-Secret: 1"
  fi
  if [ -x "$SLUICE_BIN" ]; then
    sluice_conf cg-sluice "$CG_SLUICE" "$CG_ADMIN" 1 full > "$tmp/cg-sluice.yaml"
    echo "callgrind: sluice (1 thread, every feature on)" >&2
    RUST_LOG=warn "${vg[@]}" --callgrind-out-file="$tmp/cg-sluice.out.%p" "$SLUICE_BIN" -c "$tmp/cg-sluice.yaml" 2> "$tmp/cg-sluice.err" &
    count_instructions sluice "$CG_SLUICE" $!
    if [ "$TRACING" != 0 ]; then
      sluice_conf cg-sluice-traced "$CG_SLUICE" "$CG_ADMIN" 1 traced > "$tmp/cg-sluice-traced.yaml"
      echo "callgrind: sluice-traced (1 thread, every request traced and exported)" >&2
      RUST_LOG=warn "${vg[@]}" --callgrind-out-file="$tmp/cg-sluice-traced.out.%p" "$SLUICE_BIN" -c "$tmp/cg-sluice-traced.yaml" 2> "$tmp/cg-sluice-traced.err" &
      count_instructions sluice-traced "$CG_SLUICE" $!
    fi
    if [ "$GLOBAL_LIMIT" != 0 ]; then
      sluice_conf cg-sluice-global "$CG_SLUICE" "$CG_ADMIN" 1 global > "$tmp/cg-sluice-global.yaml"
      echo "callgrind: sluice-global (1 thread, every request counted by the fleet-wide limit)" >&2
      RUST_LOG=warn "${vg[@]}" --callgrind-out-file="$tmp/cg-sluice-global.out.%p" "$SLUICE_BIN" -c "$tmp/cg-sluice-global.yaml" 2> "$tmp/cg-sluice-global.err" &
      count_instructions sluice-global "$CG_SLUICE" $!
    fi
    if [ "$FILTERS" != 0 ]; then
      sluice_conf cg-sluice-filters "$CG_SLUICE" "$CG_ADMIN" 1 filters > "$tmp/cg-sluice-filters.yaml"
      echo "callgrind: sluice-filters (1 thread, the filtered route hit)" >&2
      RUST_LOG=warn "${vg[@]}" --callgrind-out-file="$tmp/cg-sluice-filters.out.%p" "$SLUICE_BIN" -c "$tmp/cg-sluice-filters.yaml" 2> "$tmp/cg-sluice-filters.err" &
      count_instructions sluice-filters "$CG_SLUICE" $! "X-Tenant: blue" "X-Secret: 1"
    fi
  fi
fi

# --- report --------------------------------------------------------------------------------

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
column_of() { awk -F'\t' -v p="$1" -v c="$2" '$1 == p { print $c }' "$results"; }
cpu_per_100k() { awk -F'\t' -v p="$1" '$1 == p { printf "%.4f\n", $6 / $5 * 100000 }' "$results"; }

ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.2f", x / y; else printf "n/a" }'; }

report() {
  echo "# sluice benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*version: //'); haproxy: $(haproxy -v | head -1 | awk '{ print $3 }'); $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }' || true); $(valgrind --version 2>/dev/null || echo 'valgrind: not run')"
  if [ -x "$SLUICE_BIN" ]; then
    echo "- sluice: $("$SLUICE_BIN" --version) ($SLUICE_BIN)"
  else
    echo "- sluice: not run ($SLUICE_BIN not found)"
  fi
  echo "- load: wrk -t1 -c$CONNECTIONS -d$DURATION, HTTP/1.1 keepalive, 100-byte responses from two nginx backends, $ROUNDS alternating rounds after a 2 s warm-up; all on 127.0.0.1"
  echo "- proxies: backend chosen by consistent hashing of the URI with upstream keepalive; nginx 2 workers (hash \$request_uri consistent, keepalive 64), HAProxy 2 threads (balance uri, hash-type consistent, http-reuse safe), sluice 2 threads: \`sluice\` = consistent_hash on \$request_uri + access log to a file + metrics; \`sluice-lean\` = round robin, access log off; \`sluice-big\` = \`sluice\` with 100 routes (hosts, prefixes, regexes) and 1,000 endpoints; \`sluice-traced\` = \`sluice\` with \`tracing:\` on, every request sampled and its 2 spans exported over OTLP/HTTP to the backend nginx; \`sluice-global\` = \`sluice\` with a fleet-wide rate limit (\`global_rate_limit\`, one key) counted in a local redis-server, high enough to admit every request"
  [ "$FILTERS" = 0 ] || echo "- filters+header match (\`*-filters\` rows): each proxy with a second route selected by the header X-Tenant: blue that sets X-Env, removes X-Secret and adds X-Served-By to the response (sluice: \`headers\`, \`request_headers\`, \`response_headers\` on top of \`sluice\`; nginx: \`map\` on \$http_x_tenant, \`proxy_set_header\`, \`add_header\`; HAProxy: \`acl\`, \`use_backend\`, \`http-request set-header\`/\`del-header\`, \`http-response add-header\`); their load sends X-Tenant: blue and X-Secret: 1, so every request is the filtered route's"
  echo "- CPU: utime+stime of the proxy's processes during the run (/proc/PID/stat); RSS (VmRSS summed over the same processes) after the run"
  echo
  echo "## Throughput (saturating load, -c$CONNECTIONS)"
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
    printf '| %s | %.0f | %.3f | %.3f | %.3f | %.1f | %s | %s | %s |\n' "$proxy" "$rps" "$p50" "$p99" \
      "$cpu" "$(awk -v m="$rss" 'BEGIN { print m / 1024 }')" "$(ratio "$rps" "$base_rps")" \
      "$(ratio "$cpu" "$base_cpu")" "$(ratio "$p99" "$base_p99")"
  done
  if [[ " ${proxies[*]} " == *"-filters "* ]]; then
    echo
    echo "## Filters and a header match (throughput rounds above): each proxy against itself"
    echo
    echo "| proxy | req/s plain | req/s filters+header match | ratio | CPU s per 100k plain | filters+header match | ratio |"
    echo "|---|---|---|---|---|---|---|"
    local filtered_rps filtered_cpu
    for proxy in nginx haproxy sluice; do
      [[ " ${proxies[*]} " == *" $proxy-filters "* ]] || continue
      rps=$(column_of "$proxy" 2 | median); cpu=$(cpu_per_100k "$proxy" | median)
      filtered_rps=$(column_of "$proxy-filters" 2 | median); filtered_cpu=$(cpu_per_100k "$proxy-filters" | median)
      printf '| %s | %.0f | %.0f | %s | %.3f | %.3f | %s |\n' "$proxy" "$rps" "$filtered_rps" \
        "$(ratio "$filtered_rps" "$rps")" "$cpu" "$filtered_cpu" "$(ratio "$filtered_cpu" "$cpu")"
    done
  fi
  echo
  echo "## Upstream connections opened (throughput rounds)"
  echo
  echo "| proxy | requests | upstream connections opened | per 100k requests |"
  echo "|---|---|---|---|"
  for proxy in "${proxies[@]}"; do
    awk -F'\t' -v p="$proxy" '$1 == p { r += $5; c += $9 } END { printf "| %s | %d | %d | %.1f |\n", p, r, c, (r > 0 ? c / r * 100000 : 0) }' "$results"
  done
  echo
  echo "## TLS termination (ECDSA P-256, TLS 1.3; one run each)"
  echo
  echo "- new: wrk -t1 -c$TLS_CONNECTIONS with \`Connection: close\`: a new TCP and TLS connection per request (wrk's client resumes TLS sessions; every proxy allows resumption)"
  echo "- keepalive: wrk -t1 -c$CONNECTIONS over HTTPS/1.1 keepalive"
  echo "- h2: h2load -c$H2_CONNECTIONS -m$H2_STREAMS, HTTP/2 over TLS"
  echo
  echo "| proxy | kind | req/s | CPU s per 100k req | req/s vs nginx | CPU/100k vs nginx |"
  echo "|---|---|---|---|---|---|"
  local kind
  for kind in new keepalive h2; do
    local base_tls base_tls_cpu
    base_tls=$(awk -F'\t' -v k="$kind" '$1 == "nginx" && $2 == k { print $3 }' "$tls_results")
    base_tls_cpu=$(awk -F'\t' -v k="$kind" '$1 == "nginx" && $2 == k { print $5 / $4 * 100000 }' "$tls_results")
    awk -F'\t' -v k="$kind" -v b="$base_tls" -v bc="$base_tls_cpu" '$2 == k { c = $5 / $4 * 100000;
      printf "| %s | %s | %.0f | %.3f | %s | %s |\n", $1, $2, $3, c,
        (b > 0 ? sprintf("%.2f", $3 / b) : "n/a"), (bc > 0 ? sprintf("%.2f", c / bc) : "n/a") }' "$tls_results"
  done
  echo
  echo "## Moderate load (-c$MODERATE_CONNECTIONS, one run each)"
  echo
  echo "| proxy | req/s | p50 ms | p99 ms | CPU s per 100k req | p99 vs nginx |"
  echo "|---|---|---|---|---|---|"
  base_p99=$(awk -F'\t' '$1 == "nginx" { print $4 }' "$moderate")
  awk -F'\t' -v b="$base_p99" '{ printf "| %s | %.0f | %.3f | %.3f | %.3f | %s |\n", $1, $2, $3, $4,
    $6 / $5 * 100000, (b > 0 ? sprintf("%.2f", $4 / b) : "n/a") }' "$moderate"
  echo
  echo "## Idle keepalive connections ($IDLE_CONNECTIONS held ${IDLE_HOLD} s, each after one request)"
  echo
  echo "| proxy | RSS before MB | RSS while held MB | KB per connection | vs nginx |"
  echo "|---|---|---|---|---|"
  local base_idle
  local transport
  for transport in http tls; do
    base_idle=$(awk -F'\t' -v n="nginx ($transport)" '$1 == n { print $4 }' "$idle")
    awk -F'\t' -v b="$base_idle" -v t="($transport)" 'index($1, t) { printf "| %s | %.1f | %.1f | %.2f | %s |\n", $1, $2 / 1024, $3 / 1024, $4,
      (b > 0 ? sprintf("%.2f", $4 / b) : "n/a") }' "$idle"
  done
  if [ -s "$callgrind" ]; then
    echo
    echo "## User-space instructions per request (callgrind, 1 worker/thread, $CALLGRIND_REQUESTS sequential keepalive requests after $CALLGRIND_WARMUP)"
    echo
    echo "| proxy | instructions | per request | vs nginx |"
    echo "|---|---|---|---|"
    local base_ir
    base_ir=$(awk -F'\t' '$1 == "nginx" { print $3 }' "$callgrind")
    awk -F'\t' -v b="$base_ir" '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3,
      (b > 0 ? sprintf("%.2f", $3 / b) : "n/a") }' "$callgrind"
  fi
  echo
  echo "Per run, in order (proxy, req/s, p50 ms, p99 ms, requests, CPU s, RSS kB, wrk errors, upstream connections opened), then TLS (proxy, kind, req/s, requests, CPU s, errors):"
  echo
  echo '```'
  cat "$results" "$moderate" "$tls_results"
  echo '```'
}

if [ "$WRITE" = 1 ]; then report | tee "$repo/bench/RESULTS.md"; else report; fi
