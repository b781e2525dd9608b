"""Orders with a nested price, the records of the schema-reference tests: `ORDERS` of
them, order i costing `cents(i)` EUR; and the check that a route lands them whole in
both sinks."""
from conftest import clickhouse, iceberg_count, wait_until

ORDERS = 30


def cents(i):
    return i * 100 + 5


def price(i):
    return {"cents": cents(i), "currency": "EUR"}


def assert_orders_land(setup, topic, fmt, registry):
    """Runs the service on `topic` (format `fmt`, the given `schema_registry` section)
    until both sinks hold every order, then checks each nested price in ClickHouse."""
    config = setup.config([{"topics": [topic], "format": fmt,
                            "clickhouse": {"table": "orders", "order_by": ["id"]},
                            "iceberg": {"table": "orders"},
                            "batch": {"max_rows": 1000, "max_age": "300ms"}}],
                          extra={"schema_registry": registry})
    ingest = setup.start(config)
    ingest.wait_ready()
    table, lake = f"{setup.database}.orders", f"{setup.namespace}.orders"
    count = lambda: int(clickhouse(f"SELECT count() AS c FROM {table}")[0]["c"])  # noqa: E731
    wait_until("orders in both sinks", lambda: (
        count() == ORDERS and iceberg_count(setup.catalog_uri, setup.warehouse, lake) == ORDERS, count()))
    assert ingest.stop() == 0, ingest.logs()
    rows = clickhouse(f"SELECT id, tupleElement(price, 1) AS cents, tupleElement(price, 2) AS currency "
                      f"FROM {table} ORDER BY id")
    assert [(int(r["id"]), int(r["cents"]), r["currency"]) for r in rows] == \
        [(i, cents(i), "EUR") for i in range(ORDERS)]
