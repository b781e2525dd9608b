//! Where the Iceberg sink keeps the completeness watermark, for readers: table
//! properties written in the same catalog commit as the data and positions.
//! - `ingest.watermark.<group>/<topic>` = `{"<partition>": <ms since the epoch>}`: per
//!   partition, the highest watermark recorded (a watermark is a claim that stays true,
//!   so the highest one stands);
//! - `ingest.watermark.<group>` = the least of those over every partition recorded, as
//!   RFC 3339 (`2026-12-07T10:00:00.000Z`): "the table holds every record before this
//!   time". A partition counts from its owner's first commit on.

use std::collections::{BTreeMap, HashMap};

use iceberg::table::Table;
use ingest_sink_api::{Partition, Watermark};

/// The table property holding the group's watermark as RFC 3339.
pub fn watermark_key(group: &str) -> String {
    format!("ingest.watermark.{group}")
}

/// Per partition, the watermark recorded under the group's key (values that do not
/// parse are left out).
pub fn recorded_watermarks(table: &Table, group_key: &str) -> BTreeMap<Partition, i64> {
    let prefix = format!("{group_key}/");
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

/// The property updates recording `watermark` on `table`: one per topic whose
/// partitions it raises, and the group's least when it changes. Unreadable recorded
/// values are replaced (they are a reader's aid, never read to resume).
pub fn property_updates(
    table: &Table,
    group_key: &str,
    watermark: &Watermark,
) -> HashMap<String, String> {
    let properties = table.metadata().properties();
    let prefix = format!("{group_key}/");
    let mut by_topic: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for (name, value) in properties {
        if let Some(topic) = name.strip_prefix(&prefix).filter(|t| !t.contains('/')) {
            let recorded = serde_json::from_str(value).unwrap_or_default();
            by_topic.insert(topic.to_string(), recorded);
        }
    }
    let mut changed: Vec<String> = Vec::new();
    for p in &watermark.partitions {
        let recorded = by_topic.entry(p.topic.clone()).or_default();
        let at = recorded.entry(p.partition).or_insert(i64::MIN);
        if *at < watermark.time_ms {
            *at = watermark.time_ms;
            changed.push(p.topic.clone());
        }
    }
    let mut updates = HashMap::new();
    for topic in changed {
        let value = serde_json::to_string(&by_topic[&topic]).expect("watermarks serialize");
        updates.insert(format!("{prefix}{topic}"), value);
    }
    if let Some(least) = by_topic.values().flat_map(|ps| ps.values()).min() {
        let value = Watermark::format(*least);
        if properties.get(group_key) != Some(&value) {
            updates.insert(group_key.to_string(), value);
        }
    }
    updates
}
