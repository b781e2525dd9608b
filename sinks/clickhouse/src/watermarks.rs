//! Where the ClickHouse sink keeps the completeness watermark, for readers: a small
//! `<table>__ingest_watermarks` table beside the data, one row per partition and write,
//! folded to the highest per partition (`ReplacingMergeTree` on the watermark: a
//! watermark is a claim that stays true, so the highest one stands). Written after the
//! rows and their ledger entry, so it never claims rows the table lacks; a lost write
//! only leaves it behind until the next. "Is the table complete up to 10:00?":
//!
//! ```sql
//! SELECT toDateTime(intDiv(min(w), 1000)), count() AS partitions FROM (SELECT topic,
//!   partition, max(watermark_ms) AS w FROM db.events__ingest_watermarks GROUP BY topic, partition)
//! ```
//!
//! (with `partitions` checked against the topic's: a partition nobody wrote yet has no
//! row.)
//!
//! `UInt64` milliseconds rather than `DateTime64`, which ClickHouse 18.16 lacks.

use ingest_sink_api::{Partition, Watermark};

use crate::client::{bind_all, bound_qualified};
use crate::types::quote_ident;

/// The watermark table, named after the data table.
#[derive(Debug, Clone)]
pub struct Watermarks {
    database: String,
    table: String,
}

impl Watermarks {
    pub fn new(database: &str, table: &str) -> Self {
        Self {
            database: database.into(),
            table: format!("{table}__ingest_watermarks"),
        }
    }

    pub fn name(&self) -> &str {
        &self.table
    }

    /// The statement creating it (idempotent).
    pub fn create_statement(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (topic String, partition Int32, \
             watermark_ms UInt64, at DateTime) \
             ENGINE = ReplacingMergeTree(watermark_ms) ORDER BY (topic, partition)",
            quote_ident(&self.database),
            quote_ident(&self.table)
        )
    }

    /// Records `watermark` for its partitions but those in `skip` (left to another
    /// writer: this one's claim does not cover them); `None` when nothing is left.
    pub fn record_statement(
        &self,
        client: &clickhouse::Client,
        watermark: &Watermark,
        skip: &[Partition],
    ) -> Option<clickhouse::query::Query> {
        let ms = watermark.time_ms.max(0);
        let partitions: Vec<&Partition> = watermark
            .partitions
            .iter()
            .filter(|p| !skip.contains(p))
            .collect();
        if partitions.is_empty() {
            return None;
        }
        let values: Vec<String> = partitions
            .iter()
            .map(|p| format!("(?, {}, {ms}, now())", p.partition))
            .collect();
        let statement = client.query(&format!(
            "INSERT INTO {} (topic, partition, watermark_ms, at) VALUES {}",
            bound_qualified(&self.database, &self.table),
            values.join(", ")
        ));
        Some(bind_all(
            statement,
            partitions.iter().map(|p| p.topic.as_str()),
        ))
    }
}
