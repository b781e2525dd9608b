"""The vertical slice end to end: two topics routed differently, read back by
ClickHouse, pyiceberg and Spark, with exact counts and id checksums."""
import datetime as dt
import os

from conftest import (ROOT, checksum_of, clickhouse, create_topic, every_clickhouse, iceberg_count,
                      ingest_produce, produce_records, read_iceberg, unique, wait_until)

EVENTS = int(os.environ.get("E2E_EVENTS", "100000"))
LOGS = int(os.environ.get("E2E_LOGS", "30000"))


@every_clickhouse
def test_two_topics_to_their_sinks_with_exact_counts(setup):
    events_topic = create_topic(unique("events"), 4)
    logs_topic = create_topic(unique("logs"), 3)
    ingest_produce(events_topic, ROOT / "schemas/examples/events.yaml", EVENTS, "event_id")
    ingest_produce(logs_topic, ROOT / "schemas/examples/logs.yaml", LOGS, "log_id", start_id=10**9)

    config = setup.config([
        {"topics": [events_topic], "schema": str(ROOT / "schemas/examples/events.yaml"),
         "metadata": {"partition": "_partition", "offset": "_offset"},
         "clickhouse": {"table": "events", "order_by": ["event_type", "ts"],
                        "partition_by": "toYYYYMM(event_date)"},
         "iceberg": {"table": "events", "partition_by": ["day(ts)"]},
         "batch": {"max_rows": 30000, "max_age": "1s"}},
        {"topics": [logs_topic], "schema": str(ROOT / "schemas/examples/logs.yaml"),
         "iceberg": {"table": "logs", "partition_by": ["service"]},
         "batch": {"max_rows": 20000, "max_age": "1s"}},
    ])
    ingest = setup.start(config)
    ingest.wait_ready()

    def all_landed():
        ch = int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"])
        ev = iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")
        lg = iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.logs")
        return (ch >= EVENTS and ev >= EVENTS and lg >= LOGS), (ch, ev, lg)

    wait_until("every event in every sink", all_landed, timeout=300)
    assert ingest.stop() == 0, ingest.logs()

    expected_events = checksum_of(range(EVENTS))
    expected_logs = checksum_of(range(10**9, 10**9 + LOGS))

    # ClickHouse: exact count, no duplicates, the same id set; the logs route has no table.
    ids = [int(r["event_id"]) for r in clickhouse(f"SELECT event_id FROM {setup.database}.events")]
    assert len(ids) == EVENTS
    assert checksum_of(ids) == expected_events
    partitions = clickhouse(f"SELECT uniqExact(_partition) AS p FROM {setup.database}.events")[0]["p"]
    assert int(partitions) == 4
    tables = [r["name"] for r in clickhouse(f"SELECT name FROM system.tables WHERE database = '{setup.database}'")]
    # Plus the running writer's insert gate (one writer ran): a Null table and its view to
    # the table, and a Null table for ledger entries with its view to the ledger. No view
    # feeds the ledger from the table's own inserts (same on every server version).
    gates = sorted(t for t in tables if "__gate_" in t)
    assert [g.removeprefix(gates[0]) for g in gates] == ["", "_pos", "_pos_ledger", "_rows"], gates
    assert sorted(set(tables) - set(gates)) == ["events", "events__ingest_gates", "events__ingest_positions",
                                                "events__ingest_watermarks"]
    # The completeness watermark covers every partition the route read.
    marked = clickhouse(f"SELECT uniqExact(partition) AS p FROM {setup.database}.events__ingest_watermarks")
    assert int(marked[0]["p"]) == 4, marked
    # The position ledger agrees with the rows: per partition, one past the highest offset.
    ledger = {int(r["partition"]): int(r["next"]) for r in clickhouse(
        f"SELECT partition, maxMerge(next) AS next FROM {setup.database}.events__ingest_positions GROUP BY partition")}
    rows = {int(r["p"]): int(r["m"]) + 1 for r in clickhouse(
        f"SELECT _partition AS p, max(_offset) AS m FROM {setup.database}.events GROUP BY p")}
    assert ledger == rows and len(ledger) == 4, (ledger, rows)

    # Iceberg, read by two independent readers through the same SQL catalog.
    for reader in ("pyiceberg", "spark"):
        events = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events", "event_id", reader)
        assert (events["count"], events["id_checksum"]) == (EVENTS, expected_events), reader
        logs = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.logs", "log_id", reader)
        assert (logs["count"], logs["id_checksum"]) == (LOGS, expected_logs), reader


@every_clickhouse
def test_sigterm_flushes_open_batches_and_commits(setup):
    """Batches far from their limits are written on SIGTERM, and the group offset moves
    past them: a second run finds nothing new to write."""
    topic = create_topic(unique("events"), 3)
    count = 5000
    ingest_produce(topic, ROOT / "schemas/examples/events.yaml", count, "event_id")
    route = {"topics": [topic], "schema": str(ROOT / "schemas/examples/events.yaml"),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 10**7, "max_bytes": "1GiB", "max_age": "1h"}}
    ingest = setup.start(setup.config([route]))
    ingest.wait_ready()
    wait_until("all records consumed", lambda: ((ingest.metric("ingest_records_consumed_total") or 0) >= count,
                                                  ingest.metric("ingest_records_consumed_total")))
    assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == 0
    assert ingest.stop() == 0, ingest.logs()
    assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == count
    assert iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events") == count

    # Restart: the committed offsets are at the end, so nothing is written twice.
    again = setup.start(setup.config([route]))
    again.wait_ready()
    import time
    time.sleep(3)
    assert again.stop() == 0, again.logs()
    assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == count
    assert iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events") == count


@every_clickhouse
def test_a_batch_over_more_partitions_than_the_server_allows(setup):
    """ClickHouse refuses an insert block spanning more table partitions than
    `max_partitions_per_insert_block` (100 since 19.5; 18.16 has no limit). Sending the
    same rows again cannot help, so the service stops and names the setting; with the
    setting raised in `clickhouse.settings` the rows are written."""
    topic = create_topic(unique("days"), 1)
    schema = setup.schema("days.yaml", "fields:\n  - {name: id, type: int64}\n  - {name: day, type: date}\n")
    days = 150
    produce_records(topic, [(str(i), {"id": i, "day": str(dt.date(2020, 1, 1) + dt.timedelta(days=i))})
                            for i in range(days)])
    route = {"topics": [topic], "schema": str(schema),
             "clickhouse": {"table": "t", "order_by": ["id"], "partition_by": "day"},
             "batch": {"max_rows": 1000, "max_age": "500ms"}}
    settings = {}
    if setup.clickhouse.version != "18.16":
        refused = setup.start(setup.config([route], iceberg=False))
        assert refused.proc.wait(120) != 0, refused.logs()
        assert "max_partitions_per_insert_block" in refused.logs(), refused.logs()
        assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.t")[0]["c"]) == 0
        settings = {"max_partitions_per_insert_block": str(days)}
    ingest = setup.start(setup.config([route], iceberg=False, clickhouse_settings=settings))
    ingest.wait_ready()
    wait_until("every day written", lambda: (
        int(clickhouse(f"SELECT count() AS c FROM {setup.database}.t")[0]["c"]) == days, None))
    assert ingest.stop() == 0, ingest.logs()
    parts = clickhouse(f"SELECT uniqExact(partition) AS p FROM system.parts WHERE database = '{setup.database}' "
                       "AND table = 't' AND active")
    assert int(parts[0]["p"]) == days
