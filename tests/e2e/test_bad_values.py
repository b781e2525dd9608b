"""Values that decode but that a sink cannot store (a date outside a ClickHouse Date,
a number too wide for a column the user made narrower, a timestamp whose conversion to
Iceberg's microseconds overflows, a null in a required Iceberg column) must not stop the
service: each such record goes to the dead-letter topic with the sink and the column in
its reason, it lands in neither sink (a record is written to every sink of its route or
to none), and the rest of the batch lands in both. good + dead = consumed, counted
exactly by the metrics."""
import json
import os
import re

from conftest import (checksum_of, clickhouse, create_topic, every_clickhouse, produce_records, read_iceberg,
                      reader_uri, unique, wait_until)
from support.kafka import read_messages

SCHEMA = """
fields:
  - {name: id, type: int64}
  - {name: day, type: date}
  - {name: at, type: "timestamp(s, UTC)"}
  - {name: small, type: int64}
  - {name: level, type: int64}
  - {name: amount, type: "decimal(18, 2)"}
  - {name: big, type: int64}
  - {name: raw_ts, type: "timestamp(s, UTC)"}
  - {name: note, type: string, nullable: true}
"""

# The user's ClickHouse table: narrower than the route's schema.
CLICKHOUSE_TABLE = """CREATE TABLE {db}.t (
    id Int64, day Date, at DateTime, small Int16, level UInt8, amount Decimal(9, 2),
    big Int64, raw_ts Int64, note Nullable(String)
) ENGINE = MergeTree ORDER BY id"""

GOOD_VALUES = {"day": "2024-05-01", "at": 1700000000, "small": 100, "level": 7, "amount": "12.34",
               "big": 5, "raw_ts": 1700000000, "note": "x"}

# id -> (the values that differ from a good record, [(sink, column) it breaks])
BAD = {
    1000: ({"day": "2150-01-01"}, [("clickhouse", "day")]),       # past Date's 2149-06-06
    1001: ({"day": "1969-12-31"}, [("clickhouse", "day")]),       # before Date's 1970-01-01
    1002: ({"at": 5000000000}, [("clickhouse", "at")]),            # past DateTime's 2106
    1003: ({"small": 40000}, [("clickhouse", "small")]),          # Int16
    1004: ({"level": -1}, [("clickhouse", "level")]),             # UInt8
    1005: ({"level": 256}, [("clickhouse", "level")]),            # UInt8
    1006: ({"amount": "12345678.9"}, [("clickhouse", "amount")]),  # Decimal(9, 2)
    1007: ({"big": 3000000000}, [("iceberg", "big")]),             # Iceberg int
    1008: ({"raw_ts": 10 ** 14}, [("iceberg", "raw_ts")]),        # seconds -> µs overflows
    1009: ({"note": None}, [("iceberg", "note")]),                # required in the Iceberg table
    1010: ({"day": "2150-01-01", "big": -3000000000}, [("clickhouse", "day"), ("iceberg", "big")]),
}
GOOD_IDS = list(range(120))


def record(i, changes=None):
    return {"id": i, **GOOD_VALUES, **(changes or {})}


def records():
    out = [(str(i), json.dumps(record(i)).encode()) for i in GOOD_IDS]
    for n, (i, (changes, _)) in enumerate(sorted(BAD.items())):
        out.insert(n * 10 + 4, (str(i), json.dumps(record(i, changes)).encode()))
    return out


def create_iceberg_table(setup):
    """The user's Iceberg table: `big` is an int, `note` is required."""
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    warehouse = setup.warehouse[len("file://"):]
    os.makedirs(warehouse, exist_ok=True)
    catalog = SqlCatalog("ingest", uri=reader_uri(setup.catalog_uri), warehouse=setup.warehouse)
    catalog.create_namespace_if_not_exists(setup.namespace)
    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("day", pa.date32()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("small", pa.int64()),
        pa.field("level", pa.int64()),
        pa.field("amount", pa.decimal128(18, 2)),
        pa.field("big", pa.int32()),
        pa.field("raw_ts", pa.timestamp("us", tz="UTC")),
        pa.field("note", pa.string(), nullable=False),
    ])
    catalog.create_table(f"{setup.namespace}.t", schema=schema)


def metrics(ingest):
    """Every sample of /metrics as {(name, labels): value}."""
    status, body = ingest.get("/metrics")
    assert status == 200, body
    out = {}
    for line in body.splitlines():
        m = re.match(r'^(\w+)(\{.*\})? (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(samples, name, label_part=""):
    return sum(v for (n, labels), v in samples.items() if n == name and label_part in labels)


@every_clickhouse
def test_values_a_sink_cannot_store_go_to_the_dead_letter_topic(setup):
    topic = create_topic(unique("values"), 2)
    dlq = create_topic(unique("dlq"), 1)
    schema = setup.schema("s.yaml", SCHEMA)
    clickhouse(f"CREATE DATABASE {setup.database}")
    clickhouse(CLICKHOUSE_TABLE.format(db=setup.database))
    create_iceberg_table(setup)
    sent = records()
    produce_records(topic, sent)
    config = setup.config([{"topics": [topic], "schema": str(schema),
                            "clickhouse": {"table": "t"},
                            "iceberg": {"table": "t"},
                            "batch": {"max_rows": 30, "max_age": "500ms"}}], dead_letter=dlq)
    ingest = setup.start(config)
    ingest.wait_ready()

    def settled():
        assert ingest.proc.poll() is None, f"ingest stopped:\n{ingest.logs()}"
        s = metrics(ingest)
        consumed = metric_sum(s, "ingest_records_consumed_total")
        written = [metric_sum(s, "ingest_rows_written_total", f'sink="{sink} ')
                   for sink in ("clickhouse", "iceberg")]
        dead = metric_sum(s, "ingest_records_rejected_total")
        return consumed == len(sent) and written == [len(GOOD_IDS)] * 2 and dead == len(BAD), \
            (consumed, written, dead)
    wait_until("every record written or dead-lettered", settled, timeout=120)
    status, _ = ingest.get("/ready")
    assert status == 200, "bad values must not make the service unready"

    # The sinks hold exactly the good records.
    ids = sorted(int(r["id"]) for r in clickhouse(f"SELECT id FROM {setup.database}.t"))
    assert ids == GOOD_IDS
    row = clickhouse(f"SELECT toString(day) AS day, toUInt32(at) AS at, small, level, toString(amount) AS amount, "
                     f"raw_ts FROM {setup.database}.t WHERE id = 7")[0]
    assert (row["day"], int(row["at"]), int(row["small"]), int(row["level"]), row["amount"], int(row["raw_ts"])) \
        == ("2024-05-01", 1700000000, 100, 7, "12.34", 1700000000), row
    lake = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.t", "id")
    assert lake["count"] == len(GOOD_IDS), lake
    assert lake["id_checksum"] == checksum_of(GOOD_IDS), lake

    # Each bad record once in the dead-letter topic, untouched, its reason naming every
    # sink and column that refused it (3 s more of reading: anything more was sent twice).
    dead = read_messages(dlq, len(BAD), linger=3)
    by_id = {}
    for m in dead:
        body = json.loads(m.value())
        assert body["id"] not in by_id, f"record {body['id']} dead-lettered twice"
        by_id[body["id"]] = m
    assert sorted(by_id) == sorted(BAD)
    sent_by_id = {json.loads(v)["id"]: v for _, v in sent}
    for i, m in by_id.items():
        assert m.value() == sent_by_id[i]
        headers = {k: v.decode() for k, v in m.headers()}
        assert headers["ingest.source.topic"] == topic
        reason = headers["ingest.error"]
        for sink, column in BAD[i][1]:
            assert f"{sink} " in reason and f"`{column}`" in reason, (i, reason)
        assert not any(f"`{c}`" in reason for c in GOOD_VALUES if (("clickhouse", c) not in BAD[i][1]
                                                                 and ("iceberg", c) not in BAD[i][1])), (i, reason)

    assert ingest.stop() == 0, ingest.logs()
