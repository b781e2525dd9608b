"""Every supported type goes through both sinks and reads back equal: nulls, nested
structs and lists, time zones, decimals at full precision, integer extremes."""
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal, getcontext

getcontext().prec = 60  # decimal(38, 10) values exceed the default 28 digits

from conftest import (BIN, READERS, clickhouse, create_topic, every_clickhouse, iceberg_count, produce_records,
                      read_iceberg, unique, wait_until)

SCHEMA = """
fields:
  - {name: id, type: int64}
  - {name: i8, type: "int8?"}
  - {name: i16, type: "int16?"}
  - {name: i32, type: "int32?"}
  - {name: u8, type: "uint8?"}
  - {name: u16, type: "uint16?"}
  - {name: u32, type: "uint32?"}
  - {name: f32, type: "float32?"}
  - {name: f64, type: "float64?"}
  - {name: flag, type: "bool?"}
  - {name: text, type: "string?"}
  - {name: ts_ms, type: "timestamp(ms, UTC)?"}
  - {name: ts_us, type: "timestamp(us, UTC)?"}
  - {name: ts_zoned, type: "timestamp(ms, +02:00)?"}
  - {name: ts_local, type: "timestamp(us)?"}
  - {name: day, type: "date?"}
  - {name: amount, type: "decimal(9, 2)?"}
  - {name: big, type: "decimal(38, 10)?"}
  - {name: tags, type: "list<string?>?"}
  - {name: scores, type: "list<float64>"}
  - {name: address, type: "struct<street: string, zip: int32?, geo: struct<lat: float64, lon: float64>?>?"}
  - {name: items, type: "list<struct<sku: string, qty: int32>>"}
"""

RECORDS = [
    {"id": 1, "i8": -128, "i16": 32767, "i32": -2147483648, "u8": 255, "u16": 65535, "u32": 4294967295,
     "f32": 1.5, "f64": -3.25, "flag": True, "text": "h\u00e9llo \"quoted\"\nline \u2713",
     "ts_ms": "2026-11-24T10:00:00.123Z", "ts_us": "2026-11-24T10:00:00.123456+05:30",
     "ts_zoned": "2026-03-29T01:30:00+01:00", "ts_local": "2026-11-24T10:00:00.654321",
     "day": "2026-11-24", "amount": "1234567.89", "big": "-1234567890123456789012345678.0123456789",
     "tags": ["a", None, "c"], "scores": [1.0, 2.5],
     "address": {"street": "Main St", "zip": 12345, "geo": {"lat": 48.85, "lon": 2.35}},
     "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]},
    {"id": 2, "i8": None, "i16": None, "i32": None, "u8": None, "u16": None, "u32": None, "f32": None,
     "f64": None, "flag": None, "text": None, "ts_ms": None, "ts_us": None, "ts_zoned": None,
     "ts_local": None, "day": None, "amount": None, "big": None, "tags": None, "scores": [],
     "address": None, "items": []},
    # Epoch numbers for timestamps, numbers for decimals, fields left out entirely.
    {"id": 3, "ts_ms": 1700000000123, "ts_us": 1700000000123456, "ts_zoned": 0, "ts_local": 1,
     "day": "1970-01-01", "amount": 0.01, "big": 1, "flag": False, "tags": [], "scores": [0.5],
     "address": {"street": "", "zip": None, "geo": None}, "items": [{"sku": "", "qty": -1}]},
]

UTC = dt.timezone.utc


def instant(text_or_epoch, unit):
    """Expected UTC instant of a timestamp input, as epoch ticks of `unit`."""
    per_second = {"ms": 10**3, "us": 10**6}[unit]
    if isinstance(text_or_epoch, int):
        return text_or_epoch
    t = dt.datetime.fromisoformat(text_or_epoch.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * per_second + delta.microseconds * per_second // 10**6


TIMESTAMPS = {"ts_ms": "ms", "ts_us": "us", "ts_zoned": "ms", "ts_local": "us"}


def expected_iceberg(record):
    """What pyiceberg returns (JSON-rendered by the reader): Iceberg keeps microseconds."""
    out = {}
    for name, value in record.items():
        if name in TIMESTAMPS and value is not None:
            micros = instant(value, TIMESTAMPS[name]) * (1000 if TIMESTAMPS[name] == "ms" else 1)
            t = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=micros)
            out[name] = (t.replace(tzinfo=None) if name == "ts_local" else t).isoformat()
        elif name in ("amount", "big") and value is not None:
            scale = 2 if name == "amount" else 10
            out[name] = str(Decimal(str(value)).quantize(Decimal(1).scaleb(-scale)))
        else:
            out[name] = value
    return out


def datetime64_text(ticks, unit):
    """How ClickHouse prints a DateTime64 in UTC: `2026-11-24 10:00:00.123`."""
    per_second = {"ms": 10**3, "us": 10**6}[unit]
    t = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=ticks // per_second)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ticks % per_second:0{len(str(per_second)) - 1}d}"


def expected_clickhouse(record, version):
    """What ClickHouse returns for the mapping in docs/types.md. 18.16: timestamps as epoch
    ticks (Int64), booleans as UInt8, unnamed tuples (JSON arrays). 26.9: DateTime64
    (printed in UTC, the columns' zone), Bool, named tuples (JSON objects). Both: a null
    struct as a tuple of nulls, a null list as []."""
    current = version != "18.16"
    out = {}
    for name in [line.split("name: ")[1].split(",")[0] for line in SCHEMA.splitlines() if "name:" in line]:
        value = record.get(name)
        if name in TIMESTAMPS:
            ticks = None if value is None else instant(value, TIMESTAMPS[name])
            out[name] = datetime64_text(ticks, TIMESTAMPS[name]) if current and value is not None else ticks
        elif name == "flag":
            out[name] = None if value is None else (value if current else int(value))
        elif name in ("amount", "big"):
            out[name] = None if value is None else Decimal(str(value))
        elif name == "tags":
            out[name] = value or []
        elif name == "address":
            v = value or {}
            geo = v.get("geo") or {}
            geo = {"lat": geo.get("lat"), "lon": geo.get("lon")}
            address = {"street": v.get("street"), "zip": v.get("zip"), "geo": geo}
            out[name] = address if current else [address["street"], address["zip"], list(geo.values())]
        elif name == "items":
            out[name] = [dict(i) if current else [i["sku"], i["qty"]] for i in value]
        else:
            out[name] = value
    return out


def normalise_clickhouse(row, decimals):
    # Decimals are parsed from the JSON text exactly, not through a float (and not with
    # toString, which garbles Decimal128 on 18.16).
    row.update(decimals)
    # Old servers print day 0 of Date (1970-01-01) as 0000-00-00; the stored value is 0.
    if row["day"] == "0000-00-00":
        row["day"] = "1970-01-01"
    # Servers before 21.x flatten Array(Tuple(...)) into one array per element.
    if "items.1" in row:
        row["items"] = [list(pair) for pair in zip(row.pop("items.1"), row.pop("items.2"))]
    # 64-bit integers are quoted in JSON before 25.8.
    for name in ("id", "u32") + tuple(TIMESTAMPS):
        if isinstance(row[name], str) and row[name].lstrip("-").isdigit():
            row[name] = int(row[name])
    return row


@every_clickhouse
def test_every_type_reads_back_equal(setup):
    topic = create_topic(unique("types"), 1)
    schema = setup.schema("types.yaml", SCHEMA)
    produce_records(topic, [(str(r["id"]), r) for r in RECORDS])
    config = setup.config([{"topics": [topic], "schema": str(schema),
                            "clickhouse": {"table": "types", "order_by": ["id"]},
                            "iceberg": {"table": "types"},
                            "batch": {"max_rows": 1000, "max_age": "500ms"}}])
    ingest = setup.start(config)
    ingest.wait_ready()
    wait_until("rows in both sinks", lambda: (
        iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.types") == len(RECORDS)
        and int(clickhouse(f"SELECT count() AS c FROM {setup.database}.types")[0]["c"]) == len(RECORDS), None))
    assert ingest.stop() == 0, ingest.logs()

    got = read_iceberg(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.types", "id", rows=True)
    for row, record in zip(got["rows"], RECORDS, strict=True):
        want = expected_iceberg({**{k: None for k in row}, **record})
        if record["id"] == 3:
            want["tags"] = []
        for key in row:
            assert row[key] == want[key], f"iceberg id={record['id']} {key}: {row[key]!r} != {want[key]!r}"

    rows = clickhouse(f"SELECT * FROM {setup.database}.types ORDER BY id")
    decimals = clickhouse(f"SELECT amount, big FROM {setup.database}.types ORDER BY id", parse_float=Decimal)
    for row, record, exact in zip(rows, RECORDS, decimals, strict=True):
        row = normalise_clickhouse(row, {k: None if v is None else Decimal(v) for k, v in exact.items()})
        want = expected_clickhouse(record, setup.clickhouse.version)
        for key, value in want.items():
            assert row[key] == value, f"clickhouse id={record['id']} {key}: {row[key]!r} != {value!r}"


def test_current_clickhouse_accepts_our_ddl_and_payload(setup, tmp_path):
    """The DDL and Native bytes we would send to ClickHouse 26.9 (DateTime64, Bool,
    Date32, named tuples) are accepted by that engine, in process via chDB."""
    schema = setup.schema("types.yaml", SCHEMA)
    config = setup.config([{"topics": ["unused"], "schema": str(schema),
                            "clickhouse": {"table": "types", "order_by": ["id"]}}], iceberg=False)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    ddl, payload = tmp_path / "types.sql", tmp_path / "types.native"
    out = subprocess.run([str(BIN), "dry-run", "--sink", "clickhouse", "--config", str(config), "--input", str(events),
                          "--option", "server_version=26.9", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = ddl.read_text()
    assert "DateTime64(3, 'UTC')" in text and "Bool" in text and "Date32" in text, text
    assert "__ingest_positions" in text, text  # the position ledger and its view, too
    # The insert also writes the ledger through the view, so rows written exceed count().
    check = subprocess.run([sys.executable, str(READERS / "chdb_check.py"), "--ddl", str(ddl),
                            "--native", str(payload), "--table", f"{setup.database}.types",
                            "--allow-count-mismatch"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    result = json.loads(check.stdout)
    assert result["rows"] == len(RECORDS), result
    assert result["version"].startswith("26."), result
