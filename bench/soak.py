#!/usr/bin/env python3
"""Soak: `missive dev` on MariaDB + Redis + Kafka under steady mixed load for a long time
(20 minutes by default), sampled every INTERVAL seconds. What must stay flat from the
first sample after warm-up to the last: the server's RSS and CPU, its open connections
(to MariaDB, Redis, Kafka, and in total), the outbox backlog (unsent rows), and the p99
of each window's reads and writes (a write waits for its event to reach the broker, so
the broker's own CPU is sampled too: the tests' in-memory tansu slows as its log grows). A figure that creeps up is a leak (memory, connections, rows)
that a short benchmark cannot see.

The load, at RATE requests/s from CLIENTS threads with keep-alive connections, as
USERS signed-in users: 40 % writes (POST /api/messages, a third with an Idempotency-Key;
once a client holds KEEP messages of a user, a DELETE of its oldest instead, so the data
set stops growing after warm-up), 30 % GET /api/messages, 10 % search, 10 % GET
/api/activity, 10 % GET /api/messages/{id}; plus INBOX_RATE message.submitted events/s
through Kafka (the dispatcher feeds message-ingest) and the outbox relay pinged every
10 s, as PingSource would.

Usage: python3 bench/soak.py MISSIVE_BINARY [SECONDS] [RATE]
  env: INTERVAL (60), CLIENTS (8), USERS (16), INBOX_RATE (20), KEEP (50), KAFKA (1; 0 for
  a control run with events on the in-process bus and no inbox load)
Needs MariaDB (root@127.0.0.1), Redis and a Kafka broker (scripts/kafka.sh) running.
"""
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ingest import BROKERS, Dev, record, sql  # noqa: E402
from startup import rss_kib  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

INTERVAL = float(os.environ.get("INTERVAL", "60"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
USERS = int(os.environ.get("USERS", "16"))
INBOX_RATE = float(os.environ.get("INBOX_RATE", "20"))
KEEP = int(os.environ.get("KEEP", "50"))
# KAFKA=0: the control run, events on the in-process bus (no broker in the picture).
KAFKA = os.environ.get("KAFKA", "1") != "0"


class Window:
    """Latencies and failures of one sampling window, shared by the clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.latencies, self.errors = {"read": [], "write": []}, 0

    def add(self, kind, seconds, status):
        with self.lock:
            self.latencies[kind].append(seconds)
            if status >= 500 or status == 0:
                self.errors += 1

    def take(self):
        with self.lock:
            out = ({k: sorted(v) for k, v in self.latencies.items()}, self.errors)
            self.reset()
            return out


def client(port, cookies, rate, stop, window):
    conn = None
    mine = {}  # user -> ids of messages it posted (for GET and DELETE)
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        user = random.randrange(len(cookies))
        headers = {"Cookie": cookies[user]}
        roll = random.random()
        body = None
        posted = mine.setdefault(user, [])
        if roll < 0.40 and len(posted) >= KEEP:
            # The data set stays the same size once warm: a soak looks for what grows
            # with time (memory, connections, backlog), not with the table.
            method, path = "DELETE", f"/api/messages/{posted.pop(0)}"
        elif roll < 0.40:
            method, path = "POST", "/api/messages"
            body = json.dumps({"text": f"soak {uuid.uuid4().hex[:12]} hello world"})
            headers["Content-Type"] = "application/json"
            if random.random() < 1 / 3:
                headers["Idempotency-Key"] = uuid.uuid4().hex
        elif roll < 0.70:
            method, path = "GET", "/api/messages?limit=20"
        elif roll < 0.80:
            method, path = "GET", "/api/messages/search?q=hello+wor&limit=20"
        elif roll < 0.90:
            method, path = "GET", "/api/activity?limit=20"
        elif posted:
            method, path = "GET", f"/api/messages/{random.choice(posted)}"
        else:
            method, path = "GET", "/api/auth/me"
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(method, path, body=body, headers=headers)
            res = conn.getresponse()
            data = res.read()
            status = res.status
            if method == "POST" and status == 201:
                posted.append(json.loads(data)["id"])
        except (OSError, http.client.HTTPException):
            status = 0
            conn = None
        # A write waits for its event to reach the broker (up to PUBLISH_WAIT), a read
        # touches only MariaDB and Redis: their latencies are told apart.
        window.add("write" if method in ("POST", "DELETE") else "read", time.monotonic() - started, status)


def producer_loop(topic, users, stop):
    producer = Producer({"bootstrap.servers": BROKERS, "acks": "all", "linger.ms": 5})
    sent, start = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * INBOX_RATE)
        while sent < due:
            r = record(users[sent % len(users)], f"soak inbox {sent}")
            producer.produce(topic, key=r["key"], value=r["value"], headers=r["headers"])
            sent += 1
        producer.poll(0)
        time.sleep(0.05)
    producer.flush(30)


def relay_loop(port, stop):
    # What PingSource does: a CloudEvent to the relay every 10 s.
    while not stop.wait(10):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/_events/outbox-relay", body="{}", headers={
                "Content-Type": "application/json", "ce-specversion": "1.0",
                "ce-id": uuid.uuid4().hex, "ce-source": "/bench/soak",
                "ce-type": "dev.knative.sources.ping"})
            conn.getresponse().read()
            conn.close()
        except OSError:
            pass


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def broker_pid():
    out = subprocess.run(["pgrep", "-o", "tansu"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def connections(pid):
    """Established TCP connections of the process, by remote port."""
    out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True).stdout
    counts = {"mariadb": 0, "redis": 0, "kafka": 0, "total": 0}
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        peer = line.split()[3]
        port = peer.rsplit(":", 1)[-1]
        which = {"3306": "mariadb", "6379": "redis", "9092": "kafka"}.get(port, "other")
        counts["total"] += 1
        counts[which] = counts.get(which, 0) + 1
    return counts


def pct(values, q):
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")


def main():
    binary = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1200
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 400
    name = f"missive_soak_{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BROKERS}) if KAFKA else None
    if admin:
        for f in admin.create_topics([NewTopic(f"{name}.{t}", num_partitions=4, replication_factor=1)
                                      for t in ("events", "inbox", "dlq")]).values():
            f.result(30)
    dev = Dev(binary, name, kafka=KAFKA)
    stop = threading.Event()
    threads = []
    try:
        users = [f"soak{i:02}" for i in range(USERS)]
        cookies = []
        for u in users:
            conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=30)
            conn.request("POST", "/api/auth/signup", body=json.dumps({"username": u, "password": "benchmark!"}),
                         headers={"Content-Type": "application/json"})
            res = conn.getresponse()
            res.read()
            cookies.append(res.getheader("set-cookie").split(";")[0])
        window = Window()
        threads = [threading.Thread(target=client, args=(dev.port, cookies, rate / CLIENTS, stop, window))
                   for _ in range(CLIENTS)]
        if KAFKA:
            threads.append(threading.Thread(target=producer_loop, args=(f"{name}.inbox", users, stop)))
        threads.append(threading.Thread(target=relay_loop, args=(dev.events_port, stop)))
        for t in threads:
            t.start()
        events = f"{INBOX_RATE:.0f} inbox events/s through Kafka" if KAFKA else "no Kafka (KAFKA=0)"
        print(f"soak: {seconds:.0f} s at {rate:.0f} req/s ({CLIENTS} clients, {USERS} users) + "
              f"{events}, sampled every {INTERVAL:.0f} s; pid {dev.proc.pid}")
        print(f"{'t (s)':>6} {'req/s':>6} {'read p50':>8} {'p99':>5} {'write p50':>9} {'p99':>5} "
              f"{'5xx/err':>7} {'RSS MiB':>7} {'conns':>5} {'db':>3} {'redis':>5} {'kafka':>5} "
              f"{'outbox':>6} {'CPU%':>5} {'broker CPU%':>11}")
        broker = broker_pid() if KAFKA else None
        cpu = (cpu_seconds(dev.proc.pid), broker and cpu_seconds(broker), time.monotonic())
        start = time.monotonic()
        window.take()
        samples = []
        while time.monotonic() - start < seconds:
            time.sleep(min(INTERVAL, max(0.1, seconds - (time.monotonic() - start))))
            latencies, errors = window.take()
            elapsed = time.monotonic() - start
            conns = connections(dev.proc.pid)
            backlog = int(sql(f"SELECT COUNT(*) FROM `{name}`.outbox WHERE sent_at IS NULL"))
            now = (cpu_seconds(dev.proc.pid), broker and cpu_seconds(broker), time.monotonic())
            wall = now[2] - cpu[2]
            server_cpu = 100 * (now[0] - cpu[0]) / wall
            broker_cpu = 100 * (now[1] - cpu[1]) / wall if broker else float("nan")
            cpu = now
            reads, writes = latencies["read"], latencies["write"]
            sample = dict(t=elapsed, rate=(len(reads) + len(writes)) / INTERVAL,
                          read_p50=pct(reads, 0.5), read_p99=pct(reads, 0.99),
                          write_p50=pct(writes, 0.5), write_p99=pct(writes, 0.99), errors=errors,
                          rss=rss_kib(dev.proc.pid) / 1024, conns=conns, backlog=backlog,
                          cpu=server_cpu, broker_cpu=broker_cpu)
            samples.append(sample)
            print(f"{elapsed:6.0f} {sample['rate']:6.0f} {sample['read_p50']:8.1f} {sample['read_p99']:5.1f} "
                  f"{sample['write_p50']:9.1f} {sample['write_p99']:5.1f} {errors:7d} {sample['rss']:7.1f} "
                  f"{conns['total']:5d} {conns['mariadb']:3d} {conns['redis']:5d} {conns['kafka']:5d} "
                  f"{backlog:6d} {server_cpu:5.0f} {broker_cpu:11.0f}", flush=True)
        stop.set()
        for t in threads:
            t.join()
        if len(samples) >= 2:
            # The first sample includes warm-up (pools filling, caches); compare the
            # second with the last.
            first, last = samples[1] if len(samples) > 2 else samples[0], samples[-1]
            print("start → end: "
                  f"RSS {first['rss']:.1f} → {last['rss']:.1f} MiB, "
                  f"connections {first['conns']['total']} → {last['conns']['total']}, "
                  f"outbox backlog {first['backlog']} → {last['backlog']}, "
                  f"read p99 {first['read_p99']:.1f} → {last['read_p99']:.1f} ms, "
                  f"write p99 {first['write_p99']:.1f} → {last['write_p99']:.1f} ms, "
                  f"server CPU {first['cpu']:.0f} → {last['cpu']:.0f} %, "
                  f"broker CPU {first['broker_cpu']:.0f} → {last['broker_cpu']:.0f} %; "
                  f"5xx or failed requests: {sum(s['errors'] for s in samples)}")
            stored = int(sql(f"SELECT COUNT(*) FROM `{name}`.messages"))
            print(f"messages table at the end: {stored:,} rows")
    finally:
        stop.set()
        dev.stop()
        sql(f"DROP DATABASE IF EXISTS `{name}`")
        subprocess.run(["sh", "-c", f"redis-cli --scan --pattern '{name}:*' | xargs -r redis-cli del"],
                       capture_output=True)
        if admin:
            admin.delete_topics([f"{name}.{t}" for t in ("events", "inbox", "dlq")])


if __name__ == "__main__":
    main()
