"""Writer versions that change types, through the stack's registry with confluent-kafka's
AvroSerializer: a widened type (int → long, float → double, decimal precision up) is
promoted in both sinks while running, older rows kept and read as the wider type by
ClickHouse, pyiceberg and Spark; an incompatible change (long → string) follows the
route's `on_incompatible`: `dead_letter` sends those records to the dead-letter topic
with the reason and goes on, `pause` holds only that route (nothing passes the record;
`/ready` and `ingest_route_paused` say why; SIGHUP tries again) until it is fixed."""
import signal
import time
from decimal import Decimal

from support.processes import wait_ready_status

from conftest import (clickhouse, create_topic, every_clickhouse, iceberg_count, produce_records, read_iceberg,
                      unique, wait_until)
from test_avro import dead_letters_in, produce_avro, registry_section

NARROW = {"type": "record", "name": "Measure", "namespace": "ingest.e2e", "fields": [
    {"name": "id", "type": "long"},
    {"name": "q", "type": "int"},
    {"name": "f", "type": ["null", "float"], "default": None},
    {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
]}
WIDE = {**NARROW, "fields": [
    {"name": "id", "type": "long"},
    {"name": "q", "type": "long"},
    {"name": "f", "type": ["null", "double"], "default": None},
    {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 14, "scale": 2}},
]}
# `q` long → string: no promotion reads it.
RETYPED = {**NARROW, "fields": [{"name": "id", "type": "long"}, {"name": "q", "type": "string"}]}
BIG = 5_000_000_000


def narrow(i):
    return {"id": i, "q": -i, "f": i / 4, "d": Decimal(i * 101) / 100}


def wide(i):
    return {"id": i, "q": BIG + i, "f": i / 8 + 0.1, "d": Decimal(123_456_789_000 + i) / 100}


def retyped(i):
    return {"id": i, "q": f"q{i}"}


def expected(i, wide_ids):
    r = wide(i) if i in wide_ids else narrow(i)
    return (i, r["q"], r["f"], r["d"])


@every_clickhouse
def test_a_widened_type_is_promoted_in_both_sinks_while_running(setup):
    topic = create_topic(unique("widen"), 1)
    first, total = 100, 300
    produce_avro(topic, [(narrow(i), NARROW) for i in range(first)])
    config = setup.config([{"topics": [topic], "format": "avro", "schema": str(setup.schema("m.avsc", json_of(NARROW))),
                            "clickhouse": {"table": "widened", "order_by": ["id"]},
                            "iceberg": {"table": "widened"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}], extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.widened", f"{setup.namespace}.widened"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("narrow rows", lambda: (count() == first, count()))

    # The wide version interleaved with the narrow one from now on.
    wide_ids = set(range(first + 1, total, 2))
    produce_avro(topic, [(wide(i), WIDE) if i in wide_ids else (narrow(i), NARROW) for i in range(first, total)])
    wait_until("every row in both sinks", lambda: (
        count() == total and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == total, count()), 120)
    assert ingest.stop() == 0, ingest.logs()
    assert "columns added in every sink" in ingest.logs()

    types = {r["name"]: r["type"] for r in clickhouse(
        f"SELECT name, type FROM system.columns WHERE database = '{setup.database}' AND table = 'widened'")}
    assert (types["q"], types["f"], types["d"].replace(" ", "")) == ("Int64", "Nullable(Float64)", "Decimal(14,2)"), types
    want = [expected(i, wide_ids) for i in range(total)]
    rows = clickhouse(f"SELECT id, q, f, toString(d) AS d FROM {table} ORDER BY id")
    assert [(int(r["id"]), int(r["q"]), r["f"], Decimal(r["d"])) for r in rows] == want
    for reader in ("pyiceberg", "spark"):
        got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", reader, rows=True)
        assert got["count"] == total, reader
        assert [(int(r["id"]), int(r["q"]), r["f"], Decimal(str(r["d"]))) for r in got["rows"]] == want, reader


def test_an_incompatible_version_is_a_dead_letter_under_dead_letter(setup):
    topic, dead = create_topic(unique("incompat-dl"), 1), create_topic(unique("incompat-dlq"), 1)
    produce_avro(topic, [(narrow(i), NARROW) for i in range(50)]
                 + [(retyped(i), RETYPED) for i in range(50, 60)]
                 + [(narrow(i), NARROW) for i in range(60, 100)])
    config = setup.config([{"topics": [topic], "format": "avro", "schema": str(setup.schema("m.avsc", json_of(NARROW))),
                            "on_incompatible": "dead_letter",
                            "clickhouse": {"table": "incompat", "order_by": ["id"]},
                            "iceberg": {"table": "incompat"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}],
                          dead_letter=dead, extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.incompat", f"{setup.namespace}.incompat"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("the compatible rows", lambda: (
        count() == 90 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 90, count()))
    wait_ready_status(ingest, 200, 10, "dead-lettering keeps the route ready")
    assert ingest.stop() == 0, ingest.logs()
    letters = dead_letters_in(dead, 5)
    assert sorted(int(m.key()) for m in letters) == list(range(50, 60))
    reasons = {v.decode() for m in letters for k, v in (m.headers() or []) if isinstance(v, bytes)}
    assert any("cannot be read as the route's schema" in r for r in reasons), reasons
    classes = {dict(m.headers())["ingest.error.class"] for m in letters}
    assert classes == {b"incompatible_schema"}, classes
    assert all(dict(m.headers()).get("ingest.schema.id") for m in letters)
    ids = [int(r["id"]) for r in clickhouse(f"SELECT id FROM {table} ORDER BY id")]
    assert ids == list(range(50)) + list(range(60, 100))


@every_clickhouse
def test_a_promotion_a_sink_refuses_follows_on_incompatible(setup):
    """ClickHouse will not retype a column of the sorting key: the widening is refused
    for good, and the wide version's records follow `on_incompatible` (here
    `dead_letter`) instead of stopping the service; the narrow ones go on landing."""
    topic, dead = create_topic(unique("refused-widen"), 1), create_topic(unique("refused-dlq"), 1)
    produce_avro(topic, [(narrow(i), NARROW) for i in range(50)]
                 + [(wide(i), WIDE) for i in range(50, 60)]
                 + [(narrow(i), NARROW) for i in range(60, 100)])
    config = setup.config([{"topics": [topic], "format": "avro", "schema": str(setup.schema("m.avsc", json_of(NARROW))),
                            "on_incompatible": "dead_letter",
                            "clickhouse": {"table": "keyed", "order_by": ["q", "id"]},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}],
                          dead_letter=dead, iceberg=False, extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    table = f"{setup.database}.keyed"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("the narrow rows", lambda: (count() == 90, count()))
    assert ingest.stop() == 0, ingest.logs()
    letters = dead_letters_in(dead, 5)
    assert sorted(int(m.key()) for m in letters) == list(range(50, 60))
    reasons = {v.decode() for m in letters for k, v in (m.headers() or []) if isinstance(v, bytes)}
    assert any("could not widen to writer schema id" in r and "refused the change" in r for r in reasons), reasons
    ids = [int(r["id"]) for r in clickhouse(f"SELECT id FROM {table} ORDER BY id")]
    assert ids == list(range(50)) + list(range(60, 100))


def test_an_incompatible_version_pauses_only_its_route_until_fixed(setup):
    avro_topic, json_topic = create_topic(unique("incompat-pause"), 2), create_topic(unique("other"), 1)
    dead = create_topic(unique("pause-dlq"), 1)
    # Keys spread the records over both partitions; the retyped ones sit in the middle.
    produce_avro(avro_topic, [(narrow(i), NARROW) for i in range(50)]
                 + [(retyped(i), RETYPED) for i in range(50, 55)]
                 + [(narrow(i), NARROW) for i in range(55, 100)])
    produce_records(json_topic, [(str(i), {"id": i}) for i in range(100)])
    json_schema = setup.schema("other.yaml", "fields:\n  - {name: id, type: int64}\n")
    routes = [{"name": "measures", "topics": [avro_topic], "format": "avro",
               "schema": str(setup.schema("m.avsc", json_of(NARROW))),
               "clickhouse": {"table": "paused", "order_by": ["id"]},
               "iceberg": {"table": "paused"},
               "batch": {"max_rows": 1000, "max_age": "300ms"}},
              {"name": "other", "topics": [json_topic], "schema": str(json_schema),
               "clickhouse": {"table": "other", "order_by": ["id"]},
               "batch": {"max_rows": 1000, "max_age": "300ms"}}]
    ingest = setup.start(setup.config(routes, extra=registry_section()))
    table, other = f"{setup.database}.paused", f"{setup.database}.other"
    count = lambda t: int(clickhouse(f"SELECT count() AS c FROM {t}")[0]["c"])  # noqa: E731
    wait_until("the route pauses", lambda: (
        ingest.get("/ready")[0] == 503 and "route `measures` paused" in ingest.get("/ready")[1], ingest.get("/ready")))
    assert "cannot be read as the route's schema" in ingest.get("/ready")[1]
    assert ingest.metric('ingest_route_paused{route="measures"}') == 1
    wait_until("the other route's rows", lambda: (count(other) == 100, count(other)))
    # The other route goes on while this one is paused.
    produce_records(json_topic, [(str(i), {"id": i}) for i in range(100, 200)])
    wait_until("the other route's new rows", lambda: (count(other) == 200, count(other)))
    time.sleep(2)
    assert count(table) < 95, "nothing past a retyped record in its partition is written"

    # SIGHUP tries again: each partition is read again from its first record not taken
    # (one the pause stopped early may write on up to its own retyped record), and the
    # route pauses again; nothing is doubled.
    ingest.proc.send_signal(signal.SIGHUP)
    wait_until("SIGHUP retries", lambda: ("the paused route reads again" in ingest.logs(), ingest.logs()[-500:]))
    wait_until("paused again", lambda: (ingest.logs().count("the route is paused") >= 2, ingest.logs()[-500:]))
    assert ingest.get("/ready")[0] == 503
    assert ingest.stop() == 0, ingest.logs()
    ids = [int(r["id"]) for r in clickhouse(f"SELECT id FROM {table} ORDER BY id")]
    assert len(ids) == len(set(ids)) and not set(ids) & set(range(50, 55)), ids

    # The fix: the operator sends those records to the dead-letter topic. The restart
    # reads from the sinks' positions: every other record lands, once.
    routes[0]["on_incompatible"] = "dead_letter"
    ingest = setup.start(setup.config(routes, dead_letter=dead, extra=registry_section()))
    ingest.wait_ready()
    lake = f"{setup.namespace}.paused"
    wait_until("every compatible row", lambda: (
        count(table) == 95 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 95, count(table)))
    assert ingest.metric('ingest_route_paused{route="measures"}') in (None, 0)
    assert ingest.stop() == 0, ingest.logs()
    ids = [int(r["id"]) for r in clickhouse(f"SELECT id FROM {table} ORDER BY id")]
    assert ids == list(range(50)) + list(range(55, 100))
    assert sorted(int(m.key()) for m in dead_letters_in(dead, 5)) == list(range(50, 55))
    got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id")
    assert got["count"] == 95


def json_of(schema):
    import json
    return json.dumps(schema)


def test_a_widened_type_is_promoted_through_the_rest_catalog(setup):
    """The same promotion through a real Iceberg REST catalog (SeaweedFS, data on S3):
    the catalog takes the new schema, and pyiceberg's RestCatalog reads the older files
    as the wider types."""
    import lake
    topic = create_topic(unique("widen-rest"), 1)
    produce_avro(topic, [(narrow(i), NARROW) for i in range(50)])
    config = setup.config([{"topics": [topic], "format": "avro", "schema": str(setup.schema("m.avsc", json_of(NARROW))),
                            "iceberg": {"table": "widened"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}],
                          clickhouse=False, catalog=lake.rest_catalog_config(), extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    ident = f"{setup.namespace}.widened"

    def rows(want):
        def check():
            table = lake.load_table(ident)
            snap = table and table.current_snapshot()
            total = int(snap.summary.additional_properties.get("total-records", 0)) if snap else 0
            return total == want, total
        return check
    wait_until("narrow rows", rows(50))
    produce_avro(topic, [(wide(i), WIDE) for i in range(50, 100)])
    wait_until("wide rows", rows(100), 120)
    assert ingest.stop() == 0, ingest.logs()

    table = lake.load_table(ident)
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    assert (types["q"], types["f"], types["d"]) == ("long", "double", "decimal(14, 2)"), types
    got = table.scan().to_arrow().sort_by("id").to_pylist()
    want = [expected(i, set(range(50, 100))) for i in range(100)]
    assert [(r["id"], r["q"], r["f"], r["d"]) for r in got] == want
