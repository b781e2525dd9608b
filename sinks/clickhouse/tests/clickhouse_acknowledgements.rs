//! The settings that pin what an acknowledged insert means (`async_insert=0`,
//! `materialized_views_ignore_errors=0`, ...; see `client::PINNED_SETTINGS`) are sent
//! only where the server knows them, and the server takes them: against the real
//! ClickHouse 18.16 server of the local stack (`CLICKHOUSE_URL`), and against
//! ClickHouse 26.9 run in-process by chDB behind the test fixture
//! `tests/fixtures/clickhouse_chdb_http.py` (the stack's venv, `$PY`), which refuses an
//! unknown setting or value as a 26.x server does (Code 115).

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use common::chdb::start_chdb;
use common::{batch, counts, drop_database, events_table, fresh_database, open};
use ingest_sink_api::Sink;
use ingest_sink_clickhouse::{ClickHouseConnection, client, server_pinned_settings};

/// Opens a sink on `conn`, writes 1,000 rows twice (rows, ledger entries and a gate
/// registration, each with the pinned settings) and checks they landed once.
async fn write_through(conn: &ClickHouseConnection) {
    let mut sink = open(conn, &events_table()).await;
    sink.write(&batch(0..1_000)).await.unwrap();
    sink.write(&batch(0..1_000)).await.unwrap();
    assert_eq!(counts(conn).await, (1_000, 1_000));
    let positions = sink.read_positions(&batch(0..1).positions).await.unwrap();
    assert_eq!(positions.get("events", 0), Some(1_000));
}

#[tokio::test]
async fn clickhouse_18_16_takes_the_settings_it_knows() {
    let conn = fresh_database("pinned_old").await;
    let pinned = server_pinned_settings(&client(&conn)).await.unwrap();
    let names: Vec<&str> = pinned.iter().map(|(n, _)| *n).collect();
    assert!(
        !names.contains(&"async_insert"),
        "18.16 has no async inserts: {names:?}"
    );
    assert!(
        names.contains(&"input_format_allow_errors_num"),
        "{names:?}"
    );
    write_through(&conn).await;
    drop_database(&conn).await;
}

#[tokio::test]
async fn clickhouse_26_9_takes_every_pinned_setting() {
    let chdb = start_chdb();
    let conn = chdb.connection("pinned_current");
    let pinned = server_pinned_settings(&client(&conn)).await.unwrap();
    for expected in [
        ("async_insert", "0"),
        ("wait_for_async_insert", "1"),
        ("materialized_views_ignore_errors", "0"),
        ("ignore_materialized_views_with_dropped_target_table", "0"),
        ("input_format_allow_errors_num", "0"),
        ("input_format_allow_errors_ratio", "0"),
    ] {
        assert!(pinned.contains(&expected), "{expected:?} not in {pinned:?}");
    }
    write_through(&conn).await;
}
