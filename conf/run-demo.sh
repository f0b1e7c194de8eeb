#!/usr/bin/env bash
# `make run`: two demo backends and sluice with conf/sluice.yaml in the foreground.
#
# - Ctrl-C (or SIGTERM/SIGHUP to this script) stops sluice and the backends; the script then
#   exits 0, so make prints no error.
# - A graceful upgrade by hand (README, "Binary upgrade": `sluice -u -c conf/sluice.yaml` in
#   another terminal, then `kill -QUIT $(cat /tmp/sluice.pid)`) keeps the backends: when sluice
#   exits with status 0 and server.pid_file names another live sluice (the successor writes it
#   once it holds the sockets), the script follows that one, checking once a second, through
#   any further upgrades. Ctrl-C here then stops it too (SIGINT, as if pressed in its terminal).
# - When sluice exits otherwise (a bad config, a stop without a successor), the backends are
#   stopped and the script exits with sluice's status.
#
# The backends are plain background jobs, which a non-interactive shell starts with SIGINT
# ignored, so they are stopped with SIGTERM. (The old recipe's `trap 'kill 0' INT TERM EXIT`
# signalled its own shell too, re-entering the trap until the shell crashed.)
set -u
cd "$(dirname "$0")/.."

bin=./target/release
config=conf/sluice.yaml
# server.pid_file (/tmp/sluice.pid): how the script finds a successor after an upgrade.
pid_file=$(sed -n 's/^ *pid_file: *\([^ #]*\).*/\1/p' "$config" | head -n 1)
if [ -z "$pid_file" ]; then
    echo "run-demo.sh: no server.pid_file in $config" >&2
    exit 1
fi

backends=()
watched=   # the sluice serving now: first our child, after an upgrade its successor
ours=1     # whether $watched is our child (then `wait` reaps it and gives its status)

stop_backends() {
    [ ${#backends[@]} -eq 0 ] && return
    kill "${backends[@]}" 2>/dev/null
    wait "${backends[@]}" 2>/dev/null
    backends=()
}

# Whether process $1 runs (a zombie, exited but not reaped yet, does not).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }   # the fields after "PID (COMM) "; the first is the state
    [ "${stat%% *}" != Z ]
}

on_signal() {
    trap '' INT TERM HUP
    echo "run-demo.sh: stopping sluice and the demo backends" >&2
    if [ -n "$watched" ]; then
        kill -INT "$watched" 2>/dev/null   # SIGINT: sluice stops at once
        for _ in $(seq 50); do alive "$watched" || break; sleep 0.1; done
        if alive "$watched"; then
            echo "run-demo.sh: sluice $watched still runs 5 s after SIGINT; sending SIGKILL" >&2
            kill -KILL "$watched" 2>/dev/null
        fi
        [ -n "$ours" ] && wait "$watched" 2>/dev/null
    fi
    stop_backends
    exit 0
}
trap on_signal INT TERM HUP

# Prints the PID in the pid file if it is a live sluice other than $watched.
successor() {
    local pid
    pid=$(cat "$pid_file" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$pid" != "$watched" ] && alive "$pid" &&
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sluice ] && echo "$pid"
}

"$bin/sluice-demo-backend" 127.0.0.1:8081 backend-a &
backends+=($!)
"$bin/sluice-demo-backend" 127.0.0.1:8082 backend-b &
backends+=($!)
sleep 0.3
for pid in "${backends[@]}"; do
    if ! alive "$pid"; then   # it printed why (a port in use, say)
        echo "run-demo.sh: a demo backend did not start" >&2
        stop_backends
        exit 1
    fi
done
echo
echo "try:  curl -i http://127.0.0.1:8080/hello    (admin: curl http://127.0.0.1:9901/upstreams)"
echo

"$bin/sluice" -c "$config" &
watched=$!
wait "$watched"
status=$?

if [ "$status" -eq 0 ]; then
    while next=$(successor); do
        echo "run-demo.sh: sluice $watched handed over to sluice $next;" \
            "the demo backends keep running (Ctrl-C stops all)" >&2
        watched=$next
        ours=
        while alive "$watched"; do sleep 1; done
    done
    [ -z "$ours" ] && echo "run-demo.sh: sluice $watched exited; stopping the demo backends" >&2
fi
stop_backends
exit "$status"
