#!/usr/bin/env python3
"""An outside Kafka client for the tests: Confluent's Python client, not our code.

  kafka_client.py produce BROKERS TOPIC < records.jsonl
      each line {"key": str|null, "headers": {name: value}, "value": str}
  kafka_client.py consume BROKERS TOPIC COUNT TIMEOUT_SECONDS
      prints each record as {"key", "headers", "value", "partition", "offset"} per line
  kafka_client.py create-topics BROKERS PARTITIONS TOPIC...
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def produce(brokers, topic):
    producer = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        # One record per batch. tansu 0.6 advances a partition's high watermark by one per
        # batch, not per record, so after a restart a consumer's committed offset inside a
        # multi-record batch lies past the watermark and it stalls. Real Kafka is fine
        # either way; this keeps the tests about Missive, not about that broker bug.
        "batch.num.messages": 1,
    })
    errors = []

    def delivered(err, _msg):
        if err is not None:
            errors.append(str(err))

    count = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        producer.produce(
            topic,
            key=record.get("key"),
            value=record["value"].encode(),
            headers=[(k, v.encode()) for k, v in record.get("headers", {}).items()],
            on_delivery=delivered,
        )
        count += 1
        producer.poll(0)
    remaining = producer.flush(30)
    if errors or remaining:
        sys.exit(f"produce failed: {errors} ({remaining} undelivered)")
    print(count)


def consume(brokers, topic, count, timeout):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": f"tests-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    deadline = time.time() + timeout
    while seen < count and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        print(json.dumps({
            "key": msg.key().decode() if msg.key() else None,
            "headers": {k: v.decode() for k, v in (msg.headers() or [])},
            "value": msg.value().decode() if msg.value() else "",
            "partition": msg.partition(),
            "offset": msg.offset(),
        }), flush=True)
        seen += 1
    consumer.close()


def lag(brokers, group, topic):
    """Records of `topic` the consumer `group` has not committed yet (all partitions)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group,
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    committed = consumer.committed(partitions, timeout=10)
    behind = 0
    for tp in committed:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        behind += high - max(tp.offset, 0)
    consumer.close()
    print(behind)


def delete_topics(brokers, topics):
    admin = AdminClient({"bootstrap.servers": brokers})
    for _topic, future in admin.delete_topics(list(topics), operation_timeout=10).items():
        try:
            future.result(30)
        except Exception as err:  # never created is fine
            if "UNKNOWN_TOPIC" not in str(err):
                raise


def create_topics(brokers, partitions, topics):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
    for topic, future in futures.items():
        try:
            future.result(30)
        except Exception as err:  # already exists is fine
            if "TOPIC_ALREADY_EXISTS" not in str(err):
                raise


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "produce":
        produce(sys.argv[2], sys.argv[3])
    elif cmd == "consume":
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "create-topics":
        create_topics(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    elif cmd == "delete":
        delete_topics(sys.argv[2], sys.argv[3:])
    elif cmd == "lag":
        lag(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
