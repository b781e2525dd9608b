"""Shared fixtures for the end-to-end suites.

Everything here talks to real services started by `deploy/local/up.sh`: the Apache Kafka
broker, the ClickHouse server and a SQLite Iceberg catalog on the local filesystem.
Results are checked with independent readers (ClickHouse SQL, pyiceberg, Spark).

Tests marked `@every_clickhouse` run once per ClickHouse version: "18.16", the server at
$CLICKHOUSE_URL, and "26.9", the current engine (chDB) behind the HTTP stand-in
tests/fixtures/clickhouse_chdb_http.py, started once per session (read its list of what
it does not emulate). E2E_CLICKHOUSE=26.9 (or 18.16) runs one of them only; the test id
names the version (`test_x[26.9]`). Other tests use 18.16.
"""
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from support.clickhouse import ClickHouseServer, clickhouse, current_clickhouse
from support.iceberg import iceberg_ids, snapshot_total
from support.processes import Ingest, wait_until
from support.stack import BIN, CLICKHOUSE, KAFKA, READERS, ROOT
from readers_common import id_checksum  # tests/readers, put on sys.path by `support`

CLICKHOUSE_VERSIONS = [v for v in os.environ.get("E2E_CLICKHOUSE", "18.16,26.9").split(",") if v]
CHDB_HTTP = ROOT / "tests" / "fixtures" / "clickhouse_chdb_http.py"

every_clickhouse = pytest.mark.every_clickhouse


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topic(name, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": KAFKA})
    futures = admin.create_topics([NewTopic(name, partitions, 1)])
    futures[name].result(timeout=30)
    return name


def produce_records(topic, records, partition=None):
    """records: iterable of (key, value) where value is bytes, str or a JSON-able object."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": KAFKA, "linger.ms": 5})
    errors = []
    for key, value in records:
        if not isinstance(value, (bytes, str)) and value is not None:
            value = json.dumps(value)
        kwargs = {"key": key, "value": value, "on_delivery": lambda e, m: e and errors.append(e)}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors


def ingest_produce(topic, schema, count, id_field, start_id=0):
    out = subprocess.run(
        [str(BIN), "produce", "--brokers", KAFKA, "--topic", topic, "--schema", str(schema),
         "--count", str(count), "--id-field", id_field, "--start-id", str(start_id)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def reader_uri(catalog_uri):
    """The service takes sqlx URIs (`sqlite:///abs/path`, `postgres://...`); the readers
    take SQLAlchemy's (`sqlite:////abs/path`, `postgresql+psycopg2://...`)."""
    if catalog_uri.startswith("sqlite://"):
        return "sqlite:///" + catalog_uri[len("sqlite://"):]
    if catalog_uri.startswith("postgres://"):
        return "postgresql+psycopg2://" + catalog_uri[len("postgres://"):]
    return catalog_uri


def read_iceberg(catalog_uri, warehouse, table, id_column, reader="pyiceberg", rows=False):
    script = READERS / ("iceberg_pyiceberg.py" if reader == "pyiceberg" else "iceberg_spark.py")
    args = [sys.executable, str(script), "--catalog-uri", reader_uri(catalog_uri), "--warehouse", warehouse,
            "--catalog-name", "ingest", "--table", table, "--id-column", id_column]
    if rows:
        args.append("--rows")
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{reader} failed: {out.stderr[-3000:]}"
    return json.loads(out.stdout)


def load_iceberg_table(catalog_uri, warehouse, table, properties=None):
    """The table through pyiceberg in process, or None while it does not exist."""
    from pyiceberg.catalog.sql import SqlCatalog
    if catalog_uri.startswith("sqlite://") and not Path(catalog_uri[len("sqlite://"):]).exists():
        return None
    try:
        cat = SqlCatalog("ingest", uri=reader_uri(catalog_uri), warehouse=warehouse,
                         init_catalog_tables="false", **(properties or {}))
        return cat.load_table(table)
    except Exception:
        return None


def iceberg_count(catalog_uri, warehouse, table, properties=None):
    """Rows in the current snapshot per its summary (0 while the table is missing)."""
    return snapshot_total(load_iceberg_table(catalog_uri, warehouse, table, properties))


class Setup:
    """A private namespace for one test: topics, ClickHouse database, Iceberg catalog."""

    def __init__(self, tmp_path, clickhouse_server):
        self.tmp = tmp_path
        self.clickhouse = clickhouse_server
        self.database = unique("e2e")
        self.namespace = self.database
        self.catalog_uri = f"sqlite://{tmp_path}/catalog.db"
        self.warehouse = f"file://{tmp_path}/warehouse"
        self.group = unique("group")
        self.processes = []

    def config(self, routes, dead_letter=None, clickhouse=True, iceberg=True, kafka_properties=None,
               catalog=None, clickhouse_settings=None, extra=None):
        """Writes a service config; `catalog` entries replace or extend the default SQLite one;
        `extra` adds top-level sections (`schema_registry`)."""
        config = {
            "kafka": {"brokers": KAFKA, "group_id": self.group,
                      "properties": {**(kafka_properties or {})}},
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "routes": routes,
        }
        if clickhouse:
            config["clickhouse"] = {"url": self.clickhouse.url, "database": self.database,
                                    "settings": clickhouse_settings or {}}
        if iceberg:
            config["iceberg"] = {
                "catalog": {"type": "sql", "uri": self.catalog_uri, "warehouse": self.warehouse,
                            **(catalog or {})},
                "namespace": self.namespace,
            }
        if dead_letter:
            config["dead_letter"] = {"topic": dead_letter}
        config.update(extra or {})
        path = self.tmp / f"config-{len(self.processes)}.yaml"
        # JSON is YAML: no YAML writer needed.
        path.write_text(json.dumps(config, indent=2))
        return path

    def schema(self, name, text):
        path = self.tmp / name
        path.write_text(text)
        return path

    def start(self, config_path):
        ingest = Ingest(config_path, self.tmp / f"ingest-{len(self.processes)}.log")
        self.processes.append(ingest)
        return ingest

    def cleanup(self):
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.kill()
        try:
            clickhouse(f"DROP DATABASE IF EXISTS {self.database}")
        except AssertionError:
            pass


def pytest_configure(config):
    config.addinivalue_line("markers", "every_clickhouse: run once per ClickHouse version in E2E_CLICKHOUSE")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("every_clickhouse"):
        metafunc.parametrize("clickhouse_server", CLICKHOUSE_VERSIONS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def clickhouse_server(request, tmp_path_factory):
    """The ClickHouse a test writes to: 18.16 unless parametrized (see the module doc)."""
    version = getattr(request, "param", "18.16")
    if version == "18.16":
        yield ClickHouseServer(version, CLICKHOUSE)
        return
    assert version == "26.9", f"E2E_CLICKHOUSE names {version!r}: known are 18.16 and 26.9"
    home = tmp_path_factory.mktemp("clickhouse-chdb")
    port = free_port()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(CHDB_HTTP), "--port", str(port), "--path", str(home / "data")],
                            stdout=log, stderr=subprocess.STDOUT)
    server = ClickHouseServer(version, f"http://127.0.0.1:{port}")

    def ping():
        assert proc.poll() is None, f"{CHDB_HTTP.name} exited:\n{(home / 'server.log').read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(server.url + "/ping", timeout=2) as resp:
                return resp.status == 200, resp.status
        except OSError as e:
            return False, str(e)

    wait_until(f"{CHDB_HTTP.name} on port {port}", ping, timeout=60)
    yield server
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def setup(tmp_path, clickhouse_server):
    previous = current_clickhouse["server"]
    current_clickhouse["server"] = clickhouse_server
    s = Setup(tmp_path, clickhouse_server)
    try:
        yield s
        s.cleanup()
    finally:
        current_clickhouse["server"] = previous


@pytest.fixture(scope="session", autouse=True)
def binary_exists():
    assert BIN.exists(), f"{BIN} is missing: run `cargo build --release -p ingest` (make test does)"


def checksum_of(ids):
    return id_checksum(ids)


def assert_sinks_hold_ids(setup, count, table="events"):
    """ClickHouse and Iceberg each hold the ids 0..count-1 of `table`'s event_id exactly once."""
    expected = checksum_of(range(count))
    ids = [int(r["event_id"]) for r in clickhouse(f"SELECT event_id FROM {setup.database}.{table}")]
    assert (len(ids), checksum_of(ids)) == (count, expected), f"ClickHouse: {len(ids)} rows, {len(set(ids))} distinct"
    ids = iceberg_ids(load_iceberg_table(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.{table}"))
    assert (len(ids), checksum_of(ids)) == (count, expected), f"Iceberg: {len(ids)} rows, {len(set(ids))} distinct"
