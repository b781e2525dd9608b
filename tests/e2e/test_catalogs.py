"""The Iceberg sink on its other catalog and storage: a PostgreSQL SQL catalog (read
back by pyiceberg and by Spark's JdbcCatalog) and S3 storage (a moto S3 server)."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (ROOT, checksum_of, create_topic, free_port, iceberg_count, ingest_produce,
                      load_iceberg_table, read_iceberg, unique, wait_until)

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


@pytest.fixture
def s3_server(tmp_path):
    moto = Path(sys.executable).with_name("moto_server")
    assert moto.exists(), "moto_server missing: deploy/local/install.sh installs it"
    port = free_port()
    log = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_s3_warehouse(setup, s3_server, monkeypatch):
    import boto3
    import pyarrow.parquet as pq
    import pyarrow.fs

    bucket = unique("lake").replace("_", "-")
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    # Credentials come from the environment, as from a Kubernetes Secret.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    setup.warehouse = f"s3://{bucket}/warehouse"
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, COUNT, "event_id")
    config = setup.config([{"topics": [topic], "schema": str(EVENTS),
                            "iceberg": {"table": "events", "partition_by": ["day(ts)"]},
                            "batch": {"max_rows": 10000, "max_age": "1s"}}], clickhouse=False,
                          catalog={"properties": {"s3.endpoint": s3_server, "s3.region": "us-east-1",
                                                  "s3.path-style-access": "true"}})
    ingest = setup.start(config)
    ingest.wait_ready()
    props = {"s3.endpoint": s3_server, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
             "s3.region": "us-east-1"}
    table = f"{setup.namespace}.events"
    wait_until("rows in Iceberg on S3", lambda: (iceberg_count(setup.catalog_uri, setup.warehouse, table, props) >= COUNT, None))
    assert ingest.stop() == 0, ingest.logs()

    tbl = load_iceberg_table(setup.catalog_uri, setup.warehouse, table, props)
    ids = tbl.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    assert len(ids) == COUNT and checksum_of(ids) == checksum_of(range(COUNT))

    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    data = [k for k in keys if k.endswith(".parquet")]
    assert data and all("/data/ts_day=" in k for k in data), data[:5]
    fs = pyarrow.fs.S3FileSystem(endpoint_override=s3_server, access_key="testing", secret_key="testing",
                                 region="us-east-1", scheme="http")
    meta = pq.ParquetFile(fs.open_input_file(f"{bucket}/{data[0]}")).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
