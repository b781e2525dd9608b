"""Writes a sample Iceberg table with pyiceberg into a SQL catalog, to test the
readers without the Rust service (and as a fixture for reader tests).

  make_sample_table.py --catalog-uri sqlite:////abs/catalog.db --warehouse file:///abs/wh \
      [--catalog-name ingest] [--table ns.table] [--rows 1000] [--appends 2]

Creates the catalog tables (pyiceberg 0.12 writes the JDBC "V1" layout, with
iceberg_type), the namespace and the table if missing, then appends --rows rows
in --appends commits. Prints {"count": total rows, "id_checksum": ...}.
"""
import argparse
import datetime
import decimal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readers_common import emit, id_checksum, sqlalchemy_uri  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog-uri", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--catalog-name", default="ingest")
    p.add_argument("--table", default="demo.events")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--appends", type=int, default=2)
    a = p.parse_args()

    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog

    uri = sqlalchemy_uri(a.catalog_uri)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
    if a.warehouse.startswith("file://"):
        os.makedirs(a.warehouse[len("file://"):], exist_ok=True)
    cat = SqlCatalog(a.catalog_name, uri=uri, warehouse=a.warehouse)
    ns = a.table.rsplit(".", 1)[0]
    cat.create_namespace_if_not_exists(ns)

    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("local_ts", pa.timestamp("us")),
        pa.field("day", pa.date32()),
        pa.field("amount", pa.decimal128(12, 2)),
        pa.field("score", pa.float64()),
        pa.field("ok", pa.bool_()),
        pa.field("payload", pa.binary()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("attrs", pa.map_(pa.string(), pa.string())),
    ])
    tbl = cat.create_table_if_not_exists(a.table, schema=schema)
    start = tbl.scan(selected_fields=("id",)).to_arrow().num_rows
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    per = max(1, a.rows // max(1, a.appends))
    done = 0
    while done < a.rows:
        n = min(per, a.rows - done)
        ids = list(range(start + done, start + done + n))
        batch = pa.table({
            "id": ids,
            "name": [None if i % 17 == 0 else f"n{i}" for i in ids],
            "ts": [base + datetime.timedelta(seconds=i, microseconds=i % 1000) for i in ids],
            "local_ts": [datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=i) for i in ids],
            "day": [datetime.date(2024, 1, 1) + datetime.timedelta(days=i % 400) for i in ids],
            "amount": [decimal.Decimal(i).scaleb(-2) for i in ids],
            "score": [i / 7 for i in ids],
            "ok": [i % 2 == 0 for i in ids],
            "payload": [i.to_bytes(4, "big") for i in ids],
            "tags": [[f"t{i % 3}", f"u{i % 5}"] for i in ids],
            "attrs": [[("k", str(i))] for i in ids],
        }, schema=schema)
        tbl.append(batch)
        done += n
    ids = tbl.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
    emit({"count": len(ids), "id_checksum": id_checksum(ids), "snapshot_id": tbl.current_snapshot().snapshot_id})


if __name__ == "__main__":
    main()
