"""Avro through the stack's schema registry, produced with confluent-kafka's own
AvroSerializer (the producer users run): two schema versions interleaved in one topic,
the table schema taken from the subject at start, every Avro type read back equal from
ClickHouse, pyiceberg and Spark; records the registry cannot explain go to the
dead-letter topic with their reason."""
import datetime as dt
import json
import os
import time
import uuid
from decimal import Decimal

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from support.processes import stop_together, wait_ready_status
from support.tcp_proxy import TcpProxy

from conftest import KAFKA, clickhouse, create_topic, every_clickhouse, iceberg_count, read_iceberg, unique, wait_until

REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
UTC = dt.timezone.utc

FIELDS = [
    {"name": "id", "type": "long"},
    {"name": "flag", "type": "boolean"},
    {"name": "small", "type": "int"},
    {"name": "ratio", "type": "float"},
    {"name": "name", "type": "string"},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "long"}},
    {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 3}},
    {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "at_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
        {"name": "x", "type": "int"}, {"name": "y", "type": ["null", "double"], "default": None}]}},
]
V1 = {"type": "record", "name": "Event", "namespace": "ingest.e2e", "fields": FIELDS}
V2 = {**V1, "fields": FIELDS + [{"name": "note", "type": ["null", "string"], "default": None}]}


def record(i, version):
    r = {
        "id": i, "flag": i % 2 == 0, "small": -i, "ratio": i / 4, "name": f"n{i}\u00e9",
        "kind": "ABC"[i % 3], "tags": [f"t{i}", "x"][: i % 3], "attrs": {"k": i} if i % 2 else {},
        "hash": i.to_bytes(4, "big"), "price": Decimal(i * 1001) / 1000 - 5,
        "uid": uuid.UUID(int=i + 1), "day": dt.date(2026, 1, 1) + dt.timedelta(days=i % 300),
        "t_ms": dt.time(1, 2, 3, (i % 1000) * 1000),
        "at_ms": dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC) + dt.timedelta(milliseconds=i * 7),
        "at_us": dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC) + dt.timedelta(microseconds=i * 13),
        "local_us": dt.datetime(2026, 11, 24, 10, 0) + dt.timedelta(microseconds=i),
        "inner": {"x": i * 2, "y": None if i % 4 == 0 else i / 8},
    }
    if version == 2:
        r["note"] = None if i % 5 == 0 else f"note {i}"
    return r


def produce_avro(topic, records_and_schemas):
    """Serialises with confluent-kafka's AvroSerializer (registering each schema under
    `<topic>-value`), returns the schema ids it wrote."""
    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 30})
    serializers = {}
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5})
    ids = set()
    for value, schema in records_and_schemas:
        key = json.dumps(schema, sort_keys=True)
        if key not in serializers:
            serializers[key] = AvroSerializer(client, json.dumps(schema))
        data = serializers[key](value, SerializationContext(topic, MessageField.VALUE))
        ids.add(int.from_bytes(data[1:5], "big"))
        producer.produce(topic, key=str(value["id"]), value=data)
        producer.poll(0)
    assert producer.flush(60) == 0
    return ids


def registry_section():
    return {"schema_registry": {"url": REGISTRY, "timeout": "5s"}}


def expected(i):
    """The row a reader should see for record i (V1 records read `note` as null)."""
    r = record(i, 2 if i % 2 else 1)
    r.setdefault("note", None)
    return r


@every_clickhouse
def test_two_versions_interleaved_read_back_equal_in_every_reader(setup):
    topic = create_topic(unique("avro"), 2)
    count = 400
    # V1 is registered, then V2, which is the subject's latest when the service starts;
    # then records of both versions are interleaved.
    first = produce_avro(topic, [(record(0, 1), V1)]) | produce_avro(topic, [(record(1, 2), V2)])
    rest = produce_avro(topic, [(record(i, 2 if i % 2 else 1), V2 if i % 2 else V1) for i in range(2, count)])
    assert len(first | rest) == 2, "two writer schema ids"
    config = setup.config([{"topics": [topic], "format": "avro",
                            "clickhouse": {"table": "avro_events", "order_by": ["id"]},
                            "iceberg": {"table": "avro_events"},
                            "batch": {"max_rows": 150, "max_age": "500ms"}}], extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    table = f"{setup.database}.avro_events"
    wait_until("rows in both sinks", lambda: (
        iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.avro_events") == count
        and int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"]) == count, None))
    assert ingest.stop() == 0, ingest.logs()

    modern = setup.clickhouse.version != "18.16"
    micros = "toUnixTimestamp64Micro(at_us)" if modern else "at_us"
    millis = "toUnixTimestamp64Milli(at_ms)" if modern else "at_ms"
    # 18.16 keeps Array(Tuple) as one array per element (`attrs.1`, `attrs.2`).
    pairs = "length(attrs)" if modern else "length(`attrs.1`)"
    rows = clickhouse(
        f"SELECT id, flag, small, ratio, name, kind, tags, {pairs} AS attrs, hex(hash) AS hash,"
        f" price, uid, toString(day) AS day, t_ms, {millis} AS at_ms, {micros} AS at_us,"
        f" tupleElement(inner, 1) AS x, note FROM {table} ORDER BY id", parse_float=Decimal)
    assert len(rows) == count
    for row in rows:
        i = int(row["id"])
        want = expected(i)
        got = {**row, "id": i, "flag": bool(row["flag"]), "at_ms": int(row["at_ms"]), "at_us": int(row["at_us"]),
               "t_ms": int(row["t_ms"]), "attrs": int(row["attrs"])}
        assert got["small"] == want["small"] and got["name"] == want["name"] and got["kind"] == want["kind"], got
        assert got["flag"] == want["flag"] and Decimal(str(got["ratio"])) == Decimal(str(want["ratio"])), got
        assert got["tags"] == want["tags"] and got["attrs"] == len(want["attrs"]), got
        assert got["hash"] == want["hash"].hex().upper() and got["price"] == want["price"], got
        assert got["uid"] == str(want["uid"]) and got["day"] == want["day"].isoformat(), got
        t = want["t_ms"]
        assert got["t_ms"] == ((t.hour * 60 + t.minute) * 60 + t.second) * 10**6 + t.microsecond, got
        assert got["at_ms"] == int(want["at_ms"].timestamp() * 1000), got
        epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
        assert got["at_us"] == (want["at_us"] - epoch) // dt.timedelta(microseconds=1), got
        assert int(got["x"]) == want["inner"]["x"] and got["note"] == want["note"], got

    for reader in ("pyiceberg", "spark"):
        lake = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.avro_events", "id", reader,
                            rows=True)
        assert lake["count"] == count, reader
        for row in lake["rows"]:
            want = expected(int(row["id"]))
            assert row["name"] == want["name"] and row["kind"] == want["kind"], (reader, row)
            assert row["note"] == want["note"] and row["uid"] == str(want["uid"]), (reader, row)
            assert Decimal(str(row["price"])) == want["price"], (reader, row)
            assert row["day"] == want["day"].isoformat(), (reader, row)
            assert dt.datetime.fromisoformat(row["at_us"]) == want["at_us"], (reader, row)
            assert dt.datetime.fromisoformat(row["at_ms"]) == want["at_ms"], (reader, row)
            assert dt.datetime.fromisoformat(row["local_us"]) == want["local_us"], (reader, row)
            assert row["tags"] == want["tags"] and row["inner"]["x"] == want["inner"]["x"], (reader, row)


def test_records_the_registry_cannot_explain_are_dead_letters_with_their_reason(setup):
    """An id the registry does not hold, and bytes that are not registry-framed, go to the
    dead-letter topic with the reason; the good records around them land."""
    topic, dead = create_topic(unique("avro-bad"), 1), create_topic(unique("avro-dlq"), 1)
    produce_avro(topic, [(record(i, 2), V2) for i in range(10)])
    producer = Producer({"bootstrap.servers": KAFKA})
    producer.produce(topic, key="x", value=b"\x00\x7f\xff\xff\xf0" + b"\x02")
    producer.produce(topic, key="y", value=b'{"id": 1}')
    assert producer.flush(30) == 0
    produce_avro(topic, [(record(i, 2), V2) for i in range(10, 20)])
    config = setup.config([{"topics": [topic], "format": "avro",
                            "clickhouse": {"table": "avro_bad", "order_by": ["id"]},
                            "batch": {"max_rows": 100, "max_age": "300ms"}}],
                          dead_letter=dead, iceberg=False, extra=registry_section())
    ingest = setup.start(config)
    ingest.wait_ready()
    wait_until("good rows", lambda: (
        int(clickhouse(f"SELECT count() AS c FROM {setup.database}.avro_bad")[0]["c"]) == 20, None))
    assert ingest.stop() == 0, ingest.logs()
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("dlq-read"), "auto.offset.reset": "earliest"})
    consumer.subscribe([dead])
    letters = []
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while len(letters) < 2 and dt.datetime.now() < deadline:
        m = consumer.poll(1)
        if m is not None and not m.error():
            letters.append((m.key(), dict(m.headers() or [])))
    consumer.close()
    reasons = {key: headers for key, headers in letters}
    assert set(reasons) == {b"x", b"y"}, letters
    text = {k: b" ".join(v for v in h.values() if isinstance(v, bytes)).decode() for k, h in reasons.items()}
    assert "schema id 2147483632 is not in the registry" in text[b"x"], text
    assert "not schema-registry framed" in text[b"y"], text
    # The class of each failure, and the schema id the payload names.
    assert reasons[b"x"]["ingest.error.class"] == b"unknown_schema", reasons
    assert reasons[b"x"]["ingest.schema.id"] == b"2147483632", reasons
    assert reasons[b"y"]["ingest.error.class"] == b"undecodable", reasons


def dead_letters_in(topic, wait_s):
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("dlq-read"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    found = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            found.append(m)
    consumer.close()
    return found


def test_a_registry_down_for_30s_is_waited_for_never_a_dead_letter(setup):
    """A new writer schema appears while the registry is unreachable (refused for 15 s,
    then hanging for 15 s): the route waits, `/ready` says why, nothing goes to the
    dead-letter topic, and every record lands once the registry is back."""
    topic, dead = create_topic(unique("avro-down"), 1), create_topic(unique("avro-down-dlq"), 1)
    produce_avro(topic, [(record(i, 1), V1) for i in range(50)])
    proxy = TcpProxy.to_url(REGISTRY).start()
    path = REGISTRY.split("://", 1)[1].split("/", 1)[1]
    config = setup.config([{"topics": [topic], "format": "avro", "schema": str(setup.schema("v2.avsc", json.dumps(V2))),
                            "clickhouse": {"table": "avro_down", "order_by": ["id"]},
                            "iceberg": {"table": "avro_down"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}],
                          dead_letter=dead, extra={"schema_registry": {"url": f"{proxy.url}/{path}", "timeout": "2s"}})
    ingest = setup.start(config)
    ingest.wait_ready()
    table = f"{setup.database}.avro_down"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("V1 rows", lambda: (count() == 50, count()))

    down_at = time.monotonic()
    proxy.refuse()
    # V2 is new to the service: its id must be fetched while the registry is away.
    produce_avro(topic, [(record(i, 2), V2) for i in range(50, 100)])
    wait_ready_status(ingest, 503, 30, "not ready while the registry is away")
    assert "waiting for: schema registry" in ingest.get("/ready")[1]
    time.sleep(max(0, 15 - (time.monotonic() - down_at)))
    proxy.hang()
    time.sleep(max(0, 30 - (time.monotonic() - down_at)))
    assert count() == 50, "no V2 row without its writer schema"
    proxy.forward()
    wait_until("V2 rows after the registry is back", lambda: (count() == 100, count()), 60)
    wait_ready_status(ingest, 200, 30, "ready again")
    assert ingest.stop() == 0, ingest.logs()
    proxy.stop()

    assert dead_letters_in(dead, 5) == [], "a registry outage is never a dead letter"
    notes = clickhouse(f"SELECT id, note FROM {table} WHERE id >= 50 ORDER BY id")
    assert [(int(r["id"]), r["note"]) for r in notes] == [(i, record(i, 2)["note"]) for i in range(50, 100)]
    assert iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.avro_down") == 100
    assert "schema registry unreachable" in ingest.logs()


@every_clickhouse
def test_a_new_optional_field_is_added_to_both_sinks_while_running_by_two_members(setup):
    """A new registry version with a new optional field arrives mid-stream while two
    members share the topic: both sinks gain one column (the members race to add it,
    neither fails), rows before it read null and rows after it the value, in ClickHouse,
    pyiceberg and Spark; no restart, nothing lost or doubled."""
    topic = create_topic(unique("avro-evolve"), 2)
    before, after = 200, 200
    produce_avro(topic, [(record(i, 1), V1) for i in range(before)])
    routes = [{"topics": [topic], "format": "avro",
               "clickhouse": {"table": "evolving", "order_by": ["id"]},
               "iceberg": {"table": "evolving"},
               "batch": {"max_rows": 100, "max_age": "300ms"}}]
    members = [setup.start(setup.config(routes, extra=registry_section())) for _ in range(2)]
    for member in members:
        member.wait_ready()
    table = f"{setup.database}.evolving"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    lake = f"{setup.namespace}.evolving"
    wait_until("V1 rows in both sinks", lambda: (
        count() == before and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == before, count()))

    # V2 (one more optional field) is registered by the producer and used from now on.
    produce_avro(topic, [(record(i, 2), V2) for i in range(before, before + after)])
    wait_until("V2 rows in both sinks", lambda: (
        count() == before + after
        and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == before + after, count()), 120)
    codes = stop_together(members)
    assert codes == [0, 0], [m.logs() for m in members]
    assert any("columns added in every sink" in m.logs() for m in members), [m.logs() for m in members]

    columns = [r["name"] for r in clickhouse(
        f"SELECT name FROM system.columns WHERE database = '{setup.database}' AND table = 'evolving'")]
    assert columns.count("note") == 1, columns
    rows = clickhouse(f"SELECT id, note FROM {table} ORDER BY id")
    assert [(int(r["id"]), r["note"]) for r in rows] == (
        [(i, None) for i in range(before)] + [(i, record(i, 2)["note"]) for i in range(before, before + after)])
    for reader in ("pyiceberg", "spark"):
        got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", reader, rows=True)
        assert got["count"] == before + after, reader
        notes = [(int(r["id"]), r["note"]) for r in got["rows"]]
        assert notes == ([(i, None) for i in range(before)]
                         + [(i, record(i, 2)["note"]) for i in range(before, before + after)]), reader


def test_a_restart_on_a_newer_version_widens_the_tables_at_start(setup):
    """The service was stopped while producers moved to a version with a new optional
    field: at the next start the table schema (the subject's latest) has a field the
    tables lack; they gain the column at start-up instead of the start being refused."""
    topic = create_topic(unique("avro-restart"), 1)
    produce_avro(topic, [(record(i, 1), V1) for i in range(50)])
    routes = [{"topics": [topic], "format": "avro",
               "clickhouse": {"table": "restarted", "order_by": ["id"]},
               "iceberg": {"table": "restarted"},
               "batch": {"max_rows": 100, "max_age": "300ms"}}]
    table, lake = f"{setup.database}.restarted", f"{setup.namespace}.restarted"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    first = setup.start(setup.config(routes, extra=registry_section()))
    first.wait_ready()
    wait_until("V1 rows", lambda: (count() == 50, count()))
    assert first.stop() == 0, first.logs()

    produce_avro(topic, [(record(i, 2), V2) for i in range(50, 100)])
    second = setup.start(setup.config(routes, extra=registry_section()))
    second.wait_ready()
    wait_until("V2 rows in both sinks", lambda: (
        count() == 100 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 100, count()))
    assert second.stop() == 0, second.logs()
    rows = clickhouse(f"SELECT id, note FROM {table} ORDER BY id")
    assert [(int(r["id"]), r["note"]) for r in rows] == (
        [(i, None) for i in range(50)] + [(i, record(i, 2)["note"]) for i in range(50, 100)])
    got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", rows=True)
    assert [(int(r["id"]), r["note"]) for r in got["rows"]] == [(int(r["id"]), r["note"]) for r in rows]


def test_a_registry_behind_tls_and_credentials(setup):
    """The registry client against a live HTTPS server that checks credentials (the
    stack's CA, basic auth, then a bearer token): the table schema comes from the subject
    and writer schemas by id through it; wrong credentials keep the route waiting (not
    ready, the 401 in the log), and no secret is ever logged."""
    from support.registry_proxy import RegistryProxy
    tls = os.environ["STACK_TLS"]
    upstream = REGISTRY.split("/apis/", 1)
    path = "apis/" + upstream[1]
    topic = create_topic(unique("avro-auth"), 1)
    produce_avro(topic, [(record(i, 1), V1) for i in range(20)])
    routes = [{"topics": [topic], "format": "avro",
               "clickhouse": {"table": "avro_auth", "order_by": ["id"]},
               "batch": {"max_rows": 1000, "max_age": "300ms"}}]
    table = f"{setup.database}.avro_auth"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    password, token = "s3cret-" + uuid.uuid4().hex[:8], "tok-" + uuid.uuid4().hex[:12]
    proxy = RegistryProxy(upstream[0], f"{tls}/server.pem", f"{tls}/server.key",
                          username="ingest", password=password).start()
    section = {"url": proxy.url(path), "username": "ingest", "password": password,
               "tls": {"ca_file": os.environ["STACK_CA"]}, "timeout": "5s"}
    ingest = setup.start(setup.config(routes, iceberg=False, extra={"schema_registry": section}))
    ingest.wait_ready()
    wait_until("rows through the authenticated registry", lambda: (count() == 20, count()))
    assert ingest.stop() == 0, ingest.logs()
    proxy.stop()

    # A bearer token; the service started with a wrong one waits, then a right one reads.
    proxy = RegistryProxy(upstream[0], f"{tls}/server.pem", f"{tls}/server.key", token=token).start()
    produce_avro(topic, [(record(i, 2), V2) for i in range(20, 40)])
    section = {"url": proxy.url(path), "token": token + "x", "tls": {"ca_file": os.environ["STACK_CA"]}}
    schema = str(setup.schema("v1.avsc", json.dumps(V1)))
    routes[0]["schema"] = schema
    ingest = setup.start(setup.config(routes, iceberg=False, extra={"schema_registry": section}))
    wait_until("a refused token is waited out, never a dead letter", lambda: (
        "401" in ingest.logs() and ingest.get("/ready")[0] == 503, ingest.get("/ready")))
    assert count() == 20
    assert ingest.stop() == 0, ingest.logs()
    section["token"] = token
    ingest = setup.start(setup.config(routes, iceberg=False, extra={"schema_registry": section}))
    ingest.wait_ready()
    wait_until("rows with the right token", lambda: (count() == 40, count()))
    assert ingest.stop() == 0, ingest.logs()
    proxy.stop()
    logs = "".join(p.logs() for p in setup.processes)
    assert password not in logs and token not in logs


def test_a_schema_using_a_type_registered_under_another_subject(setup):
    """Confluent schema references: `Order` uses `Money`, registered under its own
    subject; the table schema (the subject's latest at start) and each writer schema by
    id are read with the referenced type defined in place."""
    from confluent_kafka.schema_registry import Schema, SchemaReference
    from support.orders import ORDERS, assert_orders_land, price
    namespace = unique("e2e_ref")
    money = {"type": "record", "name": "Money", "namespace": namespace,
             "fields": [{"name": "cents", "type": "long"}, {"name": "currency", "type": "string"}]}
    order = {"type": "record", "name": "Order", "namespace": namespace,
             "fields": [{"name": "id", "type": "long"}, {"name": "price", "type": f"{namespace}.Money"}]}
    topic = create_topic(unique("avro-ref"), 1)
    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 30})
    money_subject = f"{namespace}.Money"
    client.register_schema(money_subject, Schema(json.dumps(money), "AVRO"))
    version = client.get_latest_version(money_subject).version
    schema = Schema(json.dumps(order), "AVRO", [SchemaReference(f"{namespace}.Money", money_subject, version)])
    serializer = AvroSerializer(client, schema)
    producer = Producer({"bootstrap.servers": KAFKA})
    for i in range(ORDERS):
        value = {"id": i, "price": price(i)}
        producer.produce(topic, key=str(i), value=serializer(value, SerializationContext(topic, MessageField.VALUE)))
    assert producer.flush(30) == 0
    assert client.get_latest_version(f"{topic}-value").schema.references, "registered with a reference"
    assert_orders_land(setup, topic, "avro", registry_section()["schema_registry"])
