#!/usr/bin/env python3
"""A webhook receiver for the alert tests, on 127.0.0.1 only.

It records every request as one JSON line (time, path, headers, body,
whether the body parses as strict JSON) and answers with the statuses it
is told to, after an optional delay. Two more modes stand in for a dead
network: --blackhole listens on TCP and never accepts or answers, and
--dns-blackhole binds a UDP port (a DNS server's), records the size of
each query it gets and never answers.

The port it got is written to --port-file once it listens, so tests can
ask for port 0 and never race another test for a fixed port.
"""
import argparse
import http.server
import json
import os
import socket
import threading
import time

LOCK = threading.Lock()


def strict_json(text):
    """True when text is JSON a strict parser takes: no NaN or Infinity."""
    def refuse(token):
        raise ValueError("not JSON: " + token)
    try:
        json.loads(text, parse_constant=refuse)
        return True
    except ValueError:
        return False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        opts = self.server.opts
        with LOCK:
            count = self.server.count
            self.server.count += 1
        statuses = opts.status
        status = statuses[min(count, len(statuses) - 1)]
        record = {
            "time": time.time(),
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body,
            "strict_json": strict_json(body),
            "status": status,
        }
        with LOCK, open(opts.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if opts.delay:
            time.sleep(opts.delay)
        try:
            self.send_response(status)
            if opts.retry_after is not None and status in (429, 503):
                self.send_header("Retry-After", str(opts.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the sender gave up waiting; that is what is tested

    def log_message(self, *args):
        pass


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(str(port))
    os.rename(tmp, path)


def hold(sock, opts):
    """Keeps sock open and silent until killed; the kernel completes
    connections into its backlog, so clients connect and then wait."""
    write_port(opts.port_file, sock.getsockname()[1])
    while True:
        time.sleep(3600)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", default="200",
                        help="statuses for successive requests, e.g. 503,200;"
                        " the last one repeats")
    parser.add_argument("--retry-after", type=int)
    parser.add_argument("--delay", type=float, default=0)
    parser.add_argument("--blackhole", action="store_true")
    parser.add_argument("--dns-blackhole", action="store_true")
    opts = parser.parse_args()
    opts.status = [int(s) for s in opts.status.split(",")]
    if not opts.host.startswith("127."):
        parser.error("--host must be a loopback address")

    if opts.blackhole:
        sock = socket.socket()
        sock.bind((opts.host, opts.port))
        sock.listen(64)
        hold(sock, opts)
    if opts.dns_blackhole:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((opts.host, opts.port))
        write_port(opts.port_file, sock.getsockname()[1])
        while True:
            data, _ = sock.recvfrom(4096)
            with open(opts.log, "a", encoding="utf-8") as log:
                log.write(json.dumps({"time": time.time(),
                                      "bytes": len(data)}) + "\n")

    server = http.server.ThreadingHTTPServer((opts.host, opts.port), Handler)
    server.daemon_threads = True
    server.opts = opts
    server.count = 0
    write_port(opts.port_file, server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
