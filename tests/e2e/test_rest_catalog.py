"""The Iceberg sink through an Iceberg REST catalog (`iceberg.catalog.type: rest`).

The REST server is a LOCAL TEST FIXTURE (tests/fixtures/rest_catalog.py), because no
REST catalog server (Polaris, Nessie, Lakekeeper, ...) is installable on these machines.
It implements only the part of the Iceberg REST spec iceberg-rust's client calls.

What is real: the service binary and its REST catalog client (iceberg-rust's
`iceberg-catalog-rest`, speaking HTTP to the fixture), the Kafka broker, the Parquet and
metadata files in the warehouse, and pyiceberg, which backs the fixture (SqlCatalog in a
SQLite file; it applies and validates every commit) and which reads the result back here
straight from that SQLite catalog, without going through the fixture's HTTP layer.
"""
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, checksum_of, create_topic, free_port, ingest_produce, unique, wait_until

EVENTS = ROOT / "schemas/examples/events.yaml"
FIXTURE = ROOT / "tests/fixtures/rest_catalog.py"
COUNT = 20000
CATALOG_NAME = "rest_fixture"


class RestCatalog:
    def __init__(self, uri, db, warehouse, log_path, proc):
        self.uri, self.db, self.warehouse, self.log_path, self.proc = uri, db, warehouse, log_path, proc

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.uri + path, data=data, method=method,
                                     headers={"User-Agent": "e2e-test", **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def log(self):
        return self.log_path.read_text()


@pytest.fixture
def rest_catalog(tmp_path):
    port = free_port()
    db = tmp_path / "rest-catalog.db"
    warehouse = f"file://{tmp_path}/warehouse"
    log_path = tmp_path / "rest-catalog.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, str(FIXTURE), "--port", str(port), "--catalog-db", str(db),
                             "--warehouse", warehouse, "--catalog-name", CATALOG_NAME],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        assert proc.poll() is None, f"REST catalog fixture exited:\n{log_path.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline, "REST catalog fixture did not start"
            time.sleep(0.2)
    yield RestCatalog(f"http://127.0.0.1:{port}", db, warehouse, log_path, proc)
    proc.terminate()
    proc.wait(10)
    log.close()


def current_snapshot(metadata):
    sid = metadata.get("current-snapshot-id")
    return next((s for s in metadata.get("snapshots", []) if s["snapshot-id"] == sid), None)


def test_rest_catalog(setup, rest_catalog):
    setup.warehouse = rest_catalog.warehouse
    topic = create_topic(unique("events"), 3)
    ingest_produce(topic, EVENTS, COUNT, "event_id")
    config = setup.config([{"topics": [topic], "schema": str(EVENTS),
                            "iceberg": {"table": "events", "partition_by": ["day(ts)"]},
                            "batch": {"max_rows": 5000, "max_age": "1s"}}], clickhouse=False,
                          catalog={"type": "rest", "uri": rest_catalog.uri})

    ingest = setup.start(config)
    ingest.wait_ready()
    path = f"/v1/namespaces/{setup.namespace}/tables/events"

    def rows():
        status, body = rest_catalog.request("GET", path)
        snap = status == 200 and current_snapshot(body["metadata"])
        total = int(snap["summary"].get("total-records", 0)) if snap else 0
        return total >= COUNT, (status, total)
    wait_until("rows in Iceberg via REST", rows)
    assert ingest.stop() == 0, ingest.logs()

    # Independent read: the fixture's SQLite catalog opened directly with pyiceberg.
    from pyiceberg.catalog.sql import SqlCatalog
    direct = SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{rest_catalog.db}", warehouse=setup.warehouse,
                        init_catalog_tables="false")
    table = direct.load_table(f"{setup.namespace}.events")
    ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    assert len(ids) == COUNT and checksum_of(ids) == checksum_of(range(COUNT))
    assert [f.transform.__class__.__name__ for f in table.spec().fields] == ["DayTransform"]

    # The Kafka positions the service committed with the data, as the REST API serves them.
    status, body = rest_catalog.request("GET", path)
    assert status == 200, body
    assert body["metadata-location"] == table.metadata_location
    summary = current_snapshot(body["metadata"])["summary"]
    key = f"ingest.kafka-offsets.{setup.group}"
    assert key in summary, summary
    offsets = json.loads(summary[key])
    assert set(offsets) == {topic} and set(offsets[topic]) == {"0", "1", "2"}, offsets
    assert sum(offsets[topic].values()) == COUNT, offsets

    # The fixture's contract with the client: a stale requirement is a 409 CommitFailedException
    # and changes nothing; an unknown table is a 404 NoSuchTableException.
    snap_id = body["metadata"]["current-snapshot-id"]
    status, err = rest_catalog.request("POST", path, {
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": snap_id + 1}],
        "updates": [{"action": "set-properties", "updates": {"x": "y"}}]})
    assert (status, err["error"]["type"], err["error"]["code"]) == (409, "CommitFailedException", 409), err
    assert rest_catalog.request("GET", path)[1]["metadata-location"] == table.metadata_location
    status, err = rest_catalog.request("GET", f"/v1/namespaces/{setup.namespace}/tables/nope")
    assert (status, err["error"]["type"]) == (404, "NoSuchTableException"), err

    # What the service's client called (the test's own requests carry `ua: e2e-test`); printed
    # for the record (pytest -rA shows it).
    log = [line.split("] ", 1)[1] for line in rest_catalog.log().splitlines() if line.startswith("[rest-catalog ")]
    print("\n".join(log))
    service = [c for c in log if " -> " in c and "ua: e2e-test" not in c]
    assert service[0].startswith("GET /v1/config"), service
    # A lane whose write is under way keeps collecting (up to twice max_rows of 5000).
    assert sum(c.startswith(f"POST {path} -> 200") for c in service) >= COUNT // (2 * 5000), service
