//! `ingest status` for a ClickHouse table: its positions (the ledger plus the rows past
//! it, as a write would find them), its watermarks and its last ledger entry, read with
//! SELECTs only (opening the sink would create the table, ledger and gate registry).

use std::collections::BTreeMap;

use ingest_sink_api::{OffsetMap, Partition, PositionReader, SinkError, TableState};

use crate::client::{fetch_json, is_retryable, json_number, try_client};
use crate::config::{ClickHouseConnection, ClickHouseTable};
use crate::ledger::{CoordinateColumns, Ledger, LedgerReader, TableLook};
use crate::watermarks::Watermarks;

/// Where the table stands in `partitions` (each at offset 0). The group does not matter: the table's rows carry their
/// positions whichever group wrote them.
pub async fn table_state(
    conn: &ClickHouseConnection,
    table: &ClickHouseTable,
    coordinates: &CoordinateColumns,
    partitions: &OffsetMap,
) -> Result<TableState, SinkError> {
    let sink = format!("clickhouse {}.{}", conn.database, table.table);
    let client = try_client(conn).map_err(|e| {
        SinkError::permanent(&sink, format!("clickhouse `{}`: {e}", conn.display_url()))
    })?;
    let ledger = Ledger::new(&conn.database, &table.table);
    let watermarks = Watermarks::new(&conn.database, &table.table);
    let existing = existing_tables(&client, &sink, &conn.database).await?;
    let mut state = TableState {
        missing: !existing.contains(&table.table),
        sink: sink.clone(),
        ..TableState::default()
    };
    if state.missing || !existing.iter().any(|t| t == ledger.name()) {
        return Ok(state);
    }
    let reader = LedgerReader {
        sink: sink.clone(),
        client: client.clone(),
        ledger,
        coordinates: coordinates.clone(),
        scanned: Default::default(),
    };
    // Asked per partition, the rows past the ledger are found too (asked for none, it
    // answers with the ledger alone).
    state.positions = reader.read(partitions).await?;
    state.last_write_unix = reader
        .entries(&[])
        .await?
        .iter()
        .map(|e| f64::from(e.at))
        .reduce(f64::max)
        .filter(|at| *at > 0.0);
    if existing.iter().any(|t| t == watermarks.name()) {
        state.watermarks = read_watermarks(&client, &sink, &conn.database, &watermarks).await?;
    }
    Ok(state)
}

async fn existing_tables(
    client: &clickhouse::Client,
    sink: &str,
    database: &str,
) -> Result<Vec<String>, SinkError> {
    let query = client
        .query("SELECT name FROM system.tables WHERE database = ?")
        .bind(database);
    let rows = fetch_json(query)
        .await
        .map_err(|e| SinkError::new(sink, format!("listing tables: {e}"), is_retryable(&e)))?;
    Ok(rows
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect())
}

async fn read_watermarks(
    client: &clickhouse::Client,
    sink: &str,
    database: &str,
    watermarks: &Watermarks,
) -> Result<BTreeMap<Partition, i64>, SinkError> {
    let query = client.query(&format!(
        "SELECT topic, partition, max(watermark_ms) AS w FROM {}.{} GROUP BY topic, partition",
        crate::types::quote_ident(database),
        crate::types::quote_ident(watermarks.name())
    ));
    let rows = fetch_json(query)
        .await
        .map_err(|e| SinkError::new(sink, format!("reading watermarks: {e}"), is_retryable(&e)))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let topic = r["topic"].as_str()?;
            let partition: i32 = json_number(&r["partition"])?;
            let ms: i64 = json_number(&r["w"])?;
            Some((Partition::new(topic, partition), ms))
        })
        .collect())
}
