//! CREATE statements for tables made from a route's schema.

use arrow_schema::SchemaRef;

use crate::config::ClickHouseTable;
use crate::types::{ServerCaps, ddl_type, quote_ident};

pub fn create_database(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {}", quote_ident(database))
}

/// `CREATE TABLE IF NOT EXISTS` with one column per schema field, typed for this server.
pub fn create_table(
    database: &str,
    table: &ClickHouseTable,
    schema: &SchemaRef,
    caps: ServerCaps,
) -> Result<String, String> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(format!(
            "    {} {}",
            quote_ident(field.name()),
            ddl_type(field, caps)?
        ));
    }
    for key in &table.order_by {
        if let Ok(field) = schema.field_with_name(key)
            && field.is_nullable()
        {
            return Err(format!(
                "order_by column `{key}` is nullable in the schema; ClickHouse sorting keys cannot be Nullable"
            ));
        }
    }
    let order_by = if table.order_by.is_empty() {
        "tuple()".to_string()
    } else {
        format!("({})", table.order_by.join(", "))
    };
    let partition_by = table
        .partition_by
        .as_ref()
        .map(|p| format!("\nPARTITION BY {p}"))
        .unwrap_or_default();
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (\n{}\n) ENGINE = {}{partition_by}\nORDER BY {order_by}",
        quote_ident(database),
        quote_ident(&table.table),
        columns.join(",\n"),
        table.engine
    ))
}
