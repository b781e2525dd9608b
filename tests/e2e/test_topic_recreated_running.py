"""A topic deleted and recreated while the service runs (issue 16, items 4 and 5).

test_topic_recreated.py covers the restart and a slow producer (1,000 records after the
recreate: the new log end stays below the old positions, librdkafka finds the fetch
position out of range). Two ways the running check missed it:

- a quick producer: 12,000 records at ~4,000/s over 2 partitions put the new log past
  the old positions (1,500 per partition) before the consumer fetched again, so no
  offset was ever out of range: both sinks ended with 12,000 of the 15,000 records (the
  first 3,000 of the new log skipped as "already written"), /ready 200, no ERROR;
- a log level that hides librdkafka's warnings (`RUST_LOG=error`, or
  `info,librdkafka=error`): the check listened for librdkafka's offset-reset warning
  through the log callback, so with the warning filtered nothing was checked: both
  sinks stayed at 3,000 while the new records were skipped, and the service ran on.

Either way the service must never skip silently: it stops by itself, non-zero, with an
ERROR naming the topic and the partition.
"""
import re
import time

import pytest

from conftest import ROOT, clickhouse, create_topic, iceberg_count, unique
from support.kafka import BackgroundProducer
from support.logs import full_log, log_report, wait_or_report
from test_topic_recreated import recreate_topic, route_for

EVENTS = ROOT / "schemas/examples/events.yaml"
PARTITIONS = 2
OLD = 3_000


def sink_counts(setup):
    ch = int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"])
    return ch, iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")


def running_across_a_recreate(setup, new, rate):
    """OLD records in both sinks, then, with the service running, the topic deleted and
    recreated and `new` records produced at `rate`/s: (topic, the service, the producer)."""
    topic = create_topic(unique("events"), PARTITIONS)
    ingest = setup.start(setup.config([route_for(topic)]))
    ingest.wait_ready()
    old = BackgroundProducer(topic, OLD)
    old.start()
    old.finish()
    wait_or_report(f"{OLD} in both sinks", lambda: (sink_counts(setup) == (OLD, OLD), sink_counts(setup)),
                   setup.processes, timeout=90)
    assert ingest.proc.poll() is None, ingest.logs()
    recreate_topic(topic, PARTITIONS)
    producer = BackgroundProducer(topic, new, start_id=OLD, rate=rate)
    producer.start()
    producer.join(new / rate + 60)  # at the rate: finish() alone would hurry it
    producer.finish()
    return topic, ingest, producer


def assert_stops_naming_the_partition(setup, ingest, topic, producer, timeout=90):
    """The service stopped by itself, non-zero, with an ERROR naming the topic and a
    partition; never running on past the new log."""
    logs = lambda: log_report(setup.processes)  # noqa: E731
    seen = []
    deadline = time.time() + timeout
    while ingest.proc.poll() is None and time.time() < deadline:
        seen.append(sink_counts(setup))
        time.sleep(1)
    ends = {}
    for p, o in producer.delivered.values():
        ends[p] = max(ends.get(p, 0), o + 1)
    if ingest.proc.poll() is None:
        raise AssertionError(
            f"the service kept running {timeout}s after the topic was recreated ({len(producer.delivered)} new "
            f"records, new log ends {ends}, produced in {producer.finished_at - producer.started_at:.1f}s): "
            f"sinks (ClickHouse, Iceberg) went {seen[0]} -> {seen[-1]} of {OLD + len(producer.delivered)} "
            f"produced in all, /ready {ingest.get('/ready')[0]}, ERROR lines: "
            f"{[l for l in full_log(ingest).splitlines() if 'ERROR' in l][-5:]}\n{logs()}")
    code = ingest.proc.returncode
    assert code != 0, f"exit code {code}\n{logs()}"
    errors = [l for l in full_log(ingest).splitlines() if "ERROR" in l and topic in l]
    named = [l for l in errors
             if any(re.search(rf"partition\W{{0,3}}{p}\b|\[{p}\]", l, re.IGNORECASE) for p in range(PARTITIONS))]
    assert named, f"no ERROR naming the topic {topic} and a partition: {errors[-5:]}\n{logs()}"
    return named[0], sink_counts(setup)


def test_topic_recreated_while_running_with_a_quick_producer_is_refused(setup, capsys):
    """12,000 records at ~4,000/s after the recreate: the new log passes the old
    positions before the consumer fetches again. Before: both sinks ended with 12,000
    of 15,000, /ready 200, no ERROR."""
    topic, ingest, producer = running_across_a_recreate(setup, 12_000, 4_000)
    line, counts = assert_stops_naming_the_partition(setup, ingest, topic, producer)
    with capsys.disabled():
        print(f"\n[recreated-quick] stopped with {ingest.proc.returncode}, sinks {counts}: {line[:300]}")


@pytest.mark.parametrize("rust_log", ["error", "info,librdkafka=error"])
def test_topic_recreated_while_running_is_refused_whatever_the_log_level(setup, capsys, monkeypatch, rust_log):
    """2,000 records at ~2,000/s after the recreate (the new log ends below the old
    positions), the service started with RUST_LOG hiding librdkafka's warnings. Before:
    both sinks stayed at 3,000, the service ran on."""
    monkeypatch.setenv("RUST_LOG", rust_log)
    topic, ingest, producer = running_across_a_recreate(setup, 2_000, 2_000)
    line, counts = assert_stops_naming_the_partition(setup, ingest, topic, producer)
    with capsys.disabled():
        print(f"\n[recreated RUST_LOG={rust_log}] stopped with {ingest.proc.returncode}, sinks {counts}: "
              f"{line[:300]}")
