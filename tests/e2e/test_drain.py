"""Issue 20, Kubernetes: the drain after SIGTERM is bounded by `server.drain_timeout`, so
the pod's terminationGracePeriodSeconds (the chart checks it is larger) is never cut
short by a SIGKILL mid-drain. A sink hanging at shutdown makes the service exit at the
timeout without committing; the next run writes what was left, exactly once."""
import json
import time

from conftest import ROOT, assert_sinks_hold_ids, clickhouse, create_topic, ingest_produce, unique, wait_until
from support.tcp_proxy import TcpProxy, config_through

EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
DRAIN_TIMED_OUT = 3


def clickhouse_count(database):
    return int(clickhouse(f"SELECT count() AS c FROM {database}.events")[0]["c"])


def test_a_sink_hanging_at_shutdown_ends_the_drain_at_its_timeout(setup):
    count = 3000
    topic = create_topic(unique("drain"), 2)
    # Batches far from every limit: only the shutdown writes them.
    route = {"topics": [topic], "schema": str(EVENTS_SCHEMA),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 10**7, "max_bytes": "1GiB", "max_age": "1h"}}
    proxy = TcpProxy.to_url(setup.clickhouse.url).start()
    try:
        config = config_through(setup, proxy, [route])
        written = json.loads(config.read_text())
        written["server"]["drain_timeout"] = "5s"
        config.write_text(json.dumps(written, indent=2))
        ingest = setup.start(config)
        ingest.wait_ready()
        ingest_produce(topic, EVENTS_SCHEMA, count, "event_id")
        wait_until("every record read", lambda: (ingest.metric("ingest_records_consumed_total") == count,
                                                 ingest.metric("ingest_records_consumed_total")))
        proxy.hang()
        stopping = time.time()
        ingest.terminate()
        code = ingest.wait_stopped(timeout=60)
        took = time.time() - stopping
        assert code == DRAIN_TIMED_OUT, ingest.logs()
        assert 5 <= took < 20, (took, ingest.logs())
        assert "server.drain_timeout" in ingest.logs()
        proxy.forward()
        # The next run (flushing at once) finds what the first could not commit, and
        # writes it once.
        route["batch"] = {"max_rows": 1000, "max_age": "300ms"}
        again = setup.start(config_through(setup, proxy, [route]))
        again.wait_ready()
        wait_until("every row in ClickHouse after the next run", lambda: (
            clickhouse_count(setup.database) >= count, clickhouse_count(setup.database)), timeout=120)
        assert again.stop() == 0, again.logs()
    finally:
        proxy.stop()
    assert_sinks_hold_ids(setup, count)
