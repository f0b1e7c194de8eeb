#!/usr/bin/env python3
"""Opens N HTTP/1.1 keepalive connections to 127.0.0.1:PORT, sends one GET on each and reads
the response, then holds them all idle for HOLD seconds. Prints "ready" on stdout once every
connection has had its response, so the caller can measure the proxy's RSS while they are held.
With --tls the connections are HTTPS (certificate not verified, ALPN http/1.1).

Usage: hold_connections.py [--tls] PORT N HOLD_SECONDS
"""
import socket
import ssl
import sys
import time


def main():
    args = sys.argv[1:]
    tls = None
    if args and args[0] == "--tls":
        args = args[1:]
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["http/1.1"])
    port, count, hold = int(args[0]), int(args[1]), float(args[2])
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    held = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls:
            s = tls.wrap_socket(s, server_hostname="bench.test")
        s.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"connection {i} closed before its response")
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit(f"connection {i} closed mid-body")
            body += chunk
        held.append(s)
    print("ready", flush=True)
    time.sleep(hold)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
