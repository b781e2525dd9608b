"""Inserts the ClickHouse server refuses half way lose nothing (issue 10's confirmed loss).

A busy table refuses inserts with "Too many parts" (code 252) while its merges lag; the
refusal comes while the rows are pushed from the writer's gate into the table. On 18.16
the gate once recorded positions before that push, so the retries skipped the refused
rows as a replay: 352 of 20,000 rows landed, the service exited 0. Positions are now
recorded only after the server acknowledged the rows; this test is the user's reproduction,
through the service, on every ClickHouse version."""
from conftest import ROOT, clickhouse, create_topic, every_clickhouse, ingest_produce, unique, wait_until
from support.clickhouse import with_table_settings

EVENTS = ROOT / "schemas/examples/events.yaml"
TOTAL = 20_000
PARTITIONS = 4


@every_clickhouse
def test_inserts_refused_by_a_table_short_of_merges_lose_nothing(setup):
    db = setup.database
    topic = create_topic(unique("events"), PARTITIONS)
    route = {"topics": [topic], "schema": str(EVENTS),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "batch": {"max_rows": 100, "max_age": "100ms"}}
    config = setup.config([route], iceberg=False)
    # The service makes the table; the user remakes it with limits that refuse inserts early.
    first = setup.start(config)
    first.wait_ready()
    assert first.stop() == 0, first.logs()
    with_table_settings(db, "events", "parts_to_throw_insert = 3, parts_to_delay_insert = 2, max_delay_to_insert = 1")
    clickhouse(f"SYSTEM STOP MERGES {db}.events")

    ingest_produce(topic, EVENTS, TOTAL, "event_id")
    ingest = setup.start(config)
    ingest.wait_ready()
    rows = lambda: int(clickhouse(f"SELECT count() AS c FROM {db}.events")[0]["c"])
    wait_until("the table to refuse inserts", lambda: ("Too many parts" in ingest.logs(), rows()), timeout=60)
    clickhouse(f"SYSTEM START MERGES {db}.events")

    def merged_and_landed():
        # The server's merge selector leaves a few tiny parts alone for minutes: merge
        # them as its background merges would under load.
        clickhouse(f"OPTIMIZE TABLE {db}.events FINAL")
        return rows() >= TOTAL, rows()
    wait_until(f"{TOTAL} rows", merged_and_landed, timeout=300, interval=2)
    assert ingest.stop() == 0, ingest.logs()

    got = clickhouse(f"SELECT count() AS n, uniqExact(event_id) AS u, min(event_id) AS lo, max(event_id) AS hi "
                     f"FROM {db}.events")[0]
    assert {k: int(v) for k, v in got.items()} == {"n": TOTAL, "u": TOTAL, "lo": 0, "hi": TOTAL - 1}
    ledger = {int(r["partition"]): int(r["next"]) for r in clickhouse(
        f"SELECT partition, maxMerge(next) AS next FROM {db}.events__ingest_positions GROUP BY partition")}
    table = {int(r["p"]): int(r["m"]) + 1 for r in clickhouse(
        f"SELECT _partition AS p, max(_offset) AS m FROM {db}.events GROUP BY p")}
    assert ledger == table and len(ledger) == PARTITIONS, (ledger, table)
