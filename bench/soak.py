#!/usr/bin/env python3
"""Soak test of sluice under reloads, endpoint churn and graceful upgrades (issue #14, item 11).

One run, DURATION seconds long (default 30 minutes), against the release binary:

Backends (a separate Python process, `soak.py backends`, so they do not share the driver's
interpreter): four HTTP/1.1 backends (the pool that churns), one WebSocket echo backend
(RFC 6455 handshake and framing written here, standard library only) and one TCP echo
backend. Every POST carries a token chosen by the client (`X-Soak-Token`, also sent as
`X-Request-Id` and in the body); the backends count how many times each token arrived, so
duplicated and lost POSTs are counted exactly.

sluice (started by the driver, config in the run's directory): an HTTP listener (routes `/ws/`
to the WebSocket backend and `/` to the churning pool) and a `protocol: tcp` listener to the
TCP echo backend; `watch_config: false`, `grace_period` GRACE, access log to a file.

Traffic, all the time, concurrently (asyncio clients in the driver; a few hundred requests/s):
  get_keepalive   GETs on persistent connections (reconnect after `Connection: close`)
  get_new         GETs on a new connection each (`Connection: close`)
  post_new        POSTs with a unique token, new connection each
  post_keepalive  POSTs with a unique token on persistent connections
  ws_short        WebSocket sessions: handshake, 10-20 echoed messages, close handshake
  ws_long         WebSocket sessions of 5-10 s (a message every 200 ms): they span reloads
                  and upgrades
  tcp_short       TCP echo sessions of 5-20 messages, then a half-close and the echo's EOF
  tcp_long        TCP echo sessions of 5-10 s
A few responses have 64 KiB bodies and a few POSTs 16 KiB bodies. Every response is checked
(status 200 or 101, the backend's echo of path/token, exact WebSocket and TCP echoes).

Control, on a 1-second tick:
  churn    every CHURN_EVERY s the HTTP pool's endpoint list in the config file loses or gains
           one of the four backend ports (never fewer than 2); the file is replaced
           atomically (rename)
  reload   every RELOAD_EVERY s `kill -HUP` to the serving process (it picks up the churn)
  upgrade  every UPGRADE_EVERY s: start `sluice -u -c CONFIG`, wait until it listens on the
           upgrade socket (/proc/net/unix), `kill -QUIT` the old process, wait until the pid
           file names the new one and its SIGHUP handler is installed (SigCgt in
           /proc/PID/status: a SIGHUP before that would kill it); the old process must exit
           within grace_period (+5 s)
  sample   every SAMPLE_EVERY s VmRSS, open fds and CPU time of every sluice process alive
           (the serving one and any old one still draining)

Failures: any non-2xx (non-101 for WebSockets), connection error, timeout or wrong echo; a
reload rejected; an upgrade that does not complete; a process that exits unexpectedly or
outlives its grace period (counted from the end of the 5 s handoff window in which the old
process still accepts). A WebSocket or TCP session is excused (not a failure) only when the old
process may have accepted it (opened before the end of the handoff window) and it was cut at or
after that process's grace period (sessions are shorter than the grace period, so this should
not happen at the default GRACE).

At the end (printed, and written as markdown to REPORT if given): requests and sessions by
kind, failures by kind with the first details (phase: upgrade / reload / steady, error text,
the request's access-log line), duplicate POSTs (tokens delivered more than once) and lost
POSTs (2xx to the client, never seen by a backend), reloads and upgrades, access-log
summary, and the RSS/fd series with, per sluice process, min/max after warm-up and the
least-squares slope (KB and fds per minute). Exit status 1 on any failure, duplicate or lost
POST.

Usage: soak.py drive   (run by bench/soak.sh, which passes everything through the environment:
                        SOAK_DIR SLUICE_BIN SOAK_SECONDS SOAK_UPGRADE_EVERY ...)
       soak.py backends PORTS_JSON   (started by `drive`)
"""
import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict

HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REQUEST_TIMEOUT = 15.0
LARGE_BODY = 64 * 1024
LARGE_POST = 16 * 1024
# After SIGQUIT the old process keeps accepting for Pingora's 5 s handoff window (README,
# "Binary upgrade"); its grace_period counts from when its listeners stop.
HANDOFF_WINDOW = 5


# ---------------------------------------------------------------------------------------
# HTTP/1.1 and WebSocket wire helpers (client and server)


class ClosedEarly(Exception):
    """The peer closed the connection before a response started."""


def parse_head(head):
    """(first line fields, headers with lower-case names) of a request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].split(" ", 2), headers


async def read_head(reader):
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ClosedEarly("connection closed before any response byte") from None
        raise ConnectionError(f"connection closed inside the head ({len(e.partial)} bytes)") from None


async def read_body(reader, headers, until_close=False):
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read() if until_close else b""


def ws_frame(opcode, payload, mask):
    n = len(payload)
    bit = 0x80 if mask else 0
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor_mask(payload, key)


def xor_mask(data, key):
    n = len(data)
    if n == 0:
        return data
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


async def ws_read_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    return b0 & 0x0F, xor_mask(payload, key) if key else payload


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


# ---------------------------------------------------------------------------------------
# Backends: `soak.py backends PORTS_JSON`


class Backends:
    def __init__(self, ports, idle):
        self.ports = ports
        self.idle = idle
        self.tokens = Counter()
        self.body_errors = []
        self.requests = Counter()  # per port
        self.retried = Counter()  # X-Sluice-Attempt > 1, per method
        self.ws_sessions = 0
        self.tcp_sessions = 0

    async def http(self, reader, writer, port):
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                (method, target, _), headers = parse_head(head)
                body = await read_body(reader, headers)
                self.requests[port] += 1
                if headers.get("x-sluice-attempt", "1") != "1":
                    self.retried[method] += 1
                status, content, ctype = 200, b"", "text/plain"
                path, _, query = target.partition("?")
                if path == "/_soak/state":
                    ctype = "application/json"
                    content = json.dumps({
                        "tokens": self.tokens,
                        "body_errors": self.body_errors[:20],
                        "body_error_count": len(self.body_errors),
                        "requests": {str(p): n for p, n in self.requests.items()},
                        "retried": self.retried,
                        "ws_sessions": self.ws_sessions,
                        "tcp_sessions": self.tcp_sessions,
                    }).encode()
                elif method == "POST":
                    token = headers.get("x-soak-token", "")
                    pad = int(headers.get("x-soak-pad", "0"))
                    self.tokens[token] += 1
                    if body != f"token={token}&pad=".encode() + b"y" * pad:
                        self.body_errors.append(f"{token}: {len(body)} bytes, {body[:60]!r}")
                        status = 422
                    content = f"{port} {token}\n".encode()
                else:
                    pad = int(query[4:]) if query.startswith("pad=") else 0
                    content = f"{port} {path}\n".encode() + b"x" * pad
                close = headers.get("connection", "").lower() == "close"
                reason = "OK" if status == 200 else "Bad body"
                connection = "Connection: close\r\n" if close else ""
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(content)}\r\n{connection}\r\n".encode() + content
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def websocket(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            _, headers = parse_head(head)
            writer.write(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {ws_accept(headers['sec-websocket-key'])}\r\n\r\n".encode()
            )
            self.ws_sessions += 1
            while True:
                opcode, payload = await asyncio.wait_for(ws_read_frame(reader), 300)
                if opcode in (1, 2):
                    writer.write(ws_frame(opcode, payload, mask=False))
                elif opcode == 9:
                    writer.write(ws_frame(10, payload, mask=False))
                elif opcode == 8:
                    writer.write(ws_frame(8, payload[:2], mask=False))
                    await writer.drain()
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, KeyError):
            return
        finally:
            writer.close()

    async def tcp_echo(self, reader, writer):
        self.tcp_sessions += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(self):
        loop = asyncio.get_running_loop()
        # Nothing to clean up: exit at once, without tracebacks from cancelled connections.
        loop.add_signal_handler(signal.SIGTERM, os._exit, 0)
        loop.add_signal_handler(signal.SIGINT, os._exit, 0)
        servers = []
        for port in self.ports["http"]:
            servers.append(await asyncio.start_server(
                lambda r, w, p=port: self.http(r, w, p), HOST, port, backlog=1024))
        servers.append(await asyncio.start_server(self.websocket, HOST, self.ports["ws"], backlog=1024))
        servers.append(await asyncio.start_server(self.tcp_echo, HOST, self.ports["tcp"], backlog=1024))
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGTERM


# ---------------------------------------------------------------------------------------
# sluice processes and /proc


def proc_status(pid):
    """VmRSS in KiB and the SigCgt mask, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["SigCgt"].strip(), 16)
    except (OSError, KeyError, ValueError):
        return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def hup_handled(pid):
    status = proc_status(pid)
    return bool(status and status[1] & (1 << (signal.SIGHUP - 1)))


def unix_listening(path):
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    return True
    except OSError:
        pass
    return False


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Process:
    """One sluice process the driver started."""

    def __init__(self, gen, popen, log, started):
        self.gen, self.popen, self.log, self.started = gen, popen, log, started
        self.pid = popen.pid
        self.quit_at = None  # run time of its SIGQUIT
        self.exited_at = None
        self.serving_from = None

    def alive(self):
        return self.popen.poll() is None


# ---------------------------------------------------------------------------------------
# The driver


def env_float(name, default):
    return float(os.environ.get(name, default))


class Soak:
    def __init__(self):
        self.dir = os.environ["SOAK_DIR"]
        self.bin = os.environ["SLUICE_BIN"]
        self.duration = env_float("SOAK_SECONDS", 1800)
        self.upgrade_every = env_float("SOAK_UPGRADE_EVERY", 300)
        self.reload_every = env_float("SOAK_RELOAD_EVERY", 10)
        self.churn_every = env_float("SOAK_CHURN_EVERY", 1)
        self.sample_every = env_float("SOAK_SAMPLE_EVERY", 10)
        self.warmup = env_float("SOAK_WARMUP", 120)
        self.grace = int(env_float("SOAK_GRACE", 30))
        self.load = env_float("SOAK_LOAD", 1.0)
        self.report_path = os.environ.get("SOAK_REPORT", "")
        base = int(os.environ.get("SOAK_PORT_BASE", "19400"))
        self.ports = {"http": [base + i for i in range(1, 5)], "ws": base + 5, "tcp": base + 6}
        self.web, self.tcp_listener, self.admin = base + 80, base + 81, base + 90
        self.config = os.path.join(self.dir, "sluice.yaml")
        self.pid_file = os.path.join(self.dir, "sluice.pid")
        self.upgrade_sock = os.path.join(self.dir, "upgrade.sock")
        self.access_log = os.path.join(self.dir, "access.log")
        self.run_id = os.urandom(3).hex()
        self.endpoints = list(self.ports["http"])
        self.stop = False
        self.t0 = None
        # Results
        self.ok = Counter()
        self.failed = Counter()
        self.excused = Counter()
        self.failures = []  # (t, kind, id, detail, extra)
        self.posts = {}  # token -> True (2xx) / False (failed)
        self.server_closes = Counter()  # keepalive connections ended by Connection: close
        self.connections = Counter()
        self.spanning = defaultdict(Counter)  # kind -> {"reload": n, "upgrade": n}
        self.messages = Counter()
        self.events = []  # (t, what, detail)
        self.hups = []  # run times of SIGHUPs sent
        self.hups_skipped = 0
        self.upgrades = []  # dicts
        self.control_failures = []  # (t, text)
        self.samples = []  # dicts
        self.processes = []
        self.current = None
        self.upgrading = False
        self.backends = None

    # --- time, events, failures

    def now(self):
        return time.monotonic() - self.t0

    def event(self, what, detail=""):
        self.events.append((self.now(), what, detail))

    def fail(self, kind, ident, detail, extra=""):
        self.failed[kind] += 1
        self.failures.append((self.now(), kind, ident, detail, extra))

    def control_fail(self, text):
        self.control_failures.append((self.now(), text))
        print(f"[{self.now():7.1f}s] FAILURE: {text}", flush=True)

    # --- config

    def config_text(self):
        eps = ", ".join(f'"{HOST}:{p}"' for p in self.endpoints)
        return f"""# written by bench/soak.py
server:
  threads: 2
  grace_period: {self.grace}s
  upgrade_sock: {self.upgrade_sock}
  pid_file: {self.pid_file}
  watch_config: {"true" if os.environ.get("SOAK_WATCH_CONFIG") == "1" else "false"}
admin: {{ listen: "{HOST}:{self.admin}" }}
access_log: {{ path: {self.access_log} }}
listeners:
  - {{ name: web, listen: "{HOST}:{self.web}" }}
  - {{ name: echo, listen: "{HOST}:{self.tcp_listener}", protocol: tcp }}
routes:
  - {{ name: ws, listener: web, paths: [{{ prefix: /ws/ }}], upstream: ws }}
  - {{ name: app, listener: web, paths: [{{ prefix: / }}], upstream: app }}
  - {{ name: echo, listener: echo, upstream: echo }}
upstreams:
  - name: app
    endpoints: [{eps}]
    # Shorter than the backends' 30 s idle close, as it should be: sluice expires idle
    # upstream connections before the backend closes them.
    keepalive: {{ idle_timeout: 10s }}
  - {{ name: ws, endpoints: ["{HOST}:{self.ports['ws']}"] }}
  - {{ name: echo, protocol: tcp, endpoints: ["{HOST}:{self.ports['tcp']}"] }}
"""

    def write_config(self):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text())
        os.replace(tmp, self.config)

    def churn(self):
        pool = self.ports["http"]
        missing = [p for p in pool if p not in self.endpoints]
        if len(self.endpoints) <= 2 or (missing and random.random() < 0.5):
            self.endpoints.append(random.choice(missing))
        else:
            self.endpoints.remove(random.choice(self.endpoints))
        self.endpoints.sort()
        self.write_config()
        self.event("churn", ",".join(str(p % 100) for p in self.endpoints))

    # --- sluice processes

    def spawn(self, flags):
        gen = len(self.processes)
        log = os.path.join(self.dir, f"sluice-{gen}.log")
        popen = subprocess.Popen(
            [self.bin, *flags, "-c", self.config],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        proc = Process(gen, popen, log, self.now() if self.t0 else 0.0)
        self.processes.append(proc)
        return proc

    async def wait_for(self, what, timeout, check, proc=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            if proc is not None and not proc.alive():
                return False
            await asyncio.sleep(0.02)
        return check()

    def pid_file_pid(self):
        try:
            return int(read_text(self.pid_file).strip())
        except ValueError:
            return None

    async def start_first(self):
        check = subprocess.run([self.bin, "-t", "-c", self.config], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"config rejected:\n{check.stdout}{check.stderr}")
        proc = self.spawn([])
        ok = await self.wait_for("ready", 20, lambda: self.admin_ready() and hup_handled(proc.pid), proc)
        if not ok:
            raise SystemExit(f"sluice did not start:\n{read_text(proc.log)[-3000:]}")
        proc.serving_from = 0.0
        self.current = proc

    def admin_ready(self):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.admin}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def hup(self):
        proc = self.current
        if not proc.alive():
            return
        if not hup_handled(proc.pid):
            self.hups_skipped += 1
            self.event("hup skipped", f"pid {proc.pid} has no SIGHUP handler yet")
            return
        os.kill(proc.pid, signal.SIGHUP)
        self.hups.append(self.now())
        self.event("SIGHUP", f"pid {proc.pid}, endpoints {','.join(str(p) for p in self.endpoints)}")

    async def upgrade(self):
        self.upgrading = True
        old = self.current
        record = {"n": len(self.upgrades) + 1, "start": self.now(), "old_pid": old.pid}
        self.upgrades.append(record)
        self.event("upgrade", f"#{record['n']}: starting sluice -u")
        try:
            new = self.spawn(["-u"])
            record["new_pid"] = new.pid
            if not await self.wait_for("upgrade socket", 15, lambda: unix_listening(self.upgrade_sock), new):
                self.control_fail(f"upgrade #{record['n']}: the successor never listened on "
                                  f"{self.upgrade_sock}; its log:\n{read_text(new.log)[-2000:]}")
                if new.alive():
                    new.popen.kill()
                record["result"] = "no successor"
                return
            record["successor_listening"] = self.now() - record["start"]
            old.popen.send_signal(signal.SIGQUIT)
            old.quit_at = record["quit"] = self.now()
            self.event("SIGQUIT", f"old pid {old.pid}, successor pid {new.pid}")
            if not await self.wait_for("pid file", 15, lambda: self.pid_file_pid() == new.pid, new):
                self.control_fail(f"upgrade #{record['n']}: the pid file never named the successor "
                                  f"{new.pid} (it says {self.pid_file_pid()}); successor alive: "
                                  f"{new.alive()}; its log:\n{read_text(new.log)[-2000:]}")
                record["result"] = "no handoff"
                if not new.alive() and old.alive():
                    return  # the old process keeps serving
                self.current = new
                return
            if not await self.wait_for("SIGHUP handler", 15, lambda: hup_handled(new.pid), new):
                self.control_fail(f"upgrade #{record['n']}: successor {new.pid} never installed its "
                                  f"SIGHUP handler; alive: {new.alive()}")
            new.serving_from = record["ready"] = self.now()
            self.current = new
            self.event("upgraded", f"serving pid {new.pid}")
            record["result"] = "ok"
        finally:
            self.upgrading = False
        # The old process drains: it keeps accepting for Pingora's handoff window, then
        # stops its listeners and must be gone within its grace period.
        deadline = old.quit_at + HANDOFF_WINDOW + self.grace + 5
        while old.alive() and self.now() < deadline:
            await asyncio.sleep(0.1)
        if old.alive():
            self.control_fail(f"upgrade #{record['n']}: old process {old.pid} still running "
                              f"{self.now() - old.quit_at:.1f} s after SIGQUIT "
                              f"({HANDOFF_WINDOW} s handoff window + grace_period {self.grace}s)")
            while old.alive() and self.now() < deadline + 60:
                await asyncio.sleep(0.1)
            if old.alive():
                return
        old.exited_at = self.now()
        record["old_lived"] = old.exited_at - old.quit_at
        record["old_exit_code"] = old.popen.returncode
        log = read_text(old.log)
        record["cut_at_grace"] = "grace period over" in log
        self.event("old exited", f"pid {old.pid} after {record['old_lived']:.1f} s, "
                                 f"code {old.popen.returncode}")
        if old.popen.returncode != 0:
            self.control_fail(f"upgrade #{record['n']}: old process {old.pid} exited with "
                              f"{old.popen.returncode}; log tail:\n{log[-2000:]}")

    # --- phases

    def phase(self, t):
        """Which control action the moment `t` falls in."""
        for u in self.upgrades:
            end = self.processes_by_pid(u["old_pid"]).exited_at or self.duration + 60
            if u["start"] - 0.5 <= t <= end + 1:
                since = t - u.get("quit", u["start"])
                return f"upgrade #{u['n']} ({since:+.1f} s from SIGQUIT)"
        for h in self.hups:
            if h - 0.5 <= t <= h + 3:
                return f"reload ({t - h:+.1f} s from SIGHUP)"
        return "steady (churn only)"

    def processes_by_pid(self, pid):
        return next(p for p in self.processes if p.pid == pid)

    def spanned(self, kind, start, end):
        if any(start < h < end for h in self.hups):
            self.spanning[kind]["reload"] += 1
        if any(start < u.get("quit", -1) < end for u in self.upgrades):
            self.spanning[kind]["upgrade"] += 1

    def cut_at_grace(self, start, t):
        """A session the old process may have accepted (opened before it stopped accepting,
        HANDOFF_WINDOW after SIGQUIT), ended when that process's grace period was over."""
        return any("quit" in u and start < u["quit"] + HANDOFF_WINDOW + 1
                   and t >= u["quit"] + HANDOFF_WINDOW + self.grace - 1
                   for u in self.upgrades)

    # --- traffic

    async def pace(self, began, interval):
        await asyncio.sleep(max(0.0, interval * random.uniform(0.5, 1.5) - (time.monotonic() - began)))

    async def http_worker(self, kind, method, keepalive, rate, wid):
        interval = 1.0 / (rate * self.load)
        conn, seq, on_conn = None, 0, 0
        while not self.stop:
            began = time.monotonic()
            seq += 1
            rid = f"soak-{self.run_id}-{kind}-{wid}-{seq}"
            reused = conn is not None
            token = rid if method == "POST" else None
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    if conn is None:
                        conn = await asyncio.open_connection(HOST, self.web)
                        self.connections[kind] += 1
                        on_conn = 0
                    on_conn += 1
                    reader, writer = conn
                    headers = f"Host: soak.test\r\nX-Request-Id: {rid}\r\n"
                    if not keepalive:
                        headers += "Connection: close\r\n"
                    if method == "POST":
                        pad = LARGE_POST if random.random() < 0.05 else random.randint(0, 200)
                        body = f"token={token}&pad=".encode() + b"y" * pad
                        path = f"/post/{wid}"
                        headers += (f"X-Soak-Token: {token}\r\nX-Soak-Pad: {pad}\r\n"
                                    f"Content-Type: application/x-www-form-urlencoded\r\n"
                                    f"Content-Length: {len(body)}\r\n")
                        self.posts[token] = False
                        target = path
                    else:
                        body = b""
                        pad = LARGE_BODY if random.random() < 0.02 else random.randint(0, 300)
                        path = f"/{kind}/{wid}/{seq}"
                        target = f"{path}?pad={pad}"
                    writer.write(f"{method} {target} HTTP/1.1\r\n{headers}\r\n".encode() + body)
                    await writer.drain()
                    (_, status, _), rheaders = parse_head(await read_head(reader))
                    rbody = await read_body(reader, rheaders, until_close=not keepalive)
                if status != "200":
                    raise ValueError(f"HTTP {status}: {rbody[:200].decode(errors='replace')}")
                if method == "POST":
                    port, _, echoed = rbody.decode().strip().partition(" ")
                    if echoed != token or int(port) not in self.ports["http"]:
                        raise ValueError(f"wrong POST echo {rbody[:120]!r}")
                    self.posts[token] = True
                else:
                    port, _, rest = rbody.partition(b" ")
                    if (int(port) not in self.ports["http"]
                            or rest != path.encode() + b"\n" + b"x" * pad):
                        raise ValueError(f"wrong GET body ({len(rbody)} bytes): {rbody[:120]!r}")
                self.ok[kind] += 1
                if not keepalive or rheaders.get("connection", "").lower() == "close":
                    if keepalive:
                        self.server_closes[kind] += 1
                    conn[1].close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every error is a failure to report
                text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                where = (f"reused connection, request #{on_conn} on it" if reused
                         else "new connection")
                self.fail(kind, rid, text, where)
                if conn is not None:
                    conn[1].close()
                    conn = None
            await self.pace(began, interval)
        if conn is not None:
            conn[1].close()

    async def ws_worker(self, kind, wid, long):
        seq = 0
        while not self.stop:
            seq += 1
            sid = f"soak-{self.run_id}-{kind}-{wid}-{seq}"
            start = self.now()
            writer = None
            sent = 0
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    reader, writer = await asyncio.open_connection(HOST, self.web)
                    key = base64.b64encode(os.urandom(16)).decode()
                    writer.write(
                        f"GET /ws/{sid} HTTP/1.1\r\nHost: soak.test\r\nX-Request-Id: {sid}\r\n"
                        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
                    (_, status, _), headers = parse_head(await read_head(reader))
                    if status != "101":
                        body = await read_body(reader, headers)
                        raise ValueError(f"HTTP {status}: {body[:200].decode(errors='replace')}")
                    if headers.get("sec-websocket-accept") != ws_accept(key):
                        raise ValueError("wrong Sec-WebSocket-Accept")
                if long:
                    count, spacing = int(random.uniform(5, 10) / 0.2), 0.2
                else:
                    count, spacing = random.randint(10, 20), 0.02
                for i in range(count):
                    if self.stop and long:
                        break
                    message = f"{sid} {i} ".encode() + b"w" * random.randint(0, 500)
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        writer.write(ws_frame(2, message, mask=True))
                        await writer.drain()
                        opcode, payload = await ws_read_frame(reader)
                    if opcode != 2 or payload != message:
                        raise ValueError(f"wrong echo (opcode {opcode}, {len(payload)} bytes)")
                    sent += 1
                    self.messages[kind] += 1
                    await asyncio.sleep(spacing * random.uniform(0.5, 1.5))
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    writer.write(ws_frame(8, struct.pack("!H", 1000), mask=True))
                    await writer.drain()
                    while (await ws_read_frame(reader))[0] != 8:
                        pass
                    if await reader.read(1) != b"":
                        raise ValueError("bytes after the close frame")
                self.ok[kind] += 1
                self.spanned(kind, start, self.now())
            except Exception as e:  # noqa: BLE001
                self.session_failed(kind, sid, start, sent, e)
            finally:
                if writer is not None:
                    writer.close()
            if not long:
                await asyncio.sleep(random.uniform(0.05, 0.3) / self.load)

    def session_failed(self, kind, sid, start, sent, error):
        """Counts a WebSocket or TCP session that failed: excused if the old process's
        grace period cut it, else a failure."""
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if self.cut_at_grace(start, self.now()):
            self.excused[kind] += 1
        else:
            self.fail(kind, sid, text, f"session opened at {start:.1f} s, "
                                       f"{sent} messages echoed")

    async def tcp_worker(self, kind, wid, long):
        seq = 0
        while not self.stop:
            seq += 1
            sid = f"soak-{self.run_id}-{kind}-{wid}-{seq}"
            start = self.now()
            writer = None
            sent = 0
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    reader, writer = await asyncio.open_connection(HOST, self.tcp_listener)
                if long:
                    count, spacing = int(random.uniform(5, 10) / 0.2), 0.2
                else:
                    count, spacing = random.randint(5, 20), 0.02
                for i in range(count):
                    if self.stop and long:
                        break
                    message = f"{sid} {i} ".encode() + b"t" * random.randint(0, 2000) + b"\n"
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        writer.write(message)
                        await writer.drain()
                        echoed = await reader.readexactly(len(message))
                    if echoed != message:
                        raise ValueError(f"wrong echo: {echoed[:80]!r}")
                    sent += 1
                    self.messages[kind] += 1
                    await asyncio.sleep(spacing * random.uniform(0.5, 1.5))
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    writer.write_eof()
                    if await reader.read(1) != b"":
                        raise ValueError("bytes after the half-close")
                self.ok[kind] += 1
                self.spanned(kind, start, self.now())
            except Exception as e:  # noqa: BLE001
                self.session_failed(kind, sid, start, sent, e)
            finally:
                if writer is not None:
                    writer.close()
            if not long:
                await asyncio.sleep(random.uniform(0.05, 0.3) / self.load)

    # --- control and sampling

    async def control(self):
        tick = 0
        next_upgrade = self.upgrade_every if self.upgrade_every > 0 else float("inf")
        while self.now() < self.duration:
            tick += 1
            await asyncio.sleep(max(0.0, tick - self.now()))
            if self.now() >= self.duration:
                break
            if not self.current.alive() and not self.upgrading:
                self.control_fail(f"sluice {self.current.pid} exited ({self.current.popen.returncode}); "
                                  f"log tail:\n{read_text(self.current.log)[-3000:]}")
                self.stop = True
                return
            if self.churn_every > 0 and tick % max(1, round(self.churn_every)) == 0:
                self.churn()
            if tick % max(1, round(self.reload_every)) == 0 and not self.upgrading:
                self.hup()
            if self.now() >= next_upgrade and not self.upgrading:
                next_upgrade += self.upgrade_every
                if self.duration - self.now() > 10:
                    asyncio.create_task(self.upgrade())

    def sample(self, final=False):
        t = self.now()
        for proc in self.processes:
            if not proc.alive():
                continue
            status = proc_status(proc.pid)
            if status is None:
                continue
            role = "serving" if proc is self.current else (
                "draining" if proc.quit_at is not None else "starting")
            if final:
                role = "idle"  # after the traffic stopped: not in the statistics
            self.samples.append({
                "t": t, "pid": proc.pid, "gen": proc.gen, "role": role, "rss_kb": status[0],
                "fds": fd_count(proc.pid), "cpu_s": cpu_seconds(proc.pid),
                "age": t - (proc.serving_from if proc.serving_from is not None else proc.started),
            })

    async def sampler(self):
        n = 0
        while not self.stop:
            self.sample()
            cur = [s for s in self.samples if s["pid"] == self.current.pid][-1:]
            print(f"[{self.now():7.1f}s] ok {sum(self.ok.values())} failed {sum(self.failed.values())}"
                  f" | SIGHUPs {len(self.hups)} upgrades {sum(1 for u in self.upgrades if u.get('result') == 'ok')}"
                  f" | pid {self.current.pid}"
                  + (f" RSS {cur[0]['rss_kb'] / 1024:.1f} MiB fds {cur[0]['fds']}" if cur else "")
                  + f" | endpoints {','.join(str(p) for p in self.endpoints)}", flush=True)
            n += 1
            await asyncio.sleep(max(0.0, n * self.sample_every - self.now()))

    # --- backends

    def start_backends(self):
        self.backends = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "backends", json.dumps(self.ports)],
            stdout=subprocess.PIPE, text=True)
        with open(os.path.join(self.dir, "backends.pid"), "w") as f:
            f.write(f"{self.backends.pid}\n")
        if self.backends.stdout.readline().strip() != "ready":
            raise SystemExit("the backends did not start")

    def backend_state(self):
        url = f"http://{HOST}:{self.ports['http'][0]}/_soak/state"
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())

    # --- run

    async def run(self):
        self.t0 = time.monotonic()
        self.write_config()
        self.start_backends()
        await self.start_first()
        print(f"soak: {self.duration:.0f} s, run id {self.run_id}, sluice pid {self.current.pid}, "
              f"dir {self.dir}; churn every {self.churn_every:g} s, SIGHUP every "
              f"{self.reload_every:g} s, upgrade every {self.upgrade_every:g} s, grace "
              f"{self.grace} s, load x{self.load:g}", flush=True)
        self.t0 = time.monotonic()  # run time starts with traffic
        for p in self.processes:
            p.started = 0.0
        workers = []
        for wid in range(4):
            workers.append(self.http_worker("get_keepalive", "GET", True, 30, wid))
        for wid in range(2):
            workers.append(self.http_worker("get_new", "GET", False, 20, wid))
            workers.append(self.http_worker("post_new", "POST", False, 10, wid))
            workers.append(self.http_worker("post_keepalive", "POST", True, 15, wid))
            workers.append(self.ws_worker("ws_short", wid, False))
            workers.append(self.ws_worker("ws_long", wid, True))
            workers.append(self.tcp_worker("tcp_short", wid, False))
            workers.append(self.tcp_worker("tcp_long", wid, True))
        tasks = [asyncio.create_task(w) for w in workers]
        sampler = asyncio.create_task(self.sampler())
        await self.control()
        self.stop = True
        self.event("stop", "traffic stops")
        await asyncio.gather(*tasks)
        await sampler
        # Upgrades still running, old processes still draining.
        while self.upgrading or any(p.alive() and p.quit_at is not None for p in self.processes):
            await asyncio.sleep(0.2)
            if self.now() > self.duration + self.grace + 30:
                break
        await asyncio.sleep(0.5)
        self.sample(final=True)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                await task
        state = await asyncio.get_running_loop().run_in_executor(None, self.backend_state)
        # Stop sluice (drain_delay 0, nothing open: it exits at once) and the backends.
        stopped = time.monotonic()
        self.current.popen.send_signal(signal.SIGTERM)
        try:
            self.current.popen.wait(timeout=self.grace + 10)
        except subprocess.TimeoutExpired:
            self.control_fail(f"sluice {self.current.pid} did not exit after SIGTERM")
            self.current.popen.kill()
        self.stop_time = time.monotonic() - stopped
        self.backends.send_signal(signal.SIGTERM)
        self.backends.wait(timeout=10)
        return self.report(state)

    # --- report

    def access_log_summary(self):
        by_route = Counter()
        odd = []
        attempt_results = Counter()
        multi = 0
        by_id = defaultdict(list)
        failed_ids = {f[2] for f in self.failures}
        lines = 0
        with open(self.access_log, errors="replace") as f:
            for raw in f:
                try:
                    record = json.loads(raw)
                except ValueError:
                    odd.append(f"unparsable: {raw[:200]}")
                    continue
                lines += 1
                route = record.get("route") or f"({record.get('listener')})"
                status = record.get("status")
                ended = record.get("ended")
                by_route[(route, status if record.get("proto") != "tcp" else f"tcp {ended}")] += 1
                attempts = record.get("attempts") or []
                for a in attempts:
                    attempt_results[a.get("result")] += 1
                if len(attempts) > 1:
                    multi += 1
                bad = (record.get("proto") == "tcp" and ended != "closed") or (
                    record.get("proto") != "tcp" and not (
                        isinstance(status, int) and (200 <= status < 300 or (status == 101 and ended == "closed"))))
                if bad and len(odd) < 10:
                    odd.append(raw.strip()[:600])
                if record.get("request_id") in failed_ids:
                    by_id[record["request_id"]].append(raw.strip()[:600])
        return lines, by_route, odd, attempt_results, multi, by_id

    def series_stats(self, samples, key):
        """(min, max, slope per minute) of `key` over `samples` (least squares)."""
        values = [s[key] for s in samples if s[key] is not None]
        if not values:
            return None
        xs = [s["t"] / 60 for s in samples if s[key] is not None]
        slope = None
        if len(values) >= 3 and max(xs) > min(xs):
            mx, my = sum(xs) / len(xs), sum(values) / len(values)
            slope = (sum((x - mx) * (y - my) for x, y in zip(xs, values))
                     / sum((x - mx) ** 2 for x in xs))
        return min(values), max(values), slope

    def report(self, state):
        out = []
        p = out.append
        failed_total = sum(self.failed.values())
        tokens = Counter(state["tokens"])
        duplicates = {t: n for t, n in tokens.items() if n > 1}
        lost = [t for t, ok in self.posts.items() if ok and tokens.get(t, 0) == 0]
        failed_delivered = [t for t, ok in self.posts.items() if not ok and tokens.get(t, 0) > 0]
        unknown_tokens = [t for t in tokens if t not in self.posts]
        upgrades_ok = sum(1 for u in self.upgrades if u.get("result") == "ok")
        logs = "".join(read_text(proc.log) for proc in self.processes)
        reloads_ok = logs.count("config reloaded (")
        reloads_rejected = logs.count("rejected; still serving")
        for proc in self.processes:
            text = read_text(proc.log)
            for needle in ("panicked", "SIGQUIT ignored"):
                if needle in text:
                    self.control_fail(f"sluice {proc.pid} log says {needle!r}: "
                                      + next(l for l in text.splitlines() if needle in l)[:300])
        if reloads_rejected:
            self.control_fail(f"{reloads_rejected} reloads rejected")
        if reloads_ok != len(self.hups) and os.environ.get("SOAK_WATCH_CONFIG") != "1":
            self.control_fail(f"{len(self.hups)} SIGHUPs sent, {reloads_ok} reloads logged")
        if state["body_error_count"]:
            self.control_fail(f"{state['body_error_count']} request bodies arrived altered: "
                              f"{state['body_errors'][:3]}")
        if unknown_tokens:
            self.control_fail(f"{len(unknown_tokens)} tokens the clients never sent: {unknown_tokens[:3]}")

        p(f"# sluice soak (issue #14): {self.duration:.0f} s")
        p("")
        p(f"Binary `{self.bin}`; churn every {self.churn_every:g} s, SIGHUP every "
          f"{self.reload_every:g} s, upgrade every {self.upgrade_every:g} s, grace_period "
          f"{self.grace} s, load x{self.load:g}, warm-up {self.warmup:g} s; run id {self.run_id}.")
        p("")
        p("## Requests and sessions")
        p("")
        p("| kind | ok | failed | excused (cut at grace) | connections | closed by `Connection: close` | messages | spanned a reload | spanned an upgrade |")
        p("|---|---|---|---|---|---|---|---|---|")
        kinds = ["get_keepalive", "get_new", "post_new", "post_keepalive",
                 "ws_short", "ws_long", "tcp_short", "tcp_long"]
        for k in kinds:
            p(f"| {k} | {self.ok[k]} | {self.failed[k]} | {self.excused[k]} | "
              f"{self.connections[k] or ''} | {self.server_closes[k] or ''} | {self.messages[k] or ''} | "
              f"{self.spanning[k]['reload'] or ''} | {self.spanning[k]['upgrade'] or ''} |")
        total_ok = sum(self.ok.values())
        p(f"| **total** | {total_ok} | {failed_total} | {sum(self.excused.values())} | | | | | |")
        p("")
        http_ok = sum(self.ok[k] for k in kinds[:4])
        p(f"HTTP requests: {http_ok / self.duration:.0f}/s on average. Backend requests by port: "
          + ", ".join(f"{port}: {n}" for port, n in sorted(state["requests"].items()))
          + f"; retried by sluice (`X-Sluice-Attempt` > 1, as seen by the backends): "
          + (", ".join(f"{m} {n}" for m, n in state["retried"].items()) or "none")
          + f". Backend WebSocket sessions {state['ws_sessions']}, TCP sessions {state['tcp_sessions']}.")
        p("")
        p("## POST delivery")
        p("")
        p(f"- POSTs sent: {len(self.posts)}, answered 2xx: {sum(1 for ok in self.posts.values() if ok)}")
        p(f"- **duplicates** (token delivered more than once): {len(duplicates)}"
          + (f": {list(duplicates.items())[:5]}" if duplicates else ""))
        p(f"- **lost** (2xx to the client, never seen by a backend): {len(lost)}"
          + (f": {lost[:5]}" if lost else ""))
        p(f"- failed at the client but delivered: {len(failed_delivered)}"
          + (f": {failed_delivered[:5]}" if failed_delivered else ""))
        p("")
        p("## Reloads and upgrades")
        p("")
        p(f"- SIGHUPs sent: {len(self.hups)} (skipped, handler not yet installed: "
          f"{self.hups_skipped}); reloads logged ok: {reloads_ok}, rejected: {reloads_rejected}")
        p(f"- endpoint list rewrites: {sum(1 for e in self.events if e[1] == 'churn')}")
        p(f"- upgrades: {upgrades_ok} ok of {len(self.upgrades)}")
        for u in self.upgrades:
            p(f"  - #{u['n']} at {u['start']:.1f} s: pid {u['old_pid']} -> {u.get('new_pid')}, "
              f"{u.get('result', 'incomplete')}; successor listening after "
              f"{u.get('successor_listening', float('nan')):.2f} s, serving "
              f"{u.get('ready', float('nan')) - u.get('quit', float('nan')):.2f} s after SIGQUIT; "
              f"old process exited {u.get('old_lived', float('nan')):.1f} s after SIGQUIT "
              f"(code {u.get('old_exit_code')}{', cut sessions at grace' if u.get('cut_at_grace') else ''})")
        p(f"- final SIGTERM: exited after {self.stop_time:.2f} s")
        p("")
        p("## Failures")
        p("")
        if not failed_total and not self.control_failures:
            p("None.")
        for t, text in self.control_failures:
            p(f"- control at {t:.1f} s: {text}")
        lines, by_route, odd, attempt_results, multi, by_id = self.access_log_summary()
        if failed_total:
            p("")
            p("By kind: " + ", ".join(f"{k} {n}" for k, n in self.failed.items()))
            p("")
            p("By phase: " + ", ".join(f"{k} {n}" for k, n in Counter(
                self.phase(f[0]).split(" (")[0] for f in self.failures).items()))
            p("")
            p("First failures:")
            p("")
            for t, kind, ident, detail, extra in self.failures[:12]:
                p(f"- {t:.2f} s, {kind}, {self.phase(t)}: {detail} ({extra}); id `{ident}`")
                for line in by_id.get(ident, [])[:2]:
                    p(f"  - access log: `{line}`")
                if ident not in by_id:
                    p("  - access log: no line with this request id")
                near = [e for e in self.events if t - 3 <= e[0] <= t + 0.5 and e[1] != "churn"]
                if near:
                    p("  - events: " + "; ".join(f"{e[0]:.2f} s {e[1]} {e[2]}" for e in near))
        p("")
        p("## Access log")
        p("")
        p(f"{lines} lines. By route and status: "
          + ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(by_route.items(), key=str)))
        p("")
        p(f"Upstream attempt results: " + ", ".join(f"{r} {n}" for r, n in attempt_results.items())
          + f"; requests with more than one attempt: {multi}.")
        if odd:
            p("")
            p("Lines that are not 2xx / 101 closed / tcp closed (first 10):")
            p("")
            for line in odd:
                p(f"- `{line}`")
        p("")
        p("## Memory and file descriptors")
        p("")
        p(f"Per sluice process, samples every {self.sample_every:g} s while serving, after "
          f"warm-up (the process serving for at least {self.warmup:g} s); slope by least squares.")
        p("")
        p("| gen | pid | serving | samples | RSS min / max (KB) | RSS slope (KB/min) | fds min / max | fds slope (/min) |")
        p("|---|---|---|---|---|---|---|---|")
        for proc in self.processes:
            mine = [s for s in self.samples if s["pid"] == proc.pid and s["role"] == "serving"]
            warm = [s for s in mine if s["age"] >= self.warmup]
            rss, fds = self.series_stats(warm, "rss_kb"), self.series_stats(warm, "fds")
            served = (f"{proc.serving_from:.0f}-{proc.quit_at if proc.quit_at is not None else self.duration:.0f} s"
                      if proc.serving_from is not None else "never")
            if rss:
                slope = f"{rss[2]:+.0f}" if rss[2] is not None else "n/a"
                fslope = f"{fds[2]:+.1f}" if fds and fds[2] is not None else "n/a"
                p(f"| {proc.gen} | {proc.pid} | {served} | {len(warm)} | {rss[0]} / {rss[1]} | {slope} | "
                  f"{fds[0]} / {fds[1]} | {fslope} |")
            else:
                p(f"| {proc.gen} | {proc.pid} | {served} | 0 | | | | |")
        p("")
        p("Series (t s, pid, role, RSS KB, fds, CPU s):")
        p("")
        p("```")
        for s in self.samples:
            p(f"{s['t']:7.1f} {s['pid']:>7} {s['role']:<8} {s['rss_kb']:>7} {s['fds']!s:>5} "
              f"{s['cpu_s'] if s['cpu_s'] is not None else '':>7}")
        p("```")
        failures = failed_total + len(self.control_failures) + len(duplicates) + len(lost)
        p("")
        p(f"**Result: {'PASS' if not failures else 'FAIL'}** ({failed_total} failed requests/sessions, "
          f"{len(self.control_failures)} control failures, {len(duplicates)} duplicate and "
          f"{len(lost)} lost POSTs).")
        text = "\n".join(out) + "\n"
        print(text, flush=True)
        if self.report_path:
            with open(self.report_path, "w") as f:
                f.write(text)
        return 1 if failures else 0


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "backends":
        ports = json.loads(sys.argv[2])
        asyncio.run(Backends(ports, idle=float(os.environ.get("SOAK_BACKEND_IDLE", "30"))).serve())
        return 0
    if len(sys.argv) >= 2 and sys.argv[1] == "drive":
        soak = Soak()
        try:
            return asyncio.run(soak.run())
        finally:
            for proc in soak.processes:
                if proc.alive():
                    proc.popen.kill()
            if soak.backends is not None and soak.backends.poll() is None:
                soak.backends.kill()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
