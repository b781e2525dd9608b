"""Reading an Iceberg table with pyiceberg, and what it holds compared with the truth:
rows, the Kafka positions the snapshots record, where duplicated rows sit.
"""
import json

from .compare import sink_difference


def snapshot_total(table):
    snap = table and table.current_snapshot()
    if not snap or not snap.summary:
        return 0
    return int(snap.summary.additional_properties.get("total-records", 0))


def iceberg_ids(table):
    return table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()


def iceberg_offsets(table, group):
    """The Kafka positions the table records for `group` ({topic: {partition: next}}), read
    as the service reads them: per partition, the higher of the table properties
    `ingest.kafka-offsets.<group>/<topic>` and the newest snapshot summary carrying
    `ingest.kafka-offsets.<group>` (a summary holds only the partitions its commit wrote)."""
    from pyiceberg.table.snapshots import ancestors_of
    key = f"ingest.kafka-offsets.{group}"
    offsets = {}

    def merge(topic, partitions):
        held = offsets.setdefault(topic, {})
        for partition, next_offset in partitions.items():
            held[str(partition)] = max(int(next_offset), held.get(str(partition), 0))

    for name, value in table.properties.items():
        topic = name[len(key) + 1:] if name.startswith(key + "/") else ""
        if topic and "/" not in topic:
            merge(topic, json.loads(value))
    snap = table.current_snapshot()
    newest = snap and next((s for s in ancestors_of(snap, table.metadata)
                            if s.summary and key in s.summary.additional_properties), None)
    if newest:
        for topic, partitions in json.loads(newest.summary[key]).items():
            merge(topic, partitions)
    return offsets or None


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


def verify_iceberg(table, topic, ends, expected, producer, group):
    """(problems, notes): the table (None: missing) against the `expected` ids, the
    positions it records for `group` against the topic's end offsets `ends`."""
    if table is None:
        return ["Iceberg table missing"], []
    problems = []
    ids = iceberg_ids(table)
    notes = [f"Iceberg: {len(ids)} rows, {len(set(ids))} distinct, {len(list(table.snapshots()))} snapshots"]
    diff = sink_difference(
        "Iceberg events", ids, expected, producer, topic,
        lambda dups: f"\n  data files holding the first duplicated ids: {iceberg_files_holding(table, dups[:20])}")
    if diff:
        problems.append(diff + f"\n  last snapshots:\n{iceberg_history(table, group)}")
    offsets = iceberg_offsets(table, group)
    recorded = (offsets or {}).get(topic, {})
    want = {str(p): end for p, end in ends.items() if end > 0}
    if {k: int(v) for k, v in recorded.items()} != want:
        problems.append(f"Iceberg positions of {group} (properties and newest summary): {offsets}; "
                        f"the topic's end offsets: {want}")
    return problems, notes
