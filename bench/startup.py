#!/usr/bin/env python3
"""Start-up and memory of every function binary.

For each binary: exec -> first `GET /healthz` 200 (median and p90 over N runs), idle RSS
after start-up and after serving a few requests, and the stripped binary size.

With --readyz: exec -> first `GET /readyz` 200 instead, against live MariaDB (a database
of the run's own, migrated first and dropped at the end) and Redis: the cold start a request waits for when
Knative scales a function from zero (its readiness probe gates traffic).

Usage: python3 bench/startup.py [--readyz] BIN_DIR [runs]
  BIN_DIR: target/release, or target/x86_64-unknown-linux-gnu/release for the statically
  linked binaries the images contain. The `missive` binary there migrates the database.
"""
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every function crate of the workspace (the web app's server included).
FUNCTIONS = sorted(
    name for name in os.listdir(os.path.join(ROOT, "functions"))
    if os.path.isfile(os.path.join(ROOT, "functions", name, "Cargo.toml"))
)

ENV = {
    "PATH": os.environ.get("PATH", "/usr/bin"),
    # Real URLs; nothing connects at start-up (the pools are lazy), which is the point.
    # A database of this run's own (created by `missive migrate`, dropped at the end), so
    # runs of different builds never meet on one schema.
    "DATABASE_URL": os.environ.get("MISSIVE_TEST_DATABASE_URL", "mysql://root@127.0.0.1:3306").rstrip("/")
    + f"/missive_bench_{os.getpid()}",
    "REDIS_URL": os.environ.get("MISSIVE_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
    "KAFKA_BROKERS": os.environ.get("MISSIVE_TEST_KAFKA_BROKERS", "127.0.0.1:9092"),
    "LOG_LEVEL": "warn",
    # Event functions verify sender tokens (as deployed); the keys are fetched on the
    # first delivery, not at start-up.
    "OIDC_ISSUER": "https://kubernetes.default.svc.cluster.local",
    "OIDC_AUDIENCE": "missive/bench",
    "OIDC_ALLOWED_SUBJECTS": "system:serviceaccount:missive:bench",
}
# With OTEL_EXPORTER_OTLP_ENDPOINT set, the exporters are built at start-up too (the
# figure for "cold start with the exporter configured").
for name in ("OTEL_EXPORTER_OTLP_ENDPOINT",):
    if os.environ.get(name):
        ENV[name] = os.environ[name]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = "/healthz"


def healthz(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(f"GET {PROBE} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_start(binary):
    port = free_port()
    env = dict(ENV, PORT=str(port))
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL)
    try:
        while not healthz(port):
            if time.perf_counter() - start > 5:
                raise RuntimeError(f"{binary} did not answer {PROBE} 200 within 5 s")
        elapsed = time.perf_counter() - start
        time.sleep(0.2)
        idle = rss_kib(proc.pid)
        for _ in range(20):
            healthz(port)
        time.sleep(0.2)
        served = rss_kib(proc.pid)
        return elapsed, idle, served
    finally:
        proc.terminate()
        proc.wait()


def main():
    global PROBE
    args = sys.argv[1:]
    budget = 10
    if args[:1] == ["--readyz"]:
        args = args[1:]
        PROBE, budget = "/readyz", 50
        # A migrated database for the probes' schema check; the web function's files.
        subprocess.run([os.path.join(args[0], "missive"), "migrate"], env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
        ENV["FRONTEND_DIR"] = os.path.join(ROOT, "frontend", "dist")
        if not os.path.isfile(os.path.join(ENV["FRONTEND_DIR"], "index.html")):
            sys.exit("build the web app first: npm --prefix frontend ci && npm --prefix frontend run build")
    release = args[0]
    runs = int(args[1]) if len(args) > 1 else 30
    print(f"exec -> first {PROBE} 200, {runs} starts each")
    print(f"{'function':<18}{'start median':>14}{'p90':>9}{'idle RSS':>11}{'RSS after 20 req':>18}{'size':>10}")
    worst = {"start": 0.0, "rss": 0, "size": 0}
    for name in FUNCTIONS:
        binary = os.path.join(release, name)
        samples = [one_start(binary) for _ in range(runs)]
        starts = sorted(s[0] * 1000 for s in samples)
        median = statistics.median(starts)
        p90 = starts[int(len(starts) * 0.9) - 1]
        idle = statistics.median(s[1] for s in samples) / 1024
        served = statistics.median(s[2] for s in samples) / 1024
        size = os.path.getsize(binary) / 1024 / 1024
        worst["start"] = max(worst["start"], median)
        worst["rss"] = max(worst["rss"], served)
        worst["size"] = max(worst["size"], size)
        print(f"{name:<18}{median:>11.2f} ms{p90:>6.2f} ms{idle:>8.1f} MB{served:>15.1f} MB{size:>7.1f} MB")
    print(f"worst: start-up median {worst['start']:.2f} ms (budget {budget}), "
          f"RSS {worst['rss']:.1f} MB (budget 15), binary {worst['size']:.1f} MB (budget 15)")


def drop_database():
    """Removes this run's database (if `--readyz` made one)."""
    name = ENV["DATABASE_URL"].rsplit("/", 1)[1]
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "mariadb.sh"), "-e",
                    f"DROP DATABASE IF EXISTS `{name}`"], capture_output=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        if sys.argv[1:2] == ["--readyz"]:
            drop_database()
