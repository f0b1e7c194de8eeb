#!/usr/bin/env bash
# Gateway API propagation and changes under load (issue #19, item 5), as gateway-api-bench
# measures them: 5,000 HTTPRoutes through the fake API server, then CHANGES changes of one
# route's backend while a client sends RPS requests per second. Prints the time from each
# change at the API to the new backend answering (p50, p99, max), the requests that failed
# meanwhile (0 expected), and memory with all routes live. The release binary is used; the
# test harness (client, fake API server) is the debug build of tests/gateway_scale.rs.
#
# Usage: bench/gateway_propagation.sh    Env: ROUTES=5000 CHANGES=1000 RPS=500
#        SLUICE_BIN=target/release/sluice (built if missing)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bin=${SLUICE_BIN:-$repo/target/release/sluice}
if [ ! -x "$bin" ]; then
    cargo build --release --bin sluice
fi
SLUICE_BIN=$bin \
    SLUICE_GATEWAY_ROUTES=${ROUTES:-5000} \
    SLUICE_GATEWAY_CHANGES=${CHANGES:-1000} \
    SLUICE_GATEWAY_RPS=${RPS:-500} \
    cargo test --test gateway_scale -- --nocapture 2>&1 | grep -E '^gateway scale|test result|panicked|failed'
