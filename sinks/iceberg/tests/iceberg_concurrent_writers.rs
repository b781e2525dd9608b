//! Two sinks (as two service instances would) append to one Iceberg table at the same
//! time through a real SQLite catalog on the local filesystem. Every file must land
//! once, and the snapshot summary must end with both writers' Kafka positions: a
//! writer that lost a commit race rebuilds its positions on the winner's snapshot
//! instead of overwriting them.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ingest_sink_api::{Coordinates, OffsetMap, Sink, SinkBatch};
use ingest_sink_iceberg::{
    CatalogConfig, CatalogKind, IcebergSink, IcebergTable, offsets_key, open_catalog,
    recorded_offsets,
};

const COMMITS: i64 = 12;
const ROWS: i64 = 100;

fn batch(schema: &Arc<Schema>, partition: i32, round: i64) -> SinkBatch {
    let start = (partition as i64 * 1_000_000) + round * ROWS;
    let ids = Int64Array::from_iter_values(start..start + ROWS);
    let mut positions = OffsetMap::default();
    positions.advance("events", partition, (round + 1) * ROWS);
    let coordinates = (round * ROWS..(round + 1) * ROWS)
        .map(|offset| Coordinates {
            topic: "events",
            partition,
            offset,
        })
        .collect();
    SinkBatch {
        batches: vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()],
        coordinates: vec![coordinates],
        positions,
        epoch: 0,
    }
}

/// A fresh SQLite catalog with a local warehouse under the temp directory.
fn catalog_config(name: &str) -> CatalogConfig {
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

fn events_table() -> (Arc<Schema>, IcebergTable) {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    (
        schema,
        serde_json::from_str(r#"{"table": "events"}"#).unwrap(),
    )
}

/// The table as a reader sees it, and how many rows its current snapshot holds.
async fn read_back(config: &CatalogConfig) -> (iceberg::table::Table, i64) {
    let catalog = open_catalog(config).await.unwrap();
    let ident = iceberg::TableIdent::from_strs(["ns", "events"]).unwrap();
    let loaded = catalog.load_table(&ident).await.unwrap();
    let rows: usize = futures::TryStreamExt::try_collect::<Vec<_>>(
        loaded
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
    .iter()
    .map(RecordBatch::num_rows)
    .sum();
    (loaded, rows as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_keep_every_file_and_every_position() {
    let config = catalog_config("cas");
    let (schema, table) = events_table();
    let mut writers = Vec::new();
    for _ in 0..2 {
        // Each writer has its own catalog connection, like a separate process.
        let catalog = open_catalog(&config).await.unwrap();
        writers.push(
            IcebergSink::open(catalog, "ns", &table, schema.clone(), "group")
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(partition, mut sink)| {
            let schema = schema.clone();
            tokio::spawn(async move {
                for round in 0..COMMITS {
                    sink.write(&batch(&schema, partition as i32, round))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let (loaded, rows) = read_back(&config).await;
    assert_eq!(
        rows,
        2 * COMMITS * ROWS,
        "every appended file is in the table once"
    );
    let positions = recorded_offsets(&loaded, &offsets_key("group")).unwrap();
    assert_eq!(positions.get("events", 0), Some(COMMITS * ROWS));
    assert_eq!(positions.get("events", 1), Some(COMMITS * ROWS));
    assert_eq!(
        loaded.metadata().snapshots().count() as i64,
        2 * COMMITS,
        "one snapshot per write"
    );
}

/// A batch replayed after a crash (the table already records its positions) adds
/// nothing; the next batch adds its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_not_written_twice() {
    let config = catalog_config("replay");
    let (schema, table) = events_table();
    let catalog = open_catalog(&config).await.unwrap();
    let mut sink = IcebergSink::open(catalog, "ns", &table, schema.clone(), "group")
        .await
        .unwrap();
    sink.write(&batch(&schema, 0, 0)).await.unwrap();
    sink.write(&batch(&schema, 0, 0)).await.unwrap(); // the same batch again: a replay
    sink.write(&batch(&schema, 0, 1)).await.unwrap();
    let (loaded, rows) = read_back(&config).await;
    assert_eq!(rows, 2 * ROWS);
    assert_eq!(
        recorded_offsets(&loaded, &offsets_key("group"))
            .unwrap()
            .get("events", 0),
        Some(2 * ROWS)
    );
}
