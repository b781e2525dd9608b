//! Where the Iceberg sink keeps its Kafka positions, and reading them back.
//!
//! Every commit of the sink records them twice, in the same catalog commit as its data:
//! - table properties `ingest.kafka-offsets.<group>/<topic>` = `{"<partition>": next}`.
//!   Properties belong to the table, not to a snapshot, so they outlive compactions by
//!   other engines (their snapshots lack our key) and `expire_snapshots`. One key per
//!   topic keeps each value small (a few bytes per partition);
//! - the snapshot summary key `ingest.kafka-offsets.<group>` = `{topic: {partition: next}}`,
//!   the positions of the partitions that commit wrote only (all of them would grow the
//!   metadata by partitions × snapshots). Versions before the properties wrote every
//!   position there, and read only the newest summary.
//!
//! Reading takes, per partition, the higher of the properties and the newest summary
//! carrying the key: the properties hold every position this version wrote, the
//! summary adds what a table written by an older version (or an older instance during a
//! rolling upgrade) recorded only there. Nothing relies on one summary holding every
//! partition. A value that does not parse is an error, never "no position": starting
//! from scratch would write every record again.

use std::collections::{BTreeMap, HashMap};

use iceberg::table::Table;

use ingest_sink_api::OffsetMap;

/// The snapshot summary key under which a consumer group's positions are stored; the
/// group's table properties are this key, `/`, and the topic. (The stored name keeps
/// "offsets": tables in use hold it.)
pub fn positions_key(group: &str) -> String {
    format!("ingest.kafka-offsets.{group}")
}

/// The table property holding one topic's positions. Kafka topic names cannot contain
/// `/`, so the group's keys are told apart from those of a group named `<group>/...`.
pub fn property_key(key: &str, topic: &str) -> String {
    format!("{key}/{topic}")
}

/// The positions the table records for the group whose summary key is `key`: the table
/// properties merged with the newest snapshot summary carrying the key (walking back
/// from the current snapshot: maintenance snapshots written by other engines lack it).
/// Older summaries are not read: the newest one shadows them (the documented repair of
/// a recreated topic relies on that), and what they held is in the properties since
/// the first commit of this version.
pub fn recorded_positions(table: &Table, key: &str) -> Result<OffsetMap, String> {
    let mut positions = from_properties(table, key)?;
    if let Some(summary) = from_summaries(table, key)? {
        positions.merge(&summary);
    }
    Ok(positions)
}

/// The property updates that make the table's properties hold `positions`: one per
/// topic whose recorded value differs (all of them on a table written by an older
/// version, so the first commit carries the summary's positions over).
pub fn property_updates(
    table: &Table,
    key: &str,
    positions: &OffsetMap,
) -> HashMap<String, String> {
    let mut by_topic: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for (topic, partition, next) in positions.iter() {
        by_topic.entry(topic).or_default().insert(partition, next);
    }
    let properties = table.metadata().properties();
    by_topic
        .into_iter()
        .filter_map(|(topic, partitions)| {
            let name = property_key(key, topic);
            let value = serde_json::to_string(&partitions).expect("positions serialize");
            (properties.get(&name) != Some(&value)).then_some((name, value))
        })
        .collect()
}

fn from_properties(table: &Table, key: &str) -> Result<OffsetMap, String> {
    let prefix = property_key(key, "");
    let mut positions = OffsetMap::default();
    for (name, value) in table.metadata().properties() {
        let Some(topic) = name.strip_prefix(&prefix) else {
            continue;
        };
        if topic.is_empty() || topic.contains('/') {
            continue; // not a topic: a key of another group whose name goes on with `/`
        }
        let unreadable = |why: String| unreadable(&format!("table property `{name}`"), &why);
        let partitions: BTreeMap<i32, i64> = serde_json::from_str(value)
            .map_err(|e| unreadable(format!("{e}; expected {{\"<partition>\": <next offset>}}")))?;
        for (partition, next) in partitions {
            check_position(topic, partition, next).map_err(unreadable)?;
            positions.advance(topic, partition, next);
        }
    }
    Ok(positions)
}

fn from_summaries(table: &Table, key: &str) -> Result<Option<OffsetMap>, String> {
    let metadata = table.metadata_ref();
    let Some(current) = metadata.current_snapshot() else {
        return Ok(None);
    };
    let Some((snapshot, json)) =
        iceberg::util::snapshot::ancestors_of(&metadata, current.snapshot_id()).find_map(|s| {
            let json = s.summary().additional_properties.get(key)?.clone();
            Some((s.snapshot_id(), json))
        })
    else {
        return Ok(None);
    };
    let unreadable = |why: String| {
        unreadable(
            &format!("the summary of snapshot {snapshot}, key `{key}`"),
            &why,
        )
    };
    let positions: OffsetMap = serde_json::from_str(&json).map_err(|e| {
        unreadable(format!(
            "{e}; expected {{\"<topic>\": {{\"<partition>\": <next offset>}}}}"
        ))
    })?;
    for (topic, partition, next) in positions.iter() {
        check_position(topic, partition, next).map_err(unreadable)?;
    }
    Ok(Some(positions))
}

/// Kafka partitions and offsets are never negative.
fn check_position(topic: &str, partition: i32, next: i64) -> Result<(), String> {
    if partition < 0 || next < 0 {
        return Err(format!(
            "topic {topic} partition {partition} next offset {next} is not a Kafka position"
        ));
    }
    Ok(())
}

/// The message for a position that does not parse (the caller names the table).
fn unreadable(place: &str, why: &str) -> String {
    format!(
        "the Kafka positions in {place} cannot be read ({why}); refusing to start without \
         them, which would write every record again. Repair the value (see \
         docs/exactly-once.md, \"Iceberg: table properties and snapshot summaries\")"
    )
}
