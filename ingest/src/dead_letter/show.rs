//! `ingest dlq show`: what the dead-letter topics hold, for an operator at a terminal:
//! per route and reason, how many letters wait and how many a replay took, and a few
//! examples of each.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::replay::read_all;
use crate::config::Loaded;

/// The report as text; `examples` letters per route and reason.
pub async fn show(loaded: &Loaded, examples: usize) -> anyhow::Result<String> {
    let mut out = String::new();
    for (topic, found) in read_all(loaded).await? {
        // (route, reason) → (waiting, replayed, examples)
        let mut counts: BTreeMap<(String, String), (u64, u64, Vec<String>)> = BTreeMap::new();
        for f in &found {
            let ours = &f.letter.ours;
            let key = (
                loaded.routes[f.route].name.clone(),
                ours.class.clone().unwrap_or_else(|| "unknown".into()),
            );
            let entry = counts.entry(key).or_default();
            if f.receipted {
                entry.1 += 1;
                continue;
            }
            entry.0 += 1;
            if entry.2.len() < examples {
                let error: String = ours
                    .error
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect();
                entry.2.push(format!(
                    "{}/{}@{} (dead letter {}@{}, {}): {error}",
                    ours.source_topic.as_deref().unwrap_or("?"),
                    ours.source_partition.unwrap_or(-1),
                    ours.source_offset.unwrap_or(-1),
                    f.letter.partition,
                    f.letter.offset,
                    ours.time.as_deref().unwrap_or("?"),
                ));
            }
        }
        let waiting: u64 = counts.values().map(|c| c.0).sum();
        let replayed: u64 = counts.values().map(|c| c.1).sum();
        writeln!(
            out,
            "dead-letter topic `{topic}`: {waiting} waiting, {replayed} replayed"
        )?;
        for ((route, reason), (waiting, replayed, examples)) in &counts {
            writeln!(
                out,
                "  route `{route}`, {reason}: {waiting} waiting, {replayed} replayed"
            )?;
            for example in examples {
                writeln!(out, "    {example}")?;
            }
        }
    }
    if out.is_empty() {
        out.push_str("no route of this config sends bad records to a dead-letter topic\n");
    }
    Ok(out)
}
