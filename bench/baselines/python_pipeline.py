#!/usr/bin/env python3
"""Baseline (f) of `make bench`: the straightforward Python pipeline many users write.

confluent-kafka consumer (own group, earliest, auto commit off) -> json.loads per message ->
batch of --batch-rows rows or --batch-seconds -> INSERT into ClickHouse -> append to an
Iceberg table with pyiceberg (SqlCatalog on SQLite) -> commit the Kafka offsets (sync)
after both writes. Stops once --count records were consumed and written.

Same table shapes as `ingest` writes:
  * ClickHouse: the DDL `ingest dry-run --sink clickhouse --option server_version=18.16.1` gives for the
    events route (ts Int64 epoch ms, device Tuple, tags Array(String), event_date Date).
  * Iceberg: namespace = --database, table `events`, created from a pyarrow schema of the
    events (ts timestamptz us, revenue decimal(12,2), tags list<string>, device struct,
    event_date date; non-null fields required), partitioned by day(ts) like the bench
    config of `ingest` (--no-partition to drop that).

ClickHouse client: clickhouse-connect is tried first (--clickhouse-client auto), but
clickhouse-connect 1.12 refuses a 18.16 server while connecting (its init query reads
system.settings.readonly: "Unknown identifier: readonly"), so on the local stack the
script falls back to plain HTTP, `INSERT ... FORMAT JSONEachRow` with urllib (the report
says which client was used). 18.16's JSONEachRow reads a Tuple as a JSON array, so the
device object is written as [device, os_version, screen_width].

Usage:
  python python_pipeline.py --brokers 127.0.0.1:9092 --topic T --count N \\
      --clickhouse-url http://127.0.0.1:8123 --database bench_f \\
      --catalog-db /tmp/w/catalog.db --warehouse file:///tmp/w/warehouse [--sinks both]
Progress goes to stderr; the report is the last stdout line:
  {"variant":"f","name":...,"events":N,"seconds":first poll -> last commit,
   "rows_clickhouse":..,"rows_iceberg":..,"clickhouse_client":..,"setup_seconds":..}
"""
import os as _os
import sys as _sys
_sys.path.insert(0, _os.path.dirname(_os.path.abspath(__file__)))
from cli import baseline_arguments  # noqa: E402
from events_table import events_ddl  # noqa: E402
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)
CENT = Decimal("0.01")


COLUMNS = ["event_id", "ts", "event_type", "user_id", "session_id", "country", "url",
           "duration_ms", "revenue", "tags", "device", "event_date"]

ARROW_SCHEMA = pa.schema([
    pa.field("event_id", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("country", pa.string()),
    pa.field("url", pa.string(), nullable=False),
    pa.field("duration_ms", pa.int32()),
    pa.field("revenue", pa.decimal128(12, 2)),
    pa.field("tags", pa.list_(pa.field("element", pa.string(), nullable=False)), nullable=False),
    pa.field("device", pa.struct([
        pa.field("device", pa.string(), nullable=False),
        pa.field("os_version", pa.string()),
        pa.field("screen_width", pa.int32()),
    ]), nullable=False),
    pa.field("event_date", pa.date32(), nullable=False),
])


def log(*args):
    print(time.strftime("%H:%M:%S"), "[f]", *args, file=sys.stderr, flush=True)


def http_query(url, sql, body=None, timeout=120):
    if body is None:
        req = urllib.request.Request(url, data=sql.encode())
    else:
        req = urllib.request.Request(url + "?" + urllib.parse.urlencode({"query": sql}), data=body)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read().decode().strip()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"ClickHouse rejected {sql[:100]!r}: {e.read().decode()[:500]}") from None


class HttpClickHouse:
    """INSERT ... FORMAT JSONEachRow over plain HTTP (works with 18.16)."""
    name = "http-jsoneachrow"

    def __init__(self, url, database):
        self.url = url.rstrip("/") + "/"
        self.table = f"`{database}`.`events`"

    def command(self, sql):
        return http_query(self.url, sql)

    def insert(self, rows):
        body = "\n".join(json.dumps(r, separators=(",", ":")) for r in rows).encode()
        http_query(self.url, f"INSERT INTO {self.table} FORMAT JSONEachRow", body)

    @staticmethod
    def row(d, ts):
        dev = d["device"]
        return {"event_id": d["event_id"], "ts": (ts - EPOCH) // ONE_MS, "event_type": d["event_type"],
                "user_id": d["user_id"], "session_id": d["session_id"], "country": d["country"],
                "url": d["url"], "duration_ms": d["duration_ms"], "revenue": d["revenue"], "tags": d["tags"],
                "device": [dev["device"], dev["os_version"], dev["screen_width"]],
                "event_date": d["event_date"]}


class ConnectClickHouse:
    """clickhouse-connect (the usual choice against a current server)."""

    def __init__(self, url, database):
        import clickhouse_connect
        u = urllib.parse.urlparse(url)
        self.client = clickhouse_connect.get_client(
            host=u.hostname, port=u.port or 8123, username=u.username or "default", password=u.password or "",
            secure=u.scheme == "https")
        self.name = f"clickhouse-connect {clickhouse_connect.__version__ if hasattr(clickhouse_connect, '__version__') else ''}".strip()
        self.table = f"`{database}`.`events`"

    def command(self, sql):
        return self.client.command(sql)

    def insert(self, rows):
        self.client.insert(self.table, rows, column_names=COLUMNS)

    @staticmethod
    def row(d, ts):
        dev = d["device"]
        rev = d["revenue"]
        return [d["event_id"], (ts - EPOCH) // ONE_MS, d["event_type"], d["user_id"], d["session_id"], d["country"],
                d["url"], d["duration_ms"], None if rev is None else Decimal(repr(rev)).quantize(CENT), d["tags"],
                (dev["device"], dev["os_version"], dev["screen_width"]), date.fromisoformat(d["event_date"])]


def clickhouse_client(kind, url, database):
    if kind in ("auto", "connect"):
        try:
            return ConnectClickHouse(url, database), None
        except Exception as e:
            if kind == "connect":
                raise
            reason = f"clickhouse-connect refused: {str(e).splitlines()[0][:200]}"
            log(reason + "; falling back to HTTP JSONEachRow")
            return HttpClickHouse(url, database), reason
    return HttpClickHouse(url, database), None


def iceberg_row(d, ts):
    rev = d["revenue"]
    return dict(d, ts=ts, revenue=None if rev is None else Decimal(repr(rev)).quantize(CENT),
                event_date=date.fromisoformat(d["event_date"]))


def iceberg_total(table):
    snap = table.current_snapshot()
    return int(snap.summary["total-records"]) if snap else 0


def open_iceberg(catalog_db, warehouse, namespace, partition):
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.transforms import DayTransform

    os.makedirs(os.path.dirname(os.path.abspath(catalog_db)), exist_ok=True)
    if warehouse.startswith("file://"):
        os.makedirs(warehouse[len("file://"):], exist_ok=True)
    catalog = SqlCatalog("bench", uri=f"sqlite:///{catalog_db}", warehouse=warehouse)
    catalog.create_namespace_if_not_exists(namespace)
    ident = f"{namespace}.events"
    if catalog.table_exists(ident):
        return catalog.load_table(ident)
    table = catalog.create_table(ident, schema=ARROW_SCHEMA)
    if partition:
        with table.update_spec() as spec:
            spec.add_field("ts", DayTransform(), "ts_day")
    return table


def main():
    p = baseline_arguments(__doc__, "records to consume and write, then stop",
                           "ClickHouse database and Iceberg namespace")
    p.add_argument("--catalog-db", required=True, help="SQLite file of the Iceberg SQL catalog")
    p.add_argument("--warehouse", required=True, help="Iceberg warehouse, e.g. file:///tmp/w/warehouse")
    p.add_argument("--sinks", choices=("both", "clickhouse", "iceberg"), default="both")
    p.add_argument("--batch-rows", type=int, default=50_000)
    p.add_argument("--batch-seconds", type=float, default=2.0)
    p.add_argument("--group", help="consumer group (default: a fresh one per run)")
    p.add_argument("--clickhouse-client", choices=("auto", "connect", "http"), default="auto")
    p.add_argument("--no-partition", action="store_true", help="unpartitioned Iceberg table (default day(ts))")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("-X", dest="props", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka consumer setting")
    a = p.parse_args()

    t_setup = time.monotonic()
    to_ch = a.sinks in ("both", "clickhouse")
    to_ice = a.sinks in ("both", "iceberg")
    ch, ch_note, table = None, None, None
    if to_ch:
        ch, ch_note = clickhouse_client(a.clickhouse_client, a.clickhouse_url, a.database)
        ch.command(f"CREATE DATABASE IF NOT EXISTS `{a.database}`")
        ch.command(events_ddl(a.database))
    if to_ice:
        table = open_iceberg(a.catalog_db, a.warehouse, a.database, not a.no_partition)
    # rows already there (a reused database/catalog): the report counts only this run's
    ch_before = int(ch.command(f"SELECT count() FROM `{a.database}`.`events`")) if to_ch else 0
    ice_before = iceberg_total(table) if to_ice else 0
    if ch_before or ice_before:
        log(f"warning: target already holds rows (ClickHouse {ch_before}, Iceberg {ice_before}); reporting the difference")

    conf = {
        "bootstrap.servers": a.brokers,
        "group.id": a.group or f"bench-f-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    for kv in a.props:
        k, v = kv.split("=", 1)
        conf[k] = v
    consumer = Consumer(conf)
    consumer.subscribe([a.topic])
    setup_seconds = time.monotonic() - t_setup
    log(f"consuming {a.count} from {a.topic} (group {conf['group.id']}), sinks {a.sinks}, "
        f"ClickHouse via {ch.name if ch else '-'}")

    t0 = time.monotonic()
    consumed = 0
    ch_rows, ice_rows = [], []
    batch_started = None
    batches = 0
    written = 0
    try:
        while written < a.count:
            if time.monotonic() - t0 > a.timeout:
                raise RuntimeError(f"timeout after {a.timeout}s with {written} of {a.count} written")
            want = min(10_000, a.count - consumed)
            msgs = consumer.consume(num_messages=want, timeout=0.2) if want else []
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consumer error: {m.error()}")
                d = json.loads(m.value())
                ts = datetime.fromisoformat(d["ts"])
                if to_ch:
                    ch_rows.append(ch.row(d, ts))
                if to_ice:
                    ice_rows.append(iceberg_row(d, ts))
                consumed += 1
            pending = consumed - written
            if pending and batch_started is None:
                batch_started = time.monotonic()
            if pending and (pending >= a.batch_rows or consumed >= a.count
                            or time.monotonic() - batch_started >= a.batch_seconds):
                if to_ch:
                    ch.insert(ch_rows)
                if to_ice:
                    table.append(pa.Table.from_pylist(ice_rows, schema=ARROW_SCHEMA))
                consumer.commit(asynchronous=False)
                written = consumed
                batches += 1
                ch_rows, ice_rows, batch_started = [], [], None
                log(f"{time.monotonic() - t0:7.2f}s  {written} written ({pending} in batch {batches})")
        seconds = time.monotonic() - t0
    finally:
        consumer.close()

    rows_ch = int(ch.command(f"SELECT count() FROM `{a.database}`.`events`")) - ch_before if to_ch else None
    rows_ice = iceberg_total(table.refresh()) - ice_before if to_ice else None
    report = {
        "variant": "f",
        "name": "Python (" + " + ".join(["confluent-kafka"]
                                        + (["clickhouse-connect" if isinstance(ch, ConnectClickHouse) else "HTTP JSONEachRow"]
                                           if to_ch else [])
                                        + (["pyiceberg"] if to_ice else [])) + ")",
        "events": a.count,
        "seconds": round(seconds, 3),
        "rows_clickhouse": rows_ch,
        "rows_iceberg": rows_ice,
        "sinks": a.sinks,
        "batches": batches,
        "clickhouse_client": ch.name if ch else None,
        "setup_seconds": round(setup_seconds, 3),
    }
    if ch_note:
        report["clickhouse_client_note"] = ch_note
    if seconds > 0:
        report["events_per_s_own"] = round(a.count / seconds)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
