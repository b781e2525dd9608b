"""Issue 20, `ingest status --config FILE [--json]`: per route and sink, positions, lag,
watermark, last write and last error, read from the broker, the sinks and the running
service, against a running service, one whose ClickHouse is down, and a stopped one."""
import json
import subprocess

from conftest import BIN, create_topic, unique, wait_until
from support.clickhouse import clickhouse_service
from test_metrics import scrape, value
from test_watermark import T0, produce_at, rfc3339, route


def status(config, *extra):
    out = subprocess.run([str(BIN), "status", "--config", str(config), *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def report(config):
    return json.loads(status(config, "--json"))


def test_status_reads_the_broker_the_sinks_and_the_service(setup):
    topic = create_topic(unique("status"), 4)
    config = setup.config([route(topic)])
    ingest = setup.start(config)
    ingest.wait_ready()
    records = [(i % 4, i, T0 + i) for i in range(3_000)]
    produce_at(topic, records)
    newest = T0 + 2_999
    wait_until("every row written", lambda: (
        value(scrape(ingest), "ingest_rows_written_total") == 6_000
        and value(scrape(ingest), "ingest_consumer_lag_records") == 0, None), timeout=120)
    ch, ice = f"clickhouse {setup.database}.events", f"iceberg {setup.namespace}.events"

    # Running: everything read and written, the service answering.
    r = report(config)
    assert r["group"] == setup.group
    assert r["service"]["reachable"] and r["service"]["ready"], r["service"]
    (events,) = r["routes"]
    assert [s["sink"] for s in events["sinks"]] == [ch, ice]
    for s in events["sinks"]:
        assert s["table_exists"] and s["error"] is None, s
        assert (s["lag_records"], s["state"], s["last_error"]) == (0, "up", None), s
        assert s["watermark_unix_ms"] == newest, s
        assert s["last_write_unix"] is not None, s
    assert events["watermark"] == rfc3339(newest)
    assert len(events["partitions"]) == 4
    assert sum(p["log_end"] for p in events["partitions"]) == 3_000
    for p in events["partitions"]:
        # Every sink holds the partition to its end; the group committed it.
        assert p["positions"] == [p["log_end"], p["log_end"]], p
    wait_until("the group committed every partition", lambda: (
        all(p["committed"] == p["log_end"] for p in report(config)["routes"][0]["partitions"]), None), timeout=30)
    text = status(config)
    assert f"service http://127.0.0.1:{config_port(config)}: ready" in text, text
    assert f"route events: complete in every sink to {rfc3339(newest)}" in text, text
    assert f"{topic}/0" in text, text

    # ClickHouse down: its sink cannot be read, the service says it fails and why.
    clickhouse_service("stop")
    try:
        produce_at(topic, [(i % 4, i, T0 + i) for i in range(3_000, 3_500)])
        wait_until("the service reports ClickHouse failing", lambda: (
            next(s for s in report(config)["routes"][0]["sinks"] if s["sink"] == ch)["state"] == "failing", None),
            timeout=120)
        r = report(config)
        assert r["service"]["reachable"] and not r["service"]["ready"], r["service"]
        assert any("failing sinks" in why for why in r["service"]["not_ready"]), r["service"]
        down, lake = r["routes"][0]["sinks"]
        assert down["error"] is not None and down["last_error"], down
        wait_until("Iceberg holds the new records", lambda: (
            report(config)["routes"][0]["sinks"][1]["lag_records"] == 0, None), timeout=60)
        assert "cannot read" in status(config)
    finally:
        clickhouse_service("start")
    wait_until("ClickHouse caught up", lambda: (
        value(scrape(ingest), "ingest_consumer_lag_records") == 0, None), timeout=180)

    # Stopped: read from the broker and the sinks alone; records since are behind.
    assert ingest.stop() == 0, ingest.logs()
    produce_at(topic, [(i % 4, i, T0 + i) for i in range(3_500, 3_600)])
    r = report(config)
    assert not r["service"]["reachable"] and r["service"]["error"], r["service"]
    for s in r["routes"][0]["sinks"]:
        assert s["lag_records"] == 100 and s["state"] is None, s
        assert s["watermark_unix_ms"] == T0 + 3_499, s
    assert sum(p["log_end"] - p["committed"] for p in r["routes"][0]["partitions"]) == 100
    assert "not answering" in status(config)


def config_port(config):
    return json.loads(config.read_text())["server"]["listen"].rsplit(":", 1)[1]
