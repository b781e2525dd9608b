//! Avro types as table columns. arrow-avro reads Avro into Arrow types some sinks cannot
//! store (dictionaries for enums, fixed-size binary, maps, times); each is given the
//! table type of the YAML grammar that keeps its value exactly (docs/types.md), and
//! [`conform`] turns arrow-avro's arrays into those types. Written here because the
//! mapping is ours: no library decides what our sinks can store.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Time32MillisecondType, Time64MicrosecondType};
use arrow_array::{Array, ArrayRef, Int64Array, ListArray, StringArray, StructArray};
use arrow_schema::{DataType, Field, FieldRef, Fields, TimeUnit};

/// The item field name of lists, as the YAML grammar names it.
const LIST_ITEM: &str = "element";

/// The table field for a field arrow-avro reads; an error names what cannot be stored.
pub fn table_field(field: &Field) -> Result<Field, String> {
    let data_type = table_type(field).map_err(|e| format!("field `{}`: {e}", field.name()))?;
    Ok(Field::new(field.name(), data_type, field.is_nullable()))
}

fn table_type(field: &Field) -> Result<DataType, String> {
    Ok(match field.data_type() {
        t @ (DataType::Boolean
        | DataType::Int32
        | DataType::Int64
        | DataType::Float32
        | DataType::Float64
        | DataType::Binary
        | DataType::Utf8
        | DataType::Date32
        | DataType::Decimal128(..)
        | DataType::Timestamp(..)) => t.clone(),
        DataType::Utf8View | DataType::Dictionary(..) => DataType::Utf8,
        DataType::FixedSizeBinary(16) if is_uuid(field) => DataType::Utf8,
        DataType::FixedSizeBinary(_) => DataType::Binary,
        // No time type in ClickHouse 18.16: microseconds since midnight, exact.
        DataType::Time32(TimeUnit::Millisecond) | DataType::Time64(TimeUnit::Microsecond) => {
            DataType::Int64
        }
        DataType::List(item) => DataType::List(Arc::new(
            table_field(item)?.with_name(LIST_ITEM.to_string()),
        )),
        DataType::Struct(fields) => DataType::Struct(table_fields(fields)?),
        DataType::Map(entries, _) => {
            // No map type in ClickHouse 18.16: a list of key/value pairs, in order.
            DataType::List(Arc::new(Field::new(LIST_ITEM, table_type(entries)?, false)))
        }
        DataType::Decimal256(p, _) => {
            return Err(format!(
                "decimal precision {p} is over 38, the most both sinks store"
            ));
        }
        DataType::Union(..) => {
            return Err(
                "a union of several types other than null cannot be one column (docs/types.md)"
                    .into(),
            );
        }
        DataType::Interval(_) => {
            return Err("the Avro duration type has no column type yet (docs/types.md)".into());
        }
        other => return Err(format!("Avro read as {other}: no column type for it")),
    })
}

fn table_fields(fields: &Fields) -> Result<Fields, String> {
    fields
        .iter()
        .map(|f| table_field(f))
        .collect::<Result<Vec<_>, _>>()
        .map(Fields::from)
}

fn is_uuid(field: &Field) -> bool {
    field.metadata().get("logicalType").map(String::as_str) == Some("uuid")
        || field.extension_type_name() == Some("arrow.uuid")
}

/// `array` (as arrow-avro read it for `from`) in the table type `to`.
pub fn conform(array: &ArrayRef, from: &Field, to: &FieldRef) -> Result<ArrayRef, String> {
    if array.data_type() == to.data_type() {
        return Ok(array.clone());
    }
    let cast = |array: &ArrayRef| {
        arrow_cast::cast(array, to.data_type()).map_err(|e| format!("field `{}`: {e}", from.name()))
    };
    Ok(match (array.data_type(), to.data_type()) {
        (DataType::FixedSizeBinary(16), DataType::Utf8) => {
            let bytes = array.as_fixed_size_binary();
            let text: StringArray = bytes
                .iter()
                .map(|b| {
                    b.and_then(|b| uuid::Uuid::from_slice(b).ok())
                        .map(|u| u.hyphenated().to_string())
                })
                .collect();
            Arc::new(text)
        }
        (DataType::Time32(TimeUnit::Millisecond), DataType::Int64) => {
            let times = array.as_primitive::<Time32MillisecondType>();
            let micros: Int64Array = times.unary(|ms| i64::from(ms) * 1000);
            Arc::new(micros)
        }
        (DataType::Time64(TimeUnit::Microsecond), DataType::Int64) => {
            let times = array.as_primitive::<Time64MicrosecondType>();
            let micros: Int64Array = times.unary(|us| us);
            Arc::new(micros)
        }
        (DataType::List(item_from), DataType::List(item_to)) => {
            let list = array.as_list::<i32>();
            let values = conform(list.values(), item_from, item_to)?;
            Arc::new(
                ListArray::try_new(
                    item_to.clone(),
                    list.offsets().clone(),
                    values,
                    list.nulls().cloned(),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        (DataType::Map(entries_from, _), DataType::List(item_to)) => {
            let map = array.as_map();
            let entries: ArrayRef = Arc::new(map.entries().clone());
            let values = conform(&entries, entries_from, item_to)?;
            Arc::new(
                ListArray::try_new(
                    item_to.clone(),
                    map.offsets().clone(),
                    values,
                    map.nulls().cloned(),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        (DataType::Struct(fields_from), DataType::Struct(fields_to)) => {
            let record = array.as_struct();
            let columns = record
                .columns()
                .iter()
                .zip(fields_from.iter().zip(fields_to.iter()))
                .map(|(column, (from, to))| conform(column, from, to))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(
                StructArray::try_new(fields_to.clone(), columns, record.nulls().cloned())
                    .map_err(|e| e.to_string())?,
            )
        }
        _ => cast(array)?,
    })
}
