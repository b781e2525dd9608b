"""The ClickHouse side of the tests: queries over HTTP to the running test's server, the
stack's server as a process (stop, start, SIGKILL), its merges, and what a database
holds compared with the truth (rows, `_part`, the positions ledger).
"""
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .compare import sink_difference
from .stack import CLICKHOUSE, stack_service


class ClickHouseServer:
    """A ClickHouse HTTP endpoint and the server version behind it."""

    def __init__(self, version, url):
        self.version, self.url = version, url

    def __repr__(self):
        return f"ClickHouse {self.version} at {self.url}"


# Where `clickhouse()` sends queries: the running test's server (set by conftest's `setup`).
current_clickhouse = {"server": ClickHouseServer("18.16", CLICKHOUSE)}


def clickhouse(sql, parse_float=float):
    """Runs a query; returns rows as dicts (JSONEachRow) or [] for statements."""
    data = (sql + (" FORMAT JSONEachRow" if sql.lstrip().upper().startswith("SELECT") else "")).encode()
    req = urllib.request.Request(current_clickhouse["server"].url + "/", data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return [json.loads(line, parse_float=parse_float)
                    for line in resp.read().decode().splitlines() if line]
    except urllib.error.HTTPError as e:
        raise AssertionError(f"ClickHouse rejected {sql!r}: {e.read().decode()}") from e


def with_table_settings(database, table, settings):
    """Recreates `table` (empty) with extra MergeTree settings, as a user would have made it."""
    statement = clickhouse(f"SELECT create_table_query AS q FROM system.tables "
                           f"WHERE database = '{database}' AND name = '{table}'")[0]["q"]
    clickhouse(f"DROP TABLE {database}.{table}")
    joiner = ", " if re.search(r"\bSETTINGS\b", statement) else " SETTINGS "
    clickhouse(statement + joiner + settings)


def clickhouse_service(action):
    """Stops or starts the stack's ClickHouse server (deploy/local/down.sh / up.sh)."""
    return stack_service("clickhouse", action)


def clickhouse_server_pid():
    """The pid of the stack's ClickHouse server, from up.sh's pid file (checked to still
    be a clickhouse-server, as deploy/local/lib.sh's our_pid does)."""
    pidfile = Path(os.environ.get("STACK_STATE", "/var/tmp/ingest-stack")) / "clickhouse" / "clickhouse.pid"
    pid = int(pidfile.read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert "clickhouse-server" in cmdline, f"{pidfile} names pid {pid}, which runs {cmdline!r}"
    return pid


def kill9_clickhouse_server(timeout=30):
    """SIGKILL to the ClickHouse server (no shutdown of any kind), waits until the process
    is gone; returns its pid. `clickhouse_service("start")` brings it back on its data."""
    pid = clickhouse_server_pid()
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            return pid
        if state == "Z":
            return pid
        time.sleep(0.05)
    raise AssertionError(f"ClickHouse server pid {pid} still alive {timeout}s after SIGKILL")


def running_inserts(database):
    """Query ids of data inserts (`FORMAT Native`) into `database` the server runs now."""
    rows = clickhouse(f"SELECT query_id FROM system.processes WHERE query LIKE 'INSERT INTO `{database}`.%' "
                      f"AND query LIKE '%FORMAT Native%'")
    return [r["query_id"] for r in rows]


class Merger(threading.Thread):
    """Runs `OPTIMIZE TABLE ... FINAL` every `every` seconds while started (`run_merges`),
    as a server's background merges would under load: 18.16's merge selector leaves a
    few tiny parts alone for minutes, so a table with a small `parts_to_throw_insert`
    would otherwise keep refusing inserts long after its merges were started again.
    `stop_merges` also stops the server's own merges of the table (SYSTEM STOP MERGES)."""

    def __init__(self, table, every=2.0):
        super().__init__(daemon=True, name=f"merger-{table}")
        self.table, self.every = table, every
        self.optimized = 0
        self.errors = []
        self._merging = threading.Event()
        self._halt = threading.Event()

    def stop_merges(self):
        self._merging.clear()
        clickhouse(f"SYSTEM STOP MERGES {self.table}")

    def run_merges(self):
        clickhouse(f"SYSTEM START MERGES {self.table}")
        self._merging.set()

    def halt(self):
        self._halt.set()
        self.join(30)

    def run(self):
        while not self._halt.wait(self.every):
            if not self._merging.is_set():
                continue
            try:
                clickhouse(f"OPTIMIZE TABLE {self.table} FINAL")
                self.optimized += 1
            except (AssertionError, OSError) as e:
                self.errors.append(str(e)[:300])


def clickhouse_count(database, table="events"):
    """Rows in the table, or None while ClickHouse or the table is not there."""
    try:
        return int(clickhouse(f"SELECT count() AS c FROM {database}.{table}")[0]["c"])
    except (AssertionError, OSError):
        return None


def clickhouse_rows_of(database, ids, table="events"):
    if not ids:
        return []
    rows = clickhouse(f"SELECT event_id, _topic, _partition, _offset, _part FROM {database}.{table} "
                      f"WHERE event_id IN ({','.join(str(i) for i in ids[:20])}) ORDER BY event_id, _offset")
    return [(int(r["event_id"]), int(r["_partition"]), int(r["_offset"]), r["_part"]) for r in rows]


def clickhouse_ledger(database, table="events"):
    try:
        rows = clickhouse(f"SELECT topic, partition, maxMerge(next) AS next FROM {database}.{table}__ingest_positions "
                          f"GROUP BY topic, partition ORDER BY topic, partition")
    except AssertionError as e:
        return f"unreadable: {e}"
    return {(r["topic"], int(r["partition"])): int(r["next"]) for r in rows}


def verify_clickhouse(database, topic, ends, expected, producer):
    """(problems, notes): `database`.events against the `expected` ids, its ledger against
    the topic's end offsets `ends` ({partition: offset})."""
    problems, notes = [], []
    ch = [int(r["event_id"]) for r in clickhouse(f"SELECT event_id FROM {database}.events")]
    notes.append(f"ClickHouse: {len(ch)} rows, {len(set(ch))} distinct")
    diff = sink_difference(
        f"ClickHouse {database}.events", ch, expected, producer, topic,
        lambda dups: f"\n  ClickHouse rows of the first duplicated ids (event_id, _partition, _offset, _part): "
                     f"{clickhouse_rows_of(database, dups)}")
    if diff:
        problems.append(diff)
    ledger = clickhouse_ledger(database)
    want = {(topic, p): end for p, end in ends.items() if end > 0}
    if ledger != want:
        problems.append(f"ClickHouse ledger {database}.events__ingest_positions: {ledger}; "
                        f"the topic's end offsets: {want}")
    return problems, notes
