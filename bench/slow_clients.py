#!/usr/bin/env python3
"""Slow and oversized request heads against a server on 127.0.0.1:PORT (issue #13).

Phase 1, endless headers: ENDLESS connections each send a request line and a header line
that never ends, as fast as the server reads it, up to 1 MiB per connection. A server with a
header line limit answers and closes; one without keeps buffering.
Phase 2, trickled heads: TRICKLE connections each send a request line and then one header
byte every 2 s. Only a deadline for the whole head ends them.

Prints, as one line of `key=value`: the server's RSS before, after phase 1 (connections
still held) and during phase 2, in KiB per connection, how many connections of each phase
the server closed, and after how many seconds the last trickled one was closed.

Usage: slow_clients.py PORT SERVER_PID ENDLESS TRICKLE WAIT_SECONDS
"""
import selectors
import socket
import sys
import time

MIB = 1 << 20


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_all(port, count, first_bytes):
    conns = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(first_bytes)
        s.setblocking(False)
        conns.append(s)
    return conns


def closed_by_server(s):
    try:
        data = s.recv(65536)
        return data == b"" or data.startswith(b"HTTP/")
    except BlockingIOError:
        return False
    except OSError:
        return True


def endless_headers(port, count):
    """Feeds each connection header bytes until the server stops reading or 1 MiB went."""
    conns = open_all(port, count, b"GET / HTTP/1.1\r\nHost: bench\r\nx-long: ")
    sent = {s: 0 for s in conns}
    chunk = b"a" * 16384
    selector = selectors.DefaultSelector()
    for s in conns:
        selector.register(s, selectors.EVENT_WRITE)
    deadline = time.time() + 30
    while selector.get_map() and time.time() < deadline:
        for key, _ in selector.select(timeout=0.5):
            s = key.fileobj
            try:
                sent[s] += s.send(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                selector.unregister(s)
                continue
            if sent[s] >= MIB:
                selector.unregister(s)
    time.sleep(1)
    return conns


def main():
    port, pid, endless, trickle, wait = (int(a) for a in sys.argv[1:6])
    before = rss_kib(pid)

    held = endless_headers(port, endless)
    after_endless = rss_kib(pid)
    endless_closed = sum(closed_by_server(s) for s in held)

    conns = open_all(port, trickle, b"GET / HTTP/1.1\r\nHost: bench\r\n")
    start = time.time()
    open_conns = set(conns)
    peak = rss_kib(pid)
    last_close = None
    while open_conns and time.time() - start < wait:
        for s in list(open_conns):
            if closed_by_server(s):
                open_conns.discard(s)
                last_close = time.time() - start
                continue
            try:
                s.send(b"x")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                open_conns.discard(s)
                last_close = time.time() - start
        peak = max(peak, rss_kib(pid))
        time.sleep(2)
    trickle_closed = trickle - len(open_conns)

    per_endless = (after_endless - before) / max(endless, 1)
    per_trickle = (peak - after_endless) / max(trickle, 1)
    print(
        f"rss_before_kib={before} rss_after_endless_kib={after_endless} "
        f"endless_kib_per_conn={per_endless:.1f} endless_closed={endless_closed}/{endless} "
        f"rss_trickle_peak_kib={peak} trickle_kib_per_conn={per_trickle:.1f} "
        f"trickle_closed={trickle_closed}/{trickle} "
        f"last_trickle_closed_after_s={'%.0f' % last_close if last_close else 'never'}"
    )
    for s in held + conns:
        s.close()


if __name__ == "__main__":
    main()
