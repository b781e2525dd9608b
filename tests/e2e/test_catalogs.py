"""The Iceberg sink on its other catalog and storage: a PostgreSQL SQL catalog (read
back by pyiceberg and by Spark's JdbcCatalog) and S3 storage (the stack's SeaweedFS)."""
import subprocess

import pytest

import lake
from conftest import (ROOT, checksum_of, create_topic, iceberg_count, ingest_produce, load_iceberg_table,
                      read_iceberg, unique, wait_until)

EVENTS = ROOT / "schemas/examples/events.yaml"
COUNT = 20000


def psql(sql, database="postgres"):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1",
                    "-qc", sql], check=True, capture_output=True, timeout=60)


@pytest.fixture
def postgres_catalog():
    name = unique("e2e_catalog")
    psql(f"CREATE DATABASE {name}")
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_postgres_catalog(setup, postgres_catalog):
    setup.catalog_uri = postgres_catalog
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, COUNT, "event_id")
    config = setup.config([{"topics": [topic], "schema": str(EVENTS),
                            "iceberg": {"table": "events", "partition_by": ["bucket(8, event_id)"]},
                            "batch": {"max_rows": 5000, "max_age": "1s"}}], clickhouse=False)
    ingest = setup.start(config)
    ingest.wait_ready()
    table = f"{setup.namespace}.events"
    wait_until("rows in Iceberg", lambda: (iceberg_count(postgres_catalog, setup.warehouse, table) >= COUNT, None))
    assert ingest.stop() == 0, ingest.logs()
    for reader in ("pyiceberg", "spark"):
        got = read_iceberg(postgres_catalog, setup.warehouse, table, "event_id", reader)
        assert (got["count"], got["id_checksum"]) == (COUNT, checksum_of(range(COUNT))), reader


def test_s3_warehouse(setup, monkeypatch):
    """The SQL catalog with its data on S3 (the stack's SeaweedFS), credentials from the
    environment as from a Kubernetes Secret."""
    import pyarrow.parquet as pq
    import pyarrow.fs

    bucket = lake.create_bucket(unique("lake").replace("_", "-"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", lake.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", lake.SECRET_KEY)
    setup.warehouse = f"s3://{bucket}/warehouse"
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, COUNT, "event_id")
    config = setup.config([{"topics": [topic], "schema": str(EVENTS),
                            "iceberg": {"table": "events", "partition_by": ["day(ts)"]},
                            "batch": {"max_rows": 10000, "max_age": "1s"}}], clickhouse=False,
                          catalog={"properties": {"s3.endpoint": lake.S3_URL, "s3.region": lake.REGION,
                                                  "s3.path-style-access": "true"}})
    ingest = setup.start(config)
    ingest.wait_ready()
    props = lake.S3_PROPERTIES
    table = f"{setup.namespace}.events"
    wait_until("rows in Iceberg on S3", lambda: (iceberg_count(setup.catalog_uri, setup.warehouse, table, props) >= COUNT, None))
    assert ingest.stop() == 0, ingest.logs()

    tbl = load_iceberg_table(setup.catalog_uri, setup.warehouse, table, props)
    ids = tbl.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    assert len(ids) == COUNT and checksum_of(ids) == checksum_of(range(COUNT))

    data = [k for k in lake.keys(bucket) if k.endswith(".parquet")]
    assert data and all("/data/ts_day=" in k for k in data), data[:5]
    fs = pyarrow.fs.S3FileSystem(endpoint_override=lake.S3_URL, access_key=lake.ACCESS_KEY,
                                 secret_key=lake.SECRET_KEY, region=lake.REGION, scheme="http")
    meta = pq.ParquetFile(fs.open_input_file(f"{bucket}/{data[0]}")).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
