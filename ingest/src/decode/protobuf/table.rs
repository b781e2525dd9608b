//! Protobuf fields as table columns, and decoded messages appended to Arrow columns.
//! The mapping is ours (docs/types.md): scalars to their Arrow kind, enums to their
//! names, repeated fields to lists, maps to key/value lists sorted by key, messages to
//! structs, and the well-known types to what they mean (Timestamp to a UTC timestamp in
//! microseconds, Duration to nanoseconds, wrappers to nullable scalars).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, Field, FieldRef, Fields, TimeUnit};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Value};

/// The item field name of lists, as the YAML grammar names it.
const LIST_ITEM: &str = "element";
/// Messages nested deeper than this are refused (a recursive message never ends).
const MAX_DEPTH: usize = 32;

/// The table fields of `message`'s fields.
pub fn table_fields(message: &MessageDescriptor) -> Result<Fields, String> {
    fields_at(message, 0)
}

fn fields_at(message: &MessageDescriptor, depth: usize) -> Result<Fields, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "message `{}` nests deeper than {MAX_DEPTH} levels (a recursive message has no table)",
            message.full_name()
        ));
    }
    message
        .fields()
        .map(|f| {
            let (data_type, nullable) =
                field_type(&f, depth).map_err(|e| format!("field `{}`: {e}", f.name()))?;
            Ok(Field::new(f.name(), data_type, nullable))
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Fields::from)
}

/// The column type of a field, and whether it is nullable.
fn field_type(field: &FieldDescriptor, depth: usize) -> Result<(DataType, bool), String> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("map fields are messages")
        };
        let pair = fields_at(&entry, depth + 1)?;
        let item = Field::new(LIST_ITEM, DataType::Struct(pair), false);
        return Ok((DataType::List(Arc::new(item)), false));
    }
    let (data_type, wrapper) = kind_type(&field.kind(), depth)?;
    if field.is_list() {
        let item = Field::new(LIST_ITEM, data_type, false);
        return Ok((DataType::List(Arc::new(item)), false));
    }
    Ok((data_type, wrapper || field.supports_presence()))
}

/// The column type of a value of `kind`, and whether it is a wrapper (nullable).
fn kind_type(kind: &Kind, depth: usize) -> Result<(DataType, bool), String> {
    Ok(match kind {
        Kind::Double => (DataType::Float64, false),
        Kind::Float => (DataType::Float32, false),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (DataType::Int32, false),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (DataType::Int64, false),
        Kind::Uint32 | Kind::Fixed32 => (DataType::UInt32, false),
        Kind::Uint64 | Kind::Fixed64 => (DataType::UInt64, false),
        Kind::Bool => (DataType::Boolean, false),
        Kind::String | Kind::Enum(_) => (DataType::Utf8, false),
        Kind::Bytes => (DataType::Binary, false),
        Kind::Message(m) => match well_known(m) {
            Some(WellKnown::Timestamp) => (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Some(WellKnown::Duration) => (DataType::Int64, false),
            Some(WellKnown::Wrapper(inner)) => (kind_type(&inner, depth)?.0, true),
            None => (DataType::Struct(fields_at(m, depth + 1)?), false),
        },
    })
}

enum WellKnown {
    Timestamp,
    Duration,
    Wrapper(Kind),
}

fn well_known(message: &MessageDescriptor) -> Option<WellKnown> {
    match message.full_name() {
        "google.protobuf.Timestamp" => Some(WellKnown::Timestamp),
        "google.protobuf.Duration" => Some(WellKnown::Duration),
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => message
            .get_field_by_name("value")
            .map(|f| WellKnown::Wrapper(f.kind())),
        _ => None,
    }
}

/// Arrow columns being built for one message type's fields.
pub struct Columns {
    fields: Vec<(FieldDescriptor, Column)>,
}

/// One column being built, shaped like its table type.
enum Column {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Micros(TimestampMicrosecondBuilder),
    List {
        item: FieldRef,
        offsets: Vec<i32>,
        values: Box<Column>,
    },
    Struct {
        fields: Fields,
        columns: Columns,
        nulls: NullBufferBuilder,
    },
}

impl Columns {
    pub fn new(message: &MessageDescriptor, table: &Fields) -> Self {
        Self {
            fields: message
                .fields()
                .zip(table.iter())
                .map(|(f, t)| (f, Column::new(t.data_type())))
                .collect(),
        }
    }

    /// Appends one message's fields (a null struct when `message` is `None`).
    pub fn append(
        &mut self,
        message: Option<&prost_reflect::DynamicMessage>,
    ) -> Result<(), String> {
        for (field, column) in &mut self.fields {
            match message {
                Some(m) if m.has_field(field) || !field.supports_presence() => {
                    column.append(field, Some(&m.get_field(field)))?
                }
                _ => column.append(field, None)?,
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.fields.iter_mut().map(|(_, c)| c.finish()).collect()
    }
}

impl Column {
    fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Boolean => Self::Bool(BooleanBuilder::new()),
            DataType::Int32 => Self::I32(Int32Builder::new()),
            DataType::Int64 => Self::I64(Int64Builder::new()),
            DataType::UInt32 => Self::U32(UInt32Builder::new()),
            DataType::UInt64 => Self::U64(UInt64Builder::new()),
            DataType::Float32 => Self::F32(Float32Builder::new()),
            DataType::Float64 => Self::F64(Float64Builder::new()),
            DataType::Utf8 => Self::Str(StringBuilder::new()),
            DataType::Binary => Self::Bin(BinaryBuilder::new()),
            DataType::Timestamp(_, zone) => {
                Self::Micros(TimestampMicrosecondBuilder::new().with_timezone_opt(zone.clone()))
            }
            DataType::List(item) => Self::List {
                item: item.clone(),
                offsets: vec![0],
                values: Box::new(Self::new(item.data_type())),
            },
            DataType::Struct(fields) => Self::Struct {
                fields: fields.clone(),
                columns: Columns { fields: Vec::new() },
                nulls: NullBufferBuilder::new(0),
            },
            other => unreachable!("no Protobuf column of type {other}"),
        }
    }

    /// Appends the value of `field` (`None`: absent), as one row.
    fn append(&mut self, field: &FieldDescriptor, value: Option<&Value>) -> Result<(), String> {
        if field.is_map() {
            let Self::List {
                offsets, values, ..
            } = self
            else {
                unreachable!("maps are lists")
            };
            let Kind::Message(entry) = field.kind() else {
                unreachable!("map fields are messages")
            };
            let (key_field, value_field) =
                (entry.map_entry_key_field(), entry.map_entry_value_field());
            let mut pairs: Vec<_> = match value {
                Some(Value::Map(map)) => map.iter().collect(),
                _ => Vec::new(),
            };
            // Protobuf maps have no order: sorted by key, so a replay writes the same row.
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            let Self::Struct {
                columns,
                nulls,
                fields,
            } = values.as_mut()
            else {
                unreachable!("map entries are structs")
            };
            ensure_columns(columns, &entry, fields);
            for (key, v) in &pairs {
                let key = Value::from((*key).clone());
                columns.fields[0].1.append(&key_field, Some(&key))?;
                columns.fields[1].1.append(&value_field, Some(v))?;
                nulls.append_non_null();
            }
            push_offset(offsets, pairs.len())?;
            return Ok(());
        }
        if field.is_list() {
            let Self::List {
                offsets, values, ..
            } = self
            else {
                unreachable!("repeated fields are lists")
            };
            let items: &[Value] = match value {
                Some(Value::List(items)) => items,
                _ => &[],
            };
            for item in items {
                values.append_one(&field.kind(), Some(item))?;
            }
            return push_offset(offsets, items.len());
        }
        self.append_one(&field.kind(), value)
    }

    /// Appends one value of `kind` (not repeated).
    fn append_one(&mut self, kind: &Kind, value: Option<&Value>) -> Result<(), String> {
        if let (Kind::Message(m), Some(Value::Message(inner))) = (kind, value) {
            match well_known(m) {
                Some(WellKnown::Timestamp) => {
                    let seconds = inner.get_field_by_name("seconds").and_then(|v| v.as_i64());
                    let nanos = inner.get_field_by_name("nanos").and_then(|v| v.as_i32());
                    let micros = seconds
                        .unwrap_or(0)
                        .checked_mul(1_000_000)
                        .and_then(|s| s.checked_add(i64::from(nanos.unwrap_or(0)).div_euclid(1000)))
                        .ok_or("a Timestamp beyond the microsecond range")?;
                    let Self::Micros(b) = self else {
                        unreachable!()
                    };
                    b.append_value(micros);
                    return Ok(());
                }
                Some(WellKnown::Duration) => {
                    let seconds = inner.get_field_by_name("seconds").and_then(|v| v.as_i64());
                    let nanos = inner.get_field_by_name("nanos").and_then(|v| v.as_i32());
                    let total = seconds
                        .unwrap_or(0)
                        .checked_mul(1_000_000_000)
                        .and_then(|s| s.checked_add(i64::from(nanos.unwrap_or(0))))
                        .ok_or("a Duration beyond the nanosecond range of int64")?;
                    let Self::I64(b) = self else { unreachable!() };
                    b.append_value(total);
                    return Ok(());
                }
                Some(WellKnown::Wrapper(inner_kind)) => {
                    let v = inner.get_field_by_name("value");
                    return self.append_one(&inner_kind, v.as_deref());
                }
                None => {}
            }
        }
        match (self, value) {
            (
                Self::Struct {
                    columns,
                    nulls,
                    fields,
                },
                v,
            ) => {
                let Kind::Message(m) = kind else {
                    unreachable!()
                };
                ensure_columns(columns, m, fields);
                match v {
                    Some(Value::Message(inner)) => {
                        columns.append(Some(inner))?;
                        nulls.append_non_null();
                    }
                    _ => {
                        columns.append(None)?;
                        nulls.append_null();
                    }
                }
            }
            (Self::Bool(b), v) => b.append_option(v.and_then(Value::as_bool)),
            (Self::I32(b), v) => b.append_option(v.and_then(Value::as_i32)),
            (Self::I64(b), v) => b.append_option(v.and_then(Value::as_i64)),
            (Self::U32(b), v) => b.append_option(v.and_then(Value::as_u32)),
            (Self::U64(b), v) => b.append_option(v.and_then(Value::as_u64)),
            (Self::F32(b), v) => b.append_option(v.and_then(Value::as_f32)),
            (Self::F64(b), v) => b.append_option(v.and_then(Value::as_f64)),
            (Self::Bin(b), v) => b.append_option(v.and_then(Value::as_bytes).map(|b| b.as_ref())),
            (Self::Str(b), Some(Value::EnumNumber(n))) => {
                let Kind::Enum(e) = kind else { unreachable!() };
                // An open enum may carry a number newer than the schema: kept as the number.
                match e.get_value(*n) {
                    Some(named) => b.append_value(named.name()),
                    None => b.append_value(n.to_string()),
                }
            }
            (Self::Str(b), v) => b.append_option(v.and_then(Value::as_str)),
            (Self::Micros(b), _) => b.append_null(),
            (Self::List { .. }, _) => unreachable!("lists are appended by field"),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::U32(b) => Arc::new(b.finish()),
            Self::U64(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Str(b) => Arc::new(b.finish()),
            Self::Bin(b) => Arc::new(b.finish()),
            Self::Micros(b) => Arc::new(b.finish()),
            Self::List {
                item,
                offsets,
                values,
            } => {
                let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
                Arc::new(ListArray::new(item.clone(), offsets, values.finish(), None))
            }
            Self::Struct {
                fields,
                columns,
                nulls,
            } => {
                let children = if columns.fields.is_empty() {
                    fields
                        .iter()
                        .map(|f| arrow_array::new_empty_array(f.data_type()))
                        .collect()
                } else {
                    columns.finish()
                };
                let nulls = nulls.finish();
                Arc::new(StructArray::new(fields.clone(), children, nulls))
            }
        }
    }
}

/// A struct column's children are made on its first value (its message type is known
/// then).
fn ensure_columns(columns: &mut Columns, message: &MessageDescriptor, fields: &Fields) {
    if columns.fields.is_empty() && !fields.is_empty() {
        *columns = Columns::new(message, fields);
    }
}

fn push_offset(offsets: &mut Vec<i32>, added: usize) -> Result<(), String> {
    let last = *offsets.last().expect("offsets start at 0");
    let next = i32::try_from(added)
        .ok()
        .and_then(|n| last.checked_add(n))
        .ok_or("more list items in a batch than a list column holds")?;
    offsets.push(next);
    Ok(())
}
