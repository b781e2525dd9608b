//! Where a ClickHouse table stands in Kafka, read from ClickHouse itself.
//!
//! Every row carries its Kafka coordinates (topic, partition, offset columns). After an
//! insert has succeeded, the writer records per partition the offset after the rows the
//! table now holds, with a time, in a tiny `AggregatingMergeTree` ledger (through its
//! insert gate, so a writer that lost the partition cannot record anything). The entry
//! is written only once the server acknowledged the rows, so the ledger never claims a
//! row the table lacks, whatever the server does with materialized views, in which
//! order, or which error it checks first. It lags the table when the writer stops
//! between its insert and the entry, or when an insert fails after some of its parts
//! were committed (a server crash, too many parts, a memory limit). Those rows can only
//! sit in parts written or merged since the entry's time, so recovery reads the ledger
//! plus the coordinates in those recent parts: bounded by recent activity, never a scan
//! of the whole table, no Keeper, no external store and no dedup window.

use std::collections::{BTreeMap, HashMap, HashSet};

use ingest_sink_api::{Coordinates, OffsetMap, SinkError};

use super::types::quote_ident;
use super::{escape_literal, is_retryable, query_json};

/// Names of the columns holding each row's Kafka coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinateColumns {
    pub topic: String,
    pub partition: String,
    pub offset: String,
}

impl Default for CoordinateColumns {
    fn default() -> Self {
        Self {
            topic: "_topic".into(),
            partition: "_partition".into(),
            offset: "_offset".into(),
        }
    }
}

impl CoordinateColumns {
    /// Column name and ClickHouse type of each coordinate, for DDL.
    pub fn columns(&self) -> [(&str, &'static str); 3] {
        [
            (&self.topic, "String"),
            (&self.partition, "Int32"),
            (&self.offset, "Int64"),
        ]
    }
}

/// The ledger table, named after the data table.
pub struct Ledger {
    database: String,
    table: String,
    ledger: String,
}

impl Ledger {
    pub fn new(database: &str, table: &str) -> Self {
        Self {
            database: database.into(),
            table: table.into(),
            ledger: format!("{table}__ingest_positions"),
        }
    }

    fn qualified(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.database), quote_ident(name))
    }

    /// The ledger's name (in the data table's database).
    pub fn name(&self) -> &str {
        &self.ledger
    }

    /// Statements creating the ledger (idempotent), and dropping the view that fed it
    /// from the table's own inserts in earlier releases: a view may run before the rows
    /// it describes are committed (or without them), so entries come from the writer alone.
    pub fn create_statements(&self) -> [String; 2] {
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (topic String, partition Int32, \
                 next AggregateFunction(max, Int64), at AggregateFunction(max, DateTime)) \
                 ENGINE = AggregatingMergeTree() ORDER BY (topic, partition)",
                self.qualified(&self.ledger)
            ),
            format!(
                "DROP TABLE IF EXISTS {}",
                self.qualified(&format!("{}__ingest_positions_mv", self.table))
            ),
        ]
    }

    /// The `Null` table a writer records entries into, and the view folding them into
    /// the ledger: dropping the table (with the writer's insert gate) refuses every later
    /// entry of that writer.
    pub fn entry_gate_statements(&self, gate: &str) -> [String; 2] {
        [
            format!(
                "CREATE TABLE {} (topic String, partition Int32, next Int64, at DateTime) \
                 ENGINE = Null",
                self.qualified(gate)
            ),
            format!(
                "CREATE MATERIALIZED VIEW {} TO {} AS SELECT topic, partition, \
                 maxState(next) AS next, maxState(at) AS at FROM {} GROUP BY topic, partition",
                self.qualified(&format!("{gate}_ledger")),
                self.qualified(&self.ledger),
                self.qualified(gate)
            ),
        ]
    }

    /// Records `entries` through the entry gate `gate`.
    pub fn entry_statement(&self, gate: &str, entries: &[Entry]) -> String {
        let values: Vec<String> = entries
            .iter()
            .map(|e| {
                let at = match e.at {
                    Some(at) => format!("toDateTime({at})"),
                    None => "now()".into(),
                };
                format!(
                    "('{}', {}, {}, {at})",
                    escape_literal(&e.topic),
                    e.partition,
                    e.next
                )
            })
            .collect();
        format!(
            "INSERT INTO {} (topic, partition, next, at) VALUES {}",
            self.qualified(gate),
            values.join(", ")
        )
    }

    /// Per partition of `topics` (of every topic when empty): the ledger's next offset
    /// and the time of its entry.
    pub fn ledger_query(&self, topics: &[&str]) -> String {
        let filter = if topics.is_empty() {
            String::new()
        } else {
            format!(" WHERE topic IN ({})", literal_list(topics))
        };
        format!(
            "SELECT topic, partition, maxMerge(next) AS next, toUInt32(maxMerge(at)) AS at \
             FROM {}{filter} GROUP BY topic, partition",
            self.qualified(&self.ledger),
        )
    }

    /// Active parts of the data table written or merged at or after `since` (unix s),
    /// with the server's clock.
    pub fn recent_parts_query(&self, since: u32) -> String {
        format!(
            "SELECT name, toUInt32(now()) AS now FROM system.parts WHERE database = '{}' \
             AND table = '{}' AND active AND modification_time >= toDateTime({since})",
            escape_literal(&self.database),
            escape_literal(&self.table)
        )
    }

    /// CoordinateColumns past the ledger's position, looked up in the given parts only.
    pub fn tail_query(
        &self,
        coords: &CoordinateColumns,
        parts: &[String],
        from: &OffsetMap,
    ) -> String {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let conditions: Vec<String> = from
            .iter()
            .map(|(topic, partition, next)| {
                format!(
                    "({} = '{}' AND {} = {partition} AND {} >= {next})",
                    quote_ident(&coords.topic),
                    escape_literal(topic),
                    quote_ident(&coords.partition),
                    quote_ident(&coords.offset),
                )
            })
            .collect();
        format!(
            "SELECT {} AS topic, {} AS partition, {} AS offset FROM {} \
             WHERE _part IN ({}) AND ({})",
            quote_ident(&coords.topic),
            quote_ident(&coords.partition),
            quote_ident(&coords.offset),
            self.qualified(&self.table),
            literal_list(&parts),
            conditions.join(" OR ")
        )
    }
}

fn literal_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|t| format!("'{}'", escape_literal(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a table's positions; shared by its sink and by the resume on assignment.
pub struct LedgerReader {
    /// The sink's name, for errors.
    pub sink: String,
    pub client: clickhouse::Client,
    pub ledger: Ledger,
    pub coordinates: CoordinateColumns,
    /// Partitions without a ledger entry, and the server time their parts were last
    /// all looked at (so an unwritten partition costs one full look per process).
    pub scanned: std::sync::Mutex<std::collections::HashMap<(String, i32), u32>>,
}

impl LedgerReader {
    /// What the table holds already for the partitions in `from` (all partitions the
    /// ledger knows when empty): the ledger, then the coordinates in parts newer than
    /// each partition's last ledger entry.
    pub async fn progress(&self, from: &OffsetMap) -> Result<Progress, SinkError> {
        let query = |sql: String| async move {
            query_json(&self.client, &sql).await.map_err(|e| {
                SinkError::new(
                    self.sink.clone(),
                    format!("reading positions: {e}"),
                    is_retryable(&e),
                )
            })
        };
        let topics: Vec<&str> = from.topics().collect();
        let entries: Vec<LedgerEntry> = query(self.ledger.ledger_query(&topics))
            .await?
            .iter()
            .filter_map(LedgerEntry::from_json)
            .collect();
        let mut progress = Progress::default();
        if from.is_empty() {
            for e in &entries {
                progress.next.advance(&e.topic, e.partition, e.next);
            }
            return Ok(progress);
        }
        // From each partition's ledger position (0 without one) and entry time.
        let mut tail_from = OffsetMap::default();
        let mut since = u32::MAX;
        let mut unseen = Vec::new();
        let scanned = self.scanned.lock().expect("scans poisoned").clone();
        for (topic, partition, _) in from.iter() {
            let entry = entries
                .iter()
                .find(|e| e.topic == topic && e.partition == partition);
            // A partition without a ledger entry: every part, the first time; after
            // that, parts since that look (an interrupted first insert comes later).
            let key = (topic.to_string(), partition);
            let unseen_at = scanned.get(&key).copied().unwrap_or(0);
            let (next, at) = entry.map_or((0, unseen_at), |e| (e.next, e.at));
            if entry.is_some() {
                progress.next.advance(topic, partition, next);
            }
            progress.since.insert(key.clone(), at);
            if entry.is_none() {
                unseen.push(key);
            }
            tail_from.advance(topic, partition, next);
            // One second early: part times and `now()` are whole seconds.
            since = since.min(at.saturating_sub(1));
        }
        let listed = query(self.ledger.recent_parts_query(since)).await?;
        let server_now = listed.first().and_then(|r| r["now"].as_u64());
        let parts: Vec<String> = listed
            .iter()
            .filter_map(|row| row["name"].as_str().map(str::to_string))
            .collect();
        let tail = if parts.is_empty() {
            Vec::new()
        } else {
            query(
                self.ledger
                    .tail_query(&self.coordinates, &parts, &tail_from),
            )
            .await?
        };
        for row in tail {
            if let Some(e) = LedgerEntry::from_json(&serde_json::json!({
                "topic": row["topic"], "partition": row["partition"],
                "next": row["offset"], "at": 0,
            })) {
                progress.beyond.insert((e.topic, e.partition, e.next));
            }
        }
        // A partition without an entry whose look found nothing need not look at older
        // parts again. One whose look found rows must, until an entry covers them: a
        // write failing now would otherwise forget them and write them twice.
        if let Some(now) = server_now {
            let mut scanned = self.scanned.lock().expect("scans poisoned");
            for key in unseen {
                let found = progress
                    .beyond
                    .iter()
                    .any(|(t, p, _)| *t == key.0 && *p == key.1);
                if !found {
                    scanned.insert(key, now as u32);
                }
            }
        }
        Ok(progress)
    }
}

#[async_trait::async_trait]
impl ingest_sink_api::PositionReader for LedgerReader {
    fn sink(&self) -> &str {
        &self.sink
    }

    async fn read(&self, partitions: &OffsetMap) -> Result<OffsetMap, SinkError> {
        Ok(self.progress(partitions).await?.durable())
    }
}

/// What the table holds for some partitions: every offset below `next`, plus the
/// offsets in `beyond` (rows of an insert the ledger has not seen).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Progress {
    pub next: OffsetMap,
    pub beyond: HashSet<(String, i32, i64)>,
    /// Per partition, the time since which parts were read for `beyond` (unix s).
    pub since: HashMap<(String, i32), u32>,
}

/// A ledger entry to record: the table holds every row of the partition below `next`;
/// rows past it can only be in parts written or merged since `at` (the server's
/// `now()` when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub at: Option<u32>,
}

impl Progress {
    /// Whether the table already holds the row at `position`.
    pub fn holds(&self, position: &Coordinates) -> bool {
        self.next
            .get(position.topic, position.partition)
            .is_some_and(|n| position.offset < n)
            || (!self.beyond.is_empty()
                && self.beyond.contains(&(
                    position.topic.to_string(),
                    position.partition,
                    position.offset,
                )))
    }

    /// The entries to record once the table holds every row of a batch reaching
    /// `written` (per partition, the offset after its last record), for the partitions
    /// where they say more than the ledger does. An entry never moves `at` past rows
    /// found beyond its `next`: they stay where recovery looks until an entry covers
    /// them.
    pub fn entries_after(&self, written: &OffsetMap) -> Vec<Entry> {
        let durable = self.durable();
        let mut entries = Vec::new();
        for (topic, partition, end) in written.iter() {
            let next = end.max(durable.get(topic, partition).unwrap_or(0));
            if self.next.get(topic, partition) >= Some(next) {
                continue;
            }
            let left_beyond = self
                .beyond
                .iter()
                .any(|(t, p, o)| t == topic && *p == partition && *o >= next);
            let at = left_beyond.then(|| {
                self.since
                    .get(&(topic.to_string(), partition))
                    .copied()
                    .unwrap_or(0)
            });
            entries.push(Entry {
                topic: topic.to_string(),
                partition,
                next,
                at,
            });
        }
        entries
    }

    /// The positions a reader may resume from: the ledger's, moved past the rows found
    /// beyond it while they form an unbroken run.
    pub fn durable(&self) -> OffsetMap {
        let mut out = self.next.clone();
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
pub struct LedgerEntry {
    pub topic: String,
    pub partition: i32,
    pub next: i64,
    pub at: u32,
}

impl LedgerEntry {
    pub fn from_json(row: &serde_json::Value) -> Option<Self> {
        // 64-bit integers come back quoted in JSON formats.
        let int = |v: &serde_json::Value| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        Some(Self {
            topic: row["topic"].as_str()?.to_string(),
            partition: int(&row["partition"])? as i32,
            next: int(&row["next"])?,
            at: int(&row["at"])? as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: i64) -> Coordinates {
        Coordinates {
            topic: "t",
            partition: 0,
            offset,
        }
    }

    #[test]
    fn rows_below_the_ledger_or_found_beyond_it_are_held() {
        let mut progress = Progress::default();
        progress.next.advance("t", 0, 10);
        progress
            .beyond
            .extend([("t".into(), 0, 12), ("t".into(), 0, 10)]);
        assert!(progress.holds(&pos(9)));
        assert!(progress.holds(&pos(10)));
        assert!(!progress.holds(&pos(11)));
        assert!(progress.holds(&pos(12)));
        assert!(!progress.holds(&pos(13)));
        // 10 follows the ledger, 11 is missing: resume at 11.
        assert_eq!(progress.durable().get("t", 0), Some(11));
    }

    #[test]
    fn tail_query_names_parts_and_partitions() {
        let ledger = Ledger::new("db", "events");
        let mut from = OffsetMap::default();
        from.advance("orders", 3, 100);
        let sql = ledger.tail_query(&CoordinateColumns::default(), &["all_5_5_0".into()], &from);
        assert!(sql.contains("_part IN ('all_5_5_0')"), "{sql}");
        assert!(
            sql.contains("`_topic` = 'orders' AND `_partition` = 3 AND `_offset` >= 100"),
            "{sql}"
        );
        let [table, _] = ledger.create_statements();
        assert!(table.contains("`events__ingest_positions`"), "{table}");
        let [_, view] = ledger.entry_gate_statements("g_pos");
        assert!(
            view.contains("TO `db`.`events__ingest_positions`"),
            "{view}"
        );
    }

    fn written(next: i64) -> OffsetMap {
        let mut map = OffsetMap::default();
        map.advance("t", 0, next);
        map
    }

    #[test]
    fn an_entry_covers_the_batch_and_the_unbroken_run_found_beyond_the_ledger() {
        let mut progress = Progress::default();
        progress.next.advance("t", 0, 10);
        progress.since.insert(("t".into(), 0), 500);
        progress.beyond.extend((10..20).map(|o| ("t".into(), 0, o)));
        // A replay of 10..15 after a crash: the table holds 10..20 already.
        let entries = progress.entries_after(&written(15));
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].next, entries[0].at), (20, None));
    }

    #[test]
    fn an_entry_keeps_its_time_while_rows_past_it_are_found() {
        // Issue 10, hole 1: rows 30..40 of an interrupted insert sit past a gap. An
        // entry for a shorter retry (10..15) must not move `at` past their parts, or
        // the next look misses them and they are written twice.
        let mut progress = Progress::default();
        progress.next.advance("t", 0, 10);
        progress.since.insert(("t".into(), 0), 500);
        progress.beyond.extend((30..40).map(|o| ("t".into(), 0, o)));
        let entries = progress.entries_after(&written(15));
        assert_eq!((entries[0].next, entries[0].at), (15, Some(500)));
        // Nothing new to say: no entry.
        assert!(progress.entries_after(&written(8)).is_empty());
    }
}
