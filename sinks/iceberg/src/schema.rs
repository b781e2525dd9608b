//! From the route's Arrow schema to an Iceberg table schema and partition spec.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use iceberg::spec::{Schema as IcebergSchema, Transform, UnboundPartitionSpec};

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

/// Parses `day(ts)`, `bucket(16, id)`, `truncate(4, name)`, `identity(x)` or `x` into
/// a partition spec over the table schema. Field names follow Spark's (`ts_day`, ...).
pub fn partition_spec(
    schema: &IcebergSchema,
    partition_by: &[String],
) -> Result<UnboundPartitionSpec, String> {
    let mut builder = UnboundPartitionSpec::builder();
    for expr in partition_by {
        let (transform, column) = parse_partition(expr)?;
        let source = schema
            .field_by_name(&column)
            .ok_or_else(|| format!("partition `{expr}`: no column `{column}` in the schema"))?;
        let suffix = match transform {
            Transform::Identity => String::new(),
            Transform::Year => "_year".into(),
            Transform::Month => "_month".into(),
            Transform::Day => "_day".into(),
            Transform::Hour => "_hour".into(),
            Transform::Bucket(_) => "_bucket".into(),
            Transform::Truncate(_) => "_trunc".into(),
            _ => return Err(format!("partition `{expr}`: unsupported transform")),
        };
        builder = builder
            .add_partition_field(source.id, format!("{column}{suffix}"), transform)
            .map_err(|e| format!("partition `{expr}`: {e}"))?;
    }
    Ok(builder.build())
}

fn parse_partition(expr: &str) -> Result<(Transform, String), String> {
    let expr = expr.trim();
    let Some(open) = expr.find('(') else {
        return Ok((Transform::Identity, expr.to_string()));
    };
    let name = expr[..open].trim().to_ascii_lowercase();
    let args: Vec<&str> = expr[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| format!("partition `{expr}`: missing `)`"))?
        .split(',')
        .map(str::trim)
        .collect();
    let number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("partition `{expr}`: `{s}` is not a number"))
    };
    let (transform, column) = match (name.as_str(), args.as_slice()) {
        ("identity", [c]) => (Transform::Identity, c),
        ("year" | "years", [c]) => (Transform::Year, c),
        ("month" | "months", [c]) => (Transform::Month, c),
        ("day" | "days", [c]) => (Transform::Day, c),
        ("hour" | "hours", [c]) => (Transform::Hour, c),
        ("bucket", [n, c]) => (Transform::Bucket(number(n)?), c),
        ("truncate", [n, c]) => (Transform::Truncate(number(n)?), c),
        _ => {
            return Err(format!(
                "partition `{expr}`: expected identity(c), year(c), month(c), day(c), hour(c), bucket(N, c) or truncate(N, c)"
            ));
        }
    };
    Ok((transform, column.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partition_expressions() {
        assert_eq!(
            parse_partition("day(ts)").unwrap(),
            (Transform::Day, "ts".into())
        );
        assert_eq!(
            parse_partition("bucket(16, id)").unwrap(),
            (Transform::Bucket(16), "id".into())
        );
        assert_eq!(
            parse_partition("country").unwrap(),
            (Transform::Identity, "country".into())
        );
        assert!(
            parse_partition("weekly(ts)")
                .unwrap_err()
                .contains("expected")
        );
    }

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
