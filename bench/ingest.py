#!/usr/bin/env python3
"""Inbox -> stored message through `missive dev`'s dispatcher, on MariaDB + Redis + Kafka.

1. Throughput: N submitted events are put on the inbox first, then `missive dev` starts
   and drains them; reports events/s from the first to the last stored message.
2. Lag: events are produced at a steady RATE per second for SECONDS; each carries its send
   time, and the lag is the message's `created_at` minus that (p50, p99, max).

Usage: python3 bench/ingest.py MISSIVE_BINARY [N] [RATE] [SECONDS]
Needs MariaDB (root@127.0.0.1), Redis and a Kafka broker (scripts/kafka.sh) running.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BROKERS = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
PARTITIONS = int(os.environ.get("PARTITIONS", "8"))
USERS = 64


def sql(query):
    # The test server of MISSIVE_TEST_DATABASE_URL, through the one script that reads it.
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "mariadb.sh")
    out = subprocess.run(["bash", script, "-N", "-e", query],
                         check=True, capture_output=True, text=True)
    return out.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dev:
    def __init__(self, binary, name, kafka=True):
        self.port = free_port()
        self.events_port = free_port()
        env = {
            "PATH": os.environ["PATH"], "PORT": str(self.port),
            "DEV_EVENTS_PORT": str(self.events_port), "LOG_LEVEL": "warn",
            # The benchmark users all sign up from 127.0.0.1.
            "SIGNUPS_PER_CLIENT_PER_HOUR": "1000000",
            "DATABASE_URL": os.environ.get("MISSIVE_TEST_DATABASE_URL", "mysql://root@127.0.0.1:3306").rstrip("/")
            + f"/{name}",
            "DB_MAX_CONNECTIONS": "16",
            "REDIS_URL": os.environ.get("MISSIVE_TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            "REDIS_KEY_PREFIX": f"{name}:",
            "KAFKA_BROKERS": BROKERS, "KAFKA_EVENTS_TOPIC": f"{name}.events",
            "KAFKA_INBOX_TOPIC": f"{name}.inbox", "KAFKA_DLQ_TOPIC": f"{name}.dlq",
        }
        if not kafka:
            env = {k: v for k, v in env.items() if not k.startswith("KAFKA_")}
        self.proc = subprocess.Popen([binary, "dev"], env=env, stdout=subprocess.PIPE, text=True)
        while "http://" not in self.proc.stdout.readline():
            pass

    def signup(self, user):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/auth/signup",
            data=json.dumps({"username": user, "password": "benchmark!"}).encode(),
            headers={"content-type": "application/json"})
        urllib.request.urlopen(req).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def record(user, text):
    return dict(
        topic=None, key=user,
        value=json.dumps({"username": user, "text": text}).encode(),
        headers=[("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()),
                 ("ce_source", b"/bench/producer"),
                 ("ce_type", b"io.missive.message.submitted.v1"),
                 ("content-type", b"application/json")])


def wait_for(name, count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if int(sql(f"SELECT COUNT(*) FROM `{name}`.messages")) >= count:
            return True
        time.sleep(0.2)
    return False


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    name = f"missive_bench_{uuid.uuid4().hex[:8]}"
    users = [f"user{i:02}" for i in range(USERS)]
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for f in admin.create_topics([NewTopic(f"{name}.{t}", num_partitions=PARTITIONS, replication_factor=1)
                                  for t in ("events", "inbox", "dlq")]).values():
        f.result(30)
    producer = Producer({"bootstrap.servers": BROKERS, "acks": "all", "linger.ms": 5})
    inbox = f"{name}.inbox"
    dev = Dev(binary, name)
    try:
        for u in users:
            dev.signup(u)
        dev.stop()

        # 1. Throughput: fill the inbox, then let a fresh dispatcher drain it.
        for i in range(n):
            r = record(users[i % USERS], f"bulk {i}")
            producer.produce(inbox, key=r["key"], value=r["value"], headers=r["headers"])
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        dev = Dev(binary, name)
        if not wait_for(name, n, 300):
            sys.exit("throughput run did not finish in 300 s")
        first, last = sql(f"SELECT MIN(created_at), MAX(created_at) FROM `{name}`.messages").split()
        span = (int(last) - int(first)) / 1000
        print(f"throughput: {n} events stored in {span:.2f} s = {n / span:,.0f} events/s "
              f"({PARTITIONS} partitions, {USERS} users, MariaDB + Redis + Kafka)")

        # 2. Lag at a steady rate.
        sent = 0
        start = time.time()
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate)
            while sent < due:
                now_ms = int(time.time() * 1000)
                r = record(users[sent % USERS], f"lag {sent} {now_ms}")
                producer.produce(inbox, key=r["key"], value=r["value"], headers=r["headers"])
                sent += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(60)
        if not wait_for(name, n + sent, 120):
            sys.exit("lag run did not finish")
        rows = sql(f"SELECT text, created_at FROM `{name}`.messages WHERE text LIKE 'lag %'")
        lags = sorted(int(line.split("\t")[1]) - int(line.split("\t")[0].split()[2])
                      for line in rows.strip().splitlines())
        p = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))]
        print(f"lag at {sent / seconds:,.0f} events/s for {seconds} s: p50 {p(0.5)} ms, "
              f"p99 {p(0.99)} ms, max {lags[-1]} ms ({len(lags)} events)")
    finally:
        dev.stop()
        sql(f"DROP DATABASE IF EXISTS `{name}`")


if __name__ == "__main__":
    main()
