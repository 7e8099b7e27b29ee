#!/usr/bin/env python3
"""The outside CloudEvents peer of the interop tests: Python's `cloudevents` package
(2.x, its `cloudevents.core` bindings), not our code, over HTTP and Kafka.

Events come in on stdin, one JSON spec per line:
    {"mode": "binary"|"structured", "attributes": {...}, "data": <JSON>, "data_b64": "..."}
(`time` as RFC 3339 text; `data_b64` for raw bytes). Events go out as one JSON line each,
normalised so that two readings of the same event compare equal:
    {"attributes": {... time as RFC 3339 UTC ...}, "data": {"json": ...} | {"bytes_b64": ...} | null,
     "key": <Kafka key>}

  cloudevents_peer.py http-post URL                 POST each event; print {"status", "body"}
  cloudevents_peer.py http-echo URL                 POST each event; read the reply as an event;
                                                    print {"sent", "got"}
  cloudevents_peer.py http-receive PORT COUNT SECS  serve POSTs; print each event received
  cloudevents_peer.py kafka-produce BROKERS TOPIC   produce each event; print what was sent
  cloudevents_peer.py kafka-consume BROKERS TOPIC COUNT SECS
"""
import base64
import json
import sys
import time
import http.client
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

FORMAT = JSONFormat()


def event_of(spec):
    attributes = dict(spec["attributes"])
    if "time" in attributes:
        attributes["time"] = isoparse(attributes["time"])
    if "data_b64" in spec:
        data = base64.b64decode(spec["data_b64"])
    else:
        data = spec.get("data")
    return CloudEvent(attributes, data)


def normalise(event, key=None):
    attributes = {}
    for name, value in event.get_attributes().items():
        if isinstance(value, datetime):
            value = value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        attributes[name] = value if isinstance(value, (bool, int)) else str(value)
    data = event.get_data()
    if data is None or data == b"" or data == "":
        data = None
    elif isinstance(data, (dict, list)):
        data = {"json": data}
    else:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        data = {"bytes_b64": base64.b64encode(raw).decode()}
    out = {"attributes": attributes, "data": data}
    if key is not None:
        out["key"] = key.decode() if isinstance(key, bytes) else key
    return out


def specs():
    return [json.loads(line) for line in sys.stdin if line.strip()]


def encode(spec):
    event = event_of(spec)
    if spec.get("mode", "binary") == "structured":
        return event, ce_http.to_structured(event, FORMAT)
    return event, ce_http.to_binary(event, FORMAT)


def post(url, headers, body):
    # http.client, not urllib: urllib adds a form content-type to a body without one.
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", parts.path or "/", body=body, headers=headers)
    response = connection.getresponse()
    reply = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), reply


def http_post(url):
    for spec in specs():
        if "raw_headers" in spec:  # what no SDK would write (e.g. an unknown specversion)
            headers, body = spec["raw_headers"], spec.get("raw_body", "").encode()
        else:
            _, message = encode(spec)
            headers, body = message.headers, message.body
        status, _, reply = post(url, headers, body)
        print(json.dumps({"status": status, "body": reply.decode(errors="replace")}), flush=True)


def http_echo(url):
    for spec in specs():
        event, message = encode(spec)
        status, headers, reply = post(url, message.headers, message.body)
        if status >= 300:
            sys.exit(f"echo answered {status}: {reply!r}")
        headers = {k.lower(): v for k, v in headers.items()}
        got = ce_http.from_http(ce_http.HTTPMessage(headers=headers, body=reply), FORMAT)
        print(json.dumps({"sent": normalise(event), "got": normalise(got)}), flush=True)


def http_receive(port, count, secs):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            event = ce_http.from_http(ce_http.HTTPMessage(headers=headers, body=body), FORMAT)
            received.append(normalise(event))
            print(json.dumps(received[-1]), flush=True)
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    server.timeout = 0.5
    print(json.dumps({"listening": port}), flush=True)
    deadline = time.time() + secs
    while len(received) < count and time.time() < deadline:
        server.handle_request()
    server.server_close()


def kafka_produce(brokers, topic):
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                         "acks": "all", "batch.num.messages": 1})
    errors = []
    for spec in specs():
        event = event_of(spec)
        if spec.get("mode", "binary") == "structured":
            message = ce_kafka.to_structured(event, FORMAT)
        else:
            message = ce_kafka.to_binary(event, FORMAT)
        producer.produce(topic, key=message.key, value=message.value,
                         headers=list(message.headers.items()),
                         on_delivery=lambda err, _m: err and errors.append(str(err)))
        print(json.dumps(normalise(event, message.key)), flush=True)
    remaining = producer.flush(30)
    if errors or remaining:
        sys.exit(f"produce failed: {errors} ({remaining} undelivered)")


def kafka_consume(brokers, topic, count, secs):
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"peer-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + secs
    while seen < count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        message = ce_kafka.KafkaMessage(headers=dict(msg.headers() or []), key=msg.key(),
                                        value=msg.value() or b"")
        event = ce_kafka.from_kafka(message, FORMAT)
        print(json.dumps(normalise(event, msg.key())), flush=True)
        seen += 1
    consumer.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "http-post":
        http_post(*args)
    elif cmd == "http-echo":
        http_echo(*args)
    elif cmd == "http-receive":
        http_receive(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "kafka-produce":
        kafka_produce(*args)
    elif cmd == "kafka-consume":
        kafka_consume(args[0], args[1], int(args[2]), float(args[3]))
    else:
        sys.exit(__doc__)
