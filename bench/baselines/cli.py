"""The command-line arguments every baseline takes: where the broker, the topic and the
ClickHouse server are, and how many events to expect, so bench/harness.py calls each
baseline the same way."""
import argparse
import os


def baseline_arguments(doc, count_help, database_help=None):
    """An ArgumentParser described by the first paragraph of `doc`, with the common
    arguments; the baseline adds its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--brokers", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True, help=count_help)
    p.add_argument("--clickhouse-url", default=os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123"))
    p.add_argument("--database", required=True, help=database_help)
    return p
