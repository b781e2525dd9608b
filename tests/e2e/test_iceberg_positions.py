"""The Iceberg sink's Kafka positions survive what other tools do to the table, and a
position that cannot be read stops the service instead of starting from scratch.

Both run on the real catalogs: SeaweedFS's REST catalog with its data on S3, and the
SQLite catalog. The "external tool" is pyiceberg, doing what a maintenance job does:
rewriting the data (Spark's `rewrite_data_files` or a pyiceberg overwrite write snapshots
without our summary key) and expiring every older snapshot.
"""
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

import lake
from conftest import (KAFKA, ROOT, checksum_of, create_topic, ingest_produce, load_iceberg_table, unique,
                      wait_until)
from support.iceberg import iceberg_ids, snapshot_total

EVENTS = ROOT / "schemas/examples/events.yaml"
PARTITIONS = 3
FIRST = 3000
MORE = 500


class Lake:
    """One catalog as the service is configured for it and as pyiceberg reads it."""

    def __init__(self, kind, setup):
        self.kind, self.setup = kind, setup

    def service_catalog(self):
        return lake.rest_catalog_config() if self.kind == "rest" else None

    def table(self, name):
        ident = f"{self.setup.namespace}.{name}"
        if self.kind == "rest":
            return lake.load_table(ident)
        return load_iceberg_table(self.setup.catalog_uri, self.setup.warehouse, ident)

    def rows(self, name):
        return snapshot_total(self.table(name))


@pytest.fixture(params=["rest", "sql"])
def catalog(request, setup):
    return Lake(request.param, setup)


def reset_group_offsets(group, topic):
    """Commits offset 0 for every partition as a standalone client: the group's offsets
    lost (expired after `offsets.retention.minutes`, or reset by hand)."""
    c = Consumer({"bootstrap.servers": KAFKA, "group.id": group, "enable.auto.commit": False})
    partitions = [TopicPartition(topic, p, 0) for p in range(PARTITIONS)]
    c.commit(offsets=partitions, asynchronous=False)
    assert all(tp.offset == 0 for tp in c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], 30))
    c.close()


def route(topic):
    return {"topics": [topic], "schema": str(EVENTS), "iceberg": {"table": "events"},
            "batch": {"max_rows": 1000, "max_age": "1s"}}


def write_first_records(setup, catalog):
    """FIRST records through the service; returns the topic and the service config."""
    topic = create_topic(unique("events"), PARTITIONS)
    ingest_produce(topic, EVENTS, FIRST, "event_id")
    config = setup.config([route(topic)], clickhouse=False, catalog=catalog.service_catalog())
    first = setup.start(config)
    first.wait_ready()
    wait_until(f"{FIRST} rows in Iceberg", lambda: (catalog.rows("events") >= FIRST, catalog.rows("events")))
    assert first.stop() == 0, first.logs()
    return topic, config


def compact_and_expire(table):
    """A maintenance job: rewrite every row into new files (a snapshot without our key),
    then expire every snapshot but the current one."""
    table.overwrite(table.scan().to_arrow())
    table.refresh()
    current = table.current_snapshot().snapshot_id
    older = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current]
    table.maintenance.expire_snapshots().by_ids(older).commit()
    table.refresh()
    return table


def test_positions_survive_compaction_and_snapshot_expiry(setup, catalog):
    topic, config = write_first_records(setup, catalog)
    key = f"ingest.kafka-offsets.{setup.group}"

    table = compact_and_expire(catalog.table("events"))
    assert [s.snapshot_id for s in table.snapshots()] == [table.current_snapshot().snapshot_id]
    assert not any(key in s.summary.additional_properties for s in table.snapshots()), \
        "the maintenance job kept a snapshot with our key: the test would prove nothing"

    # The group's offsets are gone too: only the sink's own positions say where it stands.
    reset_group_offsets(setup.group, topic)
    resume_with_more_records(setup, catalog, topic, config)


def resume_with_more_records(setup, catalog, topic, config, after=""):
    """Starts the service again and produces MORE records: it must read those alone, and
    the table end with every id of FIRST + MORE once. `after`: words for the messages."""
    again = setup.start(config)
    again.wait_ready()
    ingest_produce(topic, EVENTS, MORE, "event_id", start_id=FIRST)
    total = FIRST + MORE
    wait_until(f"{total} rows in Iceberg", lambda: (catalog.rows("events") >= total, catalog.rows("events")))
    time.sleep(3)  # a replay, if any, lands within a few batch ages
    consumed = again.metric("ingest_records_consumed_total")
    assert again.stop() == 0, again.logs()
    ids = iceberg_ids(catalog.table("events"))
    assert (len(ids), checksum_of(ids)) == (total, checksum_of(range(total))), \
        f"{len(ids)} rows{after}, {len(ids) - len(set(ids))} duplicates; the service read {consumed} records"
    assert consumed == MORE, f"read {consumed} records{after}; only the {MORE} new ones were due"


@pytest.mark.parametrize("where", ["summary", "property"])
def test_an_unreadable_position_stops_the_service(setup, catalog, where):
    """A position that does not parse is never taken for "no position" (which would write
    every record again): the service stops and names the table, where and the key. Once
    the value is repaired as docs/exactly-once.md says, it resumes from the positions."""
    topic, config = write_first_records(setup, catalog)
    table = catalog.table("events")
    key = f"ingest.kafka-offsets.{setup.group}"
    no_rows = table.scan(limit=1).to_arrow().slice(0, 0)
    if where == "summary":
        # Another tool's (empty) append carrying our key with a value that is not a position map.
        table.append(no_rows, snapshot_properties={key: "{not json"})
        table.refresh()
        expected = [f"{setup.namespace}.events", str(table.current_snapshot().snapshot_id), key]
    else:
        prop = f"{key}/{topic}"
        assert prop in table.properties, f"the sink keeps no position property {prop}: {table.properties}"
        good = table.properties[prop]
        with table.transaction() as tx:
            tx.set_properties({prop: '{"0": "many"}'})
        expected = [f"{setup.namespace}.events", prop]

    reset_group_offsets(setup.group, topic)
    second = setup.start(config)
    try:
        code = second.proc.wait(60)
    except Exception:
        code = None
    logs = second.logs()
    assert code not in (None, 0), f"the service kept running (or exited 0) on an unreadable position:\n{logs}"
    for part in expected:
        assert part in logs, f"the error does not name {part!r}:\n{logs}"
    assert catalog.rows("events") == FIRST, "rows were written although the positions could not be read"

    # The repair: a valid value (the properties hold the positions, so an empty summary
    # map will do), or the property set back to its value.
    table.refresh()
    if where == "summary":
        table.append(no_rows, snapshot_properties={key: "{}"})
    else:
        with table.transaction() as tx:
            tx.set_properties({prop: good})
    resume_with_more_records(setup, catalog, topic, config, after=" after the repair")


def test_rest_catalog_applies_property_changes_key_by_key(setup):
    """The positions' properties ride in the sink's commit, built on the table it loaded.
    Another tool setting a property meanwhile does not move the branch, so the catalog
    must accept the sink's commit (its snapshot requirement still holds) and apply its
    property changes to the current metadata, keeping the other tool's key. Checked on
    the real REST catalog; the SQLite one in sinks/iceberg/tests/iceberg_positions.rs."""
    import pyarrow as pa
    from pyiceberg.table.update import AssertRefSnapshotId, SetPropertiesUpdate

    rest = lake.rest_catalog()
    rest.create_namespace(setup.namespace)
    ident = f"{setup.namespace}.t"
    rest.create_table(ident, schema=pa.schema([("id", pa.int64())])).append(pa.table({"id": [1, 2]}))
    ours = rest.load_table(ident)
    with rest.load_table(ident).transaction() as tx:
        tx.set_properties({"owner.note": "theirs"})
    rest.commit_table(ours, requirements=(AssertRefSnapshotId(ref="main", snapshot_id=ours.current_snapshot().snapshot_id),),
                      updates=(SetPropertiesUpdate(updates={"ingest.kafka-offsets.g/t": '{"0":2}'}),))
    properties = rest.load_table(ident).properties
    assert properties.get("owner.note") == "theirs" and properties.get("ingest.kafka-offsets.g/t") == '{"0":2}', \
        properties
