"""Where the tests find the project and the local stack (deploy/local/env.sh exports the
addresses), and the switch that stops or starts one of the stack's services as an
operator would (deploy/local/down.sh / up.sh, data kept on disk).
"""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STACK = ROOT / "deploy" / "local"
EVENTS = ROOT / "schemas/examples/events.yaml"
# The independent readers (the package's __init__ puts them on sys.path).
READERS = ROOT / "tests" / "readers"

BIN = Path(os.environ.get("INGEST_BIN", ROOT / "target" / "release" / "ingest"))
KAFKA = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CLICKHOUSE = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123")


def stack_service(name, action):
    """Stops (`action` "stop") or starts one service of the stack; returns the script's report."""
    script = STACK / ("down.sh" if action == "stop" else "up.sh")
    out = subprocess.run([str(script), name], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{script.name} {name} failed: {out.stdout}{out.stderr}"
    return out.stdout.strip()
