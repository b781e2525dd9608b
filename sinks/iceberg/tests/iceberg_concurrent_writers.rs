//! Two sinks (as two service instances would) append to one Iceberg table at the same
//! time through a real SQLite catalog on the local filesystem. Every file must land
//! once, and the table's positions must end with both writers' Kafka positions: a
//! writer that lost a commit race rebuilds its positions on the winner's snapshot
//! instead of overwriting them.

mod common;

use arrow_array::RecordBatch;
use common::{ROWS, batch, catalog_config, events_table};
use ingest_sink_api::Sink;
use ingest_sink_iceberg::{
    CatalogConfig, IcebergSink, open_catalog, positions_key, recorded_positions,
};

const COMMITS: i64 = 12;

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
    let positions = recorded_positions(&loaded, &positions_key("group")).unwrap();
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
        recorded_positions(&loaded, &positions_key("group"))
            .unwrap()
            .get("events", 0),
        Some(2 * ROWS)
    );
}
