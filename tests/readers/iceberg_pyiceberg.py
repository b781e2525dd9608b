"""Independent Iceberg reader #1: pyiceberg's SqlCatalog (JDBC-catalog tables).

  iceberg_pyiceberg.py --catalog-uri sqlite:////abs/catalog.db --warehouse file:///abs/wh \
      --catalog-name ingest --table ns.table --id-column id [--rows]

Prints {"reader", "count", "id_checksum", "snapshot_id"[, "rows"]}; see
readers_common.py for the checksum definition. Rows are sorted by id.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from readers_common import (check_sqlite_exists, die, emit, iceberg_args,  # noqa: E402
                            id_checksum, json_safe, sort_key, sqlalchemy_uri)


def main():
    a = iceberg_args(__doc__)
    import pyiceberg
    from pyiceberg.catalog.sql import SqlCatalog

    uri = sqlalchemy_uri(a.catalog_uri)
    check_sqlite_exists(uri)
    try:
        # init_catalog_tables=false: a reader must not create catalog tables.
        cat = SqlCatalog(a.catalog_name, uri=uri, warehouse=a.warehouse, init_catalog_tables="false")
        tbl = cat.load_table(a.table)
    except Exception as e:
        die(f"cannot load table {a.table!r} from catalog {a.catalog_name!r} at {uri}: {type(e).__name__}: {e}")
    snap = tbl.current_snapshot()
    if a.id_column not in {f.name for f in tbl.schema().fields}:
        die(f"table {a.table} has no column {a.id_column!r}")
    if a.rows:
        arrow = tbl.scan().to_arrow()
    else:
        arrow = tbl.scan(selected_fields=(a.id_column,)).to_arrow()
    ids = arrow.column(a.id_column).to_pylist()
    out = {
        "reader": f"pyiceberg {pyiceberg.__version__}",
        "count": arrow.num_rows,
        "id_checksum": id_checksum(ids),
        "snapshot_id": snap.snapshot_id if snap else None,
    }
    if a.rows:
        try:
            rows = arrow.to_pylist(maps_as_pydicts="strict")
        except TypeError:  # older pyarrow
            rows = arrow.to_pylist()
        rows.sort(key=lambda r: sort_key(r, a.id_column))
        out["rows"] = [json_safe(r) for r in rows]
    emit(out)


if __name__ == "__main__":
    main()
