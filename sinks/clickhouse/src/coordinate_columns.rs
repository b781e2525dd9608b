//! The Kafka coordinate columns of the rows the sink writes, always filled from the
//! rows' Kafka coordinates.
//!
//! The sink reads its positions back from these columns, so whatever sits in them
//! *is* where the table stands. A decoded row may already carry a column of that name:
//! the route's own metadata column (the same values), or a payload field that happens
//! to be called `_offset` (any value at all). Filling the columns from the coordinates
//! every time means a payload field can never become a position; the service also
//! refuses such a config, so a payload field is never silently replaced.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use ingest_sink_api::Coordinates;

use crate::ledger::CoordinateColumns;

/// The route's schema with the coordinate columns typed as coordinates: a field of
/// the same name is replaced in place, the missing ones are appended.
pub(crate) fn with_coordinate_fields(
    schema: &SchemaRef,
    coordinates: &CoordinateColumns,
) -> SchemaRef {
    let types = coordinate_types(coordinates);
    let coordinate = |name: &str| types.iter().find(|(n, _)| *n == name);
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match coordinate(f.name()) {
            Some((name, data_type)) => Field::new(*name, data_type.clone(), false),
            None => f.as_ref().clone(),
        })
        .collect();
    for (name, data_type) in &types {
        if schema.field_with_name(name).is_err() {
            fields.push(Field::new(*name, data_type.clone(), false));
        }
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `piece` (rows of the route's schema) in `schema` (from [`with_coordinate_fields`]),
/// with every coordinate column built from `row_coordinates`, one per row.
pub(crate) fn fill_coordinates(
    piece: &RecordBatch,
    row_coordinates: &[Coordinates],
    schema: &SchemaRef,
    coordinates: &CoordinateColumns,
) -> Result<RecordBatch, String> {
    if row_coordinates.len() != piece.num_rows() {
        return Err("rows without Kafka coordinates cannot be written exactly once".into());
    }
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let name = field.name();
            let column: ArrayRef = if *name == coordinates.topic {
                Arc::new(StringArray::from_iter_values(
                    row_coordinates.iter().map(|p| &*p.topic),
                ))
            } else if *name == coordinates.partition {
                Arc::new(Int32Array::from_iter_values(
                    row_coordinates.iter().map(|p| p.partition),
                ))
            } else if *name == coordinates.offset {
                Arc::new(Int64Array::from_iter_values(
                    row_coordinates.iter().map(|p| p.offset),
                ))
            } else if i < piece.num_columns() {
                piece.column(i).clone()
            } else {
                return Err(format!("no data for column `{name}`"));
            };
            Ok(column)
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

fn coordinate_types(coordinates: &CoordinateColumns) -> [(&str, DataType); 3] {
    [
        (&coordinates.topic, DataType::Utf8),
        (&coordinates.partition, DataType::Int32),
        (&coordinates.offset, DataType::Int64),
    ]
}
