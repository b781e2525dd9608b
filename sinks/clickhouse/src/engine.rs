//! Which target tables the sink can write exactly once: plain, local `MergeTree` tables.
//!
//! Everything the sink relies on lives on the one server it talks to: the insert gates
//! (a `DROP` that waits for the inserts through a gate on *this* server), the position
//! ledger entries written through the gates on *this* server, the recent parts in
//! `system.parts` and running inserts in `system.processes`. A replicated table takes
//! inserts on other replicas that none of these see, and a distributed table forwards
//! rows to shards asynchronously, so their positions would claim rows that are not
//! (yet) anywhere.
//! Engines whose merges combine rows (summing, collapsing, aggregating) merge the
//! Kafka coordinate columns too, so recovery would read positions no record had.
//! A `ReplacingMergeTree` without a version column keeps the row inserted last: a row
//! collapsed away with a newer one while its ledger entry was not written yet is found
//! missing by recovery and inserted again, after the newer one, so the stale value
//! would win. With a version column the replay cannot win.
//! Such tables are refused at startup until they are supported (see
//! docs/exactly-once.md, "Known limits").

use crate::client::{fetch_json, is_retryable};

/// Engines the sink writes exactly once.
const SUPPORTED: [&str; 2] = ["MergeTree", "ReplacingMergeTree"];

/// The engine's name without its arguments: `ReplicatedMergeTree('/p', '{r}')` and
/// `ReplicatedMergeTree ORDER BY id` both give `ReplicatedMergeTree`.
pub fn engine_name(engine: &str) -> &str {
    let engine = engine.trim();
    let end = engine
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(engine.len());
    &engine[..end]
}

/// The engine's arguments as written: `ReplacingMergeTree(v) ORDER BY id` gives `v`;
/// none, or empty parentheses, give "".
fn engine_arguments(engine: &str) -> &str {
    let engine = engine.trim();
    let rest = engine[engine_name(engine).len()..].trim_start();
    rest.strip_prefix('(')
        .and_then(|args| args.split_once(')'))
        .map_or("", |(args, _)| args.trim())
}

/// `Ok` for an engine the sink supports, otherwise why not and what to do instead.
/// `engine` is the whole engine clause (`system.tables.engine_full`, or the config's).
pub fn check_engine(table: &str, engine: &str) -> Result<(), String> {
    let name = engine_name(engine);
    if name == "ReplacingMergeTree" && engine_arguments(engine).is_empty() {
        return Err(format!(
            "table `{table}` has engine ReplacingMergeTree without a version column, which the \
             exactly-once sink does not support: it keeps the row inserted last, so a row \
             replayed after a crash could replace a newer one. Give it a version column \
             (`ReplacingMergeTree(version)`: an event time, or the offset column when the \
             record key decides the Kafka partition), or use MergeTree (see \
             docs/exactly-once.md, \"Known limits\")"
        ));
    }
    if SUPPORTED.contains(&name) {
        return Ok(());
    }
    let why = if name.starts_with("Replicated") || name.starts_with("Shared") {
        "inserts on other replicas bypass this server's insert gates, position ledger and \
         system.parts, so exactly-once cannot hold"
    } else if name == "Distributed" {
        "rows are forwarded to the shards asynchronously and each shard keeps its own \
         parts, so the positions read here would not match what the shards hold"
    } else if name.ends_with("MergeTree") {
        "its merges combine rows, and with them the Kafka coordinate columns the sink \
         reads its positions from"
    } else {
        "the sink keeps its positions in the rows and parts of a local MergeTree table"
    };
    Err(format!(
        "table `{table}` has engine {name}, which the exactly-once sink does not support: \
         {why}. Write to a local, non-replicated MergeTree or ReplacingMergeTree table \
         (see docs/exactly-once.md, \"Known limits\")"
    ))
}

/// Refuses `database.table` unless its engine (from `system.tables`) is supported.
/// The error is `(message, retryable)`: reading `system.tables` may fail for a while.
pub async fn check_table(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<(), (String, bool)> {
    let query = client
        .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(table);
    let rows = fetch_json(query).await.map_err(|e| {
        (
            format!("cannot read the table's engine: {e}"),
            is_retryable(&e),
        )
    })?;
    match rows.first().and_then(|r| r["engine_full"].as_str()) {
        Some(engine) => {
            check_engine(&format!("{database}.{table}"), engine).map_err(|e| (e, false))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_without_arguments_or_clauses() {
        assert_eq!(
            engine_name("ReplicatedMergeTree('/t/{shard}', '{replica}')"),
            "ReplicatedMergeTree"
        );
        assert_eq!(engine_name(" MergeTree ORDER BY id"), "MergeTree");
        assert_eq!(engine_name("MergeTree()"), "MergeTree");
        assert_eq!(
            engine_name("Distributed(test_shard_localhost, db, t)"),
            "Distributed"
        );
    }

    #[test]
    fn replacing_merge_tree_needs_a_version_column() {
        for engine in [
            "ReplacingMergeTree",
            "ReplacingMergeTree()",
            "ReplacingMergeTree ORDER BY id",
            "ReplacingMergeTree() PARTITION BY toYYYYMM(ts) ORDER BY id",
        ] {
            let error = check_engine("db.t", engine).unwrap_err();
            assert!(
                error.contains("without a version column"),
                "{engine}: {error}"
            );
        }
        assert_eq!(
            check_engine("db.t", "ReplacingMergeTree(version) ORDER BY id"),
            Ok(())
        );
    }

    #[test]
    fn plain_merge_tree_tables_are_accepted() {
        for engine in ["MergeTree", "MergeTree()", "ReplacingMergeTree(version)"] {
            assert_eq!(check_engine("db.t", engine), Ok(()), "{engine}");
        }
    }

    /// ReplicatedMergeTree cannot be created on the test server (it needs ZooKeeper or
    /// Keeper), so its refusal is shown on the engine names `system.tables` reports.
    #[test]
    fn replicated_distributed_and_row_combining_engines_are_refused() {
        for (engine, reason) in [
            ("ReplicatedMergeTree", "other replicas"),
            ("ReplicatedReplacingMergeTree", "other replicas"),
            ("ReplicatedSummingMergeTree", "other replicas"),
            ("SharedMergeTree", "other replicas"),
            ("Distributed", "forwarded to the shards"),
            ("SummingMergeTree", "merges combine rows"),
            ("CollapsingMergeTree(sign)", "merges combine rows"),
            ("AggregatingMergeTree", "merges combine rows"),
            ("Buffer", "local MergeTree table"),
            ("Log", "local MergeTree table"),
        ] {
            let error = check_engine("db.events", engine).unwrap_err();
            assert!(error.contains(reason), "{engine}: {error}");
            assert!(
                error.contains(&format!(
                    "table `db.events` has engine {}",
                    engine_name(engine)
                )),
                "{error}"
            );
            assert!(error.contains("Known limits"), "{error}");
        }
    }
}
