//! The position ledger: where a ClickHouse table stands in Kafka, read from ClickHouse itself.
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
//! sit in parts holding a block numbered at or past the entry's `from_block`, so
//! recovery reads the ledger plus the coordinates in those recent parts: bounded by
//! recent activity, never a scan of the whole table, no Keeper, no external store and
//! no dedup window.
//!
//! Why block numbers and not times (issue 16, item 8): a MergeTree numbers each insert's
//! block from one counter that only goes up, and a merged or mutated part keeps the
//! highest number of the parts it came from, so "parts holding a block numbered at or
//! past N" cannot lose a row to a merge (one counter per table holds for the engines
//! `engine.rs` accepts; replicated ones, numbered per partition, are refused). A part's time is the server's wall clock: a
//! clock that ran ahead when an entry was recorded hid every part written after it was
//! put right. Parts are read by name, so a merge between listing them and reading them
//! would hide rows too: the list is taken again after the read, and the read repeated
//! while a listed part has gone.

use std::collections::{BTreeMap, HashMap, HashSet};

use ingest_sink_api::{Coordinates, OffsetMap, SinkError};

use clickhouse::query::Query;

use crate::client::{
    bind_all, bound_ident, bound_qualified, fetch_json, is_retryable, json_number, placeholders,
};
use crate::types::quote_ident;

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

    /// The statement creating the ledger (idempotent).
    pub fn create_statement(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (topic String, partition Int32, \
             next AggregateFunction(max, Int64), at AggregateFunction(max, DateTime), \
             {FROM_BLOCK} AggregateFunction(max, Int64)) \
             ENGINE = AggregatingMergeTree() ORDER BY (topic, partition)",
            self.qualified(&self.ledger)
        )
    }

    /// The statement adding `from_block` to a ledger made by an earlier release (its
    /// entries read 0 there: "unknown", recovered by time as that release did).
    pub fn add_from_block_statement(&self) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {FROM_BLOCK} AggregateFunction(max, Int64)",
            self.qualified(&self.ledger)
        )
    }

    /// The statement dropping the view that fed the ledger from the table's own inserts
    /// in earlier releases: a view may run before the rows it describes are committed
    /// (or without them), so entries come from the writer alone.
    pub fn drop_old_view_statement(&self) -> String {
        format!(
            "DROP TABLE IF EXISTS {}",
            self.qualified(&format!("{}__ingest_positions_mv", self.table))
        )
    }

    /// The `Null` table a writer records entries into, and the view folding them into
    /// the ledger: dropping the table (with the writer's insert gate) refuses every later
    /// entry of that writer.
    pub fn entry_gate_statements(&self, gate: &str) -> [String; 2] {
        [
            format!(
                "CREATE TABLE {} (topic String, partition Int32, next Int64, at DateTime, \
                 {FROM_BLOCK} Int64) ENGINE = Null",
                self.qualified(gate)
            ),
            format!(
                "CREATE MATERIALIZED VIEW {} TO {} AS SELECT topic, partition, \
                 maxState(next) AS next, maxState(at) AS at, maxState({FROM_BLOCK}) AS {FROM_BLOCK} \
                 FROM {} GROUP BY topic, partition",
                self.qualified(&format!("{gate}_ledger")),
                self.qualified(&self.ledger),
                self.qualified(gate)
            ),
        ]
    }

    /// Records `entries` through the entry gate `gate`.
    pub fn entry_statement(
        &self,
        client: &clickhouse::Client,
        gate: &str,
        entries: &[EntryToRecord],
    ) -> Query {
        let values: Vec<String> = entries
            .iter()
            .map(|e| format!("(?, {}, {}, now(), {})", e.partition, e.next, e.from_block))
            .collect();
        let statement = client.query(&format!(
            "INSERT INTO {} (topic, partition, next, at, {FROM_BLOCK}) VALUES {}",
            bound_qualified(&self.database, gate),
            values.join(", ")
        ));
        bind_all(statement, entries.iter().map(|e| e.topic.as_str()))
    }

    /// Per partition of `topics` (of every topic when empty): the ledger's position,
    /// the time of its entry and the first block that may hold rows past it.
    pub fn entries_query(&self, client: &clickhouse::Client, topics: &[&str]) -> Query {
        let filter = if topics.is_empty() {
            String::new()
        } else {
            format!(" WHERE topic IN ({})", placeholders(topics.len()))
        };
        let query = client.query(&format!(
            "SELECT topic, partition, maxMerge(next) AS next, toUInt32(maxMerge(at)) AS at, \
             maxMerge({FROM_BLOCK}) AS {FROM_BLOCK} FROM {}{filter} GROUP BY topic, partition",
            bound_qualified(&self.database, &self.ledger),
        ));
        bind_all(query, topics.iter().copied())
    }

    /// One row: the names of the data table's active parts in `window`, the lowest of
    /// their highest block numbers (`floor`) and the highest block number of any active
    /// part (`top`), all from one look at the table.
    pub fn recent_parts_query(&self, client: &clickhouse::Client, window: &Window) -> Query {
        let mut recent = vec![format!("max_block_number >= {}", window.from_block)];
        if let Some(since) = window.since {
            recent.push(format!("modification_time >= toDateTime({since})"));
        }
        let recent = recent.join(" OR ");
        client
            .query(&format!(
                "SELECT groupArrayIf(name, {recent}) AS names, \
                 minIf(max_block_number, {recent}) AS floor, max(max_block_number) AS top \
                 FROM system.parts WHERE database = ? AND table = ? AND active"
            ))
            .bind(&self.database)
            .bind(&self.table)
    }

    /// The coordinates of the rows past the ledger's positions `from`, looked up in the
    /// given parts only.
    pub fn beyond_query(
        &self,
        client: &clickhouse::Client,
        coords: &CoordinateColumns,
        parts: &[String],
        from: &OffsetMap,
    ) -> Query {
        let conditions: Vec<String> = from
            .iter()
            .map(|(_, partition, next)| {
                format!(
                    "({} = ? AND {} = {partition} AND {} >= {next})",
                    bound_ident(&coords.topic),
                    bound_ident(&coords.partition),
                    bound_ident(&coords.offset),
                )
            })
            .collect();
        let query = client.query(&format!(
            "SELECT {} AS topic, {} AS partition, {} AS offset FROM {} \
             WHERE _part IN ({}) AND ({})",
            bound_ident(&coords.topic),
            bound_ident(&coords.partition),
            bound_ident(&coords.offset),
            bound_qualified(&self.database, &self.table),
            placeholders(parts.len()),
            conditions.join(" OR ")
        ));
        let query = bind_all(query, parts.iter().map(String::as_str));
        bind_all(query, from.iter().map(|(topic, _, _)| topic))
    }
}

/// How many bytes of part names one statement lists at most: the statement must stay
/// under the server's `max_query_size` (262,144 bytes by default, the statement's text
/// with the values inlined), beside its conditions, one per partition read.
const PART_LIST_BYTES: usize = 64 * 1024;

/// `parts` cut into consecutive lists of at most [`PART_LIST_BYTES`] of names (quoted,
/// with their separators), each with at least one part (issue 16, item 11: the first
/// look at a partition without a ledger entry lists every active part of the table).
fn part_lists(parts: &[String]) -> Vec<&[String]> {
    let mut lists = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, part) in parts.iter().enumerate() {
        let size = part.len() + 4;
        if i > start && bytes + size > PART_LIST_BYTES {
            lists.push(&parts[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < parts.len() {
        lists.push(&parts[start..]);
    }
    lists
}

/// The ledger column naming, per partition, the lowest block number a part must hold
/// to hold rows past the entry's `next`.
const FROM_BLOCK: &str = "from_block";

/// How often recovery reads the recent parts again when merges keep retiring the ones
/// it listed.
const LIST_ATTEMPTS: usize = 5;

/// The parts recovery reads: those holding a block numbered `from_block` or later, and,
/// for entries of an earlier release (which recorded only times), those written or
/// merged `since` (unix s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from_block: i64,
    pub since: Option<u32>,
}

/// What one look at the table's parts found (see [`Ledger::recent_parts_query`]).
struct Listed {
    names: Vec<String>,
    /// The lowest highest-block of the listed parts: every row they hold stays in parts
    /// at or past it, whatever merges them.
    floor: Option<i64>,
    /// The highest block number of the table: every later insert numbers past it.
    top: i64,
}

impl Listed {
    fn from_json(rows: &[serde_json::Value]) -> Option<Self> {
        let row = rows.first()?;
        let names: Vec<String> = row["names"]
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        Some(Self {
            floor: (!names.is_empty())
                .then(|| json_number(&row["floor"]))
                .flatten(),
            names,
            top: json_number(&row["top"])?,
        })
    }

    /// Whether every part of `self` is still active in `later`: if one has gone (merged,
    /// mutated), its rows may have been read from nowhere.
    fn still_in(&self, later: &Listed) -> bool {
        let later: HashSet<&str> = later.names.iter().map(String::as_str).collect();
        self.names.iter().all(|n| later.contains(n.as_str()))
    }
}

/// Reads a table's positions; shared by its sink and by the resume on assignment.
pub struct LedgerReader {
    /// The sink's name, for errors.
    pub sink: String,
    pub client: clickhouse::Client,
    pub ledger: Ledger,
    pub coordinates: CoordinateColumns,
    /// Partitions without a ledger entry, and the first block past their last full look
    /// (so an unwritten partition costs one full look per process).
    pub scanned: std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>,
}

impl LedgerReader {
    /// What the table holds already for the partitions in `from` (all partitions the
    /// ledger knows when empty): the ledger, then the coordinates in parts newer than
    /// each partition's last ledger entry.
    pub async fn held(&self, from: &OffsetMap) -> Result<HeldRows, SinkError> {
        let topics: Vec<&str> = from.topics().collect();
        let entries: Vec<RecordedEntry> = self
            .fetch(self.ledger.entries_query(&self.client, &topics))
            .await?
            .iter()
            .filter_map(RecordedEntry::from_json)
            .collect();
        let mut held = HeldRows::default();
        if from.is_empty() {
            for e in &entries {
                held.ledger.advance(&e.topic, e.partition, e.next);
            }
            return Ok(held);
        }
        // From each partition's ledger position (0 without one) and the blocks past it.
        let mut beyond_from = OffsetMap::default();
        let mut window = Window {
            from_block: i64::MAX,
            since: None,
        };
        let mut unseen = Vec::new();
        let mut by_time = Vec::new();
        let scanned = self.scanned.lock().expect("scans poisoned").clone();
        for (topic, partition, _) in from.iter() {
            let entry = entries
                .iter()
                .find(|e| e.topic == topic && e.partition == partition);
            let key = (topic.to_string(), partition);
            let next = entry.map_or(0, |e| e.next);
            match entry {
                Some(e) if e.from_block > 0 => {
                    window.from_block = window.from_block.min(e.from_block);
                    held.since.insert(key.clone(), e.from_block);
                }
                // Recorded by an earlier release: the parts since its time (one second
                // early: part times and `now()` are whole seconds), until an entry of
                // this release records a block.
                Some(e) => {
                    let since = e.at.saturating_sub(1);
                    window.since = Some(window.since.map_or(since, |s| s.min(since)));
                    by_time.push(key.clone());
                }
                // No entry: every part, the first time; after that, the parts past
                // that look (an interrupted first insert comes later).
                None => {
                    let first = scanned.get(&key).copied().unwrap_or(0);
                    window.from_block = window.from_block.min(first);
                    held.since.insert(key.clone(), first);
                    unseen.push(key.clone());
                }
            }
            if entry.is_some() {
                held.ledger.advance(topic, partition, next);
            }
            beyond_from.advance(topic, partition, next);
        }
        let (listed, beyond) = self.read_recent(&window, &beyond_from).await?;
        if window.from_block != i64::MAX && window.from_block > listed.top + 1 {
            // The counter went back: the parts holding the highest blocks were dropped
            // and the server restarted (or the table was made anew). Later inserts may
            // number below the entries: every part is read.
            tracing::warn!(sink = %self.sink, top = listed.top, from_block = window.from_block,
                "the table's block numbers went back below its position ledger (parts dropped, then a restart?): reading every part to find rows past the ledger");
            let every_part = Window {
                from_block: 0,
                since: None,
            };
            return self.held_from(held, every_part, &beyond_from).await;
        }
        held.top = listed.top;
        // Rows found by time stay where a block window finds them: in parts at or past
        // the lowest block of the parts listed.
        let floor = listed.floor.unwrap_or(listed.top + 1);
        for key in by_time {
            held.since.insert(key, floor);
        }
        held.add_beyond(beyond);
        // A partition without an entry whose look found nothing need not look at older
        // parts again. One whose look found rows must, until an entry covers them: a
        // write failing now would otherwise forget them and write them twice.
        let mut scanned = self.scanned.lock().expect("scans poisoned");
        for key in unseen {
            let found = held
                .beyond
                .iter()
                .any(|(t, p, _)| *t == key.0 && *p == key.1);
            if !found {
                scanned.insert(key, listed.top + 1);
            }
        }
        Ok(held)
    }

    /// As [`Self::held`] past the ledger, over every part in `window`.
    async fn held_from(
        &self,
        mut held: HeldRows,
        window: Window,
        beyond_from: &OffsetMap,
    ) -> Result<HeldRows, SinkError> {
        let (listed, beyond) = self.read_recent(&window, beyond_from).await?;
        held.top = listed.top;
        for (topic, partition, _) in beyond_from.iter() {
            held.since
                .insert((topic.to_string(), partition), window.from_block);
        }
        held.add_beyond(beyond);
        Ok(held)
    }

    /// The parts in `window` and the coordinates of their rows past `beyond_from`,
    /// listed again after the read until no listed part has gone meanwhile.
    async fn read_recent(
        &self,
        window: &Window,
        beyond_from: &OffsetMap,
    ) -> Result<(Listed, Vec<serde_json::Value>), SinkError> {
        let mut listed = self.list(window).await?;
        for _ in 0..LIST_ATTEMPTS {
            if listed.names.is_empty() {
                return Ok((listed, Vec::new()));
            }
            // The parts are named in lists of bounded length: all of them in one
            // statement exceeded the server's `max_query_size` on finely partitioned
            // tables.
            let mut beyond = Vec::new();
            for chunk in part_lists(&listed.names) {
                let query =
                    self.ledger
                        .beyond_query(&self.client, &self.coordinates, chunk, beyond_from);
                beyond.extend(self.fetch(query).await?);
            }
            let again = self.list(window).await?;
            if listed.still_in(&again) {
                return Ok((listed, beyond));
            }
            listed = again;
        }
        Err(SinkError::retryable(
            &self.sink,
            format!(
                "reading positions: the table's recent parts were merged away {LIST_ATTEMPTS} times while they were read"
            ),
        ))
    }

    async fn list(&self, window: &Window) -> Result<Listed, SinkError> {
        let rows = self
            .fetch(self.ledger.recent_parts_query(&self.client, window))
            .await?;
        Listed::from_json(&rows).ok_or_else(|| {
            SinkError::retryable(
                &self.sink,
                format!("reading positions: an unreadable list of parts: {rows:?}"),
            )
        })
    }

    async fn fetch(&self, query: Query) -> Result<Vec<serde_json::Value>, SinkError> {
        fetch_json(query).await.map_err(|e| {
            SinkError::new(
                self.sink.clone(),
                format!("reading positions: {e}"),
                is_retryable(&e),
            )
        })
    }
}

#[async_trait::async_trait]
impl ingest_sink_api::PositionReader for LedgerReader {
    fn sink(&self) -> &str {
        &self.sink
    }

    async fn read(&self, partitions: &OffsetMap) -> Result<OffsetMap, SinkError> {
        Ok(self.held(partitions).await?.positions())
    }
}

/// What the table holds for some partitions: every offset below the `ledger`'s
/// position, plus the offsets in `beyond` (rows of an insert the ledger has not seen).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldRows {
    /// The ledger's positions.
    pub ledger: OffsetMap,
    pub beyond: HashSet<(String, i32, i64)>,
    /// Per partition, the first block of the parts read for `beyond`.
    pub since: HashMap<(String, i32), i64>,
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
    /// Adds the coordinates `rows` found past the ledger.
    fn add_beyond(&mut self, rows: Vec<serde_json::Value>) {
        for row in rows {
            let (Some(topic), Some(partition), Some(offset)) = (
                row["topic"].as_str(),
                json_number::<i64>(&row["partition"]),
                json_number::<i64>(&row["offset"]),
            ) else {
                continue;
            };
            self.beyond
                .insert((topic.to_string(), partition as i32, offset));
        }
    }

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
            let from_block = if left_beyond {
                self.since
                    .get(&(topic.to_string(), partition))
                    .copied()
                    .unwrap_or(0)
            } else {
                self.top + 1
            };
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

    /// A `?` in a name must not be taken for a placeholder by the `clickhouse` crate
    /// (it would shift the bound values and leave one unbound).
    #[test]
    fn names_with_a_question_mark_are_not_placeholders() {
        let client = clickhouse::Client::default();
        let ledger = Ledger::new("d?b", "t?able");
        let coordinates = CoordinateColumns {
            topic: "to?pic".into(),
            partition: "_partition".into(),
            offset: "_offset".into(),
        };
        let mut from = OffsetMap::default();
        from.advance("events", 0, 5);
        let parts = ["all_1_1_0".to_string()];
        let sql = ledger
            .beyond_query(&client, &coordinates, &parts, &from)
            .sql_display()
            .to_string();
        for expected in [
            "SELECT `to?pic` AS topic",
            "FROM `d?b`.`t?able`",
            "_part IN ('all_1_1_0')",
            "(`to?pic` = 'events' AND",
        ] {
            assert!(sql.contains(expected), "`{expected}` not in: {sql}");
        }
        let sql = ledger
            .entries_query(&client, &["events"])
            .sql_display()
            .to_string();
        assert!(
            sql.contains("FROM `d?b`.`t?able__ingest_positions` WHERE topic IN ('events')"),
            "{sql}"
        );
    }

    #[test]
    fn part_names_are_listed_in_bounded_statements() {
        assert!(part_lists(&[]).is_empty());
        let parts: Vec<String> = (0..15_000).map(|i| format!("{i}_{i}_{i}_0")).collect();
        let lists = part_lists(&parts);
        assert!(lists.len() > 1, "{}", lists.len());
        assert_eq!(lists.concat(), parts, "every part once, in order");
        for list in &lists {
            let names: usize = list.iter().map(|p| p.len() + 4).sum();
            assert!(names <= PART_LIST_BYTES, "{names}");
        }
        let one = vec!["x".repeat(PART_LIST_BYTES * 2)];
        assert_eq!(part_lists(&one), vec![&one[..]], "a long name still goes");
    }

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

    #[test]
    fn the_beyond_query_names_parts_and_partitions() {
        let client = clickhouse::Client::default();
        let ledger = Ledger::new("db", "events");
        let mut from = OffsetMap::default();
        from.advance("orders", 3, 100);
        let query = ledger.beyond_query(
            &client,
            &CoordinateColumns::default(),
            &["all_5_5_0".into()],
            &from,
        );
        let sql = query.sql_display().to_string();
        assert!(sql.contains("_part IN ('all_5_5_0')"), "{sql}");
        assert!(
            sql.contains("`_topic` = 'orders' AND `_partition` = 3 AND `_offset` >= 100"),
            "{sql}"
        );
        let table = ledger.create_statement();
        assert!(table.contains("`events__ingest_positions`"), "{table}");
        let [_, view] = ledger.entry_gate_statements("g_pos");
        assert!(
            view.contains("TO `db`.`events__ingest_positions`"),
            "{view}"
        );
    }

    #[test]
    fn entries_bind_their_topics() {
        let client = clickhouse::Client::default();
        let entry = |topic: &str, from_block| EntryToRecord {
            topic: topic.into(),
            partition: 1,
            next: 5,
            from_block,
        };
        let statement = Ledger::new("db", "events").entry_statement(
            &client,
            "g_pos",
            &[entry("it's", 1), entry("b", 7)],
        );
        assert_eq!(
            statement.sql_display().to_string(),
            "INSERT INTO `db`.`g_pos` (topic, partition, next, at, from_block) VALUES \
             ('it\\'s', 1, 5, now(), 1), ('b', 1, 5, now(), 7)"
        );
    }

    /// The ledger at 10, its rows past it in parts from block 500, the table at block
    /// 900, with rows found beyond it at `beyond`.
    fn ledger_at_10_with(beyond: std::ops::Range<i64>) -> HeldRows {
        let mut held = HeldRows {
            top: 900,
            ..HeldRows::default()
        };
        held.ledger.advance("t", 0, 10);
        held.since.insert(("t".into(), 0), 500);
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
        // Nothing new to say: no entry.
        assert!(held.entries_after(&written(8)).is_empty());
    }
}
