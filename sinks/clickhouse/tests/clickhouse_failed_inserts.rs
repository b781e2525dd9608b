//! An insert the server refuses half way never leaves the position ledger claiming rows
//! the table lacks, against the real ClickHouse server of the local stack
//! (`CLICKHOUSE_URL`, default http://127.0.0.1:8123).
//!
//! The refusal is the server's own: a table whose `parts_to_throw_insert` is tiny and
//! whose merges are stopped answers "Too many parts" (code 252) while the insert is
//! pushed through the writer's gate into the table, the way a busy production table
//! does. On 18.16 that once left the ledger ahead of the table (issue 10): the gate's
//! ledger view ran before its rows view, and the retry skipped the rows as a replay.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use common::{batch, counts, database_with_table, drop_database, events_table, open, sql};
use ingest_sink_api::{OffsetMap, Sink};

#[tokio::test]
async fn a_refused_insert_leaves_no_position_and_its_retry_lands_every_row() {
    // The user's table, made by hand with settings that refuse inserts early.
    let conn = database_with_table(
        "refused",
        "events",
        "MergeTree() ORDER BY id SETTINGS parts_to_throw_insert = 3, \
         parts_to_delay_insert = 2, max_delay_to_insert = 1",
    )
    .await;
    let db = conn.database.clone();
    let mut sink = open(&conn, &events_table()).await;
    sql(&conn, &format!("SYSTEM STOP MERGES {db}.events")).await;

    // One insert, one part: the fourth and fifth are refused.
    let mut refused = Vec::new();
    for offset in 0..5 {
        if let Err(e) = sink.write(&batch(offset..offset + 1)).await {
            assert!(e.is_retryable(), "too many parts is worth retrying: {e:?}");
            refused.push(offset);
        }
    }
    assert!(!refused.is_empty(), "the server refused no insert");
    let positions = sink.read_positions(&batch(0..1).positions).await.unwrap();
    let (rows, _) = counts(&conn).await;
    assert_eq!(
        positions.get("events", 0).unwrap_or(0),
        rows as i64,
        "the positions claim exactly the rows the table holds ({refused:?} were refused)"
    );

    // The table takes inserts again: the retries land every refused row, once.
    sql(&conn, &format!("SYSTEM START MERGES {db}.events")).await;
    sql(&conn, &format!("OPTIMIZE TABLE {db}.events FINAL")).await;
    for offset in refused {
        sink.write(&batch(offset..offset + 1)).await.unwrap();
    }
    assert_eq!(counts(&conn).await, (5, 5), "every row once");
    let positions = sink.read_positions(&OffsetMap::default()).await.unwrap();
    assert_eq!(positions.get("events", 0), Some(5));
    drop_database(&conn).await;
}
