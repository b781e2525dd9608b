//! The ClickHouse sink's positions, against the real ClickHouse server of the local
//! stack (`CLICKHOUSE_URL`, default http://127.0.0.1:8123).
//!
//! - A replayed batch is not inserted twice.
//! - Rows that reached the table without a ledger entry (the crash window between an
//!   insert's parts and its materialized view) are found in the recent parts, and a
//!   replay fills exactly the gaps around them.
//! - Recovery reads the ledger and recent parts only, not the whole table.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ingest_sinks::clickhouse::{
    ClickHouseConnection, ClickHouseSink, ClickHouseTable, Coordinates, client, query_json,
};
use ingest_sinks::{OffsetMap, RowPosition, Sink, SinkBatch};

fn connection(database: &str) -> ClickHouseConnection {
    let url = std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    serde_json::from_value(serde_json::json!({ "url": url, "database": database })).unwrap()
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// Rows of partition 0 at the given offsets; the id is the offset.
fn batch(offsets: impl Iterator<Item = i64>) -> SinkBatch {
    let offsets: Vec<i64> = offsets.collect();
    let mut next_offsets = OffsetMap::default();
    next_offsets.advance("events", 0, offsets.iter().max().unwrap() + 1);
    SinkBatch {
        batches: vec![
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(offsets.clone()))])
                .unwrap(),
        ],
        positions: vec![
            offsets
                .iter()
                .map(|&offset| RowPosition {
                    topic: "events",
                    partition: 0,
                    offset,
                })
                .collect(),
        ],
        next_offsets,
        fence_epoch: 0,
    }
}

async fn sql(conn: &ClickHouseConnection, text: &str) -> Vec<serde_json::Value> {
    let c = client(conn);
    if text.starts_with("SELECT") {
        query_json(&c, text).await.unwrap()
    } else {
        c.query(text).execute().await.unwrap();
        Vec::new()
    }
}

async fn open(conn: &ClickHouseConnection, partition_by: Option<&str>) -> ClickHouseSink {
    let mut table: ClickHouseTable =
        serde_json::from_value(serde_json::json!({"table": "events", "order_by": ["id"]})).unwrap();
    table.partition_by = partition_by.map(str::to_string);
    ClickHouseSink::open(conn, &table, schema(), Coordinates::default())
        .await
        .unwrap()
}

/// (rows, distinct offsets) of partition 0.
async fn counts(conn: &ClickHouseConnection) -> (u64, u64) {
    let row = &sql(
        conn,
        &format!(
            "SELECT count() AS n, uniqExact(_offset) AS u FROM {}.events",
            conn.database
        ),
    )
    .await[0];
    let n = |v: &serde_json::Value| {
        v.as_str()
            .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
    };
    (n(&row["n"]), n(&row["u"]))
}

#[tokio::test]
async fn replays_and_crash_window_rows_are_not_inserted_twice() {
    let conn = connection(&format!("positions_{}", std::process::id()));
    sql(&conn, &format!("DROP DATABASE IF EXISTS {}", conn.database)).await;
    // Partitioned by the id, as a user table may be: one insert becomes several parts.
    let mut sink = open(&conn, Some("id % 3")).await;
    sink.write(&batch(0..100)).await.unwrap();
    sink.write(&batch(0..100)).await.unwrap(); // a replay after a crash
    assert_eq!(counts(&conn).await, (100, 100));

    // The crash window: rows 100..150 and 170..180 reached the table, the view did not
    // record them (as when the server dies between an insert's parts and its view).
    let db = &conn.database;
    sql(
        &conn,
        &format!("DROP TABLE {db}.events__ingest_positions_mv"),
    )
    .await;
    sql(
        &conn,
        &format!(
            "INSERT INTO {db}.events (id, _topic, _partition, _offset) \
             SELECT number, 'events', 0, number FROM system.numbers \
             WHERE (number >= 100 AND number < 150) OR (number >= 170 AND number < 180) LIMIT 60"
        ),
    )
    .await;
    let mut sink = open(&conn, Some("id % 3")).await; // restores the view
    let durable = sink
        .durable_offsets(&batch(0..1).next_offsets)
        .await
        .unwrap();
    assert_eq!(
        durable.get("events", 0),
        Some(150),
        "ledger 100, then 100..150 found"
    );

    sink.write(&batch(100..200)).await.unwrap();
    assert_eq!(
        counts(&conn).await,
        (200, 200),
        "the gaps are filled, nothing doubled"
    );
    let durable = sink.durable_offsets(&OffsetMap::default()).await.unwrap();
    assert_eq!(durable.get("events", 0), Some(200));
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
}

#[tokio::test]
async fn recovery_reads_recent_parts_not_the_whole_table() {
    const ROWS: u64 = 10_000_000;
    let conn = connection(&format!("recovery_{}", std::process::id()));
    let db = conn.database.clone();
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
    let mut sink = open(&conn, None).await;
    // A big table written through the view, as a long-running pipeline leaves it.
    sql(
        &conn,
        &format!(
            "INSERT INTO {db}.events (id, _topic, _partition, _offset) \
             SELECT number, 'events', 0, number FROM numbers({ROWS})"
        ),
    )
    .await;
    // Its parts merged (as a long-running table's are) a while before the next write:
    // recovery reads the parts written or merged since the partition's last write.
    sql(&conn, &format!("OPTIMIZE TABLE {db}.events FINAL")).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // This write's own check reads the parts of the bulk insert above (they follow the
    // ledger's entry for it); the recovery measured below follows this write.
    sink.write(&batch(ROWS as i64..ROWS as i64 + 1000))
        .await
        .unwrap();
    let since = sql(&conn, "SELECT toUInt32(now() + 1) AS t").await[0]["t"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let started = std::time::Instant::now();
    let durable = sink
        .durable_offsets(&batch(0..1).next_offsets)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(durable.get("events", 0), Some(ROWS as i64 + 1000));
    // The three recovery queries (ledger, recent parts, their coordinates) as logged.
    let mut read = Vec::new();
    for _ in 0..50 {
        sql(&conn, "SYSTEM FLUSH LOGS").await;
        read = sql(
            &conn,
            &format!(
                "SELECT sum(read_rows) AS r, count() AS q FROM system.query_log WHERE type = 2 \
                 AND event_time >= toDateTime({since}) AND query LIKE '%{db}%' \
                 AND query NOT LIKE '%query_log%'"
            ),
        )
        .await;
        if read[0]["q"].as_str() == Some("3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(read[0]["q"].as_str(), Some("3"), "{read:?}");
    let read_rows: u64 = read[0]["r"].as_str().map_or(0, |s| s.parse().unwrap());
    assert!(
        read_rows < ROWS / 1000,
        "recovery read {read_rows} rows of a {ROWS}-row table ({read:?})"
    );
    println!("recovery on a {ROWS}-row table: {read_rows} rows read, {took:?}");
    assert_eq!(counts(&conn).await.0, ROWS + 1000);
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
}
