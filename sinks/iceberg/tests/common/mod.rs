//! What the Iceberg sink's tests share: a fresh SQLite catalog on the local filesystem,
//! a one-column `events` table and the sink batches that fill it.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ingest_sink_api::{Coordinates, OffsetMap, SinkBatch};
use ingest_sink_iceberg::{CatalogConfig, CatalogKind, IcebergTable};

/// Rows per batch.
pub const ROWS: i64 = 100;

/// The `round`-th batch of `partition` of topic `events`: offsets `round * ROWS` on, ids
/// unique across partitions.
pub fn batch(schema: &Arc<Schema>, partition: i32, round: i64) -> SinkBatch {
    let first = round * ROWS;
    let start = (partition as i64 * 1_000_000) + first;
    let ids = Int64Array::from_iter_values(start..start + ROWS);
    let mut positions = OffsetMap::default();
    positions.advance("events", partition, first + ROWS);
    let coordinates = (first..first + ROWS)
        .map(|offset| Coordinates {
            topic: "events".into(),
            partition,
            offset,
        })
        .collect();
    SinkBatch {
        batches: vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()],
        coordinates: vec![coordinates],
        positions,
        epoch: 0,
        watermark: None,
    }
}

/// One row in each of `partitions` of topic `events`, at offset `offset` (ids past
/// those `batch` makes): a batch whose positions cover many partitions at once.
#[allow(dead_code)] // not every test file uses it
pub fn one_row_per_partition(
    schema: &Arc<Schema>,
    partitions: std::ops::Range<i32>,
    offset: i64,
) -> SinkBatch {
    let ids = Int64Array::from_iter_values(partitions.clone().map(|p| -(p as i64) - 1));
    let mut positions = OffsetMap::default();
    let coordinates = partitions
        .map(|partition| {
            positions.advance("events", partition, offset + 1);
            Coordinates {
                topic: "events".into(),
                partition,
                offset,
            }
        })
        .collect();
    SinkBatch {
        batches: vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()],
        coordinates: vec![coordinates],
        positions,
        epoch: 0,
        watermark: None,
    }
}

/// A fresh SQLite catalog with a local warehouse under the temp directory.
pub fn catalog_config(name: &str) -> CatalogConfig {
    let dir = std::env::temp_dir().join(format!("ingest-iceberg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    CatalogConfig {
        kind: CatalogKind::Sql,
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        name: "ingest".into(),
        properties: Default::default(),
    }
}

/// The route's schema (one `id` column) and its `events` table.
pub fn events_table() -> (Arc<Schema>, IcebergTable) {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    (
        schema,
        serde_json::from_str(r#"{"table": "events"}"#).unwrap(),
    )
}

/// Every row of the table's current snapshot, through iceberg-rust's own reader.
#[allow(dead_code)] // not every test file uses it
pub async fn scan_all(table: &iceberg::table::Table) -> Vec<RecordBatch> {
    futures::TryStreamExt::try_collect(
        table
            .scan()
            .select_all()
            .build()
            .unwrap()
            .to_arrow()
            .await
            .unwrap(),
    )
    .await
    .unwrap()
}
