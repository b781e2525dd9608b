//! Arrow record batches encoded as ClickHouse `Native` blocks.
//!
//! Native is columnar like Arrow, so most columns are a straight copy of Arrow's value
//! buffers, and every server from 18.16 to today accepts it over HTTP. No crate encodes
//! Arrow into Native for arbitrary table types (`clickhouse`'s own Native writer takes
//! typed Rust rows, `clickhouse-ext-arrow` speaks ArrowStream only), hence this module.
//!
//! The encoder is driven by the *table's* column type: Arrow leaves are cast to what the
//! column stores (e.g. Int32 into an Int64 column, ms timestamps into DateTime64(6)).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, GenericListArray, OffsetSizeTrait, RecordBatch, make_array};
use arrow_buffer::NullBuffer;
use arrow_cast::cast::{CastOptions, cast_with_options};

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow_cast::display::FormatOptions::new(),
};
use arrow_schema::{DataType, TimeUnit};

use crate::types::ChType;

/// A table column the encoder writes: name, the server's type name, and its parse.
#[derive(Debug, Clone)]
pub struct NativeColumn {
    pub name: String,
    pub type_name: String,
    pub ty: ChType,
    /// Where the values come from in the record batch.
    pub source: Source,
}

impl NativeColumn {
    /// The column `name` of type `type_name`, filled from the batch column of that name.
    pub fn of_field(name: &str, type_name: &str) -> Result<Self, String> {
        Ok(Self {
            name: name.to_string(),
            type_name: type_name.to_string(),
            ty: ChType::parse(type_name)?,
            source: Source::Field,
        })
    }
}

/// The batch column a table column is filled from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The batch column of the same name.
    Field,
    /// One element of a `list<struct>` field, as an array: servers before 21.x store
    /// `Array(Tuple(a, b))` as flattened `f.a Array(A)`, `f.b Array(B)` columns.
    NestedElement { field: String, element: usize },
}

/// Encoding failure, naming the column and what did not fit.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}` ({type_name}): {message}")]
pub struct EncodeError {
    pub column: String,
    pub type_name: String,
    pub message: String,
}

/// Appends one Native block holding `batch` to `out`. `columns[i]` is written from the
/// batch column with the same name.
pub fn encode_block(
    batch: &RecordBatch,
    columns: &[NativeColumn],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    write_varuint(out, columns.len() as u64);
    write_varuint(out, batch.num_rows() as u64);
    for column in columns {
        let fail = |message: String| EncodeError {
            column: column.name.clone(),
            type_name: column.type_name.clone(),
            message,
        };
        let array = match &column.source {
            Source::Field => batch
                .column_by_name(&column.name)
                .cloned()
                .ok_or_else(|| fail("missing from the record batch".into()))?,
            Source::NestedElement { field, element } => {
                let list = batch.column_by_name(field).ok_or_else(|| {
                    fail(format!("field `{field}` missing from the record batch"))
                })?;
                nested_element(list, *element).map_err(fail)?
            }
        };
        write_string(out, column.name.as_bytes());
        write_string(out, column.type_name.as_bytes());
        encode_column(&array, &column.ty, out).map_err(fail)?;
    }
    Ok(())
}

fn encode_column(array: &ArrayRef, ty: &ChType, out: &mut Vec<u8>) -> Result<(), String> {
    match ty {
        ChType::Nullable(inner) => {
            let nulls = array.logical_nulls();
            out.reserve(array.len());
            for i in 0..array.len() {
                out.push(nulls.as_ref().is_some_and(|n| n.is_null(i)) as u8);
            }
            encode_column(array, inner, out)
        }
        ChType::Array(inner) => match array.data_type() {
            DataType::List(_) => encode_list(array.as_list::<i32>(), inner, out),
            DataType::LargeList(_) => encode_list(array.as_list::<i64>(), inner, out),
            other => Err(format!("cannot write Arrow {other} into an Array column")),
        },
        ChType::Tuple(elements) => {
            let DataType::Struct(fields) = array.data_type() else {
                return Err(format!(
                    "cannot write Arrow {} into a Tuple column",
                    array.data_type()
                ));
            };
            let structs = array.as_struct();
            if elements.len() != fields.len() {
                return Err(format!(
                    "tuple has {} elements, the struct has {} fields",
                    elements.len(),
                    fields.len()
                ));
            }
            for (position, (name, element_type)) in elements.iter().enumerate() {
                let child = match name {
                    Some(name) => structs
                        .column_by_name(name)
                        .ok_or_else(|| format!("struct has no field `{name}`"))?,
                    None => structs.column(position),
                };
                let child = with_parent_nulls(child, structs.nulls());
                encode_column(&child, element_type, out)
                    .map_err(|e| format!("element {}: {e}", name.as_deref().unwrap_or("?")))?;
            }
            Ok(())
        }
        leaf => encode_leaf(array, leaf, out),
    }
}

/// The `element`-th field of a `list<struct>` column, as a list of that field's values.
pub(super) fn nested_element(list: &ArrayRef, element: usize) -> Result<ArrayRef, String> {
    let DataType::List(item) = list.data_type() else {
        return Err(format!(
            "expected a list of structs, found {}",
            list.data_type()
        ));
    };
    let DataType::Struct(fields) = item.data_type() else {
        return Err(format!(
            "expected a list of structs, found {}",
            list.data_type()
        ));
    };
    let list = list.as_list::<i32>();
    let child = list.values().as_struct().column(element).clone();
    let field = fields[element].clone();
    let item = std::sync::Arc::new(arrow_schema::Field::new(
        item.name(),
        field.data_type().clone(),
        field.is_nullable(),
    ));
    Ok(std::sync::Arc::new(arrow_array::ListArray::new(
        item,
        list.offsets().clone(),
        child,
        list.nulls().cloned(),
    )))
}

/// A null struct is stored as a tuple of null elements: its nulls are pushed down.
fn with_parent_nulls(child: &ArrayRef, parent: Option<&NullBuffer>) -> ArrayRef {
    let Some(parent) = parent.filter(|p| p.null_count() > 0) else {
        return child.clone();
    };
    let nulls = NullBuffer::union(Some(parent), child.nulls());
    let data = child.to_data().into_builder().nulls(nulls).build();
    match data {
        Ok(data) => make_array(data),
        // A type whose layout cannot take a null buffer keeps its own values.
        Err(_) => child.clone(),
    }
}

fn encode_list<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    inner: &ChType,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let offsets = list.value_offsets();
    let first = offsets[0].as_usize();
    out.reserve(list.len() * 8);
    for end in &offsets[1..] {
        out.extend_from_slice(&((end.as_usize() - first) as u64).to_le_bytes());
    }
    let last = offsets[list.len()].as_usize();
    let values = list.values().slice(first, last - first);
    encode_column(&values, inner, out)
}

/// The Arrow type a leaf column is cast to before its bytes are copied.
pub(super) fn leaf_arrow_type(ty: &ChType, source: &DataType) -> Result<DataType, String> {
    let source_zone = match source {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    Ok(match ty {
        ChType::Int8 => DataType::Int8,
        ChType::Int16 => DataType::Int16,
        ChType::Int32 => DataType::Int32,
        ChType::Int64 => DataType::Int64,
        ChType::UInt8 | ChType::Bool => DataType::UInt8,
        ChType::UInt16 => DataType::UInt16,
        ChType::UInt32 => DataType::UInt32,
        ChType::UInt64 => DataType::UInt64,
        ChType::Float32 => DataType::Float32,
        ChType::Float64 => DataType::Float64,
        ChType::Date | ChType::Date32 => DataType::Date32,
        ChType::DateTime => DataType::Timestamp(TimeUnit::Second, source_zone),
        ChType::DateTime64(precision) => {
            let unit = match precision {
                0 => TimeUnit::Second,
                3 => TimeUnit::Millisecond,
                6 => TimeUnit::Microsecond,
                9 => TimeUnit::Nanosecond,
                p => {
                    return Err(format!(
                        "DateTime64({p}) is not supported (use 0, 3, 6 or 9)"
                    ));
                }
            };
            DataType::Timestamp(unit, source_zone)
        }
        ChType::Decimal(p, s) => DataType::Decimal128(*p as u8, *s as i8),
        ChType::String => source.clone(),
        ChType::Nullable(_) | ChType::Array(_) | ChType::Tuple(_) => {
            unreachable!("containers are handled by encode_column")
        }
    })
}

fn encode_leaf(array: &ArrayRef, ty: &ChType, out: &mut Vec<u8>) -> Result<(), String> {
    if *ty == ChType::String {
        return encode_strings(array, out);
    }
    let target = leaf_arrow_type(ty, array.data_type())?;
    let cast_array;
    let array = if array.data_type() == &target {
        array
    } else {
        // Strict: a value that does not fit the column is an error, never a silent 0/null.
        cast_array = cast_with_options(array, &target, &STRICT)
            .map_err(|e| format!("cannot convert Arrow {}: {e}", array.data_type()))?;
        &cast_array
    };
    match ty {
        ChType::Int8 => copy_values::<Int8Type>(array, out),
        ChType::Int16 => copy_values::<Int16Type>(array, out),
        ChType::Int32 => copy_values::<Int32Type>(array, out),
        ChType::Int64 => copy_values::<Int64Type>(array, out),
        ChType::UInt8 | ChType::Bool => copy_values::<UInt8Type>(array, out),
        ChType::UInt16 => copy_values::<UInt16Type>(array, out),
        ChType::UInt32 => copy_values::<UInt32Type>(array, out),
        ChType::UInt64 => copy_values::<UInt64Type>(array, out),
        ChType::Float32 => copy_values::<Float32Type>(array, out),
        ChType::Float64 => copy_values::<Float64Type>(array, out),
        ChType::Date32 => copy_values::<Date32Type>(array, out),
        ChType::Date => {
            let days = array.as_primitive::<Date32Type>();
            out.reserve(days.len() * 2);
            for (i, d) in days.values().iter().enumerate() {
                if days.is_valid(i) && !(0..=u16::MAX as i32).contains(d) {
                    return Err(format!(
                        "date {d} days from 1970 is outside Date's range (1970-01-01..2149-06-06); use a Date32 column"
                    ));
                }
                out.extend_from_slice(&(*d as u16).to_le_bytes());
            }
        }
        ChType::DateTime => {
            let seconds = array.as_primitive::<TimestampSecondType>();
            out.reserve(seconds.len() * 4);
            for (i, s) in seconds.values().iter().enumerate() {
                if seconds.is_valid(i) && !(0..=u32::MAX as i64).contains(s) {
                    return Err(format!("timestamp {s}s is outside DateTime's range"));
                }
                out.extend_from_slice(&(*s as u32).to_le_bytes());
            }
        }
        ChType::DateTime64(_) => match array.data_type() {
            DataType::Timestamp(TimeUnit::Second, _) => {
                copy_values::<TimestampSecondType>(array, out)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                copy_values::<TimestampMillisecondType>(array, out)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                copy_values::<TimestampMicrosecondType>(array, out)
            }
            _ => copy_values::<TimestampNanosecondType>(array, out),
        },
        ChType::Decimal(precision, _) => {
            let decimals = array.as_primitive::<Decimal128Type>();
            let width = match precision {
                0..=9 => 4,
                10..=18 => 8,
                _ => 16,
            };
            out.reserve(decimals.len() * width);
            for v in decimals.values().iter() {
                out.extend_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        other => unreachable!("{other:?} is not a leaf"),
    }
    Ok(())
}

/// Copies a primitive array's little-endian values buffer as is.
fn copy_values<T: ArrowPrimitiveType>(array: &ArrayRef, out: &mut Vec<u8>) {
    let values = array.as_primitive::<T>().values();
    out.extend_from_slice(values.inner().as_slice());
}

fn encode_strings(array: &ArrayRef, out: &mut Vec<u8>) -> Result<(), String> {
    fn write_all<'a>(out: &mut Vec<u8>, values: impl Iterator<Item = Option<&'a [u8]>>) {
        for v in values {
            write_string(out, v.unwrap_or_default());
        }
    }
    fn bytes<'a>(
        texts: impl Iterator<Item = Option<&'a str>>,
    ) -> impl Iterator<Item = Option<&'a [u8]>> {
        texts.map(|text| text.map(str::as_bytes))
    }
    match array.data_type() {
        DataType::Utf8 => write_all(out, bytes(array.as_string::<i32>().iter())),
        DataType::LargeUtf8 => write_all(out, bytes(array.as_string::<i64>().iter())),
        DataType::Utf8View => write_all(out, bytes(array.as_string_view().iter())),
        DataType::Binary => write_all(out, array.as_binary::<i32>().iter()),
        DataType::LargeBinary => write_all(out, array.as_binary::<i64>().iter()),
        DataType::BinaryView => write_all(out, array.as_binary_view().iter()),
        _ => {
            let text = cast_with_options(array, &DataType::Utf8, &STRICT)
                .map_err(|e| format!("cannot write Arrow {} as String: {e}", array.data_type()))?;
            write_all(out, bytes(text.as_string::<i32>().iter()));
        }
    }
    Ok(())
}

fn write_varuint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varuint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, ListArray, StringArray};
    use std::sync::Arc;

    fn column(name: &str, type_name: &str) -> NativeColumn {
        NativeColumn::of_field(name, type_name).unwrap()
    }

    #[test]
    fn encodes_header_nullable_and_arrays() {
        let ids = Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef;
        let tags = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(7)]),
            Some(vec![Some(8), Some(9)]),
        ])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("id", ids), ("tags", tags)]).unwrap();
        let mut out = Vec::new();
        encode_block(
            &batch,
            &[
                column("id", "Nullable(Int64)"),
                column("tags", "Array(Int32)"),
            ],
            &mut out,
        )
        .unwrap();
        let mut expected = vec![2u8, 2];
        expected.extend([2, b'i', b'd', 15]);
        expected.extend(b"Nullable(Int64)");
        expected.extend([0, 1]);
        expected.extend(1i64.to_le_bytes());
        expected.extend(0i64.to_le_bytes());
        expected.extend([4]);
        expected.extend(b"tags");
        expected.extend([12]);
        expected.extend(b"Array(Int32)");
        expected.extend(1u64.to_le_bytes());
        expected.extend(3u64.to_le_bytes());
        for v in [7i32, 8, 9] {
            expected.extend(v.to_le_bytes());
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn a_value_out_of_the_column_range_is_an_error_not_a_zero() {
        let big = Arc::new(arrow_array::Int64Array::from(vec![1, 300])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("n", big)]).unwrap();
        let err = encode_block(&batch, &[column("n", "Nullable(Int8)")], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `n`"), "{err}");
    }

    #[test]
    fn names_the_column_that_does_not_fit() {
        let names = Arc::new(StringArray::from(vec!["x"])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("name", names)]).unwrap();
        let err = encode_block(&batch, &[column("name", "Array(String)")], &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `name` (Array(String))"), "{err}");
    }
}
