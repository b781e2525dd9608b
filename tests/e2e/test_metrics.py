"""Issue 20, metrics: `/metrics` scraped during real runs says what was read and written,
how far behind each sink is, and which sink is down (docs/operations.md lists them)."""
import re

from conftest import ROOT, clickhouse, create_topic, iceberg_count, ingest_produce, unique, wait_until
from support.clickhouse import clickhouse_service

EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
SAMPLE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")


def scrape(ingest):
    """{(name, {label: value}) flattened to (name, frozenset of labels)}: value}."""
    status, body = ingest.get("/metrics")
    assert status == 200, body
    out = {}
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels` (None if none)."""
    want = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    return sum(found) if found else None


def sinks_of(samples):
    return sorted({dict(ls)["sink"] for (n, ls) in samples if n == "ingest_rows_written_total"})


def route(topic, batch=None):
    return {"name": "events", "topics": [topic], "schema": str(EVENTS_SCHEMA),
            "clickhouse": {"table": "events", "order_by": ["event_id"]},
            "iceberg": {"table": "events"},
            "batch": batch or {"max_rows": 5000, "max_age": "300ms"}}


def test_metrics_count_what_was_read_and_written(setup):
    """Counters equal the produced and written counts, bytes out equal bytes in, lag and
    the oldest unwritten record's age reach 0, and Iceberg's files and snapshots show."""
    count = 12_000
    topic = create_topic(unique("metrics"), 4)
    ingest = setup.start(setup.config([route(topic)]))
    ingest.wait_ready()
    before = scrape(ingest)
    # Both sinks are seen before their first write, at zero.
    assert sinks_of(before) == [f"clickhouse {setup.database}.events", f"iceberg {setup.namespace}.events"], before
    assert value(before, "ingest_rows_written_total") == 0
    assert value(before, "ingest_writes_up") == 2
    ingest_produce(topic, EVENTS_SCHEMA, count, "event_id")

    def settled():
        s = scrape(ingest)
        lag = value(s, "ingest_consumer_lag_records")
        age = value(s, "ingest_oldest_unwritten_seconds")
        written = value(s, "ingest_rows_written_total")
        return written == 2 * count and lag == 0 and age == 0, (written, lag, age)

    wait_until("every row written and no lag", settled, timeout=180)
    s = scrape(ingest)
    ch, ice = sinks_of(s)
    assert value(s, "ingest_records_consumed_total", route="events") == count
    consumed_bytes = value(s, "ingest_bytes_consumed_total", route="events")
    assert consumed_bytes > count * 100, consumed_bytes
    for sink in (ch, ice):
        assert value(s, "ingest_rows_written_total", route="events", sink=sink) == count, sink
        assert value(s, "ingest_bytes_written_total", route="events", sink=sink) == consumed_bytes, sink
        flushes = value(s, "ingest_flushes_total", sink=sink)
        # Rows reach a lane a decoded chunk at a time, so a batch may pass max_rows.
        assert flushes >= 1, (sink, flushes)
        assert value(s, "ingest_write_seconds_count", sink=sink) == flushes, sink
        assert value(s, "ingest_writes_up", sink=sink) == 1
        assert value(s, "ingest_write_retries_total", sink=sink) == 0
    # Iceberg commits one snapshot per flush, with at least one data file each.
    assert value(s, "ingest_commits_total", sink=ice) == value(s, "ingest_flushes_total", sink=ice)
    assert value(s, "ingest_files_written_total", sink=ice) >= value(s, "ingest_commits_total", sink=ice)
    assert value(s, "ingest_assigned_partitions") == 4
    assert value(s, "ingest_rebalances_total", kind="assigned") >= 1
    assert value(s, "ingest_records_rejected_total") is None
    assert ingest.stop() == 0, ingest.logs()
    assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == count
    assert iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events") == count


def test_a_sink_down_shows_in_its_lag_age_and_up_gauge(setup):
    """While ClickHouse is stopped its lag holds the records written since and its age
    grows, its up gauge is 0 and its retries count; Iceberg's lag stays 0. Once it is
    back, everything returns to 0 and 1."""
    first, second = 4_000, 6_000
    topic = create_topic(unique("metrics_down"), 2)
    ingest = setup.start(setup.config([route(topic)]))
    ingest.wait_ready()
    ingest_produce(topic, EVENTS_SCHEMA, first, "event_id")
    wait_until("the first records written", lambda: (
        value(scrape(ingest), "ingest_rows_written_total") == 2 * first, None), timeout=120)
    ch, ice = sinks_of(scrape(ingest))
    clickhouse_service("stop")
    try:
        ingest_produce(topic, EVENTS_SCHEMA, second, "event_id", start_id=first)

        def behind():
            s = scrape(ingest)
            facts = (value(s, "ingest_consumer_lag_records", sink=ch), value(s, "ingest_consumer_lag_records", sink=ice),
                     value(s, "ingest_writes_up", sink=ch), value(s, "ingest_oldest_unwritten_seconds", sink=ch),
                     value(s, "ingest_write_retries_total", sink=ch))
            lag_ch, lag_ice, up, age, retries = facts
            return lag_ch == second and lag_ice == 0 and up == 0 and age > 2 and retries >= 1, facts

        wait_until("ClickHouse shown down and behind, Iceberg not", behind, timeout=120)
    finally:
        clickhouse_service("start")

    def caught_up():
        s = scrape(ingest)
        facts = (value(s, "ingest_consumer_lag_records"), value(s, "ingest_oldest_unwritten_seconds"),
                 value(s, "ingest_writes_up"), value(s, "ingest_rows_written_total", sink=ch))
        return facts[:3] == (0, 0, 2) and facts[3] >= first + second, facts

    wait_until("ClickHouse back and caught up", caught_up, timeout=180)
    assert ingest.stop() == 0, ingest.logs()
    assert int(clickhouse(f"SELECT count() AS c FROM {setup.database}.events")[0]["c"]) == first + second
