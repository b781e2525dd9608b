"""Protobuf through the stack's schema registry, produced with confluent-kafka's own
ProtobufSerializer: two schema versions interleaved in one topic, the table taken from
the subject at start, every kind of field read back equal from ClickHouse (18.16 and
26.9), pyiceberg and Spark."""
import datetime as dt
import os

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2, wrappers_pb2

from conftest import KAFKA, clickhouse, create_topic, every_clickhouse, iceberg_count, read_iceberg, unique, wait_until
from support.orders import ORDERS, assert_orders_land, price

REGISTRY = os.environ.get("SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")
F = descriptor_pb2.FieldDescriptorProto
UTC = dt.timezone.utc


def event_class(version, file_name):
    """e2e.Event built as a descriptor (no protoc here); version 2 adds `note`."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (timestamp_pb2, wrappers_pb2):
        pool.AddSerializedFile(dep.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(name=file_name, package="e2e", syntax="proto3",
                                           dependency=["google/protobuf/timestamp.proto",
                                                       "google/protobuf/wrappers.proto"])
    m = f.message_type.add(name="Event")
    kind = m.enum_type.add(name="Kind")
    for number, name in enumerate(["K_UNKNOWN", "K_A", "K_B"]):
        kind.value.add(name=name, number=number)
    inner = m.nested_type.add(name="Inner")
    inner.field.add(name="x", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    entry = m.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    fields = [("id", 1, F.TYPE_INT64, None, F.LABEL_OPTIONAL),
              ("name", 2, F.TYPE_STRING, None, F.LABEL_OPTIONAL),
              ("kind", 3, F.TYPE_ENUM, ".e2e.Event.Kind", F.LABEL_OPTIONAL),
              ("tags", 4, F.TYPE_STRING, None, F.LABEL_REPEATED),
              ("attrs", 5, F.TYPE_MESSAGE, ".e2e.Event.AttrsEntry", F.LABEL_REPEATED),
              ("inner", 6, F.TYPE_MESSAGE, ".e2e.Event.Inner", F.LABEL_OPTIONAL),
              ("at", 7, F.TYPE_MESSAGE, ".google.protobuf.Timestamp", F.LABEL_OPTIONAL),
              ("maybe", 8, F.TYPE_MESSAGE, ".google.protobuf.Int32Value", F.LABEL_OPTIONAL),
              ("score", 9, F.TYPE_DOUBLE, None, F.LABEL_OPTIONAL),
              ("blob", 10, F.TYPE_BYTES, None, F.LABEL_OPTIONAL)]
    if version == 2:
        fields.append(("note", 11, F.TYPE_STRING, None, F.LABEL_OPTIONAL))
    for name, number, type_, type_name, label in fields:
        field = m.field.add(name=name, number=number, type=type_, label=label)
        if type_name:
            field.type_name = type_name
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("e2e.Event"))


def record(cls, i):
    m = cls(id=i, name=f"n{i}\u00e9", kind=i % 3, tags=[f"t{i}"] * (i % 3), score=i / 4, blob=bytes([i % 256]))
    m.attrs["k"] = i
    if i % 2:
        m.attrs["a"] = -i
    if i % 4:
        m.inner.x = i * 2
    m.at.FromDatetime(dt.datetime(2026, 11, 24, 10, 0) + dt.timedelta(microseconds=i * 13))
    if i % 5:
        m.maybe.value = -i
    if hasattr(m, "note") and "note" in m.DESCRIPTOR.fields_by_name:
        m.note = f"note {i}"
    return m


def produce_protobuf(topic, messages):
    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 30})
    serializers = {}
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5})
    ids = set()
    for m in messages:
        cls = type(m)
        if cls not in serializers:
            serializers[cls] = ProtobufSerializer(cls, client, {"use.deprecated.format": False})
        data = serializers[cls](m, SerializationContext(topic, MessageField.VALUE))
        ids.add(int.from_bytes(data[1:5], "big"))
        producer.produce(topic, key=str(m.id), value=data)
        producer.poll(0)
    assert producer.flush(60) == 0
    return ids


def expected(i):
    kinds = ["K_UNKNOWN", "K_A", "K_B"]
    at = dt.datetime(2026, 11, 24, 10, 0, tzinfo=UTC) + dt.timedelta(microseconds=i * 13)
    attrs = sorted([("k", i)] + ([("a", -i)] if i % 2 else []))
    return {"id": i, "name": f"n{i}\u00e9", "kind": kinds[i % 3], "tags": [f"t{i}"] * (i % 3),
            "attrs": attrs, "x": i * 2 if i % 4 else None, "at": at, "maybe": -i if i % 5 else None,
            "score": i / 4, "note": f"note {i}" if i % 2 else ""}  # proto3: an unset string is ""


@every_clickhouse
def test_two_versions_interleaved_read_back_equal_in_every_reader(setup):
    topic = create_topic(unique("proto"), 2)
    count = 300
    v1, v2 = event_class(1, f"{topic}_v1.proto"), event_class(2, f"{topic}_v2.proto")
    ids = produce_protobuf(topic, [record(v1, 0)]) | produce_protobuf(topic, [record(v2, 1)])
    ids |= produce_protobuf(topic, [record(v2 if i % 2 else v1, i) for i in range(2, count)])
    assert len(ids) == 2, ids
    config = setup.config([{"topics": [topic], "format": "protobuf",
                            "clickhouse": {"table": "proto_events", "order_by": ["id"]},
                            "iceberg": {"table": "proto_events"},
                            "batch": {"max_rows": 120, "max_age": "500ms"}}],
                          extra={"schema_registry": {"url": REGISTRY}})
    ingest = setup.start(config)
    ingest.wait_ready()
    table = f"{setup.database}.proto_events"
    wait_until("rows in both sinks", lambda: (
        iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.proto_events") == count
        and int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"]) == count, None))
    assert ingest.stop() == 0, ingest.logs()

    modern = setup.clickhouse.version != "18.16"
    at = "toUnixTimestamp64Micro(at)" if modern else "at"
    pairs = "attrs" if modern else "arrayMap((k, v) -> (k, v), `attrs.1`, `attrs.2`)"
    rows = clickhouse(f"SELECT id, name, kind, tags, {pairs} AS attrs, tupleElement(inner, 1) AS x, {at} AS at,"
                      f" maybe, score, note FROM {table} ORDER BY id")
    assert len(rows) == count
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    for row in rows:
        i = int(row["id"])
        want = expected(i)
        attrs = [tuple(p.values()) if isinstance(p, dict) else tuple(p) for p in row["attrs"]]
        assert [(k, int(v)) for k, v in attrs] == want["attrs"], row
        assert (row["name"], row["kind"], row["tags"]) == (want["name"], want["kind"], want["tags"]), row
        assert int(row["at"]) == (want["at"] - epoch) // dt.timedelta(microseconds=1), row
        # An unset message is a null struct: ClickHouse stores a tuple of nulls.
        assert row["x"] == want["x"] and row["maybe"] == want["maybe"], row
        assert row["score"] == want["score"] and row["note"] == want["note"], row

    for reader in ("pyiceberg", "spark"):
        lake = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.proto_events", "id", reader,
                            rows=True)
        assert lake["count"] == count, reader
        for row in lake["rows"]:
            want = expected(int(row["id"]))
            assert (row["name"], row["kind"], row["tags"]) == (want["name"], want["kind"], want["tags"]), (reader, row)
            assert dt.datetime.fromisoformat(row["at"]) == want["at"], (reader, row)
            assert row["maybe"] == want["maybe"] and row["note"] == want["note"], (reader, row)
            assert (row["inner"] or {}).get("x") == want["x"], (reader, row)
            assert sorted((p["key"], p["value"]) for p in row["attrs"]) == want["attrs"], (reader, row)


@every_clickhouse
def test_a_new_field_of_a_newer_version_is_added_while_running(setup):
    """The service starts on version 1; version 2 (one more field) arrives mid-stream:
    both sinks gain the column without a restart, earlier rows read null."""
    topic = create_topic(unique("proto-evolve"), 1)
    v1, v2 = event_class(1, f"{topic}_v1.proto"), event_class(2, f"{topic}_v2.proto")
    produce_protobuf(topic, [record(v1, i) for i in range(50)])
    config = setup.config([{"topics": [topic], "format": "protobuf",
                            "clickhouse": {"table": "proto_evolving", "order_by": ["id"]},
                            "iceberg": {"table": "proto_evolving"},
                            "batch": {"max_rows": 100, "max_age": "300ms"}}],
                          extra={"schema_registry": {"url": REGISTRY}})
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.proto_evolving", f"{setup.namespace}.proto_evolving"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("version 1 rows", lambda: (count() == 50, count()))
    produce_protobuf(topic, [record(v2, i) for i in range(50, 100)])
    wait_until("version 2 rows in both sinks", lambda: (
        count() == 100 and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == 100, count()), 120)
    assert ingest.stop() == 0, ingest.logs()
    assert "columns added in every sink" in ingest.logs(), ingest.logs()
    want = [(i, None) for i in range(50)] + [(i, f"note {i}") for i in range(50, 100)]
    rows = clickhouse(f"SELECT id, note FROM {table} ORDER BY id")
    assert [(int(r["id"]), r["note"]) for r in rows] == want
    got = read_iceberg(setup.catalog_uri, setup.warehouse, lake, "id", rows=True)
    assert [(int(r["id"]), r["note"]) for r in got["rows"]] == want


def order_class(package):
    """`Order` importing `Money` from another file, as teams split their .proto files:
    confluent-kafka's serializer registers the imported file under its own subject and
    the order schema with a reference to it."""
    pool = descriptor_pool.DescriptorPool()
    money = descriptor_pb2.FileDescriptorProto(name=f"{package}/money.proto", package=package, syntax="proto3")
    m = money.message_type.add(name="Money")
    m.field.add(name="cents", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    m.field.add(name="currency", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    pool.Add(money)
    order = descriptor_pb2.FileDescriptorProto(name=f"{package}/order.proto", package=package, syntax="proto3",
                                               dependency=[f"{package}/money.proto"])
    o = order.message_type.add(name="Order")
    o.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    o.field.add(name="price", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                type_name=f".{package}.Money")
    pool.Add(order)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Order"))


def test_a_schema_importing_another_registered_file_reads_through_the_reference(setup):
    """The table schema (the subject's latest at start) and each writer schema by id are
    resolved with the files they import, fetched through their references."""
    package = unique("e2e_ref")
    cls = order_class(package)
    topic = create_topic(unique("proto-ref"), 1)
    ids = produce_protobuf(topic, [cls(id=i, price=price(i)) for i in range(ORDERS)])
    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 30})
    registered = client.get_schema(next(iter(ids)))
    assert [r.name for r in registered.references] == [f"{package}/money.proto"], "the producer registers a reference"
    assert_orders_land(setup, topic, "protobuf", {"url": REGISTRY})
