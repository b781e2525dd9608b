"""Bad input never crashes the service and is never silently dropped: it goes to the
dead-letter topic with the reason, or, without one, stops the service unacknowledged."""
import json

from conftest import clickhouse, create_topic, every_clickhouse, iceberg_count, produce_records, unique, wait_until
from support.kafka import read_messages

SCHEMA = """
fields:
  - {name: id, type: int64}
  - {name: name, type: string}
  - {name: ts, type: "timestamp(ms, UTC)"}
"""

GOOD = [{"id": i, "name": f"n{i}", "ts": 1700000000000 + i} for i in range(200)]
BAD = [
    b'{"id": 1000, "name": "x", "ts": 0',              # truncated
    b'{"id": "not a number", "name": "x", "ts": 0}',    # wrong type
    b'{"name": "no id", "ts": 0}',                      # required field missing
    b'[1, 2, 3]',                                       # not an object
    b'\xff\xfe garbage',                                # not JSON at all
    b'',                                                # empty
    b'{"id": 1001, "name": "a", "ts": 0}{"id": 1002, "name": "b", "ts": 0}',  # two objects
]


def interleaved():
    records = [(str(r["id"]), json.dumps(r).encode()) for r in GOOD]
    for i, bad in enumerate(BAD):
        records.insert(i * 25 + 3, (f"bad-{i}", bad))
    return records


@every_clickhouse
def test_bad_records_go_to_the_dead_letter_topic(setup):
    topic = create_topic(unique("mixed"), 2)
    dlq = create_topic(unique("dlq"), 1)
    schema = setup.schema("s.yaml", SCHEMA)
    produce_records(topic, interleaved())
    config = setup.config([{"topics": [topic], "schema": str(schema),
                            "metadata": {"offset": "_offset"},
                            "clickhouse": {"table": "t", "order_by": ["id"]},
                            "iceberg": {"table": "t"},
                            "batch": {"max_rows": 50, "max_age": "500ms"}}], dead_letter=dlq)
    ingest = setup.start(config)
    ingest.wait_ready()
    wait_until("good rows in both sinks", lambda: (
        int(clickhouse(f"SELECT count() AS c FROM {setup.database}.t")[0]["c"]) == len(GOOD)
        and iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.t") == len(GOOD), None))
    dead = read_messages(dlq, len(BAD))
    status, _ = ingest.get("/ready")
    assert status == 200, "bad records must not make the service unready"
    assert ingest.stop() == 0, ingest.logs()

    ids = sorted(int(r["id"]) for r in clickhouse(f"SELECT id FROM {setup.database}.t"))
    assert ids == list(range(200))
    assert sorted(m.value() or b"" for m in dead) == sorted(BAD)
    for m in dead:
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers["ingest.source.topic"] == topic
        assert int(headers["ingest.source.offset"]) >= 0
        assert headers["ingest.error"], headers


def test_without_a_dead_letter_topic_the_service_stops_and_says_why(setup):
    topic = create_topic(unique("mixed"), 1)
    schema = setup.schema("s.yaml", SCHEMA)
    produce_records(topic, [("1", b'{"id": 1, "name": "ok", "ts": 0}'), ("2", b'{"id": "two"}')])
    config = setup.config([{"topics": [topic], "schema": str(schema), "iceberg": {"table": "t"},
                            "batch": {"max_rows": 10, "max_age": "300ms"}}], clickhouse=False)
    ingest = setup.start(config)
    code = ingest.proc.wait(60)
    logs = ingest.logs()
    assert code != 0
    assert f"record {topic}/0@1 cannot be decoded" in logs, logs
    # Nothing of the failed batch was written or committed.
    assert iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.t") == 0
