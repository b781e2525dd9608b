"""The end of every fault-injection test: each sink against the topic read back, in one
assertion that lists every difference with the logs.
"""
import time

from .clickhouse import verify_clickhouse
from .iceberg import verify_iceberg
from .kafka import end_offsets, read_topic
from .logs import log_report, overlaps


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
    if database is not None:
        found, seen = verify_clickhouse(database, topic, ends, expected, producer)
        problems += found
        notes += seen
    if iceberg_table is not None:
        found, seen = verify_iceberg(iceberg_table(), topic, ends, expected, producer, group)
        problems += found
        notes += seen

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
