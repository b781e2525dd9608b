"""Helpers for the fault-injection suite (tests/e2e/test_chaos.py).

Sizes come from the environment: `CHAOS=full` selects the issue's sizes, anything else a
quick run that fits `make test`; every size can also be set on its own with
`CHAOS_<NAME>` (e.g. `CHAOS_CRASH_KILLS=100`). Faults are real: SIGKILL, SIGSTOP/SIGCONT,
SIGTERM of the service, the ClickHouse server stopped with `deploy/local/down.sh` or
killed with SIGKILL mid-insert, inserts the server refuses (table settings, stopped
merges, `max_memory_usage`), the REST catalog fixture process terminated and started
again on the same port.

The sinks are compared with what the broker holds (the topic read back from offset 0,
checked against the producer's acknowledgements), and every difference is explained:
missing/duplicated ids with their partition/offset, the ClickHouse rows (`_part`) and
Iceberg data files holding duplicates, what the broker answers a fetch at a missing
offset, partitions two instances owned at once (from their rebalance log lines).

The broker is Apache Kafka (deploy/local/services/kafka.sh). Events are produced as
users produce them: an idempotent producer with linger and batching, many records per
batch, so consumers resume in the middle of batches.
"""
import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import KAFKA, ROOT, checksum_of, clickhouse

STACK = ROOT / "deploy" / "local"
EVENTS = ROOT / "schemas/examples/events.yaml"
REST_FIXTURE = ROOT / "tests/fixtures/rest_catalog.py"
REST_CATALOG_NAME = "rest_fixture"

MODE = "full" if os.environ.get("CHAOS", "").strip().lower() == "full" else "quick"

# Short sessions so a killed or frozen member loses its partitions quickly.
# CHAOS_KAFKA_PROPERTIES (a JSON object) adds to or overrides them, e.g. to try another
# assignment strategy: '{"partition.assignment.strategy": "range"}'.
KAFKA_PROPERTIES = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000",
                    **json.loads(os.environ.get("CHAOS_KAFKA_PROPERTIES", "{}"))}
SESSION_TIMEOUT = 6.0
# Pause between a SIGKILL and the replacement. 0: the replacement joins while the dead
# member's session still lives, and Kafka hands it the partitions once that expires.
RESTART_DELAY = float(os.environ.get("CHAOS_RESTART_DELAY", "0"))


def size(name, quick, full, kind=int):
    """`CHAOS_<NAME>` if set, else the size of the current mode."""
    value = os.environ.get(f"CHAOS_{name.upper()}")
    if value is not None:
        return kind(value)
    return kind(full if MODE == "full" else quick)


# --------------------------------------------------------------------------- events ---
COUNTRIES = ["DE", "FR", "US", "BR", "JP", None]
TYPES = ["page_view", "click", "purchase", "signup", "scroll"]
DEVICES = ["phone", "tablet", "desktop"]
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def event(i):
    """One event of schemas/examples/events.yaml with event_id = i (deterministic)."""
    ts = EPOCH_MS + i * 997 % (86_400_000 * 3)
    day = datetime.datetime.fromtimestamp(ts / 1000, tz=datetime.timezone.utc).date().isoformat()
    return {
        "event_id": i,
        "ts": ts,
        "event_type": TYPES[i % len(TYPES)],
        "user_id": i % 9973,
        "session_id": f"s-{i // 7}",
        "country": COUNTRIES[i % len(COUNTRIES)],
        "url": f"https://example.com/p/{i % 311}",
        "duration_ms": None if i % 5 == 0 else i % 60_000,
        "revenue": f"{i % 1000}.{i % 100:02d}" if i % 4 == 0 else None,
        "tags": [f"t{i % 3}", f"t{i % 11}"][: i % 3],
        "device": {"device": DEVICES[i % 3], "os_version": None if i % 7 == 0 else "17.1",
                   "screen_width": 390 + i % 1000},
        "event_date": day,
    }


class BackgroundProducer(threading.Thread):
    """Produces event ids [start_id, start_id + count) at about `rate` per second
    (unlimited when None) while the test injects faults; `hurry()` drops the rate limit so
    the rest goes out at once. Every delivery report is kept: id -> (partition, offset)."""

    def __init__(self, topic, count, start_id=0, rate=None):
        super().__init__(daemon=True, name=f"producer-{topic}")
        self.topic, self.count, self.start_id, self.rate = topic, count, start_id, rate
        self.delivered = {}
        self.errors = []
        self.produced = 0
        self.failure = None
        self.started_at = self.finished_at = None
        self._halt = threading.Event()

    def hurry(self):
        self.rate = None

    def abort(self):
        self._halt.set()

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered[int(msg.key())] = (msg.partition(), msg.offset())

    def run(self):
        from confluent_kafka import Producer
        try:
            producer = Producer({"bootstrap.servers": KAFKA, "enable.idempotence": True,
                                 "acks": "all", "linger.ms": 20})
            self.started_at = time.time()
            i = self.start_id
            end = self.start_id + self.count
            while i < end and not self._halt.is_set():
                rate = self.rate
                if rate:
                    # Tick every 20 ms, keeping to the schedule since the start.
                    due = self.start_id + int((time.time() - self.started_at) * rate) + 1
                    n = max(0, min(end, due) - i)
                    if n == 0:
                        producer.poll(0.02)
                        continue
                else:
                    n = min(end - i, 1000)
                for j in range(i, i + n):
                    while True:
                        try:
                            producer.produce(self.topic, key=str(j).encode(), value=json.dumps(event(j)).encode(),
                                             on_delivery=self._on_delivery)
                            break
                        except BufferError:
                            producer.poll(0.05)
                i += n
                self.produced = i - self.start_id
                producer.poll(0)
            # Wait while acks keep coming (the broker may be busy with the faults), fail
            # only when they stop.
            left, stalled_since = len(producer), time.time()
            while left:
                now_left = producer.flush(10)
                if now_left < left:
                    left, stalled_since = now_left, time.time()
                elif time.time() - stalled_since > 120:
                    self.errors.append(f"{left} messages not delivered, no ack for 120 s")
                    break
        except Exception as e:  # reported by finish()
            self.failure = repr(e)
        finally:
            self.finished_at = time.time()

    def finish(self, timeout=600):
        """Produces the rest without a rate limit, waits and checks every id was acked once."""
        self.hurry()
        self.join(timeout)
        assert not self.is_alive(), f"producer still running after {timeout}s ({self.produced} produced)"
        assert self.failure is None, f"producer failed: {self.failure}"
        assert not self.errors, f"producer delivery errors (first 10): {self.errors[:10]}"
        assert len(self.delivered) == self.count, \
            f"producer: {len(self.delivered)} of {self.count} ids acknowledged"
        return set(range(self.start_id, self.start_id + self.count))

    def positions(self, ids):
        return {i: self.delivered.get(i) for i in ids}


def end_offsets(producer, partitions):
    """{partition: offset after the last acknowledged message} (0 for an empty one)."""
    ends = {p: 0 for p in range(partitions)}
    for p, o in producer.delivered.values():
        ends[p] = max(ends[p], o + 1)
    return ends


def read_topic(topic, ends, timeout=300):
    """{(partition, offset): event_id} for every message below `ends`, read back from the
    broker from offset 0 (the ground truth the sinks are compared with)."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"chaos-readback-{os.getpid()}",
                         "enable.auto.commit": False})
    got = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        todo = {p for p, end in ends.items() if end > 0}
        deadline = time.time() + timeout
        while todo and time.time() < deadline:
            for m in consumer.consume(10000, 0.5):
                if m.error():
                    continue
                got[(m.partition(), m.offset())] = json.loads(m.value())["event_id"]
                if m.offset() + 1 >= ends[m.partition()]:
                    todo.discard(m.partition())
    finally:
        consumer.close()
    return got


def fetch_first(topic, partition, offset):
    """The offset of the first message the broker hands a consumer fetching from `offset`
    (None if nothing comes within 3 s): a broker skipping offsets shows up here."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"chaos-probe-{os.getpid()}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        m = consumer.poll(3)
        return None if m is None or m.error() else m.offset()
    finally:
        consumer.close()


# ----------------------------------------------------------------------- processes ---
def alive(ingest):
    return ingest.proc.poll() is None


def kill9(ingest):
    ingest.proc.kill()
    code = ingest.proc.wait(30)
    ingest.log.flush()
    return code


def assigned(ingest):
    """ingest_assigned_partitions of a live instance (None when it does not answer)."""
    if not alive(ingest):
        return None
    value = ingest.metric("ingest_assigned_partitions")
    return None if value is None else int(value)


def wait_assignment(instances, partitions, what, timeout=60, each=True, logs=None):
    """Waits until the live `instances` together own every partition (and each owns at
    least one when `each`); fails with every instance's log otherwise."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for inst in instances:
            assert alive(inst), f"{what}: {inst.log_path.name} exited with {inst.proc.returncode}\n" \
                                f"{logs() if logs else inst.logs()}"
        counts = [assigned(inst) for inst in instances]
        last = counts
        if None not in counts and sum(counts) == partitions and (not each or min(counts) > 0):
            return counts
        time.sleep(0.25)
    raise AssertionError(f"{what}: assignment stuck at {last} (want {partitions} partitions over "
                         f"{len(instances)} instance(s){', each with some' if each else ''}) after {timeout}s\n"
                         f"{logs() if logs else ''}")


def wait_ready_status(ingest, want, timeout, what):
    def check():
        assert alive(ingest), f"{what}: instance exited with {ingest.proc.returncode}\n{ingest.logs()}"
        status, body = ingest.get("/ready")
        return status == want, (status, body[:200])
    return wait_until_(what, check, timeout)


def wait_until_(what, predicate, timeout, interval=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


ANSI = re.compile(r"\x1b\[[0-9;]*m")
INTERESTING = re.compile(r"WARN|ERROR|panic|fenc|refused|no longer assigned|partitions lost|revok|lost",
                         re.IGNORECASE)


def log_report(processes, tail_lines=40, full_tails=4, interesting_per_log=25):
    """The tail of each instance's log: the last `full_tails` in full, the earlier ones as
    their warning/error lines (a crash loop starts dozens of instances)."""
    out = []
    for n, p in enumerate(processes):
        code = p.proc.poll()
        state = "running" if code is None else f"exit {code}"
        try:
            if not p.log.closed:
                p.log.flush()
            lines = ANSI.sub("", Path(p.log_path).read_text(errors="replace")).splitlines()
        except OSError as e:
            lines = [f"(log unreadable: {e})"]
        if n >= len(processes) - full_tails:
            out.append(f"----- {Path(p.log_path).name} ({state}), last {tail_lines} of {len(lines)} lines -----")
            out.extend(lines[-tail_lines:])
        else:
            picked = [line for line in lines if INTERESTING.search(line)]
            out.append(f"----- {Path(p.log_path).name} ({state}), {len(lines)} lines; "
                       f"{len(picked)} warning/error lines, last {interesting_per_log} -----")
            out.extend(picked[-interesting_per_log:])
    return "\n".join(out)


def grep_logs(processes, pattern):
    rx = re.compile(pattern, re.IGNORECASE)
    hits = []
    for p in processes:
        if not p.log.closed:
            p.log.flush()
        for line in ANSI.sub("", Path(p.log_path).read_text(errors="replace")).splitlines():
            if rx.search(line):
                hits.append(f"{Path(p.log_path).name}: {line}")
    return hits


# --------------------------------------------------------------- ClickHouse server ---
def clickhouse_service(action):
    script = STACK / ("down.sh" if action == "stop" else "up.sh")
    out = subprocess.run([str(script), "clickhouse"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"{script.name} clickhouse failed: {out.stdout}{out.stderr}"
    return out.stdout.strip()


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


# --------------------------------------------------------------- REST catalog fixture ---
class RestCatalogProcess:
    """tests/fixtures/rest_catalog.py as a child process that can be stopped and started
    again on the same port, SQLite file and warehouse (an outage of the catalog server:
    the state survives, the endpoint is gone)."""

    def __init__(self, tmp_path, port, extra_args=()):
        self.port = port
        self.extra_args = list(extra_args)
        self.uri = f"http://127.0.0.1:{port}"
        self.db = tmp_path / "rest-catalog.db"
        self.warehouse = f"file://{tmp_path}/warehouse"
        self.log_path = tmp_path / "rest-catalog.log"
        self.proc = None
        self.log = None

    def start(self, timeout=30):
        import socket
        self.log = open(self.log_path, "a")
        # -u: its log is read while it runs (the commit count, the tail on failure).
        self.proc = subprocess.Popen([sys.executable, "-u", str(REST_FIXTURE), "--port", str(self.port),
                                      "--catalog-db", str(self.db), "--warehouse", self.warehouse,
                                      "--catalog-name", REST_CATALOG_NAME, *self.extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            assert self.proc.poll() is None, f"REST catalog fixture exited:\n{self.log_path.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.time() < deadline, "REST catalog fixture did not start"
                time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log:
            self.log.close()
            self.log = None

    def tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def table(self, ident):
        """The table read straight from the fixture's SQLite catalog (works while the
        server is down), or None while it does not exist."""
        from pyiceberg.catalog.sql import SqlCatalog
        if not self.db.exists():
            return None
        try:
            cat = SqlCatalog(REST_CATALOG_NAME, uri=f"sqlite:///{self.db}", warehouse=self.warehouse,
                             init_catalog_tables="false")
            return cat.load_table(ident)
        except Exception:
            return None


# ---------------------------------------------------------------------- Iceberg reads ---
def snapshot_total(table):
    snap = table and table.current_snapshot()
    if not snap or not snap.summary:
        return 0
    return int(snap.summary.additional_properties.get("total-records", 0))


def iceberg_ids(table):
    return table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()


def iceberg_offsets(table, group):
    """The Kafka positions the current snapshot records for `group` ({topic: {partition: next}})."""
    snap = table.current_snapshot()
    raw = snap and snap.summary and snap.summary.additional_properties.get(f"ingest.kafka-offsets.{group}")
    return json.loads(raw) if raw else None


def iceberg_files_holding(table, ids):
    """{data file: sorted ids of `ids` it holds}: where duplicated rows sit."""
    import pyarrow.parquet as pq
    want = set(ids)
    found = {}
    for task in table.scan(selected_fields=("event_id",)).plan_files():
        path = task.file.file_path
        local = path[len("file://"):] if path.startswith("file://") else path
        try:
            col = pq.read_table(local, columns=["event_id"]).column("event_id").to_pylist()
        except Exception as e:
            found[path] = f"unreadable: {e}"
            continue
        hit = sorted(want.intersection(col))
        if hit:
            found[path] = hit[:20]
    return found


def iceberg_history(table, group, last=12):
    rows = []
    for snap in list(table.snapshots())[-last:]:
        props = snap.summary.additional_properties if snap.summary else {}
        rows.append(f"  snapshot {snap.snapshot_id} parent {snap.parent_snapshot_id}: "
                    f"added-records={props.get('added-records')} total-records={props.get('total-records')} "
                    f"offsets={props.get(f'ingest.kafka-offsets.{group}')}")
    return "\n".join(rows)


# ---------------------------------------------------------------------- comparisons ---
def compare_ids(sink, got, expected, producer=None):
    """'' when `got` is exactly `expected` (a set), else what differs: counts, checksum,
    the first 20 missing and duplicated ids with the (partition, offset) they were
    produced at."""
    counts = collections.Counter(got)
    dups = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(expected - counts.keys())
    extra = sorted(counts.keys() - expected)
    exp_sum, got_sum = checksum_of(expected), checksum_of(got)
    if not dups and not missing and not extra and len(got) == len(expected) and exp_sum == got_sum:
        return ""
    where = (lambda ids: producer.positions(ids)) if producer else (lambda ids: "")
    lines = [f"{sink}: {len(got)} rows, {len(counts)} distinct, checksum {got_sum} "
             f"(expected {len(expected)} rows, checksum {exp_sum})"]
    if missing:
        lines.append(f"  {len(missing)} missing ids, first 20 with (partition, offset) produced: "
                     f"{where(missing[:20]) or missing[:20]}")
        lines.append(f"  missing per partition: {per_partition(missing, producer)}")
    if dups:
        lines.append(f"  {len(dups)} duplicated ids ({sum(counts[i] - 1 for i in dups)} extra rows), "
                     f"first 20 as id: copies: {[(i, counts[i]) for i in dups[:20]]}")
        if producer:
            lines.append(f"  produced at (partition, offset): {producer.positions(dups[:20])}")
            lines.append(f"  duplicated per partition: {per_partition(dups, producer)}")
    if extra:
        lines.append(f"  {len(extra)} ids never produced, first 20: {extra[:20]}")
    return "\n".join(lines)


def per_partition(ids, producer):
    """{partition: 'n ids, offsets lo..hi'} of the ids, as the producer placed them."""
    if not producer:
        return "?"
    acc = collections.defaultdict(list)
    for i in ids:
        pos = producer.delivered.get(i)
        if pos:
            acc[pos[0]].append(pos[1])
        else:
            acc[None].append(i)
    return {p: f"{len(offs)} ids" + (f", offsets {min(offs)}..{max(offs)}" if p is not None else " never acked")
            for p, offs in sorted(acc.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}


def clickhouse_rows_of(database, ids, table="events"):
    if not ids:
        return []
    rows = clickhouse(f"SELECT event_id, _topic, _partition, _offset, _part FROM {database}.{table} "
                      f"WHERE event_id IN ({','.join(str(i) for i in ids[:20])}) ORDER BY event_id, _offset")
    return [(int(r["event_id"]), int(r["_partition"]), int(r["_offset"]), r["_part"]) for r in rows]


def broker_probe(topic, producer, missing, n=5):
    """For the first missing ids: where a consumer fetching from their offset starts."""
    out = []
    for i in missing[:n]:
        pos = producer.delivered.get(i)
        if pos:
            out.append(f"fetch p{pos[0]}@{pos[1]} -> first offset {fetch_first(topic, pos[0], pos[1])}")
    return "; ".join(out)


def clickhouse_ledger(database, table="events"):
    try:
        rows = clickhouse(f"SELECT topic, partition, maxMerge(next) AS next FROM {database}.{table}__ingest_positions "
                          f"GROUP BY topic, partition ORDER BY topic, partition")
    except AssertionError as e:
        return f"unreadable: {e}"
    return {(r["topic"], int(r["partition"])): int(r["next"]) for r in rows}


def verify_sinks(*, topic, partitions, expected, producer, group, database=None, iceberg_table=None,
                 processes=(), extra=""):
    """Compares each sink with the produced id set and the positions each sink keeps with
    the topic's end offsets; one assertion listing every difference, with the logs."""
    problems = []
    notes = []
    ends = end_offsets(producer, partitions)
    in_topic = read_topic(topic, ends)
    produced_at = {pos: i for i, pos in producer.delivered.items()}
    notes.append(f"topic {topic}: {len(in_topic)} messages read back, end offsets {ends}")
    if in_topic != produced_at:
        wrong = sorted(set(in_topic.items()) ^ set(produced_at.items()))[:20]
        problems.append(f"the topic read back differs from the producer's acknowledgements ({len(in_topic)} vs "
                        f"{len(produced_at)} messages; first differences ((partition, offset), id): {wrong}): "
                        "a producer or broker problem, not the service's")
    str_ends = {str(p): end for p, end in ends.items() if end > 0}
    if database is not None:
        ch = [int(r["event_id"]) for r in clickhouse(f"SELECT event_id FROM {database}.events")]
        diff = compare_ids(f"ClickHouse {database}.events", ch, expected, producer)
        notes.append(f"ClickHouse: {len(ch)} rows, {len(set(ch))} distinct")
        if diff:
            counts = collections.Counter(ch)
            dups = sorted(i for i, c in counts.items() if c > 1)
            if dups:
                diff += f"\n  ClickHouse rows of the first duplicated ids (event_id, _partition, _offset, _part): " \
                        f"{clickhouse_rows_of(database, dups)}"
            missing = sorted(expected - counts.keys())
            if missing:
                diff += f"\n  broker check of missing offsets: {broker_probe(topic, producer, missing)}"
            problems.append(diff)
        ledger = clickhouse_ledger(database)
        want = {(topic, p): end for p, end in ends.items() if end > 0}
        if ledger != want:
            problems.append(f"ClickHouse ledger {database}.events__ingest_positions: {ledger}; "
                            f"the topic's end offsets: {want}")

    if iceberg_table is not None:
        table = iceberg_table()
        if table is None:
            problems.append("Iceberg table missing")
        else:
            ids = iceberg_ids(table)
            notes.append(f"Iceberg: {len(ids)} rows, {len(set(ids))} distinct, "
                         f"{len(list(table.snapshots()))} snapshots")
            diff = compare_ids("Iceberg events", ids, expected, producer)
            if diff:
                counts = collections.Counter(ids)
                dups = sorted(i for i, c in counts.items() if c > 1)
                if dups:
                    files = iceberg_files_holding(table, dups[:20])
                    diff += f"\n  data files holding the first duplicated ids: {files}"
                missing = sorted(expected - counts.keys())
                if missing:
                    diff += f"\n  broker check of missing offsets: {broker_probe(topic, producer, missing)}"
                diff += f"\n  last snapshots:\n{iceberg_history(table, group)}"
                problems.append(diff)
            offsets = iceberg_offsets(table, group)
            recorded = (offsets or {}).get(topic, {})
            want = str_ends
            if {k: int(v) for k, v in recorded.items()} != want:
                problems.append(f"Iceberg snapshot summary ingest.kafka-offsets.{group}: {offsets}; "
                                f"the topic's end offsets: {want}")

    summary = "\n".join(notes)
    if problems:
        both = overlaps(list(processes))
        if both:
            problems.append(f"partitions owned by two instances at once (per their rebalance log lines): {both}")
        raise AssertionError("sinks differ from what was produced:\n" + "\n".join(problems) +
                             f"\n{summary}\n{extra}\n{log_report(list(processes))}")
    return summary


def drain(what, counts, want, timeout):
    """Waits until every count in `counts()` (a dict) reaches `want`; returns '' or a
    description of the shortfall (the final comparison then says which ids)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = counts()
        if all(v is not None and v >= want for v in last.values()):
            return ""
        time.sleep(0.5)
    return f"{what}: not every sink reached {want} rows within {timeout}s: {last}"


class Notes:
    """Lines printed to the terminal even under pytest's capture (results of a run)."""

    def __init__(self, capsys, name):
        self.capsys, self.name = capsys, name
        self.started = time.time()

    def __call__(self, text):
        with self.capsys.disabled():
            sys.stdout.write(f"\n[chaos {MODE} {self.name} +{time.time() - self.started:.0f}s] {text}")
            sys.stdout.flush()


def freeze(ingest):
    os.kill(ingest.proc.pid, signal.SIGSTOP)


def thaw(ingest):
    if alive(ingest):
        os.kill(ingest.proc.pid, signal.SIGCONT)


def stop_together(instances, timeout=120):
    """SIGTERM to every instance at once (one signal each), then their exit codes."""
    for inst in instances:
        if alive(inst):
            inst.proc.send_signal(signal.SIGTERM)
    codes = []
    for inst in instances:
        try:
            codes.append(inst.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            inst.proc.kill()
            raise AssertionError(f"{inst.log_path.name} did not stop within {timeout}s:\n{inst.logs()}")
        inst.log.close()
    return codes


def full_log(ingest):
    """The instance's whole log without colour codes (Ingest.logs() keeps the last 5000 chars)."""
    if not ingest.log.closed:
        ingest.log.flush()
    return ANSI.sub("", Path(ingest.log_path).read_text(errors="replace"))


EVENT = re.compile(r"^(\S+Z)\s.*rebalance event=(Assigned|Revoked)\((\[.*\])\)")
PART = re.compile(r'\("([^"]+)", (\d+)\)')


def ownership(processes):
    """Per instance, the partitions it owned and when, from its rebalance log lines
    (cooperative: `Assigned` adds, `Revoked` removes; the log's end closes what is open):
    [(log name, topic, partition, from, to)] with ISO timestamps."""
    spans = []
    for p in processes:
        text = full_log(p)
        lines = text.splitlines()
        last = next((m.group(0).split()[0] for m in (re.match(r"^\S+Z", line) for line in reversed(lines)) if m), "")
        held = {}
        for line in lines:
            m = EVENT.match(line)
            if not m:
                continue
            at, kind, parts = m.group(1), m.group(2), PART.findall(m.group(3))
            for topic, part in parts:
                key = (topic, int(part))
                if kind == "Assigned":
                    held.setdefault(key, at)
                elif key in held:
                    spans.append((Path(p.log_path).name, *key, held.pop(key), at))
        spans.extend((Path(p.log_path).name, *key, since, last) for key, since in held.items())
    return spans


def overlaps(processes):
    """Times two instances owned the same partition at once, per their own logs."""
    spans = ownership(processes)
    found = []
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[0] != b[0] and a[1:3] == b[1:3] and a[3] < b[4] and b[3] < a[4]:
                found.append(f"p{a[2]}: {a[0]} {a[3][11:23]}..{a[4][11:23]} and {b[0]} {b[3][11:23]}..{b[4][11:23]}")
    return found


def iso_now():
    """Now as the service's log timestamps write it (UTC, microseconds)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def broker_overlaps(processes, frozen):
    """Partitions two instances owned at once *while both were running*: overlaps that
    lie inside a window where one of them was frozen (`frozen`: log name -> [(from, to)]
    ISO times, `to` extended by the time its client needs to notice) are the zombie case
    the service must fence; the rest is the broker handing one partition to two live
    members, which Kafka's group protocol rules out (Tansu 0.6, the broker used before
    Apache Kafka, was seen doing it).
    Returns {partition: [description]}."""
    spans = ownership(processes)
    found = collections.defaultdict(list)
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[0] == b[0] or a[1:3] != b[1:3] or not (a[3] < b[4] and b[3] < a[4]):
                continue
            lo, hi = max(a[3], b[3]), min(a[4], b[4])
            inside = any(f <= lo and hi <= t for name in (a[0], b[0]) for f, t in frozen.get(name, []))
            if not inside:
                found[a[2]].append(f"{a[0]} and {b[0]} from {lo[11:23]} to {hi[11:23]}")
    return dict(found)
