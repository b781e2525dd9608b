//! What a table holds for some partitions, and the ledger entries a write records
//! after it.

use std::collections::{BTreeMap, HashMap, HashSet};

use ingest_sink_api::{Coordinates, OffsetMap, Partition};

use crate::client::json_number;

use super::FROM_BLOCK;

/// What the table holds for some partitions: every offset below the `ledger`'s
/// position, plus the offsets in `beyond` (rows of an insert the ledger has not seen).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldRows {
    /// The ledger's positions.
    pub ledger: OffsetMap,
    pub beyond: HashSet<(String, i32, i64)>,
    /// Per partition, the first block of the parts read for `beyond`.
    pub since: HashMap<Partition, i64>,
    /// The table's highest block number when it was read: an insert after that read
    /// numbers its blocks past it.
    pub top: i64,
}

/// A ledger entry to record: the table holds every row of the partition below `next`;
/// rows past it can only be in parts holding a block numbered `from_block` or later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryToRecord {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub from_block: i64,
}

impl HeldRows {
    /// Whether the table already holds the row at `coordinates`.
    pub fn holds(&self, coordinates: &Coordinates) -> bool {
        self.ledger
            .get(&coordinates.topic, coordinates.partition)
            .is_some_and(|n| coordinates.offset < n)
            || (!self.beyond.is_empty()
                && self.beyond.contains(&(
                    coordinates.topic.to_string(),
                    coordinates.partition,
                    coordinates.offset,
                )))
    }

    /// The entries to record once the table holds every row of a batch reaching
    /// `written` (per partition, the offset after its last record), for the partitions
    /// where they say more than the ledger does. An entry never moves `at` past rows
    /// found beyond its `next`: they stay where recovery looks until an entry covers
    /// them. Otherwise rows past `next` can only come from later inserts, which number
    /// their blocks past the table's highest when it was read, before this batch.
    pub fn entries_after(&self, written: &OffsetMap) -> Vec<EntryToRecord> {
        let positions = self.positions();
        let mut entries = Vec::new();
        for (topic, partition, end) in written.iter() {
            let next = end.max(positions.get(topic, partition).unwrap_or(0));
            if self.ledger.get(topic, partition) >= Some(next) {
                continue;
            }
            let left_beyond = self
                .beyond
                .iter()
                .any(|(t, p, o)| t == topic && *p == partition && *o >= next);
            // At least 1: 0 reads as an entry of an earlier release (recovered by time,
            // which would miss the rows found here by a first full look), and every
            // part holds block 1 or later.
            let from_block = if left_beyond {
                self.since
                    .get(&Partition::new(topic, partition))
                    .copied()
                    .unwrap_or(0)
            } else {
                self.top + 1
            }
            .max(1);
            entries.push(EntryToRecord {
                topic: topic.to_string(),
                partition,
                next,
                from_block,
            });
        }
        entries
    }

    /// The positions a reader may resume from: the ledger's, moved past the rows found
    /// beyond it while they form an unbroken run.
    pub fn positions(&self) -> OffsetMap {
        let mut out = self.ledger.clone();
        let mut beyond: BTreeMap<(&str, i32), Vec<i64>> = BTreeMap::new();
        for (topic, partition, offset) in &self.beyond {
            beyond
                .entry((topic.as_str(), *partition))
                .or_default()
                .push(*offset);
        }
        for ((topic, partition), mut offsets) in beyond {
            offsets.sort_unstable();
            let mut next = out.get(topic, partition).unwrap_or(0);
            for offset in offsets {
                if offset == next {
                    next += 1;
                }
            }
            out.advance(topic, partition, next);
        }
        out
    }
}

/// One ledger row as the server returns it.
pub struct RecordedEntry {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    /// The entry's time (unix s); recovery reads it only for entries of an earlier
    /// release, which lack `from_block`.
    pub at: u32,
    /// 0 for entries of an earlier release.
    pub from_block: i64,
}

impl RecordedEntry {
    pub fn from_json(row: &serde_json::Value) -> Option<Self> {
        Some(Self {
            topic: row["topic"].as_str()?.to_string(),
            partition: json_number::<i64>(&row["partition"])? as i32,
            next: json_number(&row["next"])?,
            at: json_number::<i64>(&row["at"])? as u32,
            from_block: json_number(&row[FROM_BLOCK]).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Coordinates {
        Coordinates {
            topic: "t".into(),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn rows_below_the_ledger_or_found_beyond_it_are_held() {
        let mut held = HeldRows::default();
        held.ledger.advance("t", 0, 10);
        held.beyond
            .extend([("t".into(), 0, 12), ("t".into(), 0, 10)]);
        assert!(held.holds(&at(9)));
        assert!(held.holds(&at(10)));
        assert!(!held.holds(&at(11)));
        assert!(held.holds(&at(12)));
        assert!(!held.holds(&at(13)));
        // 10 follows the ledger, 11 is missing: resume at 11.
        assert_eq!(held.positions().get("t", 0), Some(11));
    }

    /// The ledger at 10, its rows past it in parts from block 500, the table at block
    /// 900, with rows found beyond it at `beyond`.
    fn ledger_at_10_with(beyond: std::ops::Range<i64>) -> HeldRows {
        let mut held = HeldRows {
            top: 900,
            ..HeldRows::default()
        };
        held.ledger.advance("t", 0, 10);
        held.since.insert(Partition::new("t", 0), 500);
        held.beyond.extend(beyond.map(|o| ("t".into(), 0, o)));
        held
    }

    fn written(next: i64) -> OffsetMap {
        let mut map = OffsetMap::default();
        map.advance("t", 0, next);
        map
    }

    #[test]
    fn an_entry_covers_the_batch_and_the_unbroken_run_found_beyond_the_ledger() {
        // A replay of 10..15 after a crash: the table holds 10..20 already.
        let entries = ledger_at_10_with(10..20).entries_after(&written(15));
        assert_eq!(entries.len(), 1);
        // Later rows come from later inserts: past the table's highest block.
        assert_eq!((entries[0].next, entries[0].from_block), (20, 901));
    }

    #[test]
    fn an_entry_keeps_its_first_block_while_rows_past_it_are_found() {
        // Issue 10, hole 1: rows 30..40 of an interrupted insert sit past a gap. An
        // entry for a shorter retry (10..15) must not move `from_block` past their
        // parts, or the next look misses them and they are written twice.
        let held = ledger_at_10_with(30..40);
        let entries = held.entries_after(&written(15));
        assert_eq!((entries[0].next, entries[0].from_block), (15, 500));
        // Found by a first full look (from block 0): the entry says block 1, never 0
        // (an entry of an earlier release, read by time).
        let mut first_look = held.clone();
        first_look.since.insert(Partition::new("t", 0), 0);
        assert_eq!(first_look.entries_after(&written(15))[0].from_block, 1);
        // Nothing new to say: no entry.
        assert!(held.entries_after(&written(8)).is_empty());
    }
}
