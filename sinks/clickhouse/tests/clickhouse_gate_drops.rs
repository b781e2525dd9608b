//! Issue 16, item 12b: how a gate is dropped follows the database's engine, not only the
//! server's version. In an `Atomic` (or `Replicated`) database a plain `DROP TABLE`
//! detaches the table and drops it in the background, without waiting for the inserts
//! running through it: only `SYNC` (`NO DELAY` before 20.10) waits. In an `Ordinary`
//! database (18.16's only kind, still possible on current servers) the DROP locks the
//! table and so waits anyway; `SYNC` is accepted there too and sent wherever the server
//! knows it. The version rule alone sent nothing to Atomic databases of 20.1 to 20.9; no
//! such server is at hand, so that case is the unit test in `gate.rs`.
//!
//! Shown here against ClickHouse 26.9 (chDB behind the test fixture
//! `tests/fixtures/clickhouse_chdb_http.py`, the stack's venv, `$PY`) in an Atomic and an
//! Ordinary database, and against the local stack's 18.16 (`CLICKHOUSE_URL`), whose
//! parser knows neither keyword: the clause each database gets (its engine read from
//! `system.databases`), and a partition moving between two writers (which drops a gate).
//! The fixture runs one query at a time, so the wait itself is shown on 18.16 only
//! (`clickhouse_gates.rs`).

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use std::sync::Arc;

use common::chdb::start_chdb;
use common::{batch, counts, drop_database, events_table, fresh_database, sql};
use ingest_sink_api::{Fence, Fenced, OffsetMap, Partition, Sink, WriteOutcome};
use ingest_sink_clickhouse::{ClickHouseConnection, ClickHouseSink, client};

/// Confirms every ownership check: two writers both told they own partition 0.
struct YesFence;

#[async_trait::async_trait]
impl Fence for YesFence {
    async fn check(&self, _: &OffsetMap, _: u64) -> Result<Vec<Partition>, Fenced> {
        Ok(Vec::new())
    }
    fn generation(&self) -> u64 {
        0
    }
}

async fn writer(conn: &ClickHouseConnection) -> ClickHouseSink {
    common::open(conn, &events_table())
        .await
        .with_fence(Arc::new(YesFence))
}

/// B takes partition 0 from A (dropping A's gate); A then writes nothing.
async fn a_partition_moves(conn: &ClickHouseConnection, expected_clause: &str) {
    let mut a = writer(conn).await;
    let mut b = writer(conn).await;
    assert_eq!(a.gate_drop_clause(), expected_clause);
    a.write(&batch(0..100)).await.unwrap();
    b.write(&batch(0..150)).await.unwrap();
    let not_owned = WriteOutcome {
        not_owned: vec![Partition::new("events", 0)],
        ..WriteOutcome::default()
    };
    assert_eq!(a.write(&batch(100..200)).await.unwrap(), not_owned);
    assert_eq!(counts(conn).await, (150, 150));
    let db = &conn.database;
    let gates = &sql(
        conn,
        &format!(
            "SELECT count() AS n FROM system.tables WHERE database = '{db}' \
             AND startsWith(name, 'events__gate_') AND engine = 'Null'"
        ),
    )
    .await[0]["n"];
    assert_eq!(
        common::number(gates),
        2,
        "only B's gate (rows and entries) is left"
    );
}

#[tokio::test]
async fn clickhouse_18_16_drops_gates_of_its_ordinary_databases_without_sync() {
    let conn = fresh_database("gate_drops_old").await;
    a_partition_moves(&conn, "").await;
    drop_database(&conn).await;
}

#[tokio::test]
async fn clickhouse_26_9_drops_gates_of_atomic_databases_with_sync() {
    let chdb = start_chdb();
    let conn = chdb.connection("gate_drops_atomic");
    client(&conn)
        .query("CREATE DATABASE gate_drops_atomic ENGINE = Atomic")
        .execute()
        .await
        .unwrap();
    a_partition_moves(&conn, " SYNC").await;
}

#[tokio::test]
async fn clickhouse_26_9_drops_gates_of_ordinary_databases_with_sync_too() {
    let chdb = start_chdb();
    let conn = chdb.connection("gate_drops_ordinary");
    client(&conn)
        .with_setting("allow_deprecated_database_ordinary", "1")
        .query("CREATE DATABASE gate_drops_ordinary ENGINE = Ordinary")
        .execute()
        .await
        .unwrap();
    let engine = &sql(
        &conn,
        "SELECT engine FROM system.databases WHERE name = 'gate_drops_ordinary'",
    )
    .await[0]["engine"];
    assert_eq!(engine, "Ordinary");
    a_partition_moves(&conn, " SYNC").await;
}
