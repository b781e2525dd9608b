"""Newly assigned partitions start at the minimum of their sinks' own positions, not
at the group offset: after the group's offsets are lost (reset to 0 here, as expiry
or a hand reset would), a restart reads nothing the sinks already hold."""
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import (KAFKA, ROOT, assert_sinks_hold_ids, clickhouse, create_topic, every_clickhouse, iceberg_count,
                      ingest_produce, unique, wait_until)

EVENTS = ROOT / "schemas/examples/events.yaml"


def reset_group_offsets(group, topic, partitions):
    """Commits offset 0 for every partition, as a standalone (non-member) client."""
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, p, 0) for p in range(partitions)], asynchronous=False)
    assert all(tp.offset == 0 for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], 30))
    c.close()


@every_clickhouse
def test_resume_at_the_sinks_positions_when_group_offsets_are_gone(setup):
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, 3000, "event_id")
    route = {"topics": [topic], "schema": str(EVENTS),
             "clickhouse": {"table": "events", "order_by": ["event_id"], "batch": {"max_age": "200ms"}},
             "iceberg": {"table": "events", "batch": {"max_age": "1s"}},
             "batch": {"max_rows": 1000}}
    config = setup.config([route])
    table = f"{setup.namespace}.events"
    ch_rows = lambda: int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"])
    first = setup.start(config)
    first.wait_ready()
    wait_until("3000 in both sinks",
               lambda: (ch_rows() == 3000 and iceberg_count(setup.catalog_uri, setup.warehouse, table) == 3000,
                        ch_rows()))
    assert first.stop() == 0, first.logs()

    reset_group_offsets(setup.group, topic, 3)
    second = setup.start(config)
    second.wait_ready()
    ingest_produce(topic, EVENTS, 500, "event_id", start_id=3000)
    wait_until("3500 in both sinks",
               lambda: (ch_rows() == 3500 and iceberg_count(setup.catalog_uri, setup.warehouse, table) == 3500,
                        ch_rows()))
    time.sleep(1)
    consumed = second.metric("ingest_records_consumed_total")
    assert second.stop() == 0, second.logs()
    assert "resuming at the minimum of the sinks' positions" in second.logs(), second.logs()
    assert consumed == 500, f"read {consumed} records; only the 500 new ones were due"
    assert_sinks_hold_ids(setup, 3500)
