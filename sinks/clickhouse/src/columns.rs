//! The table's columns, as the server describes them, and which schema field (or part
//! of one) fills each: the encoder writes exactly these columns.

use arrow_schema::{DataType, Field, SchemaRef};

use crate::client::fetch_json;
use crate::native::{NativeColumn, Source};
use crate::types::ChType;

/// A column as `system.columns` describes it.
pub(crate) struct TableColumn {
    pub name: String,
    pub type_name: String,
    pub has_default: bool,
}

/// The columns of `database.table` (none when the table does not exist).
pub(crate) async fn table_columns(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<Vec<TableColumn>, clickhouse::error::Error> {
    let query = client
        .query(
            "SELECT name, type, default_kind FROM system.columns WHERE database = ? AND table = ?",
        )
        .bind(database)
        .bind(table);
    Ok(fetch_json(query)
        .await?
        .into_iter()
        .map(|row| TableColumn {
            name: row["name"].as_str().unwrap_or_default().to_string(),
            type_name: row["type"].as_str().unwrap_or_default().to_string(),
            has_default: !row["default_kind"].as_str().unwrap_or_default().is_empty(),
        })
        .collect())
}

/// Pairs schema fields with table columns; every field needs a column and every column
/// without a DEFAULT needs a field.
pub(crate) fn match_columns(
    schema: &SchemaRef,
    columns: Vec<TableColumn>,
) -> Result<Vec<NativeColumn>, String> {
    let mut out = Vec::new();
    for field in schema.fields() {
        let Some(column) = columns.iter().find(|c| &c.name == field.name()) else {
            let nested = nested_columns(field, &columns)?;
            if nested.is_empty() {
                return Err(format!(
                    "field `{}` has no column in the table",
                    field.name()
                ));
            }
            out.extend(nested);
            continue;
        };
        let native = NativeColumn::of_field(&column.name, &column.type_name)
            .map_err(|e| format!("column `{}`: {e}", column.name))?;
        let container = matches!(native.ty, ChType::Array(_) | ChType::Tuple(_));
        if field.is_nullable() && !native.ty.is_nullable() && !container {
            return Err(format!(
                "column `{}` is {} but the schema allows nulls; make it Nullable({}) or the field non-nullable",
                column.name, column.type_name, column.type_name
            ));
        }
        out.push(native);
    }
    if let Some(missing) = columns
        .iter()
        .find(|c| !c.has_default && !out.iter().any(|n| n.name == c.name))
    {
        return Err(format!(
            "column `{}` ({}) has no field in the schema and no DEFAULT",
            missing.name, missing.type_name
        ));
    }
    Ok(out)
}

/// Whether the table has a column for `field` (its own, or the flattened element
/// columns an old server made of it).
pub(crate) fn has_column(field: &Field, columns: &[TableColumn]) -> bool {
    columns.iter().any(|c| &c.name == field.name())
        || nested_columns(field, columns).is_ok_and(|n| !n.is_empty())
}

/// The flattened `field.element` columns an old server made of an `Array(Tuple(...))`
/// column (elements named by position, `field.1`, or by name, `field.sku`).
fn nested_columns(field: &Field, columns: &[TableColumn]) -> Result<Vec<NativeColumn>, String> {
    let DataType::List(item) = field.data_type() else {
        return Ok(Vec::new());
    };
    let DataType::Struct(members) = item.data_type() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (element, member) in members.iter().enumerate() {
        let by_position = format!("{}.{}", field.name(), element + 1);
        let by_name = format!("{}.{}", field.name(), member.name());
        let Some(column) = columns
            .iter()
            .find(|c| c.name == by_position || c.name == by_name)
        else {
            return Ok(Vec::new());
        };
        out.push(NativeColumn {
            name: column.name.clone(),
            type_name: column.type_name.clone(),
            ty: ChType::parse(&column.type_name)
                .map_err(|e| format!("column `{}`: {e}", column.name))?,
            source: Source::NestedElement {
                field: field.name().clone(),
                element,
            },
        });
    }
    Ok(out)
}
