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

mod held;
mod recovery;
#[cfg(test)]
mod recovery_sim;

pub use held::{EntryToRecord, HeldRows, RecordedEntry};
pub use recovery::{Listed, Scanned, TableLook, Window};

use ingest_sink_api::{OffsetMap, SinkError};

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

/// Reads a table's positions; shared by its sink and by the resume on assignment.
pub struct LedgerReader {
    /// The sink's name, for errors.
    pub sink: String,
    pub client: clickhouse::Client,
    pub ledger: Ledger,
    pub coordinates: CoordinateColumns,
    pub scanned: Scanned,
}

impl LedgerReader {
    /// What the table holds already for the partitions in `from` (see
    /// [`recovery::held`]).
    pub async fn held(&self, from: &OffsetMap) -> Result<HeldRows, SinkError> {
        recovery::held(self, &self.scanned, from).await
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

/// Recovery's looks as ClickHouse queries.
#[async_trait::async_trait]
impl TableLook for LedgerReader {
    fn sink(&self) -> &str {
        &self.sink
    }

    async fn entries(&self, topics: &[&str]) -> Result<Vec<RecordedEntry>, SinkError> {
        let rows = self
            .fetch(self.ledger.entries_query(&self.client, topics))
            .await?;
        Ok(rows.iter().filter_map(RecordedEntry::from_json).collect())
    }

    async fn list(&self, window: &Window) -> Result<Listed, SinkError> {
        let rows = self
            .fetch(self.ledger.recent_parts_query(&self.client, window))
            .await?;
        listed_from_json(&rows).ok_or_else(|| {
            SinkError::retryable(
                &self.sink,
                format!("reading positions: an unreadable list of parts: {rows:?}"),
            )
        })
    }

    async fn beyond(
        &self,
        parts: &[String],
        from: &OffsetMap,
    ) -> Result<Vec<(String, i32, i64)>, SinkError> {
        // The parts are named in lists of bounded length: all of them in one statement
        // exceeded the server's `max_query_size` on finely partitioned tables.
        let mut found = Vec::new();
        for chunk in part_lists(parts) {
            let query = self
                .ledger
                .beyond_query(&self.client, &self.coordinates, chunk, from);
            for row in self.fetch(query).await? {
                if let (Some(topic), Some(partition), Some(offset)) = (
                    row["topic"].as_str(),
                    json_number::<i64>(&row["partition"]),
                    json_number::<i64>(&row["offset"]),
                ) {
                    found.push((topic.to_string(), partition as i32, offset));
                }
            }
        }
        Ok(found)
    }
}

/// The one row of [`Ledger::recent_parts_query`].
fn listed_from_json(rows: &[serde_json::Value]) -> Option<Listed> {
    let row = rows.first()?;
    let names: Vec<String> = row["names"]
        .as_array()?
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    Some(Listed {
        floor: (!names.is_empty())
            .then(|| json_number(&row["floor"]))
            .flatten(),
        names,
        top: json_number(&row["top"])?,
    })
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
}
