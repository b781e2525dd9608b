"""The demo's last step: one aggregate answered by ClickHouse and by pyiceberg.

  demo_compare.py --clickhouse-url URL --database DB --catalog-uri sqlite:////abs/catalog.db \
      --warehouse file:///abs/wh --table analytics.events [--wait-rows N --timeout S]

With --wait-rows it first waits until both sinks hold N rows. Prints both answers side
by side and exits 1 if they differ.
"""
import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
from decimal import Decimal

QUERY = ("SELECT event_type, count() AS events, uniqExact(user_id) AS users, "
         "sum(revenue) AS revenue FROM {db}.events GROUP BY event_type ORDER BY event_type")


def clickhouse(url, sql):
    req = urllib.request.Request(url + "/?" + urllib.parse.urlencode({"query": sql + " FORMAT JSONEachRow"}))
    with urllib.request.urlopen(req, timeout=30) as resp:
        return [json.loads(line) for line in resp.read().decode().splitlines() if line]


def iceberg_table(args):
    from pyiceberg.catalog.sql import SqlCatalog
    uri = "sqlite:///" + args.catalog_uri[len("sqlite://"):] if args.catalog_uri.startswith("sqlite://") else args.catalog_uri
    catalog = SqlCatalog("ingest", uri=uri, warehouse=args.warehouse, init_catalog_tables="false")
    return catalog.load_table(args.table)


def iceberg_count(args):
    try:
        return iceberg_table(args).scan(selected_fields=("event_id",)).to_arrow().num_rows
    except Exception:
        return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clickhouse-url", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--catalog-uri", required=True)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--wait-rows", type=int)
    p.add_argument("--timeout", type=float, default=180)
    args = p.parse_args()

    if args.wait_rows:
        deadline = time.time() + args.timeout
        while True:
            try:
                ch = int(clickhouse(args.clickhouse_url, f"SELECT count() AS c FROM {args.database}.events")[0]["c"])
            except Exception:
                ch = 0
            ice = iceberg_count(args)
            if ch >= args.wait_rows and ice >= args.wait_rows:
                break
            if time.time() > deadline:
                sys.exit(f"timed out: ClickHouse has {ch} rows, Iceberg {ice}, expected {args.wait_rows}")
            time.sleep(1)

    ch_rows = {r["event_type"]: (int(r["events"]), int(r["users"]), Decimal(str(r["revenue"])))
               for r in clickhouse(args.clickhouse_url, QUERY.format(db=args.database))}

    import pyarrow.compute as pc
    data = iceberg_table(args).scan(selected_fields=("event_type", "user_id", "revenue")).to_arrow()
    ice_rows = {}
    for event_type in sorted(set(data.column("event_type").to_pylist())):
        part = data.filter(pc.equal(data.column("event_type"), event_type))
        revenue = sum((v for v in part.column("revenue").to_pylist() if v is not None), Decimal(0))
        ice_rows[event_type] = (part.num_rows, len(set(part.column("user_id").to_pylist())), revenue)

    print(f"{'event_type':<14}{'ClickHouse events/users/revenue':>40}   {'Iceberg (pyiceberg) events/users/revenue':>44}")
    for key in sorted(set(ch_rows) | set(ice_rows)):
        c = ch_rows.get(key, (0, 0, Decimal(0)))
        i = ice_rows.get(key, (0, 0, Decimal(0)))
        print(f"{key:<14}{c[0]:>12} {c[1]:>10} {c[2]:>16.2f}   {i[0]:>16} {i[1]:>10} {i[2]:>16.2f}")
    total_c = sum(v[0] for v in ch_rows.values())
    total_i = sum(v[0] for v in ice_rows.values())
    same = ch_rows == ice_rows
    print(f"{'total':<14}{total_c:>12}{'':>28}   {total_i:>16}")
    print("both sinks agree" if same else "THE SINKS DISAGREE")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
