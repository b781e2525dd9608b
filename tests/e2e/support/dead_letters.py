"""Reading a dead-letter topic back whole, as an operator's tool would: committed records
only (`read_committed`, so a replay's aborted transaction is not there), every
partition to its end offset as it is now (not "until nothing arrives for a while")."""
import time

from .stack import KAFKA


def read_letters(topic, timeout=60):
    """Every committed record of `topic`, as dicts: partition, offset, key, value,
    headers (last value per key), own (the record's own headers: not ingest.*),
    receipt (True for a replay's receipt)."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": "dead-letter-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        open_ = [TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items() if hi > lo]
        out = []
        if not open_:
            return out
        consumer.assign(open_)
        deadline = time.monotonic() + timeout
        remaining = {tp.partition for tp in open_}
        while remaining:
            assert time.monotonic() < deadline, f"reading {topic} back took over {timeout}s"
            m = consumer.poll(0.2)
            if m is None:
                for tp in consumer.position([TopicPartition(topic, p) for p in list(remaining)]):
                    if tp.offset >= ends[tp.partition][1]:
                        remaining.discard(tp.partition)
                continue
            if m.error():
                continue
            headers = {}
            own = []
            for k, v in m.headers() or []:
                if k.startswith("ingest.") and k != "ingest.replay.of":
                    headers[k] = v.decode() if v is not None else None
                else:
                    own.append((k, v))
            out.append({"partition": m.partition(), "offset": m.offset(), "key": m.key(), "value": m.value(),
                        "headers": headers, "own": own, "receipt": "ingest.receipt.of" in headers})
            if m.offset() + 1 >= ends[m.partition()][1]:
                remaining.discard(m.partition())
        return out
    finally:
        consumer.close()


def letters_only(records):
    """The dead letters among what `read_letters` returned (receipts left out)."""
    return [r for r in records if not r["receipt"]]


def source_positions(letters):
    return [(r["headers"]["ingest.source.topic"], int(r["headers"]["ingest.source.partition"]),
             int(r["headers"]["ingest.source.offset"])) for r in letters]
