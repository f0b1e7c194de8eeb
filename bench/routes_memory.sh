#!/usr/bin/env bash
# Cost of configured routes (issue #14, item 6): sluice's RSS and /metrics size with 1 route
# and with ROUTES routes (default 61,000, the count that gave 1.41 M series, a 97 MB
# /metrics and 681 MB RSS before per-route series were created on first use), all to one
# upstream, before any traffic; then after one request to one route. Prints bytes per
# configured route.
#
# Usage: bench/routes_memory.sh    Env: ROUTES=61000 SLUICE_BIN=target/release/sluice
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${SLUICE_BIN:-$repo/target/release/sluice}
routes=${ROUTES:-61000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

# Prints "RSS_KB METRICS_BYTES READY_SECONDS" for a config with $1 routes.
measure() {
    local n=$1 admin=127.0.0.1:19791 web=127.0.0.1:19790
    python3 - "$n" "$work/sluice.yaml" "$admin" "$web" <<'PY'
import sys
n, path, admin, web = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    f.write(f"server: {{ threads: 1, pid_file: {path}.pid, upgrade_sock: {path}.sock }}\n")
    f.write(f"admin: {{ listen: \"{admin}\" }}\naccess_log: {{ path: off }}\n")
    f.write(f"listeners: [{{ name: web, listen: \"{web}\" }}]\nroutes:\n")
    for i in range(n):
        f.write(f"  - {{ name: r{i}, listener: web, hosts: [h{i}.test], upstream: app }}\n")
    f.write("upstreams: [{ name: app, endpoints: [\"127.0.0.1:9\"] }]\n")
PY
    local started=$SECONDS
    "$bin" -c "$work/sluice.yaml" 2>"$work/stderr" &
    local pid=$!
    until curl -sf "http://$admin/readyz" >/dev/null; do
        kill -0 $pid 2>/dev/null || { cat "$work/stderr" >&2; exit 1; }
        sleep 0.2
    done
    local ready=$((SECONDS - started))
    local rss metrics after
    rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
    metrics=$(curl -s "http://$admin/metrics" | wc -c)
    curl -s -o /dev/null -H "host: h0.test" "http://$web/"
    after=$(curl -s "http://$admin/metrics" | wc -c)
    kill -INT $pid; wait $pid 2>/dev/null || true
    echo "$rss $metrics $after $ready"
}

read -r rss1 metrics1 after1 _ < <(measure 1)
read -r rssn metricsn aftern ready < <(measure "$routes")
echo "routes      RSS_KB  /metrics_bytes  /metrics_after_1_request  ready_s"
echo "1           $rss1   $metrics1       $after1"
echo "$routes     $rssn   $metricsn       $aftern                   $ready"
echo "per configured route: $(( (rssn - rss1) * 1024 / (routes - 1) )) bytes of RSS, $(( (metricsn - metrics1) / (routes - 1) )) bytes of /metrics"
