//! Target tables whose engine is not a plain local MergeTree are refused at startup,
//! against the real ClickHouse server of the local stack (`CLICKHOUSE_URL`).
//!
//! The test server has no cluster configuration (`system.clusters` is empty on the
//! local 18.16, so `Distributed(test_shard_localhost, ...)` cannot be created) and no
//! ZooKeeper (so no `Replicated*MergeTree`): those two are refused by the same check,
//! shown on their engine names in `clickhouse::engine`'s unit tests. Here the check
//! runs end to end on engines the server can create: a `Buffer` and a `Merge` table in
//! front of a MergeTree table, which, like a distributed table, pass rows on elsewhere.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use common::{connection, schema, sql};
use ingest_sink_clickhouse::{ClickHouseSink, ClickHouseTable, CoordinateColumns};

#[tokio::test]
async fn tables_that_are_not_local_merge_trees_are_refused_at_startup() {
    let conn = connection(&format!("engines_{}", std::process::id()));
    let db = conn.database.clone();
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
    sql(&conn, &format!("CREATE DATABASE {db}")).await;
    // The local table already has the coordinate columns: opening needs no ALTER.
    sql(
        &conn,
        &format!(
            "CREATE TABLE {db}.local (id Int64, _topic String, _partition Int32, _offset Int64) \
             ENGINE = MergeTree ORDER BY id"
        ),
    )
    .await;
    sql(
        &conn,
        &format!(
            "CREATE TABLE {db}.buffered AS {db}.local \
             ENGINE = Buffer({db}, local, 1, 1, 10, 1, 1000, 1, 1000000)"
        ),
    )
    .await;
    sql(
        &conn,
        &format!("CREATE TABLE {db}.merged AS {db}.local ENGINE = Merge({db}, '^local$')"),
    )
    .await;

    for (table, engine) in [("buffered", "Buffer"), ("merged", "Merge")] {
        let target: ClickHouseTable =
            serde_json::from_value(serde_json::json!({ "table": table })).unwrap();
        let error = match ClickHouseSink::open(
            &conn,
            &target,
            schema(),
            CoordinateColumns::default(),
        )
        .await
        {
            Ok(_) => panic!("a {engine} table was accepted as an exactly-once target"),
            Err(e) => e,
        };
        assert!(!error.is_retryable(), "{error}");
        assert!(
            error
                .message
                .contains(&format!("table `{db}.{table}` has engine {engine}")),
            "{error}"
        );
        // Refused before anything was created next to it.
        let companions = sql(
            &conn,
            &format!(
                "SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE '{table}\\_\\_%'"
            ),
        )
        .await;
        assert!(companions.is_empty(), "{table}: {companions:?}");
    }

    // The table they front is a plain MergeTree: accepted.
    let local: ClickHouseTable =
        serde_json::from_value(serde_json::json!({ "table": "local" })).unwrap();
    ClickHouseSink::open(&conn, &local, schema(), CoordinateColumns::default())
        .await
        .unwrap();
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
}
