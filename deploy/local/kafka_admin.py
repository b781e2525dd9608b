"""Small Kafka admin helper for the local stack (run with the stack venv's python).

  kafka_admin.py ready [--timeout S]          real metadata request; exit 0 when answered
  kafka_admin.py create-topic NAME PARTITIONS  idempotent; fails if it exists with another count

Bootstrap from --bootstrap or $KAFKA_BOOTSTRAP (default 127.0.0.1:9092).
"""
import argparse
import os
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def admin(bootstrap):
    # Quiet client: a not-yet-listening broker is expected while polling for readiness.
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0,
                        "socket.connection.setup.timeout.ms": 2000})


def cmd_ready(a):
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = admin(a.bootstrap).list_topics(timeout=min(5, a.timeout))
            print(f"brokers={len(md.brokers)} topics={len(md.topics)}")
            return 0
        except KafkaException as e:
            last = e
            time.sleep(0.2)
    print(f"kafka_admin: no metadata from {a.bootstrap} within {a.timeout}s: {last}", file=sys.stderr)
    return 1


def partitions_ready(md, name, n):
    t = md.topics.get(name)
    return (t is not None and t.error is None and len(t.partitions) == n
            and all(p.leader >= 0 for p in t.partitions.values()))


def cmd_create(a):
    ad = admin(a.bootstrap)
    fut = ad.create_topics([NewTopic(a.name, num_partitions=a.partitions, replication_factor=1)],
                           operation_timeout=10, request_timeout=15)[a.name]
    status = "created"
    try:
        fut.result()
    except KafkaException as e:
        err = e.args[0]
        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            print(f"kafka_admin: create topic {a.name!r} failed: {err}", file=sys.stderr)
            return 1
        status = "exists"
    # Wait until metadata shows every partition with a leader (producers need that).
    deadline = time.monotonic() + 15
    while True:
        md = ad.list_topics(topic=a.name, timeout=5)
        t = md.topics.get(a.name)
        if t is not None and t.error is None and len(t.partitions) != a.partitions and status == "exists":
            print(f"kafka_admin: topic {a.name!r} already exists with {len(t.partitions)} "
                  f"partitions, not {a.partitions}", file=sys.stderr)
            return 3
        if partitions_ready(md, a.name, a.partitions):
            break
        if time.monotonic() > deadline:
            print(f"kafka_admin: topic {a.name!r} not ready in metadata: {t and t.error}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print(f"topic {a.name}: {status}, {a.partitions} partitions")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ready")
    r.add_argument("--timeout", type=float, default=30)
    c = sub.add_parser("create-topic")
    c.add_argument("name")
    c.add_argument("partitions", type=int)
    a = p.parse_args()
    return cmd_ready(a) if a.cmd == "ready" else cmd_create(a)


if __name__ == "__main__":
    sys.exit(main())
