"""Records deleted from Kafka while one sink still needs them (issue 16, item 1).

One instance writes a 2-partition topic into ClickHouse and Iceberg (`batch: {max_rows:
1000}`). 2,000 records land in both; then ClickHouse becomes unreachable (the service
talks to it through a TCP proxy that the test closes: connections refused, while the
stack's server keeps serving other tests), 6,000 more records are produced at ~300/s:
Iceberg takes them all, the ClickHouse lane sheds. The records are then deleted from
Kafka up to each partition's end (AdminClient `delete_records`, what retention does) and
ClickHouse comes back: the records between ClickHouse's positions and the partitions'
new log start are gone for ClickHouse.

Before the fix the ClickHouse lane was moved to the log start without a word: ClickHouse
ended with ~2,500 of 8,000 rows, /ready 200, no ERROR, the group committed past the gap.
Now the gap is always reported: an ERROR naming the topic, the partition, the sink, the
sink's position and the log start, and `ingest_records_lost_total{route, sink}` counts
the offsets in the gap; by default (route `on_lost_records: fail`) the service then
exits non-zero and commits nothing past ClickHouse's positions; with `on_lost_records:
skip` (the operator's documented way out) it logs and counts the gap, and goes on.

What ClickHouse may hold: the first 2,000 records, plus (at most) a contiguous run of
records it had read before they were deleted and wrote once it was back (the write
under way when it went away); never a record past the gap, never a record twice.
"""
import collections
import re
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import create_topic, iceberg_count, load_iceberg_table, unique
from support.clickhouse import clickhouse, clickhouse_count, clickhouse_ledger
from support.iceberg import iceberg_ids
from support.kafka import BackgroundProducer
from support.logs import full_log, log_report, wait_or_report
from support.processes import alive, wait_ready_status
from support.stack import EVENTS, KAFKA
from support.tcp_proxy import TcpProxy, config_through

ROUTE = "lost_records"
PARTITIONS = 2
FIRST = 2_000          # written by both sinks before ClickHouse goes away
OUTAGE = 6_000         # produced while ClickHouse is unreachable
OUTAGE_RATE = 300      # per second
AFTER = 1_000          # produced once the gap has been dealt with
EXIT_WITHIN = 90       # seconds after ClickHouse is back (the fixed service: ~60 s or earlier)


# -- helpers ---------------------------------------------------------------------------

def route_for(topic, on_lost_records=None):
    route = {"name": ROUTE, "topics": [topic], "schema": str(EVENTS),
             "clickhouse": {"table": "events", "order_by": ["event_id"]},
             "iceberg": {"table": "events"},
             "batch": {"max_rows": 1000}}
    if on_lost_records:
        route["on_lost_records"] = on_lost_records
    return route


def metric_samples(ingest, name):
    """{frozenset of (label, value): value} of a metric on /metrics (None: no answer)."""
    status, body = ingest.get("/metrics")
    if status != 200:
        return None
    out = {}
    for line in body.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})?\s+(\S+)$", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            out[labels] = float(m.group(2))
    return out


def clickhouse_sink_label(ingest):
    """The `sink` label ClickHouse's rows are counted under in ingest_rows_written_total."""
    samples = metric_samples(ingest, "ingest_rows_written_total") or {}
    labels = [dict(k)["sink"] for k, v in samples.items()
              if dict(k).get("route") == ROUTE and "clickhouse" in dict(k).get("sink", "") and v > 0]
    assert len(labels) == 1, f"ingest_rows_written_total for route {ROUTE}: {samples}\n{ingest.logs()}"
    return labels[0]


def lost_metric(ingest, sink):
    """ingest_records_lost_total{route=ROUTE, sink=sink} (None: no answer, 0: not there)."""
    samples = metric_samples(ingest, "ingest_records_lost_total")
    if samples is None:
        return None
    return samples.get(frozenset({("route", ROUTE), ("sink", sink)}), 0.0)


def committed(group, topic):
    """The group's committed offsets of the topic ({partition: offset}, none left out)."""
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": group, "enable.auto.commit": False})
    try:
        for attempt in range(10):
            try:
                tps = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
                break
            except KafkaException:  # coordinator moving or loading: ask again
                if attempt == 9:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def log_starts(topic):
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": unique("probe"), "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


def delete_records_to_end(topic, ends):
    """Deletes every record below `ends` ({partition: offset}), as retention would."""
    admin = AdminClient({"bootstrap.servers": KAFKA})
    futures = admin.delete_records([TopicPartition(topic, p, end) for p, end in ends.items()])
    for f in futures.values():
        f.result(timeout=30)
    starts = log_starts(topic)
    assert starts == ends, f"log starts after delete_records: {starts}, wanted {ends}"
    return starts


def clickhouse_rows(db):
    """[(event_id, partition, offset)] of every row in ClickHouse."""
    return [(int(r["event_id"]), int(r["_partition"]), int(r["_offset"]))
            for r in clickhouse(f"SELECT event_id, _partition, _offset FROM {db}.events")]


def clickhouse_positions(db, topic):
    """ClickHouse's position per partition: the offset after its last row (rows or
    ledger, the higher)."""
    pos = {int(r["p"]): int(r["m"]) + 1 for r in clickhouse(
        f"SELECT _partition AS p, max(_offset) AS m FROM {db}.events WHERE _topic = '{topic}' GROUP BY p")}
    ledger = clickhouse_ledger(db)
    if isinstance(ledger, dict):
        for (t, p), nxt in ledger.items():
            if t == topic:
                pos[p] = max(pos.get(p, 0), nxt)
    return pos


def lost_lines(ingest, topic):
    """ERROR lines about lost records of the topic."""
    return [line for line in full_log(ingest).splitlines()
            if "ERROR" in line and topic in line and "lost" in line.lower()]


def names_partition(line, p):
    return re.search(rf"partition\W{{0,3}}{p}\b|\[{p}\]", line, re.IGNORECASE) is not None


class CommitWatch:
    """Samples the group's committed offsets against ClickHouse's positions: the
    committed offset of a partition must never pass what ClickHouse holds."""

    def __init__(self, setup, topic):
        self.setup, self.topic = setup, topic
        self.violations = []
        self.samples = 0
        self.last = None

    def sample(self):
        got = committed(self.setup.group, self.topic)   # first: ClickHouse only grows meanwhile
        pos = clickhouse_positions(self.setup.database, self.topic)
        self.samples += 1
        self.last = (got, pos)
        for p, off in got.items():
            if off > pos.get(p, 0):
                self.violations.append(f"partition {p}: committed {off}, ClickHouse at {pos.get(p, 0)}")


def produce(topic, count, start_id, rate=None):
    producer = BackgroundProducer(topic, count, start_id=start_id, rate=rate)
    producer.start()
    return producer


def sink_counts(setup):
    return (clickhouse_count(setup.database),
            iceberg_count(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events"))


def iceberg_id_list(setup):
    return iceberg_ids(load_iceberg_table(setup.catalog_uri, setup.warehouse, f"{setup.namespace}.events"))


def check_clickhouse_rows(setup, starts, new_ids=frozenset()):
    """ClickHouse against what it may hold: every row once; of the deleted records a
    contiguous prefix of each partition that holds the first FIRST ids (nothing past the
    gap); of the records after the deletion exactly `new_ids`. Returns (problems, gap
    per partition, ids held of the deleted records)."""
    rows = clickhouse_rows(setup.database)
    problems = []
    counts = collections.Counter(i for i, _, _ in rows)
    dups = sorted(i for i, c in counts.items() if c > 1)
    if dups:
        problems.append(f"{len(dups)} ids twice or more in ClickHouse, first: {dups[:10]}")
    old = [(i, p, o) for i, p, o in rows if o < starts[p]]
    new = {i for i, p, o in rows if o >= starts[p]}
    gap = {}
    for p in range(PARTITIONS):
        offsets = sorted({o for _, q, o in old if q == p})
        if offsets != list(range(len(offsets))):
            holes = sorted(set(range(offsets[-1] + 1)) - set(offsets))[:10] if offsets else []
            problems.append(f"partition {p}: ClickHouse's rows of the deleted records are not a prefix "
                            f"({len(offsets)} rows up to offset {offsets[-1] if offsets else None}, first missing "
                            f"offsets {holes}): a record past the gap was written")
        gap[p] = starts[p] - len(offsets)
    held_old = {i for i, _, _ in old}
    missing_first = sorted(set(range(FIRST)) - held_old)
    if missing_first:
        problems.append(f"{len(missing_first)} of the first {FIRST} ids missing from ClickHouse: {missing_first[:10]}")
    if new != set(new_ids):
        problems.append(f"ClickHouse holds {len(new)} records produced after the deletion, wanted {len(new_ids)} "
                        f"(missing {sorted(set(new_ids) - new)[:10]}, unexpected {sorted(new - set(new_ids))[:10]})")
    return problems, gap, held_old


def records_deleted_while_clickhouse_down(setup, proxy, on_lost_records, note):
    """The scenario up to ClickHouse being back: (topic, config, the running service,
    ClickHouse's sink label, the log starts after the deletion, the commit watch)."""
    topic = create_topic(unique("lost"), PARTITIONS)
    config = config_through(setup, proxy, [route_for(topic, on_lost_records)])
    ingest = setup.start(config)
    ingest.wait_ready()
    logs = lambda: log_report(setup.processes)  # noqa: E731

    first = produce(topic, FIRST, 0)
    first.finish()
    wait_or_report(f"{FIRST} in both sinks", lambda: (sink_counts(setup) == (FIRST, FIRST), sink_counts(setup)),
                   setup.processes, timeout=90)
    sink = clickhouse_sink_label(ingest)
    watch = CommitWatch(setup, topic)
    watch.sample()

    proxy.refuse()
    note(f"ClickHouse unreachable (connections refused) at {sink_counts(setup)}")
    outage = produce(topic, OUTAGE, FIRST, rate=OUTAGE_RATE)
    outage.join(OUTAGE / OUTAGE_RATE + 60)
    outage.finish()
    total = FIRST + OUTAGE

    def iceberg_took_all():
        assert alive(ingest), f"the service exited while ClickHouse was down:\n{logs()}"
        return sink_counts(setup)[1] == total, sink_counts(setup)
    wait_or_report(f"Iceberg to take all {total} while ClickHouse is down (a setup check: a failing sink must not "
                   f"stop the healthy one, issue 16 item 2)", iceberg_took_all, setup.processes, timeout=90)
    watch.sample()

    ends = {p: 0 for p in range(PARTITIONS)}
    for p, o in list(first.delivered.values()) + list(outage.delivered.values()):
        ends[p] = max(ends[p], o + 1)
    starts = delete_records_to_end(topic, ends)
    note(f"records deleted up to {ends}; ClickHouse positions {clickhouse_positions(setup.database, topic)}; "
         f"counts {sink_counts(setup)}")
    proxy.forward()
    note("ClickHouse reachable again")
    return topic, config, ingest, sink, starts, watch


def notes(capsys):
    started = time.time()

    def note(text):
        with capsys.disabled():
            print(f"\n[lost-records +{time.time() - started:.0f}s] {text}", flush=True)
    return note


# -- the tests --------------------------------------------------------------------------

def test_records_deleted_before_clickhouse_wrote_them_stop_the_service(setup, capsys):
    """Default policy (`on_lost_records: fail`): the gap stops the service with an ERROR
    and the lost-records count, nothing is committed past ClickHouse's positions; then
    the documented recovery (`on_lost_records: skip`, restart) lets new records into both
    sinks exactly once. Before: ClickHouse silently ended with ~2,500 of 8,000 rows,
    /ready 200, no ERROR."""
    note = notes(capsys)
    proxy = TcpProxy.to_url(setup.clickhouse.url).start()
    try:
        topic, config, ingest, sink, starts, watch = records_deleted_while_clickhouse_down(setup, proxy, None, note)
        logs = lambda: log_report(setup.processes)  # noqa: E731
        back = time.time()
        seen_lost = 0.0
        while alive(ingest) and time.time() - back < EXIT_WITHIN:
            watch.sample()
            seen_lost = max(seen_lost, lost_metric(ingest, sink) or 0.0)
            time.sleep(1)
        ch_rows = clickhouse_count(setup.database)
        assert not alive(ingest), \
            f"the service kept running {EXIT_WITHIN}s after ClickHouse was back, past records deleted before " \
            f"ClickHouse wrote them (ClickHouse holds {ch_rows} rows of {FIRST + OUTAGE}; /ready " \
            f"{ingest.get('/ready')[0]}; ingest_records_lost_total{{sink={sink}}} {lost_metric(ingest, sink)}; " \
            f"ERROR lines: {[l for l in full_log(ingest).splitlines() if 'ERROR' in l][-5:]}; commits past " \
            f"ClickHouse's positions: {watch.violations[-2:] or 'none seen'})\n{logs()}"
        code = ingest.proc.returncode
        note(f"exited with {code} {time.time() - back:.0f}s after ClickHouse was back; ClickHouse {ch_rows} rows; "
             f"ingest_records_lost_total seen {seen_lost}; {watch.samples} commit samples, last {watch.last}")
        assert code != 0, f"exit code {code} after records were lost\n{logs()}"
        lines = lost_lines(ingest, topic)
        assert lines, f"no ERROR naming the topic {topic} and the lost records\n{logs()}"
        assert any(names_partition(l, p) for l in lines for p in range(PARTITIONS)), \
            f"no ERROR about lost records names the partition: {lines}\n{logs()}"
        problems, gap, held = check_clickhouse_rows(setup, starts)
        assert not problems, "ClickHouse after the stop:\n" + "\n".join(problems) + f"\n{logs()}"
        assert not watch.violations, \
            f"the group committed past ClickHouse's positions: {watch.violations[:5]}\n{logs()}"
        if seen_lost:  # sampled while it ran: it may exit before a scrape sees the count
            assert seen_lost <= sum(gap.values()), \
                f"ingest_records_lost_total {seen_lost} is more than the gap {gap}\n{logs()}"

        # The documented way out: accept the loss for this route, restart.
        second = setup.start(config_through(setup, proxy, [route_for(topic, "skip")]))
        second.wait_ready()

        def gap_reported():
            assert alive(second), f"the restart with on_lost_records: skip exited:\n{logs()}"
            lost = lost_metric(second, sink) or 0.0
            return bool(lost_lines(second, topic)) and lost > 0, (lost, lost_lines(second, topic)[-2:])
        lost = wait_or_report("the restart to log and count the gap", gap_reported, setup.processes, timeout=90)
        after = produce(topic, AFTER, FIRST + OUTAGE)
        after.finish()
        want = (len(held) + AFTER, FIRST + OUTAGE + AFTER)
        wait_or_report(f"both sinks at {want}", lambda: (all((n or 0) >= w for n, w in zip(sink_counts(setup), want)),
                                                         sink_counts(setup)), setup.processes, timeout=120)
        time.sleep(2)
        assert second.stop() == 0, logs()
        problems, _, _ = check_clickhouse_rows(setup, starts, set(range(FIRST + OUTAGE, FIRST + OUTAGE + AFTER)))
        assert not problems, "ClickHouse after the recovery:\n" + "\n".join(problems) + f"\n{logs()}"
        ids = iceberg_id_list(setup)
        assert len(ids) == len(set(ids)) == FIRST + OUTAGE + AFTER and set(ids) == set(range(FIRST + OUTAGE + AFTER)), \
            f"Iceberg: {len(ids)} rows, {len(set(ids))} distinct\n{logs()}"
        note(f"recovery: gap reported ({lost}), ClickHouse {len(held)} + {AFTER}, Iceberg {len(ids)}")
    finally:
        proxy.stop()


def test_records_deleted_before_clickhouse_wrote_them_are_reported_when_skipped(setup, capsys):
    """`on_lost_records: skip` from the start: the service reports the gap (an ERROR
    naming it, ingest_records_lost_total counting its offsets) and keeps running,
    /ready 200; ClickHouse then takes the records produced after the deletion. Before:
    the same end state in ClickHouse but no ERROR and nothing counted."""
    note = notes(capsys)
    proxy = TcpProxy.to_url(setup.clickhouse.url).start()
    try:
        topic, config, ingest, sink, starts, watch = records_deleted_while_clickhouse_down(setup, proxy, "skip", note)
        logs = lambda: log_report(setup.processes)  # noqa: E731
        after = produce(topic, AFTER, FIRST + OUTAGE)
        after.finish()
        new_ids = set(range(FIRST + OUTAGE, FIRST + OUTAGE + AFTER))

        def caught_up():
            assert alive(ingest), f"the service exited with on_lost_records: skip:\n{logs()}"
            watch.sample()
            ch = {int(r["event_id"]) for r in clickhouse(
                f"SELECT event_id FROM {setup.database}.events WHERE event_id >= {FIRST + OUTAGE}")}
            return ch == new_ids and sink_counts(setup)[1] == FIRST + OUTAGE + AFTER, \
                (len(ch), sink_counts(setup))
        wait_or_report("the new records in both sinks", caught_up, setup.processes, timeout=120, interval=1)
        wait_ready_status(ingest, 200, 60, "/ready 200 with on_lost_records: skip")
        problems, gap, held = check_clickhouse_rows(setup, starts, new_ids)
        lost = lost_metric(ingest, sink)
        lines = lost_lines(ingest, topic)
        note(f"ClickHouse {len(held)} + {AFTER} rows, gap {gap}, ingest_records_lost_total {lost}, "
             f"{len(lines)} ERROR lines about it")
        assert not problems, "ClickHouse:\n" + "\n".join(problems) + f"\n{logs()}"
        assert lost == sum(gap.values()), \
            f"ingest_records_lost_total{{route={ROUTE},sink={sink}}} is {lost}, the gap is {gap} " \
            f"(offsets ClickHouse never got)\n{metric_samples(ingest, 'ingest_records_lost_total')}\n{logs()}"
        assert lines, f"no ERROR naming the topic {topic} and the lost records\n{logs()}"
        for p in range(PARTITIONS):
            if gap[p]:
                assert any(names_partition(l, p) for l in lines), \
                    f"no ERROR about lost records names partition {p}: {lines}\n{logs()}"
        assert ingest.stop() == 0, logs()
        ids = iceberg_id_list(setup)
        assert len(ids) == len(set(ids)) == FIRST + OUTAGE + AFTER, \
            f"Iceberg: {len(ids)} rows, {len(set(ids))} distinct\n{logs()}"
    finally:
        proxy.stop()
