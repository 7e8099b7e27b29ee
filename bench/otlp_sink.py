#!/usr/bin/env python3
"""A minimal OTLP/HTTP sink for benchmarks: accepts every export request, counts them and
their bytes, keeps nothing. A collector stand-in that costs the measured process nothing.

Usage: python3 bench/otlp_sink.py PORT   (prints totals on SIGTERM)
"""
import http.server
import signal
import sys

totals = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        totals["requests"] += 1
        totals["bytes"] += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(f"otlp sink: {totals['requests']} export requests, {totals['bytes']:,} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
