#!/usr/bin/env python3
"""Sends N GET requests one after another over one HTTP/1.1 keepalive connection to
127.0.0.1:PORT and checks each is a 200. Used to drive an exact request count through a proxy
running under callgrind.

Usage: sequential_requests.py PORT N ["Name: value" ...]   (headers sent with every request)
"""
import http.client
import sys


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    headers = dict(h.split(": ", 1) for h in sys.argv[3:])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(count):
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"request {i}: status {response.status}")
    connection.close()


if __name__ == "__main__":
    main()
