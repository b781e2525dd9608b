//! Fitting a batch to the table: its columns reordered and cast into the table's Arrow
//! schema, strictly (a value that does not fit is an error, never a silent null).
//! `values` finds such rows before the write, the same way.

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_schema::SchemaRef;

/// Reorders and casts a batch into the table's Arrow schema `target`.
pub fn conform(target: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, String> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(source) if source.data_type() == field.data_type() => source.clone(),
            // Strict: a value that does not fit is an error, never a silent null.
            Some(source) => cast_with_options(
                source,
                field.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|e| {
                format!(
                    "column `{}`: cannot convert {} to the table's {}: {e}",
                    field.name(),
                    source.data_type(),
                    field.data_type()
                )
            })?,
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => {
                return Err(format!(
                    "table column `{}` is required but the schema has no such field",
                    field.name()
                ));
            }
        };
        columns.push(column);
    }
    for field in batch.schema().fields() {
        if target.field_with_name(field.name()).is_err() {
            return Err(format!(
                "field `{}` has no column in the table",
                field.name()
            ));
        }
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
}
