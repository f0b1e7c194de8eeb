#!/usr/bin/env bash
# Slow and oversized request heads (issue #13): sluice and nginx, each with its default
# request limits, in front of the same backend, take ENDLESS clients sending a header line
# that never ends and TRICKLE clients sending one header byte every 2 s
# (bench/slow_clients.py). Reports RSS held per connection, how many connections each
# server closed, and when the last trickled head was cut (both default to 60 s).
#
# Usage: bench/slow_clients.sh      Env: ENDLESS=1500 TRICKLE=1000 WAIT=75
#        SLUICE_BIN=target/release/sluice  ports 19301 (backend) 19380 (nginx) 19382 (sluice)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ENDLESS=${ENDLESS:-1500} TRICKLE=${TRICKLE:-1000} WAIT=${WAIT:-75}
SLUICE_BIN=${SLUICE_BIN:-$repo/target/release/sluice}
BACKEND=19301 NGINX_PORT=19380 SLUICE_PORT=19382 SLUICE_ADMIN=19391
PATH=$PATH:/usr/sbin:/sbin
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v nginx >/dev/null || {
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
}
[ -x "$SLUICE_BIN" ] || { echo "build sluice first: cargo build --release" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
mkdir -p "$tmp/nginx"

cat > "$tmp/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log crit;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fcgi; uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;
  server { listen 127.0.0.1:$BACKEND; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://127.0.0.1:$BACKEND; } }
}
EOF
cat > "$tmp/sluice.yaml" <<EOF
server: { threads: 1, pid_file: $tmp/sluice.pid, upgrade_sock: $tmp/upgrade.sock }
admin: { listen: "127.0.0.1:$SLUICE_ADMIN" }
access_log: { path: "off" }
listeners: [{ name: web, listen: "127.0.0.1:$SLUICE_PORT" }]
routes: [{ name: all, listener: web, upstream: app }]
upstreams: [{ name: app, endpoints: ["127.0.0.1:$BACKEND"] }]
EOF

# One nginx process serves both the backend and the proxy server block, so nginx's figures
# include a backend that holds no slow connection; sluice is measured alone.
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>"$tmp/nginx.err" & nginx_pid=$!; pids+=($!)
"$SLUICE_BIN" -c "$tmp/sluice.yaml" 2>"$tmp/sluice.err" & sluice_pid=$!; pids+=($!)
for port in $NGINX_PORT $SLUICE_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
done

echo "ENDLESS=$ENDLESS TRICKLE=$TRICKLE (one byte every 2 s), defaults of both servers"
for server in nginx sluice; do
  case $server in nginx) port=$NGINX_PORT pid=$nginx_pid ;; sluice) port=$SLUICE_PORT pid=$sluice_pid ;; esac
  echo "$server: $(python3 "$here/slow_clients.py" "$port" "$pid" "$ENDLESS" "$TRICKLE" "$WAIT")"
done
