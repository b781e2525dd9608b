//! The ClickHouse sink's positions, against the real ClickHouse server of the local
//! stack (`CLICKHOUSE_URL`, default http://127.0.0.1:8123).
//!
//! - A replayed batch is not inserted twice.
//! - Rows that reached the table without a ledger entry (the crash window between an
//!   insert and its ledger entry) are found in the recent parts, and a replay fills
//!   exactly the gaps around them; found once, they stay found.
//! - Recovery reads the ledger and recent parts only, not the whole table.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::http_proxy::{Action, Hook, HttpProxy};
use common::{batch, connection, counts, drop_database, events_table, fresh_database, sql};
use ingest_sink_api::{OffsetMap, Sink};
use ingest_sink_clickhouse::{ClickHouseConnection, ClickHouseSink, ClickHouseTable};

/// Rows of partition 0 whose id is their offset, `numbers` in `SELECT number FROM
/// {numbers}`, put in the table as a cut insert leaves them: no ledger entry.
async fn rows_without_entry(conn: &ClickHouseConnection, numbers: &str) {
    let db = &conn.database;
    sql(
        conn,
        &format!(
            "INSERT INTO {db}.events (id, _topic, _partition, _offset) \
             SELECT number, 'events', 0, number FROM {numbers}"
        ),
    )
    .await;
}

/// Opens a sink on `events`, partitioned by `partition_by`.
async fn open(conn: &ClickHouseConnection, partition_by: Option<&str>) -> ClickHouseSink {
    let table = ClickHouseTable {
        partition_by: partition_by.map(str::to_string),
        ..events_table()
    };
    common::open(conn, &table).await
}

/// A test's own database (emptied) and a sink on its unpartitioned `events` table.
async fn fresh_sink(database: &str) -> (ClickHouseConnection, ClickHouseSink) {
    let conn = fresh_database(database).await;
    let sink = open(&conn, None).await;
    (conn, sink)
}

/// The position the sink reads for partition 0 of `events`.
async fn position(sink: &ClickHouseSink) -> Option<i64> {
    let partition = batch(0..1).positions;
    sink.read_positions(&partition)
        .await
        .unwrap()
        .get("events", 0)
}

/// Every row of `events` is there once, `rows` in all; the database is dropped.
async fn every_row_once(conn: &ClickHouseConnection, rows: u64) {
    assert_eq!(counts(conn).await, (rows, rows), "nothing written twice");
    drop_database(conn).await;
}

#[tokio::test]
async fn replays_and_crash_window_rows_are_not_inserted_twice() {
    let conn = fresh_database("positions").await;
    // Partitioned by the id, as a user table may be: one insert becomes several parts.
    let mut sink = open(&conn, Some("id % 3")).await;
    sink.write(&batch(0..100)).await.unwrap();
    sink.write(&batch(0..100)).await.unwrap(); // a replay after a crash
    assert_eq!(counts(&conn).await, (100, 100));

    // The crash window: rows 100..150 and 170..180 reached the table, no ledger entry
    // records them (as when the writer dies between its insert and its entry, or the
    // server between the insert's parts).
    rows_without_entry(&conn, "system.numbers WHERE (number >= 100 AND number < 150) OR (number >= 170 AND number < 180) LIMIT 60").await;
    let mut sink = open(&conn, Some("id % 3")).await; // a new process
    assert_eq!(
        position(&sink).await,
        Some(150),
        "ledger 100, then 100..150 found"
    );

    sink.write(&batch(100..200)).await.unwrap();
    assert_eq!(
        counts(&conn).await,
        (200, 200),
        "the gaps are filled, nothing doubled"
    );
    let positions = sink.read_positions(&OffsetMap::default()).await.unwrap();
    assert_eq!(positions.get("events", 0), Some(200));
    drop_database(&conn).await;
}

#[tokio::test]
async fn rows_found_by_the_first_look_at_a_partition_stay_found() {
    // Issue 10, hole 2: a partition without a ledger entry gets one full look per
    // process, later looks read only newer parts. Rows the first look found (a first
    // insert cut short before its entry) must not be forgotten by the second: on
    // assignment the resume looks once, the write looks again.
    let (conn, mut sink) = fresh_sink("firstlook").await;
    rows_without_entry(&conn, "numbers(50)").await;
    // Part times are whole seconds: the looks below come later than the part.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(position(&sink).await, Some(50));
    assert_eq!(
        position(&sink).await,
        Some(50),
        "the second look forgot the rows the first one found"
    );
    sink.write(&batch(0..100)).await.unwrap();
    every_row_once(&conn, 100).await;
}

#[tokio::test]
async fn a_shorter_retry_does_not_hide_rows_found_past_it() {
    // Issue 10, hole 1: rows 15..40 of an interrupted insert reached the table (its
    // part holding 10..15 did not). The retry holds only 10..20: its entry must not
    // make the next look skip the parts holding 20..40, or the position moves back to
    // 20 and those rows are written again.
    let (conn, mut sink) = fresh_sink("shorter").await;
    sink.write(&batch(0..10)).await.unwrap();
    rows_without_entry(&conn, "numbers(40) WHERE number >= 15").await;
    // Part times are whole seconds: the retry's entry comes later than the part.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    sink.write(&batch(10..20)).await.unwrap();
    assert_eq!(position(&sink).await, Some(40), "the position moved back");
    sink.write(&batch(20..40)).await.unwrap();
    every_row_once(&conn, 40).await;
}

#[tokio::test]
async fn recovery_reads_recent_parts_not_the_whole_table() {
    const ROWS: u64 = 10_000_000;
    let (conn, mut sink) = fresh_sink("recovery").await;
    let db = conn.database.clone();
    // A big table and its ledger entry, as a long-running pipeline leaves them.
    rows_without_entry(&conn, &format!("numbers({ROWS})")).await;
    sql(
        &conn,
        &format!(
            "INSERT INTO {db}.events__ingest_positions (topic, partition, next, at, from_block) \
             SELECT 'events' AS topic, toInt32(0) AS partition, maxState(toInt64({ROWS})) AS next, \
             maxState(now()) AS at, maxState(toInt64(max_block_number + 1)) AS from_block \
             FROM system.parts WHERE database = '{db}' AND table = 'events' AND active \
             GROUP BY topic, partition"
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
    let resumed = position(&sink).await;
    let took = started.elapsed();
    assert_eq!(resumed, Some(ROWS as i64 + 1000));
    // The four recovery queries (ledger, recent parts, their coordinates, the recent
    // parts again) as logged.
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
        if read[0]["q"].as_str() == Some("4") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(read[0]["q"].as_str(), Some("4"), "{read:?}");
    let read_rows: u64 = read[0]["r"].as_str().map_or(0, |s| s.parse().unwrap());
    assert!(
        read_rows < ROWS / 1000,
        "recovery read {read_rows} rows of a {ROWS}-row table ({read:?})"
    );
    println!("recovery on a {ROWS}-row table: {read_rows} rows read, {took:?}");
    every_row_once(&conn, ROWS + 1000).await;
}

/// Issue 16, item 11: the first look at a partition without a ledger entry names every
/// active part of the table in one `_part IN (...)` list. A finely partitioned table
/// (here 15,000 partitions of one part each, as `PARTITION BY` a fine key leaves it)
/// made that statement longer than the server's `max_query_size` (262,144 bytes by
/// default), and every write of such a partition failed. The rows found there (an
/// interrupted insert's, without an entry) must still be found and skipped.
#[tokio::test]
async fn the_first_look_at_a_table_with_many_parts_is_not_one_huge_statement() {
    const PARTS: u64 = 15_000;
    let conn = fresh_database("positions_many_parts").await;
    let mut sink = open(&conn, Some("id")).await;
    rows_without_entry(&conn, &format!("numbers({PARTS})")).await;
    let db = &conn.database;
    let parts = &sql(
        &conn,
        &format!("SELECT count() AS n FROM system.parts WHERE database = '{db}' AND table = 'events' AND active"),
    )
    .await[0]["n"];
    assert_eq!(common::number(parts), PARTS);

    let written = sink.write(&batch(0..PARTS as i64 + 10)).await;
    assert!(written.is_ok(), "{written:?}");
    assert_eq!(
        counts(&conn).await,
        (PARTS + 10, PARTS + 10),
        "every offset once"
    );
    let positions = sink.read_positions(&batch(0..1).positions).await.unwrap();
    assert_eq!(positions.get("events", 0), Some(PARTS as i64 + 10));
    drop_database(&conn).await;
}

/// Issue 16, item 8 (clock): the ledger's entry time was a max over the server's
/// wall-clock times, and recovery read the parts written or merged since. A server
/// clock that ran ahead when an entry was recorded, then was put right, hid every part
/// written after it: the rows an interrupted insert left past the entry were written a
/// second time. The entry of a clock an hour ahead is a STAND-IN row put into the
/// ledger by hand: a test cannot move the server's clock.
#[tokio::test]
async fn an_entry_recorded_while_the_clock_ran_ahead_hides_no_later_rows() {
    let (conn, mut sink) = fresh_sink("clock_ahead").await;
    sink.write(&batch(0..10)).await.unwrap();
    entry_by_hand(&conn, "at", "maxState(now() + 3600)").await;
    // The clock put right, an insert cut short before its entry.
    rows_past_10_are_found_and_written_once(&conn).await;
}

/// A ledger row for partition 0 at 10 put in by hand (a STAND-IN for what a test cannot
/// make a server do): `states` are the aggregate states of `columns`, after `next`.
async fn entry_by_hand(conn: &ClickHouseConnection, columns: &str, states: &str) {
    let db = &conn.database;
    sql(
        conn,
        &format!(
            "INSERT INTO {db}.events__ingest_positions (topic, partition, next, {columns}) \
             SELECT 'events', toInt32(0), maxState(toInt64(10)), {states} FROM system.one"
        ),
    )
    .await;
}

/// Rows 10..30 of an insert cut short before its entry (the ledger at 10) are found by
/// a new process, which then writes 0..40 with every row once.
async fn rows_past_10_are_found_and_written_once(conn: &ClickHouseConnection) {
    rows_without_entry(conn, "numbers(30) WHERE number >= 10").await;
    let mut sink = open(conn, None).await; // a new process
    assert_eq!(position(&sink).await, Some(30), "rows 10..30 were hidden");
    sink.write(&batch(0..40)).await.unwrap();
    every_row_once(conn, 40).await;
}

/// Issue 16, item 8 (merge): recovery listed the recent parts in one query and read
/// their rows by part name in a second. A merge in between (likeliest in the parts
/// storms recovery is for) retired the listed names, the read found nothing, and the
/// rows past the ledger were written again. The proxy ([`HttpProxy`], a STAND-IN: no
/// real part merges on cue) merges the table just before the first read of rows by
/// part.
#[tokio::test]
async fn a_merge_between_listing_the_parts_and_reading_them_hides_no_rows() {
    let (conn, mut sink) = fresh_sink("merge_between").await;
    sink.write(&batch(0..10)).await.unwrap();
    // Rows of two inserts cut short before their entries: two more parts.
    rows_without_entry(&conn, "numbers(20) WHERE number >= 10").await;
    rows_without_entry(&conn, "numbers(30) WHERE number >= 20").await;
    let merged = Arc::new(AtomicBool::new(false));
    let db = conn.database.clone();
    let hook: Hook = Arc::new(move |_, request| {
        let (merged, db) = (merged.clone(), db.clone());
        Box::pin(async move {
            let text = request.text();
            let reads_parts = text.contains("_part IN") && !text.contains("system.parts");
            if reads_parts && !merged.swap(true, Ordering::SeqCst) {
                sql(
                    &connection(&db),
                    &format!("OPTIMIZE TABLE {db}.events FINAL"),
                )
                .await;
            }
            Action::Forward
        })
    });
    let proxy = HttpProxy::start(hook).await;
    let mut sink = open(&proxy.in_front_of(&conn), None).await; // a new process
    assert_eq!(position(&sink).await, Some(30), "rows 10..30 were hidden");
    sink.write(&batch(0..40)).await.unwrap();
    every_row_once(&conn, 40).await;
}

/// A ledger made by an earlier release (entries with a time, no `from_block`) gets the
/// column on start, and its entries still find the rows past them, by time, until this
/// release records a block. Without `create_tables` the start is refused with the
/// statement to run.
#[tokio::test]
async fn a_ledger_of_an_earlier_release_gets_its_block_column_and_finds_rows_by_time() {
    let (conn, mut sink) = fresh_sink("ledger_upgrade").await;
    sink.write(&batch(0..10)).await.unwrap();
    let db = &conn.database;
    sql(
        &conn,
        &format!("ALTER TABLE {db}.events__ingest_positions DROP COLUMN from_block"),
    )
    .await;
    rows_without_entry(&conn, "numbers(30) WHERE number >= 10").await;

    let by_hand = ingest_sink_clickhouse::ClickHouseConnection {
        create_tables: false,
        ..conn.clone()
    };
    let refused = common::try_open(&by_hand, &events_table(), common::schema())
        .await
        .err()
        .expect("a ledger without from_block is refused without create_tables");
    assert!(
        refused.to_string().contains("ADD COLUMN from_block"),
        "{refused}"
    );

    let mut sink = open(&conn, None).await; // the new release
    assert_eq!(position(&sink).await, Some(30), "rows 10..30 were hidden");
    sink.write(&batch(0..40)).await.unwrap();
    let blocks = sql(
        &conn,
        &format!(
            "SELECT maxMerge(from_block) AS b FROM {db}.events__ingest_positions \
             GROUP BY topic, partition"
        ),
    )
    .await;
    assert!(common::number(&blocks[0]["b"]) > 0, "{blocks:?}");
    every_row_once(&conn, 40).await;
}

/// A table whose block numbers went back below its ledger's (the parts holding the
/// highest blocks dropped, then a server restart: the counter starts again from the
/// highest part left) reads every part rather than miss rows past the ledger. The
/// entry of the higher counter is a STAND-IN row put into the ledger by hand: a test
/// cannot restart the stack's server.
#[tokio::test]
async fn block_numbers_that_went_back_below_the_ledger_mean_reading_every_part() {
    let (conn, mut sink) = fresh_sink("blocks_back").await;
    sink.write(&batch(0..10)).await.unwrap();
    entry_by_hand(
        &conn,
        "at, from_block",
        "maxState(now()), maxState(toInt64(1000000))",
    )
    .await;
    rows_past_10_are_found_and_written_once(&conn).await;
}

/// Found by the recovery simulation (`ledger/recovery_sim.rs`): the first entry of a
/// partition whose first look found rows past the batch recorded `from_block` 0, which
/// reads as an entry of an earlier release (recovered by time, since the entry): the
/// rows found before it were hidden again and written twice.
#[tokio::test]
async fn rows_past_the_first_entry_of_a_partition_stay_found() {
    let (conn, mut sink) = fresh_sink("first_entry").await;
    rows_without_entry(&conn, "numbers(40) WHERE number >= 20").await;
    // Part times are whole seconds: the entry comes later than the part.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    sink.write(&batch(0..10)).await.unwrap();
    let mut sink = open(&conn, None).await; // a new process
    assert_eq!(position(&sink).await, Some(10));
    sink.write(&batch(10..40)).await.unwrap();
    every_row_once(&conn, 40).await;
}
