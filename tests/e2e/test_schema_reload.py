"""SIGHUP reads the routes' schema files again: a JSON route's YAML schema edited to add
an optional field gains the column in both sinks while running (older rows read null);
an edit that breaks the file or changes an existing column's type is refused with a
log line and the service goes on with its schema."""
import signal

from conftest import (clickhouse, create_topic, every_clickhouse, iceberg_count, produce_records, read_iceberg,
                      unique, wait_until)

V1 = """
fields:
  - {name: id, type: int64}
  - {name: name, type: string}
"""
V2 = V1 + "  - {name: note, type: \"string?\"}\n"
RETYPED = V1.replace("{name: name, type: string}", "{name: name, type: int32}")


def log_has(ingest, text):
    return text in ingest.logs(), ingest.logs()[-300:]


@every_clickhouse
def test_sighup_adds_a_new_optional_field_of_the_schema_file_to_both_sinks(setup):
    topic = create_topic(unique("reload"), 1)
    schema = setup.schema("events.yaml", V1)
    produce_records(topic, [(str(i), {"id": i, "name": f"n{i}"}) for i in range(100)])
    config = setup.config([{"topics": [topic], "schema": str(schema),
                            "clickhouse": {"table": "reloaded", "order_by": ["id"]},
                            "iceberg": {"table": "reloaded"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}])
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.reloaded", f"{setup.namespace}.reloaded"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("first rows", lambda: (count() == 100, count()))

    # A broken file and a changed type are refused; the service reads on.
    schema.write_text("fields: [")
    ingest.proc.send_signal(signal.SIGHUP)
    wait_until("the broken file is reported", lambda: log_has(ingest, "the schema file did not load"))
    schema.write_text(RETYPED)
    ingest.proc.send_signal(signal.SIGHUP)
    wait_until("the changed type is refused", lambda: log_has(ingest, "is not applied"))
    assert ingest.proc.poll() is None, ingest.logs()

    schema.write_text(V2)
    ingest.proc.send_signal(signal.SIGHUP)
    wait_until("the column is added", lambda: log_has(ingest, "columns added in every sink"))
    produce_records(topic, [(str(i), {"id": i, "name": f"n{i}", "note": f"note {i}"}) for i in range(100, 200)])
    wait_until("rows in both sinks", lambda: (
        count() == 200 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 200, count()))
    assert ingest.stop() == 0, ingest.logs()

    want = [(i, None) for i in range(100)] + [(i, f"note {i}") for i in range(100, 200)]
    rows = clickhouse(f"SELECT id, note FROM {table} ORDER BY id")
    assert [(int(r["id"]), r["note"]) for r in rows] == want
    got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", rows=True)
    assert [(int(r["id"]), r["note"]) for r in got["rows"]] == want


def test_sighup_promotes_a_widened_type_of_the_schema_file_in_both_sinks(setup):
    """The YAML schema's int32 field edited to int64 (and float32 to float64): SIGHUP
    promotes both columns in both sinks; older rows keep their values, newer rows carry
    values only the wider type holds."""
    narrow = "fields:\n  - {name: id, type: int64}\n  - {name: q, type: int32}\n  - {name: f, type: float32}\n"
    topic = create_topic(unique("reload-widen"), 1)
    schema = setup.schema("m.yaml", narrow)
    produce_records(topic, [(str(i), {"id": i, "q": -i, "f": i / 4}) for i in range(100)])
    config = setup.config([{"topics": [topic], "schema": str(schema),
                            "clickhouse": {"table": "promoted", "order_by": ["id"]},
                            "iceberg": {"table": "promoted"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}])
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.promoted", f"{setup.namespace}.promoted"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("narrow rows", lambda: (count() == 100, count()))

    schema.write_text(narrow.replace("int32", "int64").replace("float32", "float64"))
    ingest.proc.send_signal(signal.SIGHUP)
    wait_until("the columns are promoted", lambda: log_has(ingest, "columns added in every sink"))
    big = 5_000_000_000
    produce_records(topic, [(str(i), {"id": i, "q": big + i, "f": i / 8 + 0.1}) for i in range(100, 200)])
    wait_until("rows in both sinks", lambda: (
        count() == 200 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 200, count()))
    assert ingest.stop() == 0, ingest.logs()

    types = {r["name"]: r["type"] for r in clickhouse(
        f"SELECT name, type FROM system.columns WHERE database = '{setup.database}' AND table = 'promoted'")}
    assert (types["q"], types["f"]) == ("Int64", "Float64"), types
    want = [(i, -i, i / 4) for i in range(100)] + [(i, big + i, i / 8 + 0.1) for i in range(100, 200)]
    rows = clickhouse(f"SELECT id, q, f FROM {table} ORDER BY id")
    assert [(int(r["id"]), int(r["q"]), r["f"]) for r in rows] == want
    got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", rows=True)
    assert [(int(r["id"]), int(r["q"]), r["f"]) for r in got["rows"]] == want
