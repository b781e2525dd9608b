//! From the route's Arrow schema to one an Iceberg table can hold (the partition spec
//! is `partition`'s).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Iceberg stores timestamps in microseconds, UTC-adjusted or not; other widths and
/// zones are converted on the way in (a zoned timestamp keeps its instant, in UTC).
pub fn iceberg_compatible(schema: &Schema) -> Result<SchemaRef, String> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| compatible_field(f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

fn compatible_field(field: &Field) -> Result<Field, String> {
    let data_type =
        compatible_type(field.data_type()).map_err(|e| format!("field `{}`: {e}", field.name()))?;
    Ok(Field::new(field.name(), data_type, field.is_nullable()))
}

fn compatible_type(data_type: &DataType) -> Result<DataType, String> {
    Ok(match data_type {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            return Err(
                "Iceberg v2 tables hold timestamps to the microsecond; declare timestamp(us)"
                    .into(),
            );
        }
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "+00:00".into()))
        }
        DataType::UInt64 => {
            return Err(
                "Iceberg has no unsigned 64-bit type; declare int64 or decimal(20, 0)".into(),
            );
        }
        DataType::List(item) => DataType::List(Arc::new(compatible_field(item)?)),
        DataType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| compatible_field(f))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_become_microseconds() {
        let schema = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Paris".into())),
            false,
        )]);
        let out = iceberg_compatible(&schema).unwrap();
        assert_eq!(
            out.field(0).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
    }
}
