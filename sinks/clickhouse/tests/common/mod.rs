//! Helpers shared by the ClickHouse sink tests: the local stack's server
//! (`CLICKHOUSE_URL`, default http://127.0.0.1:8123), a database per test, a
//! one-column table of ids and batches of partition 0 of topic `events` whose ids are
//! their offsets.

pub mod chdb;
pub mod http_proxy;

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ingest_sink_api::{Coordinates, OffsetMap, SinkBatch, SinkError};
use ingest_sink_clickhouse::{
    ClickHouseConnection, ClickHouseSink, ClickHouseTable, CoordinateColumns, client, query_json,
};

pub fn url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

pub fn connection(database: &str) -> ClickHouseConnection {
    serde_json::from_value(serde_json::json!({ "url": url(), "database": database })).unwrap()
}

/// A connection to this test's own database, `{name}_{process id}`, without what an
/// earlier run left there (the database does not exist).
pub async fn fresh_database(name: &str) -> ClickHouseConnection {
    let conn = connection(&format!("{name}_{}", std::process::id()));
    drop_database(&conn).await;
    conn
}

/// As [`fresh_database`], with a table made by hand: `table` of the id and the Kafka
/// coordinates, with `engine` (and its clauses).
pub async fn database_with_table(name: &str, table: &str, engine: &str) -> ClickHouseConnection {
    let conn = fresh_database(name).await;
    let db = &conn.database;
    sql(&conn, &format!("CREATE DATABASE {db}")).await;
    sql(
        &conn,
        &format!(
            "CREATE TABLE {db}.{table} (id Int64, _topic String, _partition Int32, _offset Int64) \
             ENGINE = {engine}"
        ),
    )
    .await;
    conn
}

pub async fn drop_database(conn: &ClickHouseConnection) {
    sql(conn, &format!("DROP DATABASE IF EXISTS {}", conn.database)).await;
}

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// The route's table `name`, every other key left to its default.
pub fn table(name: &str) -> ClickHouseTable {
    serde_json::from_value(serde_json::json!({ "table": name })).unwrap()
}

/// The `events` table, sorted by id.
pub fn events_table() -> ClickHouseTable {
    ClickHouseTable {
        order_by: vec!["id".into()],
        ..table("events")
    }
}

/// Opens a sink on `table` for rows of `schema` (default coordinate columns).
pub async fn try_open(
    conn: &ClickHouseConnection,
    table: &ClickHouseTable,
    schema: SchemaRef,
) -> Result<ClickHouseSink, SinkError> {
    ClickHouseSink::open(conn, table, schema, CoordinateColumns::default()).await
}

/// Opens a sink on `table` for rows of [`schema`].
pub async fn open(conn: &ClickHouseConnection, table: &ClickHouseTable) -> ClickHouseSink {
    try_open(conn, table, schema()).await.unwrap()
}

/// The coordinates of rows of partition 0 of `events` at the given offsets.
pub fn coordinates(offsets: &[i64]) -> Vec<Coordinates> {
    offsets
        .iter()
        .map(|&offset| Coordinates {
            topic: "events".into(),
            partition: 0,
            offset,
        })
        .collect()
}

/// Rows of partition 0 at the given offsets; the id is the offset.
pub fn batch(offsets: impl Iterator<Item = i64>) -> SinkBatch {
    let offsets: Vec<i64> = offsets.collect();
    let mut positions = OffsetMap::default();
    positions.advance("events", 0, offsets.iter().max().unwrap() + 1);
    SinkBatch {
        batches: vec![
            RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(offsets.clone()))])
                .unwrap(),
        ],
        coordinates: vec![coordinates(&offsets)],
        positions,
        epoch: 0,
        watermark: None,
    }
}

/// Runs a statement, or a SELECT and returns its rows.
pub async fn sql(conn: &ClickHouseConnection, text: &str) -> Vec<serde_json::Value> {
    let c = client(conn);
    if text.starts_with("SELECT") {
        query_json(&c, text).await.unwrap()
    } else {
        c.query(text).execute().await.unwrap();
        Vec::new()
    }
}

/// A count from JSON output (64-bit integers come quoted).
pub fn number(v: &serde_json::Value) -> u64 {
    v.as_str()
        .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
}

/// (rows, distinct offsets) of the `events` table.
pub async fn counts(conn: &ClickHouseConnection) -> (u64, u64) {
    let row = &sql(
        conn,
        &format!(
            "SELECT count() AS n, uniqExact(_offset) AS u FROM {}.events",
            conn.database
        ),
    )
    .await[0];
    (number(&row["n"]), number(&row["u"]))
}
