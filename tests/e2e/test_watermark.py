"""Issue 20, the completeness watermark: per route and sink, the time before which every
record of every partition read is durable in the sink, exported as a metric, on the
status page, in ClickHouse's `<table>__ingest_watermarks` and in an Iceberg table
property (docs/operations.md, "The completeness watermark")."""
import datetime

from confluent_kafka import Producer

from conftest import ROOT, clickhouse, create_topic, load_iceberg_table, produce_records, unique, wait_until
from support.clickhouse import clickhouse_service
from support.kafka import event
from support.stack import KAFKA
from test_metrics import scrape, sinks_of, value

EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
T0 = 1_796_000_000_000  # 2026-11-30T00:53:20Z: far from now, so no clock can pass for it


def route(topic, **extra):
    return {"name": "events", "topics": [topic], "schema": str(EVENTS_SCHEMA),
            "clickhouse": {"table": "events", "order_by": ["event_id"]},
            "iceberg": {"table": "events"},
            "batch": {"max_rows": 2000, "max_age": "300ms"}, **extra}


def produce_at(topic, records):
    """records: (partition, event id, Kafka timestamp in ms), produced in this order."""
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5})
    errors = []
    for partition, i, at in records:
        producer.produce(topic, value=__import__("json").dumps(event(i)), partition=partition, timestamp=at,
                         on_delivery=lambda e, m: e and errors.append(e))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors


def rfc3339(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def clickhouse_watermark(setup):
    """The table's watermark as a reader computes it (docs/operations.md), and the
    partitions it covers."""
    rows = clickhouse(
        f"SELECT topic, partition, max(watermark_ms) AS w FROM {setup.database}.events__ingest_watermarks "
        "GROUP BY topic, partition ORDER BY partition")
    return min((int(r["w"]) for r in rows), default=None), [int(r["partition"]) for r in rows]


def iceberg_watermark(setup):
    table = load_iceberg_table(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events")
    return table.properties.get(f"ingest.watermark.{setup.group}")


def test_the_watermark_reaches_the_newest_time_and_stays_behind_a_sink_that_is_down(setup):
    """Kafka timestamps: three partitions, one of them idle after its first records.
    Once all is written every sink's watermark is the newest timestamp (the idle
    partition does not hold it back), in the metric, the status page, ClickHouse's
    watermark table and the Iceberg property. With ClickHouse stopped and newer records
    produced, Iceberg's watermark moves to the newest while ClickHouse's stays at or
    below the first record it lacks, and reaches the newest once it is back."""
    topic = create_topic(unique("watermark"), 3)
    ingest = setup.start(setup.config([route(topic)]))
    ingest.wait_ready()
    # Partition 2 gets only the oldest records; 0 and 1 go on.
    first = [(2, i, T0 + i) for i in range(100)]
    first += [(i % 2, i, T0 + i * 10) for i in range(100, 3_000)]
    produce_at(topic, first)
    newest = max(at for _, _, at in first)

    def at_newest():
        s = scrape(ingest)
        marks = {sink: value(s, "ingest_watermark_seconds", sink=sink) for sink in sinks_of(s)}
        whole = value(s, "ingest_route_watermark_seconds", route="events")
        return all(m == newest / 1000 for m in marks.values()) and whole == newest / 1000, (marks, whole)

    wait_until("both watermarks at the newest timestamp", at_newest, timeout=120)
    status, body = ingest.get("/status.json")
    assert status == 200, body
    import json
    facts = json.loads(body)
    assert [s["watermark_unix_ms"] for s in facts["sinks"]] == [newest, newest], facts
    assert facts["routes"] == [{"route": "events", "watermark_unix_ms": newest, "watermark": rfc3339(newest)}], facts
    wait_until("ClickHouse's watermark table at the newest, every partition in it",
               lambda: (clickhouse_watermark(setup) == (newest, [0, 1, 2]), clickhouse_watermark(setup)),
               timeout=30)
    assert iceberg_watermark(setup) == rfc3339(newest)

    ch, ice = sinks_of(scrape(ingest))
    clickhouse_service("stop")
    try:
        later = [(i % 2, i, T0 + 100_000 + i) for i in range(3_000, 4_000)]
        produce_at(topic, later)
        lacking = min(at for _, _, at in later)
        latest = max(at for _, _, at in later)

        def split():
            s = scrape(ingest)
            w_ch, w_ice = value(s, "ingest_watermark_seconds", sink=ch), value(s, "ingest_watermark_seconds", sink=ice)
            whole = value(s, "ingest_route_watermark_seconds", route="events")
            behind = newest / 1000 <= w_ch <= lacking / 1000
            return w_ice == latest / 1000 and behind and whole == w_ch, (w_ch, w_ice, whole)

        wait_until("Iceberg at the newest, ClickHouse at most at its first missing record", split, timeout=120)
        assert iceberg_watermark(setup) == rfc3339(latest)
    finally:
        clickhouse_service("start")
    wait_until("ClickHouse back at the newest",
               lambda: (value(scrape(ingest), "ingest_watermark_seconds", sink=ch) == latest / 1000, None),
               timeout=180)
    wait_until("its table too",
               lambda: (clickhouse_watermark(setup)[0] == latest, clickhouse_watermark(setup)), timeout=30)
    assert ingest.stop() == 0, ingest.logs()


def test_a_route_keeps_its_watermark_in_a_payload_field(setup):
    """`watermark.time_field: ts`: the watermark is in the events' own time, not Kafka's."""
    topic = create_topic(unique("watermark_field"), 2)
    ingest = setup.start(setup.config([route(topic, watermark={"time_field": "ts"})]))
    ingest.wait_ready()
    produce_records(topic, [(str(i % 2).encode(), event(i)) for i in range(2_000)])
    newest_ts = max(event(i)["ts"] for i in range(2_000))

    def at_newest():
        marks = [value(scrape(ingest), "ingest_watermark_seconds", sink=s) for s in sinks_of(scrape(ingest))]
        return marks == [newest_ts / 1000] * 2, marks

    wait_until("both watermarks at the newest event time", at_newest, timeout=120)
    wait_until("in ClickHouse's table",
               lambda: (clickhouse_watermark(setup)[0] == newest_ts, clickhouse_watermark(setup)), timeout=30)
    assert iceberg_watermark(setup) == rfc3339(newest_ts)
    assert ingest.stop() == 0, ingest.logs()
