"""Topics a pattern route reads: new matching topics are picked up within
`kafka.topic_discovery_interval` (default 5 s; librdkafka's own default refresh is 5
minutes), and a topic the pattern matches only as a prefix is not subscribed at all
(the subscription is anchored to whole names as the route matches)."""
import time

from conftest import clickhouse, create_topic, produce_records, unique, wait_until

DEFAULT_DISCOVERY_S = 5
# A new topic still needs a rebalance (join, sync, assignment), a fetch and a batch
# (max_age 500 ms) before its rows are in the table.
MARGIN_S = 20
SCHEMA = "fields:\n  - {name: id, type: int64}\n"


def pattern_route(setup, prefix):
    schema = setup.schema("ids.yaml", SCHEMA)
    return setup.config([
        {"topic_pattern": prefix + r"\.[a-z]+", "schema": str(schema),
         "clickhouse": {"table": "ids", "order_by": ["id"]},
         "batch": {"max_rows": 1000, "max_age": "500ms"}},
    ], iceberg=False)


def produce_ids(topic, ids):
    produce_records(topic, ((str(i).encode(), {"id": i}) for i in ids))


def table_ids(setup):
    return [int(r["id"]) for r in clickhouse(f"SELECT id FROM {setup.database}.ids")]


def wait_for_rows(setup, count, timeout):
    def landed():
        n = len(table_ids(setup))
        return n >= count, n
    wait_until(f"{count} rows in ClickHouse", landed, timeout=timeout)


def test_a_new_matching_topic_is_read_within_the_discovery_interval(setup):
    prefix = unique("discovery")
    first = create_topic(f"{prefix}.first", 2)
    produce_ids(first, range(100))
    ingest = setup.start(pattern_route(setup, prefix))
    ingest.wait_ready()
    wait_for_rows(setup, 100, timeout=120)

    created = time.monotonic()
    second = create_topic(f"{prefix}.second", 2)
    produce_ids(second, range(100, 200))
    try:
        wait_for_rows(setup, 200, timeout=DEFAULT_DISCOVERY_S + MARGIN_S)
    except AssertionError as e:
        raise AssertionError(f"{second} not read within {DEFAULT_DISCOVERY_S} s + {MARGIN_S} s: {e}") from e
    picked_up = time.monotonic() - created
    assert ingest.stop() == 0, ingest.logs()

    ids = table_ids(setup)
    assert sorted(ids) == list(range(200)), f"{len(ids)} rows, {len(set(ids))} distinct"
    topics = {r["t"]: int(r["n"]) for r in clickhouse(
        f"SELECT _topic AS t, count() AS n FROM {setup.database}.ids GROUP BY t")}
    assert topics == {first: 100, second: 100}, topics
    print(f"{second} read {picked_up:.1f} s after it was created")


def test_a_topic_the_pattern_matches_only_as_a_prefix_is_not_read(setup):
    prefix = unique("anchored")
    routed = create_topic(f"{prefix}.events", 1)
    # `prefix\.[a-z]+` matches `prefix.events` at the start of this name, not the whole.
    unrouted = create_topic(f"{prefix}.events-archive", 1)
    produce_ids(unrouted, range(1000, 1050))
    produce_ids(routed, range(50))
    ingest = setup.start(pattern_route(setup, prefix))
    ingest.wait_ready()
    wait_for_rows(setup, 50, timeout=120)
    time.sleep(3)  # time enough to read the other topic too, were it assigned
    assert ingest.stop() == 0, ingest.logs()

    logs = ingest.logs()
    assert "no route matches" not in logs, logs
    assert unrouted not in logs, f"{unrouted} was subscribed or read:\n{logs}"
    assert sorted(table_ids(setup)) == list(range(50))
