#!/usr/bin/env python3
"""Baseline (e) of `make bench`: ClickHouse's own Kafka table engine + a materialized view.

What a ClickHouse 18.16 user writes to load a topic of JSON events into the same MergeTree
table that `ingest` creates (DDL from `ingest dry-run --sink clickhouse --option server_version=18.16.1`,
route schemas/examples/events.yaml, order_by [event_type, ts]):

  1. the MergeTree target table,
  2. a Kafka engine table reading the topic (one String column per message, see below),
  3. a materialized view that parses each message into the target's columns.

Then it waits until the target holds --count rows (and --count distinct event_ids) or
nothing arrived for --stall seconds, prints ONE JSON object as its last stdout line, and
drops the Kafka table and the view (nothing is left consuming; the target table stays).

Why the Kafka table has one raw String column and not JSONEachRow: 18.16's JSONEachRow
cannot read a JSON object into a Tuple (`expected [`) nor into a String (`expected opening
quote`), and `device` is a struct. JSONAsString and input_format_import_nested_json came
years later. So the raw message is read as one TabSeparated field (kafka_row_delimiter
'\\n', since 18.16 concatenates messages) and the view takes it apart with visitParam*
functions; `ts` (RFC 3339 string) becomes Int64 epoch milliseconds like ingest writes it
on 18.16. (TabSeparated unescapes backslash sequences: fine for the generator's events,
which contain none; a JSON string with an escaped quote would break this setup.)

Why offsets are committed before the table is created: 18.16's Kafka engine has no
setting for auto.offset.reset and librdkafka's default is `latest`, so a new consumer
group would skip everything already in the topic. The script commits the low watermark
of every partition for the fresh group first (what `kafka-consumer-groups
--reset-offsets --to-earliest` does), so the engine starts at the beginning.

What the 18.16 engine does with this setup (measured on the local stack, Tansu, 4 partitions;
details in bench/baselines/README.md):
  * kafka_num_consumers = 1 (default here): exactly once on a preloaded 200k topic. It loses
    ONE message per consumer each time a stream is cut by stream_flush_interval_ms (7.5 s)
    while data keeps coming: the read buffer has already polled the next message (the TSV
    reader needs the '\n' delimiter that comes with it), the stream ends, and the commit of
    the consumer's position covers that message (2M preloaded: 1-2 lost; tailing 5k ev/s for
    40 s: 3 lost, one per cut). No setting of 18.16 avoids it.
  * kafka_num_consumers > 1: the consumers join the group one after another; whatever the
    first one read before the rebalance is read again by the new owner (offsets are
    committed only when a stream ends): 200k events became 400k rows (every event twice).
    --group-wait (default) creates the view only once the broker reports the group STABLE,
    which avoided it in 3 of 4 runs with 2 consumers; with 1 consumer there is no such race.
  * Without the view's WHERE raw != '' (see MV_DDL) the phantom empty row fails the insert
    after the offsets were committed: 200k events -> 100k rows with 2 consumers, 150001 with
    4, and nothing more ever arrives (all committed): the "took 8686 rows (6942 distinct) out
    of 20000, then stopped" seen before.
  * A new group starts at the END of the topic unless its offsets are set first (above).

Usage:
  python clickhouse_kafka_engine.py --brokers 127.0.0.1:9092 --topic T --count N \\
      --clickhouse-url http://127.0.0.1:8123 --database bench_e [--timeout 600] \\
      [--stall 30] [--num-consumers 1] [--max-block-size N] [--group-wait 30] [--keep]
Progress goes to stderr; the report (last stdout line):
  {"variant":"e","name":"ClickHouse Kafka engine + MV","events":N,"rows":..,"distinct":..,
   "duplicates":rows-distinct,"missing":N-distinct,"seconds":MV creation -> last progress,
   "server_cpu_seconds":clickhouse-server utime+stime over that span,"stalled":bool, ...}
"""
import os as _os
import sys as _sys
_sys.path.insert(0, _os.path.dirname(_os.path.abspath(__file__)))
from cli import baseline_arguments  # noqa: E402
from events_table import events_ddl  # noqa: E402
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

STATE = Path(os.environ.get("STACK_STATE", "/var/tmp/ingest-stack"))



KAFKA_DDL = """CREATE TABLE `{db}`.`{table}` (`raw` String)
ENGINE = Kafka SETTINGS
    kafka_broker_list = '{brokers}',
    kafka_topic_list = '{topic}',
    kafka_group_name = '{group}',
    kafka_format = 'TabSeparated',
    kafka_row_delimiter = '\\n',
    kafka_num_consumers = {consumers}{extra}"""

# JSON null -> NULL for the nullable columns; everything else straight from the message.
# WHERE raw != '': 18.16's Kafka read buffer emits the row delimiter before a message that
# arrives after a poll came back empty (500 ms), and the TabSeparated reader turns that into
# a phantom empty row; without the filter CAST('' AS Decimal) fails the whole insert
# ("Attempt to read after eof: while pushing to view") AFTER the offsets were committed.
MV_DDL = r"""CREATE MATERIALIZED VIEW `{db}`.`{view}` TO `{db}`.`events` AS
SELECT
    visitParamExtractInt(raw, 'event_id') AS event_id,
    toInt64(toUnixTimestamp(parseDateTimeBestEffort(visitParamExtractString(raw, 'ts')))) * 1000
      + toInt64(substring(concat(extract(visitParamExtractString(raw, 'ts'), '\\.(\\d+)'), '000'), 1, 3)) AS ts,
    visitParamExtractString(raw, 'event_type') AS event_type,
    visitParamExtractInt(raw, 'user_id') AS user_id,
    visitParamExtractString(raw, 'session_id') AS session_id,
    if(visitParamExtractRaw(raw, 'country') = 'null', CAST(NULL AS Nullable(String)),
       visitParamExtractString(raw, 'country')) AS country,
    visitParamExtractString(raw, 'url') AS url,
    if(visitParamExtractRaw(raw, 'duration_ms') = 'null', CAST(NULL AS Nullable(Int32)),
       toInt32(visitParamExtractInt(raw, 'duration_ms'))) AS duration_ms,
    if(visitParamExtractRaw(raw, 'revenue') = 'null', CAST(NULL AS Nullable(Decimal(12, 2))),
       CAST(visitParamExtractRaw(raw, 'revenue') AS Decimal(12, 2))) AS revenue,
    extractAll(visitParamExtractRaw(raw, 'tags'), '"([^"]*)"') AS tags,
    tuple(
      visitParamExtractString(visitParamExtractRaw(raw, 'device'), 'device'),
      if(visitParamExtractRaw(visitParamExtractRaw(raw, 'device'), 'os_version') = 'null',
         CAST(NULL AS Nullable(String)), visitParamExtractString(visitParamExtractRaw(raw, 'device'), 'os_version')),
      if(visitParamExtractRaw(visitParamExtractRaw(raw, 'device'), 'screen_width') = 'null',
         CAST(NULL AS Nullable(Int32)), toInt32(visitParamExtractInt(visitParamExtractRaw(raw, 'device'), 'screen_width')))
    ) AS device,
    toDate(visitParamExtractString(raw, 'event_date')) AS event_date
FROM `{db}`.`{kafka}`
WHERE raw != ''"""


def log(*args):
    print(time.strftime("%H:%M:%S"), "[e]", *args, file=sys.stderr, flush=True)


class ClickHouse:
    def __init__(self, url):
        self.url = url.rstrip("/") + "/"

    def __call__(self, sql, timeout=60):
        req = urllib.request.Request(self.url, data=sql.encode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read().decode().strip()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ClickHouse rejected {sql[:120]!r}: {e.read().decode()[:500]}") from None


def server_pid():
    """clickhouse-server's pid: the stack's pid file, else pgrep."""
    try:
        pid = int((STATE / "clickhouse/clickhouse.pid").read_text().strip())
        if b"clickhouse-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (OSError, ValueError):
        pass
    out = subprocess.run(["pgrep", "-o", "-f", "clickhouse-server"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


def proc_cpu(pid):
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def reset_group_to_earliest(brokers, topic, group):
    """Commit each partition's low watermark for `group` (the engine would start at the end)."""
    probe = Consumer({"bootstrap.servers": brokers, "group.id": group + "-probe", "enable.auto.commit": False})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        if not parts:
            raise RuntimeError(f"topic {topic} not found or has no partitions")
        offsets = [TopicPartition(topic, p, probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0])
                   for p in sorted(parts)]
    finally:
        probe.close()
    admin = AdminClient({"bootstrap.servers": brokers})
    for fut in admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)]).values():
        fut.result(timeout=10)
    return offsets


def committed_offsets(brokers, group):
    try:
        admin = AdminClient({"bootstrap.servers": brokers})
        fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
        return {tp.partition: tp.offset for tp in fut.result(timeout=10).topic_partitions}
    except Exception as e:  # diagnostics only
        log(f"could not read committed offsets: {e}")
        return None


def wait_group_stable(brokers, group, limit):
    """Waits until the broker reports the group STABLE (all of the engine's consumers joined
    and assigned), then one more second. Returns the last state seen."""
    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.monotonic() + limit
    state = None
    while time.monotonic() < deadline:
        try:
            state = admin.describe_consumer_groups([group])[group].result(timeout=5).state
        except Exception as e:  # group not known yet
            state = type(e).__name__
        if state == ConsumerGroupState.STABLE:
            time.sleep(1)
            break
        time.sleep(0.25)
    return getattr(state, "name", state)


def kafka_log_lines(since_bytes):
    """Error/warning lines of the server log written during the run that mention Kafka."""
    path = STATE / "clickhouse/log/clickhouse-server.log"
    try:
        with open(path, "rb") as f:
            f.seek(since_bytes)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines()
            if ("<Error>" in line or "<Warning>" in line) and ("Kafka" in line or "rdk" in line)]


def log_size():
    try:
        return (STATE / "clickhouse/log/clickhouse-server.log").stat().st_size
    except OSError:
        return 0


def main():
    p = baseline_arguments(__doc__, "events preloaded in the topic")
    p.add_argument("--timeout", type=float, default=600, help="overall limit in seconds")
    p.add_argument("--stall", type=float, default=30, help="give up after this many seconds without new rows")
    p.add_argument("--settle", type=float, default=3,
                   help="after reaching --count, keep watching this long for late (duplicate) rows")
    p.add_argument("--num-consumers", type=int, default=1,
                   help="kafka_num_consumers (default 1: with more, 18.16 re-reads whatever was read before the "
                        "join rebalance)")
    p.add_argument("--max-block-size", type=int, default=0, help="kafka_max_block_size (0: server's max_block_size)")
    p.add_argument("--group-wait", type=float, default=30,
                   help="before creating the view, wait up to this long for the engine's consumer group to be "
                        "STABLE (0: create it at once; with >1 consumer the join rebalance then duplicates rows)")
    p.add_argument("--keep", action="store_true", help="leave the Kafka table and the view in place")
    a = p.parse_args()

    ch = ClickHouse(a.clickhouse_url)
    db, run = a.database, uuid.uuid4().hex[:8]
    kafka_table, view = f"kafka_events_{run}", f"events_mv_{run}"
    group = f"bench-e-{a.database}-{run}"
    version = ch("SELECT version()")
    log(f"ClickHouse {version}, topic {a.topic}, group {group}, {a.num_consumers} consumer(s)")

    ch(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    ch(events_ddl(db))
    before = int(ch(f"SELECT count() FROM `{db}`.`events`"))
    if before:
        log(f"warning: {db}.events already holds {before} rows; counting only new ones is not possible, "
            "use a fresh --database")
    start_offsets = reset_group_to_earliest(a.brokers, a.topic, group)
    log("group starts at " + ", ".join(f"p{tp.partition}@{tp.offset}" for tp in start_offsets))

    pid = server_pid()
    log_from = log_size()
    extra = f",\n    kafka_max_block_size = {a.max_block_size}" if a.max_block_size else ""
    ch(KAFKA_DDL.format(db=db, table=kafka_table, brokers=a.brokers, topic=a.topic, group=group,
                        consumers=a.num_consumers, extra=extra))
    t_table = time.monotonic()
    group_state = None
    if a.group_wait > 0:
        group_state = wait_group_stable(a.brokers, group, a.group_wait)
        log(f"group {group_state} after {time.monotonic() - t_table:.1f}s; creating the view")
    cpu0 = proc_cpu(pid)
    t0 = time.monotonic()
    ch(MV_DDL.format(db=db, view=view, kafka=kafka_table))  # streaming starts once a view is attached

    rows, last_rows = 0, 0
    last_progress, cpu_at_progress = t0, cpu0
    distinct = None
    reached_at = None
    stalled = False
    timeline = []  # (seconds, rows) at each change, for the report
    try:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            rows = int(ch(f"SELECT count() FROM `{db}`.`events`")) - before
            if rows != last_rows:
                last_rows, last_progress, cpu_at_progress = rows, now, proc_cpu(pid)
                timeline.append((round(now - t0, 2), rows))
                log(f"{now - t0:7.2f}s  {rows} rows")
            if reached_at is None and rows >= a.count:
                # rows can exceed count with duplicates while some events are still missing
                distinct = int(ch(f"SELECT uniqExact(event_id) FROM `{db}`.`events`"))
                if distinct >= a.count:
                    reached_at = now
            if reached_at is not None and now - max(reached_at, last_progress) >= a.settle:
                break
            if now - last_progress >= a.stall:
                stalled = reached_at is None
                break
            if now - t0 >= a.timeout:
                stalled = True
                log("timeout")
                break
    finally:
        offsets = committed_offsets(a.brokers, group)
        cpu_end = proc_cpu(pid)
        if not a.keep:
            ch(f"DROP TABLE IF EXISTS `{db}`.`{view}`")
            ch(f"DROP TABLE IF EXISTS `{db}`.`{kafka_table}`")

    rows = int(ch(f"SELECT count() FROM `{db}`.`events`")) - before
    distinct = int(ch(f"SELECT uniqExact(event_id) FROM `{db}`.`events`"))
    in_range = int(ch(f"SELECT uniqExact(event_id) FROM `{db}`.`events` WHERE event_id >= 0 AND event_id < {a.count}"))
    parts = int(ch(f"SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'events' AND active"))
    problems = kafka_log_lines(log_from)
    seconds = last_progress - t0
    report = {
        "variant": "e",
        "name": "ClickHouse Kafka engine + MV",
        "events": a.count,
        "rows": rows,
        "distinct": distinct,
        "duplicates": rows - distinct,
        "missing": a.count - in_range,
        "seconds": round(seconds, 3),
        "seconds_incl_group_join": round(last_progress - t_table, 3),
        "server_cpu_seconds": round(cpu_at_progress - cpu0, 2),
        "server_cpu_seconds_incl_wait": round(cpu_end - cpu0, 2),
        "stalled": stalled,
        "clickhouse_version": version,
        "kafka_num_consumers": a.num_consumers,
        "group_state_before_view": group_state,
        "inserts": len(timeline),
        "parts": parts,
        "committed_offsets": sum(offsets.values()) if offsets else None,
        "server_log_kafka_errors": len(problems),
    }
    if problems:
        report["first_kafka_error"] = problems[0][:300]
    if seconds > 0:
        report["rows_per_s"] = round(rows / seconds)
    log("timeline (s, rows): " + " ".join(f"{t}:{r}" for t, r in timeline[:40]))
    for line in problems[:5]:
        log("server log: " + line[:300])
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
