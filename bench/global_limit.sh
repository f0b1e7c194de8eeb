#!/usr/bin/env bash
# Fleet-wide rate limit accuracy (issue #21): how many requests a fleet of sluice replicas
# sharing one redis-server admits, against the count of exact counting.
#
# For REPLICAS in 1 (exact) and each of FLEETS (2 5 10): that many sluice processes (release
# build, 1 thread each), one route with `global_rate_limit: { requests: LIMIT, window: WINDOW }`
# (one key for the whole route), in front of an nginx that answers 200. Each replica gets its
# own `wrk -t1 -c$CONNECTIONS -d$DURATION`, all started together, so that the fleet is offered
# far more than the limit. The fleet's admitted requests are the sum of every replica's
# sluice_global_rate_limit_total{result="admitted"}.
#
# The exact count is the 1-replica run with `reserve_ahead: 0s`: one token per reservation,
# one Redis round trip per admitted request (the spare token held ahead aside), the counting of
# the Redis script itself with nothing held in replicas. The error of a fleet is its admitted
# count against that one, both for the same DURATION; the nominal LIMIT x DURATION / WINDOW
# is shown beside. Also shown: Redis calls per admitted request, and requests that waited for
# Redis on the request path.
#
# Then the same fleets under their limit (one connection per replica, the limit raised 10x):
# reservations must not make a fleet that is under its limit refuse anything.
#
# Usage: bench/global_limit.sh        Env: LIMIT=2000 WINDOW=1s DURATION=10s CONNECTIONS=4
#        FLEETS="2 5 10" SLUICE_BIN=target/release/sluice BASE_PORT=19600
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
LIMIT=${LIMIT:-2000}
WINDOW=${WINDOW:-1s}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-4}
FLEETS=${FLEETS:-2 5 10}
SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
BASE_PORT=${BASE_PORT:-19600}
REDIS_PORT=$BASE_PORT BACKEND_PORT=$((BASE_PORT + 1))
PATH=$PATH:/usr/sbin:/sbin

[ -x "$SLUICE_BIN" ] || { echo "$SLUICE_BIN not found (run: cargo build --release)" >&2; exit 1; }
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  set +e
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() {  # URL: poll until it answers (up to 30 s)
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2; exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no > "$tmp/redis.log" 2>&1 &
pids+=($!)
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx/nginx.conf" <<EOC
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
http {
  client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi; uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;
  access_log off;
  server { listen 127.0.0.1:$BACKEND_PORT; location / { return 200 "ok\n"; } }
}
EOC
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -g "daemon off;" 2> "$tmp/nginx.err" &
pids+=($!)
wait_for "http://127.0.0.1:$BACKEND_PORT/"
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

run=0
# fleet REPLICAS RESERVE_AHEAD LIMIT CONNECTIONS -> prints "admitted offered calls waits"
fleet() {
  local replicas=$1 ahead=$2 limit=$3 connections=$4 i port admin fleet_pids=() wrk_pids=()
  run=$((run + 1))
  for i in $(seq 1 "$replicas"); do
    port=$((BASE_PORT + 10 + 2 * i)) admin=$((BASE_PORT + 11 + 2 * i))
    cat > "$tmp/sluice-$i.yaml" <<EOC
server: { threads: 1, grace_period: 1s, drain_delay: 0s, watch_config: false, upgrade_sock: $tmp/up-$i.sock, pid_file: $tmp/sluice-$i.pid }
admin: { listen: "127.0.0.1:$admin" }
access_log: { path: "off" }
redis: { address: "127.0.0.1:$REDIS_PORT", reserve_ahead: $ahead, key_prefix: "run$run:" }
listeners: [ { name: web, listen: "127.0.0.1:$port" } ]
routes:
  - { name: limited, listener: web, upstream: app, global_rate_limit: { requests: $limit, window: $WINDOW } }
upstreams:
  - { name: app, endpoints: [ "127.0.0.1:$BACKEND_PORT" ] }
EOC
    RUST_LOG=warn "$SLUICE_BIN" -c "$tmp/sluice-$i.yaml" > "$tmp/sluice-$i.log" 2>&1 &
    fleet_pids+=($!)
  done
  for i in $(seq 1 "$replicas"); do wait_for "http://127.0.0.1:$((BASE_PORT + 11 + 2 * i))/readyz"; done
  for i in $(seq 1 "$replicas"); do
    wrk -t1 -c"$connections" -d"$DURATION" "http://127.0.0.1:$((BASE_PORT + 10 + 2 * i))/" > "$tmp/wrk-$i.txt" 2>&1 &
    wrk_pids+=($!)
  done
  wait "${wrk_pids[@]}"
  local admitted=0 offered=0 calls=0 waits=0 metrics n
  for i in $(seq 1 "$replicas"); do
    metrics=$(curl -fsS "http://127.0.0.1:$((BASE_PORT + 11 + 2 * i))/metrics")
    n=$(awk '/^sluice_global_rate_limit_total\{result="admitted"/ { s += $2 } END { print s + 0 }' <<<"$metrics")
    admitted=$((admitted + n))
    n=$(awk '/^sluice_global_rate_limit_total\{/ { s += $2 } END { print s + 0 }' <<<"$metrics")
    offered=$((offered + n))
    n=$(awk '/^sluice_redis_calls_total\{result="ok"/ { s += $2 } END { print s + 0 }' <<<"$metrics")
    calls=$((calls + n))
    n=$(awk '/^sluice_global_rate_limit_waits_total\{/ { s += $2 } END { print s + 0 }' <<<"$metrics")
    waits=$((waits + n))
  done
  kill "${fleet_pids[@]}"; wait "${fleet_pids[@]}" 2>/dev/null || true
  echo "$admitted $offered $calls $waits"
}

seconds() { awk -v d="$1" 'BEGIN { if (d ~ /ms$/) print d / 1000; else print d + 0 }'; }
nominal=$(awk -v l="$LIMIT" -v d="$(seconds "$DURATION")" -v w="$(seconds "$WINDOW")" 'BEGIN { printf "%d", l * d / w }')

echo "## Fleet-wide rate limit accuracy (bench/global_limit.sh)"
echo
echo "- $(date -u +%Y-%m-%d), $(nproc) cores; limit $LIMIT per $WINDOW for the whole route, $DURATION of wrk -t1 -c$CONNECTIONS per replica; nominal $nominal"
echo
echo "| replicas | reserve_ahead | offered | admitted | error vs exact | Redis calls per admitted request | requests that waited for Redis |"
echo "|---:|---|---:|---:|---:|---:|---:|"
read -r exact offered calls waits < <(fleet 1 0s "$LIMIT" "$CONNECTIONS")
printf "| 1 (exact) | 0s | %d | %d | | %.3f | %d |\n" "$offered" "$exact" "$(awk -v c="$calls" -v a="$exact" 'BEGIN { print c / a }')" "$waits"
for replicas in $FLEETS; do
  read -r admitted offered calls waits < <(fleet "$replicas" 20ms "$LIMIT" "$CONNECTIONS")
  printf "| %d | 20ms (default) | %d | %d | %+.1f%% | %.3f | %d |\n" "$replicas" "$offered" "$admitted" \
    "$(awk -v a="$admitted" -v e="$exact" 'BEGIN { print 100 * (a - e) / e }')" \
    "$(awk -v c="$calls" -v a="$admitted" 'BEGIN { print c / a }')" "$waits"
done
echo
echo "Under the limit (1 connection per replica, limit raised to 10x): refused requests"
echo
echo "| replicas | offered | refused | Redis calls per request | requests that waited for Redis |"
echo "|---:|---:|---:|---:|---:|"
for replicas in $FLEETS; do
  read -r admitted offered calls waits < <(fleet "$replicas" 20ms $((LIMIT * 10)) 1)
  printf "| %d | %d | %d | %.4f | %d |\n" "$replicas" "$offered" $((offered - admitted)) \
    "$(awk -v c="$calls" -v o="$offered" 'BEGIN { print c / o }')" "$waits"
done
