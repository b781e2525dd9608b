"""The ground truth the sinks are compared with: what the broker holds.

Events are produced as users produce them: an idempotent producer with linger and
batching, many records per batch, so consumers resume in the middle of batches; every
acknowledgement is kept, the topic is read back from offset 0 and checked against them.
"""
import datetime
import json
import os
import threading
import time
import uuid

from .stack import KAFKA

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


def read_messages(topic, expected, timeout=60, linger=0.0):
    """The first `expected` messages of `topic` (fewer when they do not come within
    `timeout` s) for a new consumer group from the start; then `linger` s more of reading,
    where anything more would be a message sent twice."""
    from confluent_kafka import Consumer
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": f"reader_{uuid.uuid4().hex[:10]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out, deadline = [], time.time() + timeout
    while len(out) < expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    extra_deadline = time.time() + linger
    while time.time() < extra_deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    consumer.close()
    return out
