"""An id set a sink holds against the ids produced, in words: counts, checksum, the
missing and duplicated ids with where the producer placed them, what the broker hands
a consumer at a missing offset.
"""
import collections

from readers_common import id_checksum

from .kafka import fetch_first


def compare_ids(sink, got, expected, producer=None):
    """'' when `got` is exactly `expected` (a set), else what differs: counts, checksum,
    the first 20 missing and duplicated ids with the (partition, offset) they were
    produced at."""
    counts = collections.Counter(got)
    dups = sorted(i for i, c in counts.items() if c > 1)
    missing = sorted(expected - counts.keys())
    extra = sorted(counts.keys() - expected)
    exp_sum, got_sum = id_checksum(expected), id_checksum(got)
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


def broker_probe(topic, producer, missing, n=5):
    """For the first missing ids: where a consumer fetching from their offset starts."""
    out = []
    for i in missing[:n]:
        pos = producer.delivered.get(i)
        if pos:
            out.append(f"fetch p{pos[0]}@{pos[1]} -> first offset {fetch_first(topic, pos[0], pos[1])}")
    return "; ".join(out)


def sink_difference(sink, got, expected, producer, topic, locate_duplicates):
    """compare_ids, and when they differ: where the first duplicated ids sit
    (`locate_duplicates(dups)`, the sink's own words) and what the broker hands a
    consumer at the first missing ids' offsets."""
    diff = compare_ids(sink, got, expected, producer)
    if diff:
        counts = collections.Counter(got)
        dups = sorted(i for i, c in counts.items() if c > 1)
        if dups:
            diff += locate_duplicates(dups)
        missing = sorted(expected - counts.keys())
        if missing:
            diff += f"\n  broker check of missing offsets: {broker_probe(topic, producer, missing)}"
    return diff
