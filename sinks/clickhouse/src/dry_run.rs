//! What the sink would send to a server it cannot reach: the CREATE statements and the
//! Native payload (the service's `dry-run --sink clickhouse` command and the benchmarks).

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use ingest_sink_api::Coordinates;

use crate::config::ClickHouseTable;
use crate::coordinate_columns::{fill_coordinates, with_coordinate_fields};
use crate::ddl;
use crate::ledger::{CoordinateColumns, Ledger};
use crate::native::{NativeColumn, encode_block};
use crate::types::{self, ServerCaps};

/// What would be sent to a server of `version` without one: the CREATE statements and
/// the Native payload of `batches` (a dry run, and a check against other versions).
/// With `coordinates`, the table gets its Kafka coordinate columns (filled here with
/// partition 0 and the row number as offset) and the position ledger.
pub fn offline_payload(
    database: &str,
    table: &ClickHouseTable,
    schema: &SchemaRef,
    version: &str,
    batches: &[RecordBatch],
    coordinates: Option<&CoordinateColumns>,
) -> Result<(String, Vec<u8>), String> {
    let caps = ServerCaps::from_version(version);
    let full = match coordinates {
        Some(c) => with_coordinate_fields(schema, c),
        None => schema.clone(),
    };
    let mut ddl = ddl::create_table(database, table, &full, caps)?;
    if coordinates.is_some() {
        ddl.push_str(";\n");
        ddl.push_str(&Ledger::new(database, &table.table).create_statement());
    }
    let mut columns = Vec::with_capacity(full.fields().len());
    for field in full.fields() {
        columns.push(NativeColumn::of_field(
            field.name(),
            &types::ddl_type(field, caps)?,
        )?);
    }
    let mut body = Vec::new();
    let mut row = 0i64;
    for batch in batches {
        let batch = match coordinates {
            Some(coordinates) if full.fields().len() > batch.num_columns() => {
                let topic: std::sync::Arc<str> = "dry-run".into();
                let positions: Vec<Coordinates> = (row..row + batch.num_rows() as i64)
                    .map(|offset| Coordinates {
                        topic: std::sync::Arc::clone(&topic),
                        partition: 0,
                        offset,
                    })
                    .collect();
                fill_coordinates(batch, &positions, &full, coordinates)?
            }
            _ => batch.clone(),
        };
        row += batch.num_rows() as i64;
        encode_block(&batch, &columns, &mut body).map_err(|e| e.to_string())?;
    }
    Ok((ddl, body))
}
