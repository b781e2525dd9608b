"""`make bench`: every pipeline on the same preloaded topic, in one run, on this machine.

Variants (each repeated, medians reported):
  a  bare drain: an rdkafka consumer reading the topic, doing nothing (the ceiling)
  b  ingest -> ClickHouse only      c  ingest -> Iceberg only      d  ingest -> both
  e  ClickHouse's Kafka engine + materialized view (bench/baselines/)
  f  a straightforward Python pipeline (bench/baselines/), on a smaller event count
  w  the bare drain and ingest -> both again on a wide event (schemas/examples/wide.yaml:
     30 fields, ~600 bytes)
Beside (b), ClickHouse's own CPU for the same rows as one plain Native INSERT into a copy
of the table (both counted until 10 s after the last insert, so merges count too).
A flame graph (SVG) of one more (d) run, when perf and inferno are installed.
Then latency: events produced at 25/50/90 % of (d)'s rate, event-to-visible-in-ClickHouse
p50/p99 for several max_age settings, and a plot of p99 against throughput.

CPU and peak RSS of each pipeline come from the kernel's rusage of the child process
(wait4); server-side CPU (ClickHouse, Kafka) from /proc deltas over the run.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target/release/ingest"
DRAIN = ROOT / "target/release/drain"
EVENTS_SCHEMA = ROOT / "schemas/examples/events.yaml"
WIDE_SCHEMA = ROOT / "schemas/examples/wide.yaml"
# Merges after the last insert belong to the insert's cost.
SETTLE_SECONDS = 10
KAFKA = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CLICKHOUSE = os.environ.get("CLICKHOUSE_URL", "http://127.0.0.1:8123")
STATE = Path(os.environ.get("STACK_STATE", "/var/tmp/ingest-stack"))
PY = sys.executable


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def ch(sql):
    req = urllib.request.Request(CLICKHOUSE + "/", data=sql.encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read().decode()


def ch_rows_held(database, table):
    """Rows in the table's active parts, from metadata: polling with count() would make
    18.16 read a column of every row each time, and bill that to the pipeline measured."""
    try:
        return int(ch(f"SELECT sum(rows) FROM system.parts WHERE database = '{database}' "
                      f"AND table = '{table}' AND active").strip() or 0)
    except Exception:
        return 0


def ch_count(table):
    try:
        return int(ch(f"SELECT count() FROM {table}").strip() or 0)
    except Exception:
        return 0


def proc_cpu(pattern):
    """utime+stime seconds of the first process whose command line contains pattern."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if pattern in cmd and "harness.py" not in cmd:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return 0.0


class Servers:
    """CPU spent by the broker and ClickHouse during a measured run."""

    def __enter__(self):
        self.start = {"clickhouse": proc_cpu("clickhouse-server"), "kafka": proc_cpu("kafka.Kafka")}
        return self

    def __exit__(self, *exc):
        self.cpu = {k: round(proc_cpu(p) - self.start[k], 2)
                    for k, p in (("clickhouse", "clickhouse-server"), ("kafka", "kafka.Kafka"))}


def run_child(args, stop_when=None, timeout=900, env=None):
    """Runs a child; with stop_when, polls it and sends SIGTERM once it is true.
    Returns (stdout, seconds to done, rusage)."""
    started = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    done_at = None
    if stop_when:
        while time.time() - started < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited early with {proc.returncode}")
            if stop_when():
                done_at = time.time()
                break
            time.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError(f"timed out: {args}")
        proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done_at = done_at or time.time()
    return out, done_at - started, usage


def measured(name, variant, events, payload_bytes, seconds, usage, servers, extra=None):
    result = {
        "variant": variant, "name": name, "events": events, "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds), "mb_per_s": round(payload_bytes / seconds / 1e6, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "cpu_s_per_million": round((usage.ru_utime + usage.ru_stime) / events * 1e6, 2),
        "mb_json_per_cpu_s": round(payload_bytes / 1e6 / max(usage.ru_utime + usage.ru_stime, 1e-9), 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "server_cpu_seconds": servers.cpu,
    }
    # A baseline's own report adds fields; it does not replace the uniform measurements.
    result.update({k: v for k, v in (extra or {}).items() if k not in result})
    log(f"  {variant}: {result['events_per_s']:>9} ev/s  cpu {result['cpu_seconds']}s  rss {result['peak_rss_mib']} MiB")
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iceberg_rows(catalog_db, table):
    """Rows in the current snapshot, read from the catalog row and the metadata file."""
    try:
        with sqlite3.connect(f"file:{catalog_db}?mode=ro", uri=True) as db:
            ns, name = table.rsplit(".", 1)
            row = db.execute("SELECT metadata_location FROM iceberg_tables WHERE table_namespace=? AND table_name=?",
                             (ns, name)).fetchone()
        if not row:
            return 0
        meta = json.loads(Path(row[0].removeprefix("file://")).read_text())
        current = meta.get("current-snapshot-id")
        for snap in meta.get("snapshots", []):
            if snap["snapshot-id"] == current:
                return int(snap["summary"].get("total-records", 0))
    except Exception:
        return 0
    return 0


def ingest_config(work, topic, sinks, database, batch=None, order_by=("event_type", "ts"),
                  schema=EVENTS_SCHEMA, partition_by=("day(ts)",)):
    route = {"topics": [topic], "schema": str(schema),
             "batch": batch or {"max_rows": 200000, "max_bytes": "64MiB", "max_age": "2s"}}
    if "clickhouse" in sinks:
        route["clickhouse"] = {"table": "events", "order_by": list(order_by)}
    if "iceberg" in sinks:
        route["iceberg"] = {"table": "events", "partition_by": list(partition_by)}
    config = {"kafka": {"brokers": KAFKA, "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                        "properties": {}},
              # ClickHouse runs on this machine: compressing request bodies only burns CPU.
              "clickhouse": {"url": CLICKHOUSE, "database": database, "compression": "none"},
              "iceberg": {"catalog": {"type": "sql", "uri": f"sqlite://{work}/catalog.db",
                                      "warehouse": f"file://{work}/warehouse"}, "namespace": database},
              "server": {"listen": f"127.0.0.1:{free_port()}"}, "routes": [route]}
    path = work / "config.yaml"
    path.write_text(json.dumps(config))
    return path


WIDE = {"schema": WIDE_SCHEMA, "order_by": ("status", "created_at"), "partition_by": ("day(created_at)",)}


def run_ingest(variant, sinks, topic, events, payload_bytes, work_root, shape=None):
    database = f"bench_{uuid.uuid4().hex[:8]}"
    work = work_root / database
    work.mkdir(parents=True)
    config = ingest_config(work, topic, sinks, database, **(shape or {}))

    def done():
        ok = True
        if "clickhouse" in sinks:
            ok &= ch_rows_held(database, "events") >= events
        if "iceberg" in sinks:
            ok &= iceberg_rows(work / "catalog.db", f"{database}.events") >= events
        return ok

    with Servers() as servers:
        _, seconds, usage = run_child([str(BIN), "run", "--config", str(config)], stop_when=done)
        if "clickhouse" in sinks:
            time.sleep(SETTLE_SECONDS)
    names = {"b": "ingest -> ClickHouse", "c": "ingest -> Iceberg", "d": "ingest -> ClickHouse + Iceberg",
             "w": "ingest -> ClickHouse + Iceberg, wide event"}
    extra = {}
    if "clickhouse" in sinks:
        extra["rows_clickhouse"] = ch_count(f"{database}.events")
        if variant == "b":
            extra.update(plain_native_insert(database, work))
        ch(f"DROP DATABASE IF EXISTS {database}")
    if "iceberg" in sinks:
        extra["rows_iceberg"] = iceberg_rows(work / "catalog.db", f"{database}.events")
    return measured(names[variant], variant, events, payload_bytes, seconds, usage, servers, extra)


def plain_native_insert(database, work):
    """ClickHouse's own CPU seconds for the rows (b) wrote, (1) as one plain Native INSERT
    and (2) as plain inserts of the sizes (b) made, with no gate, ledger or read-back,
    each into a fresh copy of the table and counted until SETTLE_SECONDS after it.
    (b) against (2) is what the exactly-once bookkeeping costs; (2) against (1) is what
    streaming in batches (more parts, more merges) costs."""
    order = "ORDER BY _topic, _partition, _offset"
    sizes = [int(n) for n in ch(
        "SELECT written_rows FROM system.query_log WHERE type = 2 AND query LIKE "
        f"'INSERT INTO `{database}`.%FORMAT Native%' ORDER BY event_time FORMAT TSV").split()]
    whole = dump_native(f"SELECT * FROM {database}.events {order}", work / "rows.native")
    one = timed_plain_inserts(database, "plain_one", [whole])
    result = {"plain_insert_clickhouse_cpu": one}
    if sum(sizes) == ch_count(f"{database}.events"):
        pieces, start = [], 0
        for i, n in enumerate(sizes):
            pieces.append(dump_native(f"SELECT * FROM {database}.events {order} LIMIT {start}, {n}",
                                      work / f"piece-{i}.native", block_rows=n))
            start += n
        result["plain_batches_clickhouse_cpu"] = timed_plain_inserts(database, "plain_batches", pieces)
        result["inserts"] = len(sizes)
    else:
        log(f"  the query log does not account for the rows (sizes {sizes}): no same-size reference")
    return result


def dump_native(query, path, block_rows=None):
    url = f"{CLICKHOUSE}/?query={urllib.parse.quote(query + ' FORMAT Native')}"
    if block_rows:
        url += f"&max_block_size={block_rows}"
    with urllib.request.urlopen(url, timeout=600) as resp, path.open("wb") as f:
        while chunk := resp.read(1 << 20):
            f.write(chunk)
    return path


def timed_plain_inserts(database, table, bodies):
    ch(f"CREATE TABLE {database}.{table} AS {database}.events")
    insert = urllib.parse.quote(f"INSERT INTO {database}.{table} FORMAT Native")
    with Servers() as servers:
        for body in bodies:
            with body.open("rb") as f:
                req = urllib.request.Request(f"{CLICKHOUSE}/?query={insert}", data=f, method="POST",
                                             headers={"Content-Length": str(body.stat().st_size)})
                urllib.request.urlopen(req, timeout=600).read()
        time.sleep(SETTLE_SECONDS)
    for body in bodies:
        body.unlink()
    rows = ch_count(f"{database}.{table}")
    log(f"  {len(bodies)} plain Native insert(s) of {rows} rows: ClickHouse cpu {servers.cpu['clickhouse']}s")
    return servers.cpu["clickhouse"]


def flame_graph(topic, events, work_root, svg):
    """One more (d) run with perf sampling the service's stacks, folded into an SVG by
    inferno. Skipped (with the reason) when either tool is missing."""
    for tool in ("perf", "inferno-collapse-perf", "inferno-flamegraph"):
        if not shutil.which(tool):
            log(f"  flame graph skipped: {tool} not installed")
            return False
    database = f"bench_{uuid.uuid4().hex[:8]}"
    work = work_root / database
    work.mkdir(parents=True)
    config = ingest_config(work, topic, ("clickhouse", "iceberg"), database)
    proc = subprocess.Popen([str(BIN), "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    data = work / "perf.data"
    perf = subprocess.Popen(["perf", "record", "-F", "199", "--call-graph", "dwarf,16384", "-o", str(data),
                             "-p", str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and not (ch_rows_held(database, "events") >= events
                                          and iceberg_rows(work / "catalog.db", f"{database}.events") >= events):
        time.sleep(0.2)
    perf.send_signal(signal.SIGINT)
    perf.wait(120)
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    ch(f"DROP DATABASE IF EXISTS {database}")
    script = subprocess.Popen(["perf", "script", "-i", str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    folded = subprocess.run(["inferno-collapse-perf"], stdin=script.stdout, capture_output=True, check=True).stdout
    script.wait()
    svg.write_bytes(subprocess.run(["inferno-flamegraph", "--title", "ingest -> ClickHouse + Iceberg (d)"],
                                   input=folded, capture_output=True, check=True).stdout)
    data.unlink()
    log(f"  flame graph: {svg}")
    return True


def run_drain(topic, events, variant="a"):
    with Servers() as servers:
        out, _, usage = run_child([str(DRAIN), "--brokers", KAFKA, "--topic", topic, "--count", str(events)])
    drained = json.loads(out.strip().splitlines()[-1])
    name = "bare rdkafka drain" + (", wide event" if variant != "a" else "")
    return measured(name, variant, events, drained["bytes"], drained["seconds"], usage, servers), drained["bytes"]


def run_baseline(variant, script, args, events, payload_bytes):
    path = ROOT / "bench/baselines" / script
    if not path.exists():
        log(f"  {variant}: {script} missing, skipped")
        return None
    with Servers() as servers:
        out, seconds, usage = run_child([PY, str(path)] + args, timeout=1800)
    report = json.loads(out.strip().splitlines()[-1])
    seconds = report.get("seconds", seconds)
    return measured(report.get("name", script), variant, events, payload_bytes, seconds, usage, servers, report)


def create_topic(name, partitions):
    subprocess.run([str(ROOT / "deploy/local/topic.sh"), name, str(partitions)], check=True,
                   stdout=subprocess.DEVNULL)


def produce(topic, count, rate=None, live_time=False, start_id=0, schema=EVENTS_SCHEMA, id_field="event_id"):
    args = [str(BIN), "produce", "--brokers", KAFKA, "--topic", topic, "--schema", str(schema),
            "--count", str(count), "--id-field", id_field, "--start-id", str(start_id)]
    if rate:
        args += ["--rate", str(rate), "-X", "linger.ms=5"]
    if live_time:
        args.append("--live-time")
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def latency_point(rate, max_age, seconds, work_root):
    """Produces at `rate` for `seconds` with live timestamps; a poller sees each id land in
    ClickHouse. Returns (p50, p99, achieved rate) in seconds and events/s."""
    topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
    create_topic(topic, 4)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    work = work_root / database
    work.mkdir(parents=True)
    config = ingest_config(work, topic, ("clickhouse",), database,
                           batch={"max_rows": 200000, "max_bytes": "64MiB", "max_age": max_age},
                           order_by=("event_id",))
    count = int(rate * seconds)
    proc = subprocess.Popen([str(BIN), "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    exists = f"SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'events'"
    while ch(exists).strip() != "1" and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # joined the group
    seen = {}
    stop = threading.Event()

    def poll():
        cursor = 0
        while not stop.is_set() and cursor < count:
            rows = ch(f"SELECT event_id, ts FROM {database}.events WHERE event_id >= {cursor} FORMAT TSV")
            now_ms = time.time() * 1000
            for line in rows.splitlines():
                eid, ts = line.split("\t")
                eid = int(eid)
                if eid not in seen:
                    seen[eid] = now_ms - int(ts)
            while cursor in seen:
                cursor += 1
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    t0 = time.time()
    produce(topic, count, rate=rate, live_time=True)
    achieved = count / (time.time() - t0)
    deadline = time.time() + 60
    while len(seen) < count and time.time() < deadline:
        time.sleep(0.2)
    stop.set()
    poller.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    ch(f"DROP DATABASE IF EXISTS {database}")
    latencies = sorted(seen.values())
    if len(latencies) < count:
        log(f"  latency: only {len(latencies)} of {count} events seen")
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000
    return q(0.50), q(0.99), achieved, len(latencies) == count


def median_of(runs, key):
    values = [r[key] for r in runs if r and key in r]
    return statistics.median(values) if values else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--python-events", type=int, default=200_000, help="event count for the slow Python baseline")
    p.add_argument("--wide-events", type=int, default=1_000_000, help="event count of the wide-event runs")
    p.add_argument("--skip-flame-graph", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latency-seconds", type=float, default=15)
    p.add_argument("--max-ages", default="250ms,1s,2s")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench/results"))
    a = p.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work_root = STATE / "bench" / stamp
    topic = f"bench-{stamp}"
    create_topic(topic, 4)
    log(f"preloading {a.events} events into {topic}")
    t0 = time.time()
    produce(topic, a.events)
    log(f"  preloaded in {time.time() - t0:.1f}s")
    py_topic = f"bench-py-{stamp}"
    create_topic(py_topic, 4)
    produce(py_topic, a.python_events)
    wide_topic = f"bench-wide-{stamp}"
    create_topic(wide_topic, 4)
    produce(wide_topic, a.wide_events, schema=WIDE_SCHEMA, id_field="order_id")

    runs = {v: [] for v in "abcdefvw"}
    payload_bytes = None
    for rep in range(a.repeats):
        log(f"repeat {rep + 1}/{a.repeats}")
        result, payload_bytes = run_drain(topic, a.events)
        runs["a"].append(result)
        for variant, sinks in (("b", ("clickhouse",)), ("c", ("iceberg",)), ("d", ("clickhouse", "iceberg"))):
            runs[variant].append(run_ingest(variant, sinks, topic, a.events, payload_bytes, work_root))
        runs["e"].append(run_baseline("e", "clickhouse_kafka_engine.py",
                                      ["--brokers", KAFKA, "--topic", topic, "--count", str(a.events),
                                       "--clickhouse-url", CLICKHOUSE, "--database", f"bench_e_{rep}_{stamp.replace('-', '_')}",
                                       "--timeout", "600"], a.events, payload_bytes))
        py_bytes = payload_bytes * a.python_events / a.events
        work = work_root / f"python-{rep}"
        work.mkdir(parents=True, exist_ok=True)
        runs["f"].append(run_baseline("f", "python_pipeline.py",
                                      ["--brokers", KAFKA, "--topic", py_topic, "--count", str(a.python_events),
                                       "--clickhouse-url", CLICKHOUSE, "--database", f"bench_f_{rep}_{stamp.replace('-', '_')}",
                                       "--catalog-db", str(work / "catalog.db"), "--warehouse", f"file://{work}/warehouse"],
                                      a.python_events, py_bytes))
        result, wide_bytes = run_drain(wide_topic, a.wide_events, "v")
        runs["v"].append(result)
        runs["w"].append(run_ingest("w", ("clickhouse", "iceberg"), wide_topic, a.wide_events, wide_bytes,
                                    work_root, shape=WIDE))

    summary = {}
    for v, rs in runs.items():
        rs = [r for r in rs if r]
        if not rs:
            continue
        summary[v] = {"name": rs[0]["name"], "events": rs[0]["events"]}
        for key in ("events_per_s", "mb_per_s", "cpu_s_per_million", "mb_json_per_cpu_s", "peak_rss_mib", "seconds",
                    "plain_insert_clickhouse_cpu", "plain_batches_clickhouse_cpu", "inserts"):
            summary[v][key] = median_of(rs, key)
        for key in ("duplicates", "missing"):
            if key in rs[0]:
                summary[v][key] = median_of(rs, key)
        summary[v]["server_cpu_seconds"] = {k: statistics.median(r["server_cpu_seconds"][k] for r in rs)
                                            for k in rs[0]["server_cpu_seconds"]}
    for v in summary:
        # The wide runs are measured against the drain of the wide topic.
        ceiling = summary["v" if v in "vw" and "v" in summary else "a"]["events_per_s"]
        summary[v]["ratio_to_a"] = round(summary[v]["events_per_s"] / ceiling, 3)
    flame = out / f"{stamp}-flame-d.svg"
    if not a.skip_flame_graph and not flame_graph(topic, a.events, work_root, flame):
        flame = None

    latency = []
    if not a.skip_latency and "d" in summary:
        max_rate = summary["d"]["events_per_s"]
        for max_age in a.max_ages.split(","):
            for share in (0.25, 0.5, 0.9):
                rate = int(max_rate * share)
                points = [latency_point(rate, max_age, a.latency_seconds, work_root) for _ in range(a.repeats)]
                entry = {"max_age": max_age, "share_of_max": share, "target_rate": rate,
                         "achieved_rate": round(statistics.median(pt[2] for pt in points)),
                         "p50_s": round(statistics.median(pt[0] for pt in points), 3),
                         "p99_s": round(statistics.median(pt[1] for pt in points), 3),
                         "complete": all(pt[3] for pt in points)}
                log(f"  latency max_age={max_age} rate={rate}: p50 {entry['p50_s']}s p99 {entry['p99_s']}s")
                latency.append(entry)

    result = {"stamp": stamp, "events": a.events, "repeats": a.repeats, "runs": runs,
              "summary": summary, "latency": latency, "machine": {"cores": os.cpu_count()},
              "flame_graph": flame.name if flame else None}
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=1))
    write_summary(result, out / f"{stamp}.md", out / f"{stamp}-latency.png")
    for name in ("latest.json", "latest.md", "latest-latency.png", "latest-flame-d.svg"):
        src = out / name.replace("latest", stamp)
        if src.exists():
            # latest.md links the plot and the flame graph under their latest names.
            (out / name).write_bytes(src.read_bytes().replace(f"{stamp}-".encode(), b"latest-"))
    print((out / f"{stamp}.md").read_text())


def write_summary(result, md_path, png_path):
    s = result["summary"]
    lines = [f"# Benchmark {result['stamp']}", "",
             f"{result['events']:,} events (~{s['a']['mb_per_s'] / max(s['a']['events_per_s'], 1) * 1e6:.0f} bytes of JSON each) "
             f"preloaded in 4 partitions; medians of {result['repeats']} runs on {result['machine']['cores']} cores. "
             "CPU is user+sys of the pipeline's own process; server CPU (ClickHouse, broker) is separate.", "",
             "| variant | events/s | MB/s | ratio to (a) | CPU s per M events | MB of JSON per CPU s | peak RSS MiB | server CPU s (ClickHouse / broker) | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for v in "abcdefvw":
        if v not in s:
            continue
        r = s[v]
        notes = []
        if "duplicates" in r:
            notes.append(f"duplicates {r['duplicates']}, missing {r['missing']}")
        if r["events"] != result["events"]:
            notes.append(f"{r['events']:,} events")
        if v == "w":
            notes.append("ratio to (v)")
        if r.get("plain_insert_clickhouse_cpu"):
            ours = r["server_cpu_seconds"].get("clickhouse")
            notes.append(f"ClickHouse CPU {ours} s against {r['plain_insert_clickhouse_cpu']} s for the same rows as one "
                         f"plain Native insert: {ours / r['plain_insert_clickhouse_cpu']:.2f}x")
            if r.get("plain_batches_clickhouse_cpu"):
                batches = r["plain_batches_clickhouse_cpu"]
                notes.append(f"{batches} s as plain inserts of our {r['inserts']:.0f} batch sizes without gate or "
                             f"ledger: batches {batches / r['plain_insert_clickhouse_cpu']:.2f}x, "
                             f"exactly-once bookkeeping {ours / batches:.2f}x")
        lines.append(f"| ({v}) {r['name']} | {r['events_per_s']:,.0f} | {r['mb_per_s']} | {r['ratio_to_a']} | "
                     f"{r['cpu_s_per_million']} | {r.get('mb_json_per_cpu_s')} | {r['peak_rss_mib']} | {r['server_cpu_seconds'].get('clickhouse')} / "
                     f"{r['server_cpu_seconds'].get('kafka')} | {'; '.join(notes)} |")
    if result["latency"]:
        lines += ["", "## Latency: event produced → visible in ClickHouse", "",
                  "| max_age | target rate (share of (d)) | achieved rate | p50 s | p99 s |", "|---|---:|---:|---:|---:|"]
        for e in result["latency"]:
            lines.append(f"| {e['max_age']} | {e['target_rate']:,} ({e['share_of_max']:.0%}) | {e['achieved_rate']:,} | "
                         f"{e['p50_s']} | {e['p99_s']} |" + ("" if e["complete"] else " (incomplete)"))
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for max_age in dict.fromkeys(e["max_age"] for e in result["latency"]):
                pts = [e for e in result["latency"] if e["max_age"] == max_age]
                ax.plot([e["achieved_rate"] for e in pts], [e["p99_s"] for e in pts], marker="o", label=f"max_age {max_age}")
            ax.set_xlabel("throughput (events/s)")
            ax.set_ylabel("p99 latency produce → visible in ClickHouse (s)")
            ax.set_title("The linger trade-off")
            ax.grid(True, alpha=0.3)
            ax.legend()
            fig.tight_layout()
            fig.savefig(png_path, dpi=110)
            lines += ["", f"![p99 latency against throughput]({png_path.name})"]
        except ImportError:
            lines += ["", "(matplotlib missing: no plot)"]
    if result.get("flame_graph"):
        lines += ["", "## Where (d) spends its CPU", "", f"![flame graph of (d)]({result['flame_graph']})"]
    md_path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
