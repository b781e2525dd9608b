//! Where the Iceberg sink keeps the completeness watermark, for readers: table
//! properties written in the same catalog commit as the data and positions.
//! - `ingest.watermark-by-partition.<group>/<topic>` = `{"<partition>": <ms since the
//!   epoch>}`: per partition, the highest watermark recorded (a watermark is a claim
//!   that stays true, so the highest one stands);
//! - `ingest.watermark.<group>` = the least of those over the partitions of the topics
//!   the route reads now, as RFC 3339 (`2026-12-07T10:00:00.000Z`): "the table holds
//!   every record before this time". A partition counts from its first commit on.
//!
//! Two roots, so no group name (which may hold `/`) makes one group's least key another
//! group's per-topic key.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use iceberg::table::Table;
use ingest_sink_api::{Partition, Watermark};

/// The table property holding the group's watermark as RFC 3339.
pub fn watermark_key(group: &str) -> String {
    format!("ingest.watermark.{group}")
}

/// The prefix of the group's per-topic properties (`<prefix><topic>`).
fn partitions_prefix(group: &str) -> String {
    format!("ingest.watermark-by-partition.{group}/")
}

/// Per partition, the watermark recorded for `group` (values that do not parse are
/// left out).
pub fn recorded_watermarks(table: &Table, group: &str) -> BTreeMap<Partition, i64> {
    let prefix = partitions_prefix(group);
    let mut out = BTreeMap::new();
    for (name, value) in table.metadata().properties() {
        let Some(topic) = name.strip_prefix(&prefix).filter(|t| !t.contains('/')) else {
            continue;
        };
        let recorded: BTreeMap<i32, i64> = serde_json::from_str(value).unwrap_or_default();
        for (partition, ms) in recorded {
            out.insert(Partition::new(topic, partition), ms);
        }
    }
    out
}

/// The property updates recording `watermark` for `group` on `table`: one per topic
/// whose partitions it raises, and the group's least (over the topics `watermark`
/// covers: a topic the route no longer reads must not hold it back) when it changes.
/// Unreadable recorded values are replaced (they are a reader's aid, never read to
/// resume).
pub fn property_updates(
    table: &Table,
    group: &str,
    watermark: &Watermark,
) -> HashMap<String, String> {
    let properties = table.metadata().properties();
    let prefix = partitions_prefix(group);
    let mut recorded = recorded_watermarks(table, group);
    let mut changed: BTreeSet<&str> = BTreeSet::new();
    for p in &watermark.partitions {
        let at = recorded.entry(p.clone()).or_insert(i64::MIN);
        if *at < watermark.time_ms {
            *at = watermark.time_ms;
            changed.insert(&p.topic);
        }
    }
    let mut updates = HashMap::new();
    for topic in changed {
        let partitions: BTreeMap<i32, i64> = recorded
            .iter()
            .filter(|(p, _)| p.topic == topic)
            .map(|(p, ms)| (p.partition, *ms))
            .collect();
        let value = serde_json::to_string(&partitions).expect("watermarks serialize");
        updates.insert(format!("{prefix}{topic}"), value);
    }
    let topics: BTreeSet<&str> = watermark
        .partitions
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    let least = recorded
        .iter()
        .filter(|(p, _)| topics.contains(p.topic.as_str()))
        .map(|(_, ms)| *ms)
        .min();
    if let Some(least) = least {
        let key = watermark_key(group);
        let value = Watermark::format(least);
        if properties.get(&key) != Some(&value) {
            updates.insert(key, value);
        }
    }
    updates
}
