"""A sink that fails never causes duplicates in the healthy one.

ClickHouse is stopped while events flow, so batches reach Iceberg but are never
acknowledged to Kafka; the service is then killed with SIGKILL and restarted after
ClickHouse is back. The replay must land in ClickHouse once and must not be written to
Iceberg a second time (Iceberg skips rows whose positions its snapshots already record).
"""
import time

from conftest import (ROOT, assert_sinks_hold_ids, clickhouse, create_topic, iceberg_count, ingest_produce, unique,
                      wait_until)
from support.clickhouse import clickhouse_service

EVENTS = ROOT / "schemas/examples/events.yaml"


def test_iceberg_is_not_duplicated_when_clickhouse_fails_and_the_service_crashes(setup):
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, 3000, "event_id")
    route = {"topics": [topic], "schema": str(EVENTS),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 1000, "max_age": "300ms"}}
    # A killed member holds its partitions until its session times out: keep that short.
    config = setup.config([route], kafka_properties={"session.timeout.ms": "6000",
                                                     "heartbeat.interval.ms": "1000"})
    table = f"{setup.namespace}.events"
    ch_rows = lambda: int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"])
    first = setup.start(config)
    first.wait_ready()
    wait_until("the first 3000 in both sinks",
               lambda: (ch_rows() == 3000 and iceberg_count(setup.catalog_uri, setup.warehouse, table) == 3000, None))
    try:
        clickhouse_service("stop")
        ingest_produce(topic, EVENTS, 2000, "event_id", start_id=3000)
        # Iceberg gets the next batch; ClickHouse retries it, so Kafka never hears of it.
        wait_until("a batch in Iceberg while ClickHouse is down",
                   lambda: (iceberg_count(setup.catalog_uri, setup.warehouse, table) > 3000, None))
        status, _ = first.get("/ready")
        assert status == 503, "a failing sink must make the service unready"
        first.proc.kill()
        first.proc.wait(30)
    finally:
        clickhouse_service("start")

    second = setup.start(config)
    second.wait_ready()
    wait_until("all 5000 in ClickHouse", lambda: (ch_rows() >= 5000, ch_rows()))
    wait_until("all 5000 in Iceberg",
               lambda: (iceberg_count(setup.catalog_uri, setup.warehouse, table) >= 5000, None))
    time.sleep(1)
    assert second.stop() == 0, second.logs()
    assert "are not written again" in second.logs(), second.logs()
    assert_sinks_hold_ids(setup, 5000)
