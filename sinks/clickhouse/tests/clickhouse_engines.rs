//! Target tables whose engine is not a plain local MergeTree are refused at startup,
//! against the real ClickHouse server of the local stack (`CLICKHOUSE_URL`).
//!
//! The test server has no cluster configuration (`system.clusters` is empty on the
//! local 18.16, so `Distributed(test_shard_localhost, ...)` cannot be created) and no
//! ZooKeeper (so no `Replicated*MergeTree`): those two are refused by the same check,
//! shown on their engine names in the unit tests of `src/engine.rs`. Here the check
//! runs end to end on engines the server can create: a `Buffer` and a `Merge` table in
//! front of a MergeTree table, which, like a distributed table, pass rows on elsewhere.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use common::{database_with_table, drop_database, schema, sql, table, try_open};

#[tokio::test]
async fn tables_that_are_not_local_merge_trees_are_refused_at_startup() {
    // The local table already has the coordinate columns: opening needs no ALTER.
    let conn = database_with_table("engines", "local", "MergeTree ORDER BY id").await;
    let db = conn.database.clone();
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

    for (name, engine) in [("buffered", "Buffer"), ("merged", "Merge")] {
        let error = match try_open(&conn, &table(name), schema()).await {
            Ok(_) => panic!("a {engine} table was accepted as an exactly-once target"),
            Err(e) => e,
        };
        assert!(!error.is_retryable(), "{error}");
        assert!(
            error
                .message
                .contains(&format!("table `{db}.{name}` has engine {engine}")),
            "{error}"
        );
        // Refused before anything was created next to it.
        let companions = sql(
            &conn,
            &format!(
                "SELECT name FROM system.tables WHERE database = '{db}' AND name LIKE '{name}\\_\\_%'"
            ),
        )
        .await;
        assert!(companions.is_empty(), "{name}: {companions:?}");
    }

    // The table they front is a plain MergeTree: accepted.
    try_open(&conn, &table("local"), schema()).await.unwrap();
    drop_database(&conn).await;
}

/// A `ReplacingMergeTree` without a version column keeps the row inserted last, so a
/// row replayed after a crash (its ledger entry not written yet, the row itself merged
/// away with a newer one) would replace the newer value: refused. With a version column
/// the replay cannot win: accepted (issue 16, item 9).
#[tokio::test]
async fn replacing_merge_tree_without_a_version_column_is_refused() {
    let conn =
        database_with_table("replacing", "unversioned", "ReplacingMergeTree ORDER BY id").await;
    let db = conn.database.clone();
    sql(
        &conn,
        &format!(
            "CREATE TABLE {db}.versioned (id Int64, v UInt64 DEFAULT 0, _topic String, _partition Int32, \
             _offset Int64) ENGINE = ReplacingMergeTree(v) ORDER BY id"
        ),
    )
    .await;
    let error = match try_open(&conn, &table("unversioned"), schema()).await {
        Ok(_) => panic!("a ReplacingMergeTree without a version column was accepted"),
        Err(e) => e,
    };
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error.message.contains("without a version column"),
        "{error}"
    );
    try_open(&conn, &table("versioned"), schema())
        .await
        .unwrap();
    drop_database(&conn).await;
}
