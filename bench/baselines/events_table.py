"""The ClickHouse table shape every pipeline in `make bench` writes: the DDL the service
itself generates for the events route on an 18.16 server, so the baselines can never
drift from what `ingest` creates."""
import json
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "ingest"
EVENTS_SCHEMA = ROOT / "schemas" / "examples" / "events.yaml"


def events_ddl(database, server_version="18.16.1"):
    """CREATE TABLE statement for `database`.events, from `ingest dry-run --sink clickhouse`."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {"kafka": {"brokers": "unused:9092", "group_id": "ddl"},
                  "clickhouse": {"url": "http://unused:8123", "database": database},
                  "routes": [{"topics": ["unused"], "schema": str(EVENTS_SCHEMA),
                              "clickhouse": {"table": "events", "order_by": ["event_type", "ts"]}}]}
        (tmp / "config.yaml").write_text(json.dumps(config))
        (tmp / "empty.jsonl").write_text("")
        subprocess.run([str(BIN), "dry-run", "--sink", "clickhouse", "--config", str(tmp / "config.yaml"),
                        "--input", str(tmp / "empty.jsonl"), "--option", f"server_version={server_version}",
                        "--option", "positions=false", "--out", str(tmp)],
                       check=True, capture_output=True)
        return (tmp / "events.sql").read_text()
