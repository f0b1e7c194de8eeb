#!/usr/bin/env bash
# Soak (issue #14, item 11): sluice for SOAK_SECONDS (default 30 minutes) under steady mixed
# traffic while its config churns, it reloads and it upgrades itself, checking that no request
# fails and no POST is duplicated or lost, and that memory and file descriptors stay flat.
# Not run by CI or `make test`: it takes half an hour and measures the machine it runs on.
#
# bench/soak.py starts its own backends (4 HTTP/1.1 ports that count every POST token, a
# WebSocket echo, a TCP echo), writes the config into a temporary directory (HTTP listener,
# `protocol: tcp` listener, pid file, upgrade socket, access log, watch_config: false), starts
# sluice and drives ~200 HTTP requests/s (keepalive and new-connection GETs, POSTs with unique
# tokens on new and reused connections), WebSocket sessions (short ones, and 5-10 s ones that
# span reloads and upgrades) and TCP echo sessions, while it rewrites the pool's endpoint list
# every second (one of the 4 ports in or out, never fewer than 2), sends SIGHUP every 10 s,
# upgrades (`sluice -u`, then SIGQUIT to the old process) every 5 minutes, and samples RSS, fd
# count and CPU time of every sluice process every 10 s. See soak.py's docstring for details.
#
# Prints a progress line every 10 s, then the report: requests and sessions by kind, failures
# by kind with the first details (phase, error, access-log line), duplicate and lost POSTs,
# reloads and upgrades, an access-log summary, RSS/fd per process after warm-up (min, max,
# slope per minute) and the whole series. Exit 1 on any failure, duplicate or lost POST.
#
# Usage: bench/soak.sh
# Env:   SOAK_SECONDS=1800 SOAK_UPGRADE_EVERY=300 (0: no upgrades) SOAK_RELOAD_EVERY=10
#        SOAK_CHURN_EVERY=1 (0: no churn) SOAK_SAMPLE_EVERY=10 SOAK_WARMUP=120 (seconds a
#        process serves before its samples count) SOAK_GRACE=30 (grace_period) SOAK_LOAD=1.0
#        (traffic multiplier) SOAK_REPORT=FILE (markdown report) SOAK_KEEP=1 (keep the run's
#        directory: config, access log, sluice logs) SOAK_WATCH_CONFIG=1 (watch_config: true,
#        so churn is applied every second, not only at each SIGHUP)
#        SLUICE_BIN=target/release/sluice
#        ports: SOAK_PORT_BASE=19400: backends +1..+6, sluice +80 (HTTP) +81 (TCP) +90 (admin)
# Quick try: SOAK_SECONDS=60 SOAK_UPGRADE_EVERY=20 SOAK_WARMUP=5 bench/soak.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
export SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
export SOAK_PORT_BASE=${SOAK_PORT_BASE:-19400}
[ -x "$SLUICE_BIN" ] || { echo "build sluice first: cargo build --release" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "soak.py needs Python 3.11 or later (asyncio.timeout)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for offset in 1 2 3 4 5 6 80 81 90; do
  port=$((SOAK_PORT_BASE + offset))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; set SOAK_PORT_BASE" >&2
    exit 1
  fi
done

export SOAK_DIR
SOAK_DIR=$(mktemp -d /tmp/sluice-soak.XXXXXX)
cleanup() {
  # soak.py stops what it started; this is for an interrupted run: only processes of this
  # run (their command line names the run's config or the backends), never by name.
  local f pid
  for f in "$SOAK_DIR/sluice.pid" "$SOAK_DIR/backends.pid"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qE "$SOAK_DIR/sluice.yaml|soak.py backends"; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "run directory kept: $SOAK_DIR"; else rm -rf "$SOAK_DIR"; fi
}
trap cleanup EXIT

python3 "$here/soak.py" drive
