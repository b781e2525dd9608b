"""Configuration mistakes are caught before anything runs, each as one line that
names the key or the resource at fault."""
import subprocess

import pytest

from conftest import BIN, ROOT

EVENTS = ROOT / "schemas/examples/events.yaml"

BASE = """kafka: {{ brokers: "{brokers}", group_id: g }}
clickhouse: {{ url: "http://127.0.0.1:8123" }}
iceberg:
  catalog: {{ type: sql, uri: "sqlite://{tmp}/c.db", warehouse: "file://{tmp}/w" }}
  namespace: ns
routes:
"""

CASES = {
    "unknown key": ("  - topics: [e]\n    schema: {events}\n    iceberg: {{ table: e }}\n    batch: {{ max_rowz: 5 }}\n",
                    ["routes[0].batch", "max_rowz"]),
    "bad regex": ("  - topic_pattern: \"events.(\"\n    schema: {events}\n    iceberg: {{ table: e }}\n",
                  ["routes[0].topic_pattern", "bad regular expression"]),
    "missing schema": ("  - topics: [e]\n    schema: nowhere.yaml\n    iceberg: {{ table: e }}\n",
                       ["routes[0].schema", "nowhere.yaml", "No such file"]),
    "bad schema type": ("  - topics: [e]\n    schema: {bad_schema}\n    iceberg: {{ table: e }}\n",
                        ["fields[0].type", "int99"]),
    "bad duration": ("  - topics: [e]\n    schema: {events}\n    iceberg: {{ table: e }}\n    batch: {{ max_age: soon }}\n",
                     ["routes[0].batch.max_age"]),
    "missing env": ("  - topics: [e]\n    schema: {events}\n    iceberg: {{ table: \"${{NO_SUCH_VAR_ANYWHERE}}\" }}\n",
                    ["routes[0].iceberg.table", "NO_SUCH_VAR_ANYWHERE"]),
}


def validate(tmp_path, routes, brokers="127.0.0.1:9092", connect=False):
    bad_schema = tmp_path / "bad.yaml"
    bad_schema.write_text("fields:\n  - {name: x, type: int99}\n")
    config = tmp_path / "config.yaml"
    config.write_text(BASE.format(brokers=brokers, tmp=tmp_path)
                      + routes.format(events=EVENTS, bad_schema=bad_schema))
    args = [str(BIN), "validate", "--config", str(config)] + (["--connect", "--timeout", "3s"] if connect else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_is_one_line_naming_the_problem(tmp_path, case):
    routes, expected = CASES[case]
    out = validate(tmp_path, routes)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_unreachable_broker_is_reported_by_validate_connect(tmp_path):
    out = validate(tmp_path, "  - topics: [e]\n    schema: {events}\n    iceberg: {{ table: e }}\n",
                   brokers="127.0.0.1:1", connect=True)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    assert "kafka brokers `127.0.0.1:1` unreachable" in errors[0]


def test_valid_config_passes_and_reaches_every_service(tmp_path):
    out = validate(tmp_path, "  - topics: [e]\n    schema: {events}\n    clickhouse: {{ table: e }}\n    iceberg: {{ table: e }}\n",
                   connect=True)
    assert out.returncode == 0, out.stderr
    assert "clickhouse: server" in out.stdout and "iceberg: catalog reachable" in out.stdout
