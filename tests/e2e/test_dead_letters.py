"""Every record accounted for: good rows in each sink + dead letters = consumed, exactly,
through kill -9 and rebalances; no source position twice in the dead-letter topic; every
failure class there with the record's own key, value and headers and ours; and a
dead-letter topic that refuses writes for 30 s is waited for, losing and doubling
nothing."""
import json
import threading
import time

from confluent_kafka import Producer

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from conftest import clickhouse, create_topic, iceberg_count, unique, wait_until
from support.acl import allow_writes, deny_writes
from support.chaos_run import KAFKA_PROPERTIES, SESSION_TIMEOUT
from support.dead_letters import letters_only, read_letters, source_positions
from support.logs import full_log
from support.processes import kill9, wait_assignment
from support.stack import KAFKA
from test_avro import REGISTRY, produce_avro, registry_section
from test_schema_changes import NARROW, RETYPED, json_of, narrow, retyped

SCHEMA = """
fields:
  - {name: id, type: int64}
  - {name: name, type: string}
  - {name: raw_ts, type: "timestamp(s, UTC)"}
"""
MAX_MESSAGE_BYTES = 1024

# One bad record of each class in turn, every 100th record.
BAD = {
    "empty": lambda i: b"",
    "undecodable": lambda i: b'{"id": %d, "name": ' % i,
    "schema_mismatch": lambda i: json.dumps({"id": f"x{i}", "name": "n", "raw_ts": 0}).encode(),
    # Seconds past what Iceberg's microseconds (and a ClickHouse DateTime) can hold.
    "cannot_store": lambda i: json.dumps({"id": i, "name": "n", "raw_ts": 10 ** 14}).encode(),
    "too_large": lambda i: json.dumps({"id": i, "name": "x" * MAX_MESSAGE_BYTES, "raw_ts": 0}).encode(),
}
CLASSES = list(BAD)


def record(i):
    """(key, value, headers, class or None) of record i."""
    key = f"k{i}".encode()
    headers = [("origin", f"o{i}".encode())]
    if i % 100 == 37:
        cls = CLASSES[(i // 100) % len(CLASSES)]
        return key, BAD[cls](i), headers, cls
    return key, json.dumps({"id": i, "name": f"n{i}", "raw_ts": 1_700_000_000 + i}).encode(), headers, None


class Feed(threading.Thread):
    """Produces records [0, count) at about `rate` per second, keyed so partitions mix."""

    def __init__(self, topic, count, rate, start=0):
        super().__init__(daemon=True)
        self.topic, self.count, self.rate, self.start_id = topic, count, rate, start
        self.done = threading.Event()
        self.failure = None

    def run(self):
        try:
            p = Producer({"bootstrap.servers": KAFKA, "enable.idempotence": True, "linger.ms": 5})
            began = time.monotonic()
            for n, i in enumerate(range(self.start_id, self.start_id + self.count)):
                key, value, headers, _ = record(i)
                while True:
                    try:
                        p.produce(self.topic, value=value, key=key, headers=headers)
                        break
                    except BufferError:
                        p.poll(0.05)
                p.poll(0)
                if self.rate and n % 200 == 0:
                    ahead = n / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            assert p.flush(60) == 0, "records not delivered"
        except Exception as e:  # noqa: BLE001 -- reported by the test
            self.failure = e
        finally:
            self.done.set()


def route(setup, topic, batch=None):
    """The JSON route of these tests, into table `t` of both sinks."""
    return {"topics": [topic], "schema": str(setup.schema("s.yaml", SCHEMA)), "max_message_bytes": MAX_MESSAGE_BYTES,
            "clickhouse": {"table": "t", "order_by": ["id"]}, "iceberg": {"table": "t"},
            "batch": batch or {"max_rows": 5000, "max_age": "500ms"}}


def sink_counts(setup, table="t"):
    row = clickhouse(f"SELECT count() AS c, uniqExact(id) AS u FROM {setup.database}.{table}")[0]
    return int(row["c"]), int(row["u"]), iceberg_count(setup.catalog_uri, setup.warehouse,
                                                        f"{setup.namespace}.{table}")


def expected_classes(ids):
    return {f"k{i}".encode(): record(i)[3] for i in ids if record(i)[3]}


def rejected_metric(ingest, reason):
    """ingest_records_rejected_total{reason=...}, summed over routes."""
    _, body = ingest.get("/metrics")
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
               if line.startswith("ingest_records_rejected_total{") and f'reason="{reason}"' in line)


def check_letters(letters, topic, group, expected):
    """Each dead letter once, with the record's own key, value and headers and ours."""
    positions = source_positions(letters)
    assert len(positions) == len(set(positions)), \
        f"{len(positions) - len(set(positions))} source positions are in the dead-letter topic twice"
    by_key = {r["key"]: r for r in letters}
    assert sorted(by_key) == sorted(expected), "the dead letters are not exactly the bad records"
    for key, cls in expected.items():
        letter = by_key[key]
        h = letter["headers"]
        i = int(key[1:])
        assert (letter["value"] or b"") == record(i)[1], key
        assert letter["own"] == [("origin", f"o{i}".encode())], letter["own"]
        assert h["ingest.error.class"] == cls, (key, h)
        assert h["ingest.error"] and h["ingest.route"] and h["ingest.time"], h
        assert h["ingest.group"] == group and h["ingest.source.topic"] == topic, h
        assert "ingest.source.timestamp" in h, h


# The classes only a registry route can have, one in turn every 100th Avro record.
AVRO_CLASSES = ["unknown_schema", "incompatible_schema", "unreadable_schema"]
AVRO_TOTAL = 10_000


def produce_avro_mix(topic):
    """AVRO_TOTAL records of NARROW, every 100th bad: naming a schema id the registry
    lacks, written with RETYPED (no table reads it), or naming a Protobuf schema's id.
    Returns {key: class} of the bad ones."""
    client = SchemaRegistryClient({"url": REGISTRY, "timeout": 30})
    proto = 'syntax = "proto3"; package dl.e2e; message Other { int64 id = 1; }'
    proto_id = client.register_schema(f"{topic}-other", Schema(proto, "PROTOBUF"))
    bad, good, retyped_records = {}, [], []
    raw = Producer({"bootstrap.servers": KAFKA})
    for i in range(AVRO_TOTAL):
        if i % 100 != 37:
            good.append((narrow(i), NARROW))
            continue
        cls = AVRO_CLASSES[(i // 100) % len(AVRO_CLASSES)]
        bad[str(i).encode()] = cls
        if cls == "incompatible_schema":
            retyped_records.append((retyped(i), RETYPED))
        else:
            schema_id = 2147483632 if cls == "unknown_schema" else proto_id
            raw.produce(topic, key=str(i), value=b"\x00" + schema_id.to_bytes(4, "big") + b"\x02\x04")
    assert raw.flush(30) == 0
    produce_avro(topic, good + retyped_records)
    return bad


def test_good_rows_plus_dead_letters_equal_consumed_through_kill_9_and_rebalance(setup, capsys):
    total, partitions = 100_000, 4
    topic = create_topic(unique("dl_account"), partitions)
    dead = create_topic(unique("dl_account_dlq"), 2)
    r = route(setup, topic)
    # Iceberg commits every 3 s: the dead letters of a chunk are sent long before both
    # sinks hold its rows, so a kill or a rebalance re-reads records already dead-lettered.
    r["iceberg"]["batch"] = {"max_age": "3s", "max_rows": 50_000}
    # A registry route beside it, for the classes only such a route has.
    avro_topic = create_topic(unique("dl_account_avro"), 2)
    avro_bad = produce_avro_mix(avro_topic)
    avro = {"topics": [avro_topic], "format": "avro", "schema": str(setup.schema("m.avsc", json_of(NARROW))),
            "on_incompatible": "dead_letter", "clickhouse": {"table": "m", "order_by": ["id"]},
            "iceberg": {"table": "m"}, "batch": {"max_rows": 2000, "max_age": "500ms"}}
    config = setup.config([r, avro], dead_letter=dead, kafka_properties=KAFKA_PROPERTIES,
                          extra=registry_section())
    feed = Feed(topic, total, rate=4000)
    feed.start()
    a, b = setup.start(config), setup.start(config)
    a.wait_ready(60)
    b.wait_ready(60)
    wait_assignment([a, b], partitions + 2, "two instances share the partitions", timeout=60)
    wait_until("rows arrive", lambda: (sink_counts(setup)[0] > 15_000, sink_counts(setup)), timeout=120)
    kill9(a)
    time.sleep(SESSION_TIMEOUT / 2)
    c = setup.start(config)  # joins while the killed member's session still lives: a rebalance
    c.wait_ready(60)
    feed.done.wait(120)
    assert feed.failure is None, feed.failure
    ids = range(total)
    expected = expected_classes(ids)
    good = total - len(expected)
    avro_good = AVRO_TOTAL - len(avro_bad)

    def drained():
        ch, _, ice = sink_counts(setup)
        m_ch, _, m_ice = sink_counts(setup, "m")
        letters = letters_only(read_letters(dead))
        return (ch >= good and ice >= good and m_ch >= avro_good and m_ice >= avro_good
                and len(letters) >= len(expected) + len(avro_bad)), (ch, ice, m_ch, m_ice, len(letters))
    wait_until("every record in the sinks or the dead-letter topic", drained, timeout=300, interval=2)
    time.sleep(3)  # a late duplicate would show now
    codes = [b.stop(), c.stop()]
    assert codes == [0, 0], codes
    ch, unique_ids, ice = sink_counts(setup)
    avro_counts = sink_counts(setup, "m")
    everything = letters_only(read_letters(dead))
    letters = [x for x in everything if x["headers"]["ingest.source.topic"] == topic]
    avro_letters = [x for x in everything if x["headers"]["ingest.source.topic"] == avro_topic]
    skipped = sum(full_log(i).count("not sent again") for i in (a, b, c))
    with capsys.disabled():
        print(f"\n[dead letters] {total} consumed: clickhouse {ch} ({unique_ids} ids), iceberg {ice}, "
              f"dead letters {len(letters)} of {len(expected)} bad; avro {AVRO_TOTAL}: sinks {avro_counts}, "
              f"dead letters {len(avro_letters)} of {len(avro_bad)} bad; re-read dead letters not sent again "
              f"logged {skipped} times")
    assert (ch, unique_ids, ice) == (good, good, good)
    assert ch + len(letters) == total
    assert skipped > 0, "the kill and the rebalance were meant to re-read records already dead-lettered"
    check_letters(letters, topic, setup.group, expected)
    classes = {cls: sum(1 for v in expected.values() if v == cls) for cls in CLASSES}
    found = {cls: sum(1 for x in letters if x["headers"]["ingest.error.class"] == cls) for cls in CLASSES}
    assert found == classes
    assert avro_counts == (avro_good, avro_good, avro_good)
    positions = source_positions(avro_letters)
    assert len(positions) == len(set(positions)), "an Avro source position is in the dead-letter topic twice"
    assert {x["key"]: x["headers"]["ingest.error.class"] for x in avro_letters} == avro_bad
    assert all(x["headers"].get("ingest.schema.id") for x in avro_letters)


def test_a_dead_letter_topic_refusing_writes_for_30s_is_waited_for(setup):
    topic = create_topic(unique("dl_refused"), 2)
    dead = create_topic(unique("dl_refused_dlq"), 1)
    ingest = setup.start(setup.config([route(setup, topic, {"max_rows": 500, "max_age": "300ms"})],
                                      dead_letter=dead))
    ingest.wait_ready(60)
    first = Feed(topic, 2000, rate=None)
    first.run()
    expected = expected_classes(range(2000))
    wait_until("the first bad records are dead letters", lambda: (
        len(letters_only(read_letters(dead))) == len(expected), None), timeout=60)
    deny_writes(dead)
    try:
        second = Feed(topic, 2000, rate=None, start=2000)
        second.run()
        refused_at = time.monotonic()
        wait_until("/ready names the dead-letter topic", lambda: (
            "dead-letter topic" in ingest.get("/ready")[1], ingest.get("/ready")), timeout=30)
        time.sleep(max(0.0, 30 - (time.monotonic() - refused_at)))
        assert ingest.proc.poll() is None, "the service must wait, not stop\n" + ingest.logs()
        assert len(letters_only(read_letters(dead))) == len(expected), "nothing got through the refusal"
    finally:
        allow_writes(dead)
    expected = expected_classes(range(4000))
    good = 4000 - len(expected)
    wait_until("everything lands once the topic takes writes again", lambda: (
        sink_counts(setup)[0] >= good and len(letters_only(read_letters(dead))) >= len(expected),
        (sink_counts(setup), len(letters_only(read_letters(dead))))), timeout=120, interval=1)
    wait_until("ready again", lambda: (ingest.get("/ready")[0] == 200, ingest.get("/ready")), timeout=30)
    time.sleep(2)
    # Counted per route and reason, exactly.
    by_reason = {cls: rejected_metric(ingest, cls) for cls in CLASSES}
    assert by_reason == {cls: sum(1 for v in expected.values() if v == cls) for cls in CLASSES}, by_reason
    assert ingest.stop() == 0, ingest.logs()
    assert sink_counts(setup) == (good, good, good)
    check_letters(letters_only(read_letters(dead)), topic, setup.group, expected)
    assert "dead-letter topic unavailable; the route waits" in full_log(ingest)


def test_trailing_dead_letters_are_not_sent_again_after_restarts(setup):
    """A partition whose last records are bad: the sinks' positions stay at its last good
    record (ClickHouse's is its last row; a batch of bad records only is no write), so
    every start reads the bad ones again; they are in the dead-letter topic already."""
    topic = create_topic(unique("dl_trailing"), 1)
    dead = create_topic(unique("dl_trailing_dlq"), 1)
    config = setup.config([route(setup, topic, {"max_rows": 50, "max_age": "200ms"})], dead_letter=dead)
    good = [(f"k{i}".encode(), json.dumps({"id": i, "name": "n", "raw_ts": 0}).encode()) for i in range(100)]
    bad = [(f"b{i}".encode(), b"{broken %d" % i) for i in range(120)]
    p = Producer({"bootstrap.servers": KAFKA})
    for key, value in good + bad:
        p.produce(topic, value=value, key=key)
    assert p.flush(30) == 0
    for run in range(3):
        ingest = setup.start(config)
        ingest.wait_ready()
        wait_until(f"run {run}: rows and dead letters", lambda: (
            sink_counts(setup)[0] == 100 and len(letters_only(read_letters(dead))) >= 120,
            (sink_counts(setup), len(letters_only(read_letters(dead))))), timeout=60)
        time.sleep(1)
        assert ingest.stop() == 0, ingest.logs()
        letters = letters_only(read_letters(dead))
        assert len(letters) == 120, f"run {run}: {len(letters)} dead letters for 120 bad records"
        if run > 0:
            assert "not sent again" in full_log(ingest), f"run {run} did not read them again"
    assert sink_counts(setup) == (100, 100, 100)
