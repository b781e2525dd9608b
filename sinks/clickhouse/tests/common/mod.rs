//! Helpers shared by the ClickHouse sink tests: the local stack's server
//! (`CLICKHOUSE_URL`, default http://127.0.0.1:8123), a one-column table of ids and
//! batches of partition 0 of topic `events` whose ids are their offsets.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ingest_sink_api::{Coordinates, OffsetMap, SinkBatch};
use ingest_sink_clickhouse::{ClickHouseConnection, client, query_json};

pub fn url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn connection(database: &str) -> ClickHouseConnection {
    serde_json::from_value(serde_json::json!({ "url": url(), "database": database })).unwrap()
}

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// Rows of partition 0 at the given offsets; the id is the offset.
pub fn batch(offsets: impl Iterator<Item = i64>) -> SinkBatch {
    let offsets: Vec<i64> = offsets.collect();
    let mut positions = OffsetMap::default();
    positions.advance("events", 0, offsets.iter().max().unwrap() + 1);
    SinkBatch {
        batches: vec![
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(offsets.clone()))])
                .unwrap(),
        ],
        coordinates: vec![
            offsets
                .iter()
                .map(|&offset| Coordinates {
                    topic: "events",
                    partition: 0,
                    offset,
                })
                .collect(),
        ],
        positions,
        epoch: 0,
    }
}

/// Runs a statement, or a SELECT and returns its rows.
pub async fn sql(conn: &ClickHouseConnection, text: &str) -> Vec<serde_json::Value> {
    let c = client(conn);
    if text.starts_with("SELECT") {
        query_json(&c, text).await.unwrap()
    } else {
        c.query(text).execute().await.unwrap();
        Vec::new()
    }
}

/// A count from JSON output (64-bit integers come quoted).
pub fn number(v: &serde_json::Value) -> u64 {
    v.as_str()
        .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
}

/// (rows, distinct offsets) of the `events` table.
pub async fn counts(conn: &ClickHouseConnection) -> (u64, u64) {
    let row = &sql(
        conn,
        &format!(
            "SELECT count() AS n, uniqExact(_offset) AS u FROM {}.events",
            conn.database
        ),
    )
    .await[0];
    (number(&row["n"]), number(&row["u"]))
}
