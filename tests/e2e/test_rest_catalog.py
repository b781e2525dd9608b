"""The Iceberg sink through a real Iceberg REST catalog with its data on S3: SeaweedFS
(`weed mini`, started by the stack), OAuth2 client credentials for the catalog, the S3
key pair for the files. Read back by independent clients: pyiceberg's RestCatalog, and
boto3/pyarrow for the objects themselves.

Faults a real catalog cannot be told to make (a commit applied and then answered with
500) stay with the fixture in tests/fixtures/rest_catalog.py (test_chaos.py).
"""

import pyarrow.fs
import pyarrow.parquet as pq

import lake
from conftest import ROOT, checksum_of, create_topic, ingest_produce, unique, wait_until
from support.iceberg import iceberg_offsets

EVENTS = ROOT / "schemas/examples/events.yaml"
COUNT = 20000


def test_rest_catalog_on_s3(setup):
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, COUNT, "event_id")
    config = setup.config([{"topics": [topic], "schema": str(EVENTS),
                            "iceberg": {"table": "events", "partition_by": ["day(ts)"]},
                            "batch": {"max_rows": 5000, "max_age": "1s"}}], clickhouse=False,
                          catalog=lake.rest_catalog_config())
    ingest = setup.start(config)
    ingest.wait_ready()
    ident = f"{setup.namespace}.events"

    def rows():
        table = lake.load_table(ident)
        snap = table and table.current_snapshot()
        total = int(snap.summary.additional_properties.get("total-records", 0)) if snap else 0
        return total >= COUNT, total
    wait_until("rows in Iceberg via the REST catalog", rows)
    assert ingest.stop() == 0, ingest.logs()

    table = lake.load_table(ident)
    ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    assert len(ids) == COUNT and checksum_of(ids) == checksum_of(range(COUNT))
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["DayTransform"]

    # The Kafka positions committed with the data, as the catalog serves them (a summary
    # holds only the partitions of its commit: read as the service reads them).
    offsets = iceberg_offsets(table, setup.group)
    assert set(offsets) == {topic} and set(offsets[topic]) == {"0", "1", "2"}, offsets
    assert sum(offsets[topic].values()) == COUNT, offsets

    # The objects in the bucket: zstd Parquet under the table's partition folders.
    prefix = table.location().split(f"s3://{lake.TABLE_BUCKET}/", 1)[1]
    data = [k for k in lake.keys(lake.TABLE_BUCKET, prefix) if k.endswith(".parquet")]
    assert data and all("/data/ts_day=" in k for k in data), data[:5]
    fs = pyarrow.fs.S3FileSystem(endpoint_override=lake.S3_URL, access_key=lake.ACCESS_KEY,
                                 secret_key=lake.SECRET_KEY, region=lake.REGION, scheme="http")
    meta = pq.ParquetFile(fs.open_input_file(f"{lake.TABLE_BUCKET}/{data[0]}")).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_rest_catalog_refuses_a_stale_commit(setup):
    """The sink's Iceberg fence is a compare-and-swap on the table's snapshot: a commit
    whose `assert-ref-snapshot-id` is stale must be refused (409) and change nothing. That
    is the catalog's side of the contract; checked here on the real one."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.table.update import AssertRefSnapshotId, SetPropertiesUpdate
    import pyarrow as pa

    catalog = lake.rest_catalog()
    catalog.create_namespace(setup.namespace)
    table = catalog.create_table(f"{setup.namespace}.t", schema=pa.schema([("id", pa.int64())]))
    table.append(pa.table({"id": [1, 2]}))
    table = catalog.load_table(f"{setup.namespace}.t")
    current = table.current_snapshot().snapshot_id
    before = table.metadata_location
    try:
        catalog.commit_table(table, requirements=(AssertRefSnapshotId(ref="main", snapshot_id=current + 1),),
                             updates=(SetPropertiesUpdate(updates={"x": "y"}),))
        refused = False
    except CommitFailedException:
        refused = True
    after = catalog.load_table(f"{setup.namespace}.t")
    assert refused, "the catalog accepted a commit whose snapshot requirement was stale"
    assert after.metadata_location == before and "x" not in after.properties
