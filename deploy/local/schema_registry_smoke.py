"""Smoke check of the running Schema Registry (run with the venv python: $PY).

Registers an Avro schema under a fresh subject through the Confluent API at
$SCHEMA_REGISTRY_URL with confluent_kafka's SchemaRegistryClient, then reads it back
with a second client (no cache shared with the first) by id and as the subject's
latest version, and checks both equal what was registered. Prints one JSON line;
exits non-zero on failure.
"""
import json
import os
import sys
import time
import uuid

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

URL = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")


def main():
    subject = f"smoke-{uuid.uuid4().hex[:8]}-value"
    avro = {"type": "record", "name": "Smoke", "namespace": "ingest.smoke",
            "fields": [{"name": "id", "type": "long"},
                       {"name": "note", "type": ["null", "string"], "default": None}]}
    t0 = time.monotonic()
    try:
        sid = SchemaRegistryClient({"url": URL}).register_schema(subject, Schema(json.dumps(avro), "AVRO"))
        reader = SchemaRegistryClient({"url": URL})
        by_id = reader.get_schema(sid)
        latest = reader.get_latest_version(subject)
    except Exception as e:  # connection refused, HTTP error, ...
        print(f"schema_registry_smoke: FAILED at {URL}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    ms = round((time.monotonic() - t0) * 1000)
    problems = []
    if by_id.schema_type not in ("AVRO", None):
        problems.append(f"schema {sid} has type {by_id.schema_type}")
    if json.loads(by_id.schema_str) != avro:
        problems.append(f"schema {sid} reads back as {by_id.schema_str}")
    if latest.subject != subject or latest.version != 1:
        problems.append(f"latest of {subject} is {latest.subject} v{latest.version}")
    if latest.schema_id != sid:
        problems.append(f"latest of {subject} has id {latest.schema_id}, registered {sid}")
    if json.loads(latest.schema.schema_str) != avro:
        problems.append(f"latest of {subject} reads back as {latest.schema.schema_str}")
    if problems:
        print("schema_registry_smoke: FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(json.dumps({"schema_registry": URL, "subject": subject, "id": sid,
                      "version": latest.version, "ms": ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
