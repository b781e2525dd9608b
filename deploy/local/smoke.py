"""Smoke test of the running local stack (run by smoke.sh with the venv python).

Produces N messages to a fresh topic on the Kafka broker, consumes them back, and
runs a query on ClickHouse over HTTP. Prints one JSON line; exits non-zero on failure.
"""
import json
import os
import sys
import time
import urllib.request
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CH = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123")
N = int(os.environ.get("SMOKE_MESSAGES", "10000"))
PARTS = 4


def main():
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    ad = AdminClient({"bootstrap.servers": BOOT})
    ad.create_topics([NewTopic(topic, PARTS, 1)])[topic].result()

    t0 = time.monotonic()
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 20})
    for i in range(N):
        while True:
            try:
                p.produce(topic, key=str(i).encode(), value=json.dumps({"id": i, "pad": "x" * 200}).encode())
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(30)
    if left:
        raise SystemExit(f"smoke: {left} messages not delivered")
    produce_s = time.monotonic() - t0

    t0 = time.monotonic()
    c = Consumer({"bootstrap.servers": BOOT, "group.id": topic, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    seen = set()
    deadline = time.monotonic() + 60
    while len(seen) < N and time.monotonic() < deadline:
        for m in c.consume(1000, 1.0):
            if m.error():
                raise KafkaException(m.error())
            seen.add(json.loads(m.value())["id"])
    c.close()
    consume_s = time.monotonic() - t0
    if len(seen) != N:
        raise SystemExit(f"smoke: consumed {len(seen)} distinct of {N} messages")

    with urllib.request.urlopen(CH + "/?query=SELECT%20version()", timeout=10) as r:
        ch_version = r.read().decode().strip()
    with urllib.request.urlopen(urllib.request.Request(CH + "/", data=b"SELECT sum(number) FROM numbers(1000000)"), timeout=10) as r:
        ch_sum = int(r.read().decode().strip())
    if ch_sum != 499999500000:
        raise SystemExit(f"smoke: clickhouse returned {ch_sum}")
    print(json.dumps({"topic": topic, "messages": N, "produce_s": round(produce_s, 2),
                      "consume_s": round(consume_s, 2), "clickhouse": ch_version}))


if __name__ == "__main__":
    sys.exit(main())
