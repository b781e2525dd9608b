"""A topic deleted and recreated under the same name starts its offsets again at 0, below
the positions both sinks hold for it; both sinks would skip the new records as already
written. The service must never skip them silently: it refuses the partitions whose
sinks' positions lie past the log end and stops with an ERROR naming them (fail closed,
docs/exactly-once.md, "A topic deleted and recreated")."""
import json
import re

import pyarrow as pa
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from pyiceberg.table.snapshots import ancestors_of

from conftest import (KAFKA, ROOT, assert_sinks_hold_ids, clickhouse, create_topic, iceberg_count, ingest_produce,
                      load_iceberg_table, unique, wait_until)

EVENTS = ROOT / "schemas/examples/events.yaml"


def recreate_topic(name, partitions):
    """Deletes the topic, waits until the broker no longer lists it, creates it again."""
    admin = AdminClient({"bootstrap.servers": KAFKA})
    admin.delete_topics([name])[name].result(timeout=30)
    wait_until(f"{name} deleted", lambda: (name not in admin.list_topics(timeout=10).topics, None), timeout=60)

    def created():
        try:
            create_topic(name, partitions)
            return True, None
        except Exception as e:  # deletion still finishing on the broker: try again
            return False, str(e)
    wait_until(f"{name} created again", created, timeout=60)


def route_for(topic):
    return {"topics": [topic], "schema": str(EVENTS),
            "clickhouse": {"table": "events", "order_by": ["event_id"], "batch": {"max_age": "200ms"}},
            "iceberg": {"table": "events", "batch": {"max_age": "1s"}},
            "batch": {"max_rows": 1000}}


def sink_counts(setup):
    ch = int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"])
    return ch, iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")


def first_3000_written(setup):
    """A new topic's first 3000 records in both sinks: (topic, config, the running service)."""
    topic = create_topic(unique("events"), 3)
    config = setup.config([route_for(topic)])
    first = setup.start(config)
    first.wait_ready()
    ingest_produce(topic, EVENTS, 3000, "event_id")
    wait_until("3000 in both sinks", lambda: (sink_counts(setup) == (3000, 3000), sink_counts(setup)))
    return topic, config, first


def recreated_after_3000(setup):
    """The topic of `first_3000_written`, the service stopped, then deleted and recreated
    with 1000 new records: (topic, the service's config)."""
    topic, config, first = first_3000_written(setup)
    assert first.stop() == 0, first.logs()
    recreate_with_1000_new(topic)
    return topic, config


def recreate_with_1000_new(topic):
    recreate_topic(topic, 3)
    ingest_produce(topic, EVENTS, 1000, "event_id", start_id=3000)


def assert_refused(ingest, topic, timeout=90):
    """The service stopped by itself, non-zero, with an ERROR naming the partitions."""
    try:
        code = ingest.proc.wait(timeout)
    except Exception:
        raise AssertionError(f"ingest kept running past the recreated topic's log end "
                             f"(records would be skipped):\n{ingest.logs()}")
    logs = ingest.logs()
    assert code != 0, f"exit code {code}:\n{logs}"
    line = next((l for l in logs.splitlines() if "ERROR" in l and "log end" in l), None)
    assert line, f"no ERROR about the log end:\n{logs}"
    assert topic in line and "partition" in line, line
    # every sink's position and the log end are named, as is the way out
    assert "clickhouse" in line and "iceberg" in line, line
    assert re.search(r"log end \d+", line), line
    assert "docs/exactly-once.md" in line, line
    return line


def test_restart_after_the_topic_was_recreated_refuses_instead_of_skipping(setup):
    topic, config = recreated_after_3000(setup)
    second = setup.start(config)
    assert_refused(second, topic)
    # Nothing of the new log was skipped as "already written" or committed past: the
    # sinks hold the old 3000 rows, untouched.
    assert sink_counts(setup) == (3000, 3000)


def test_topic_recreated_while_running_is_refused(setup):
    topic, _, first = first_3000_written(setup)
    recreate_with_1000_new(topic)
    assert_refused(first, topic, timeout=120)
    assert sink_counts(setup) == (3000, 3000)


def forget_topic_positions(setup, topic):
    """The recovery steps of docs/exactly-once.md ("A topic deleted and recreated"), as
    an operator runs them with the service stopped: the old rows keep their data but no
    longer count as positions of the new topic."""
    db = setup.database
    # ClickHouse: retag the old incarnation's rows, then drop the topic's ledger rows.
    clickhouse(f"ALTER TABLE {db}.events UPDATE _topic = '{topic}@before-recreate' WHERE _topic = '{topic}'")
    clickhouse(f"ALTER TABLE {db}.`events__ingest_positions` DELETE WHERE topic = '{topic}'")
    wait_until("mutations done", lambda: (
        not clickhouse(f"SELECT command FROM system.mutations WHERE database = '{db}' AND is_done = 0"), None))
    # Iceberg: the topic's position property removed, and an empty snapshot whose
    # position map lacks the topic, in one commit.
    table = load_iceberg_table(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")
    key = f"ingest.kafka-offsets.{setup.group}"
    positions = json.loads(next(s.summary[key] for s in ancestors_of(table.current_snapshot(), table.metadata)
                                if s.summary and key in s.summary.additional_properties))
    positions.pop(topic, None)
    with table.transaction() as tx:
        tx.remove_properties(f"{key}/{topic}")
        tx.append(pa.Table.from_pylist([], schema=table.schema().as_arrow()),
                  snapshot_properties={key: json.dumps(positions)})
    # Kafka: the group's offsets of the topic to the earliest (kafka-consumer-groups.sh
    # --reset-offsets --to-earliest does the same).
    client = Consumer({"bootstrap.servers": KAFKA, "group.id": setup.group, "enable.auto.commit": False})
    partitions = client.list_topics(topic, timeout=10).topics[topic].partitions
    earliest = [TopicPartition(topic, p, client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0])
                for p in partitions]
    client.commit(offsets=earliest, asynchronous=False)
    client.close()


def test_documented_recovery_lets_the_new_records_in_exactly_once(setup):
    topic, config = recreated_after_3000(setup)
    assert_refused(setup.start(config), topic)

    forget_topic_positions(setup, topic)
    third = setup.start(config)
    third.wait_ready()
    wait_until("4000 in both sinks", lambda: (sink_counts(setup) == (4000, 4000), sink_counts(setup)))
    assert third.stop() == 0, third.logs()
    assert "log end" not in third.logs(), third.logs()

    assert_sinks_hold_ids(setup, 4000)
    new = clickhouse(f"SELECT count() AS c FROM {setup.database}.events WHERE _topic = '{topic}'")
    assert int(new[0]["c"]) == 1000
