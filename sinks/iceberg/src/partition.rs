//! The partition spec of a table the sink creates, from the route's `partition_by`
//! entries: `day(ts)`, `bucket(16, id)`, `truncate(4, name)`, `identity(x)` or `x`.
//!
//! The transforms are iceberg-rust's own: `Transform` parses Iceberg's spelling (`day`,
//! `bucket[16]`). Only the route's spelling around it is ours: a function of the column
//! as Spark writes it (`bucket(16, id)`, and Spark's plurals `days(ts)`, ...).

use std::fmt::Display;

use iceberg::spec::{Schema, Transform, UnboundPartitionSpec};

/// What a `partition_by` entry may be, for messages.
const EXPECTED: &str = "expected identity(c), year(c), month(c), day(c), hour(c), \
    bucket(N, c) or truncate(N, c), or a column name";

/// The partition spec over the table schema; field names follow Spark's (`ts_day`, ...).
pub fn partition_spec(
    schema: &Schema,
    partition_by: &[String],
) -> Result<UnboundPartitionSpec, String> {
    let mut builder = UnboundPartitionSpec::builder();
    for expr in partition_by {
        let (transform, column) = parse_partition(expr)?;
        let source = schema
            .field_by_name(&column)
            .ok_or_else(|| invalid(expr, format!("no column `{column}` in the schema")))?;
        let suffix = match transform {
            Transform::Identity => "",
            Transform::Year => "_year",
            Transform::Month => "_month",
            Transform::Day => "_day",
            Transform::Hour => "_hour",
            Transform::Bucket(_) => "_bucket",
            Transform::Truncate(_) => "_trunc",
            Transform::Void | Transform::Unknown => {
                return Err(invalid(expr, format!("unsupported transform; {EXPECTED}")));
            }
        };
        builder = builder
            .add_partition_field(source.id, format!("{column}{suffix}"), transform)
            .map_err(|e| invalid(expr, e))?;
    }
    Ok(builder.build())
}

/// One entry's transform and column: `name(c)` or `name(N, c)` is read as Iceberg's
/// `name` or `name[N]`; a bare column is its identity.
fn parse_partition(expr: &str) -> Result<(Transform, String), String> {
    let expr = expr.trim();
    let Some(open) = expr.find('(') else {
        return Ok((Transform::Identity, expr.to_string()));
    };
    let name = expr[..open].trim().to_ascii_lowercase();
    let args: Vec<&str> = expr[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| invalid(expr, "missing `)`"))?
        .split(',')
        .map(str::trim)
        .collect();
    // A plain word, so that nothing but the number goes into Iceberg's brackets.
    if !name.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(invalid(
            expr,
            format!("`{name}` is not a transform; {EXPECTED}"),
        ));
    }
    let (spelled, column) = match args.as_slice() {
        [column] => (singular(&name).to_string(), column),
        [number, column] => {
            number
                .parse::<u32>()
                .map_err(|_| invalid(expr, format!("`{number}` is not a number")))?;
            (format!("{name}[{number}]"), column)
        }
        _ => return Err(invalid(expr, EXPECTED)),
    };
    let transform = spelled.parse::<Transform>().map_err(|_| {
        invalid(
            expr,
            format!("no transform `{name}` of this form; {EXPECTED}"),
        )
    })?;
    Ok((transform, column.to_string()))
}

/// Spark names the time transforms in the plural (`days(ts)`); Iceberg in the singular.
fn singular(name: &str) -> &str {
    match name {
        "years" | "months" | "days" | "hours" => name.strip_suffix('s').unwrap_or(name),
        _ => name,
    }
}

/// The message for an entry that cannot be used: it names the key and the entry.
fn invalid(expr: &str, why: impl Display) -> String {
    format!("partition_by entry `{expr}`: {why}")
}

#[cfg(test)]
mod tests {
    use iceberg::spec::{NestedField, PrimitiveType, Type};

    use super::*;

    fn parsed(expr: &str) -> (Transform, String) {
        parse_partition(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    #[test]
    fn parses_every_kind_of_transform() {
        for (expr, transform, column) in [
            ("country", Transform::Identity, "country"),
            ("identity(country)", Transform::Identity, "country"),
            ("year(ts)", Transform::Year, "ts"),
            ("month(ts)", Transform::Month, "ts"),
            ("day(ts)", Transform::Day, "ts"),
            ("hour(ts)", Transform::Hour, "ts"),
            ("days(ts)", Transform::Day, "ts"),
            ("Hours( ts )", Transform::Hour, "ts"),
            ("bucket(16, id)", Transform::Bucket(16), "id"),
            ("truncate(4, name)", Transform::Truncate(4), "name"),
        ] {
            assert_eq!(parsed(expr), (transform, column.to_string()), "{expr}");
        }
    }

    #[test]
    fn a_bad_transform_names_the_key_and_the_entry() {
        for (expr, why) in [
            ("weekly(ts)", "no transform `weekly`"),
            ("bucket(id)", "no transform `bucket`"),
            ("day(3, ts)", "no transform `day`"),
            ("bucket(x, id)", "`x` is not a number"),
            ("bucket(-1, id)", "`-1` is not a number"),
            ("bucket[16](id)", "`bucket[16]` is not a transform"),
            ("bucket(1, 2, id)", "expected identity(c)"),
            ("day(ts", "missing `)`"),
        ] {
            let error = parse_partition(expr).unwrap_err();
            assert!(
                error.starts_with(&format!("partition_by entry `{expr}`: ")),
                "{error}"
            );
            assert!(error.contains(why), "{expr}: no {why:?} in: {error}");
        }
    }

    #[test]
    fn builds_the_spec_with_sparks_field_names() {
        let schema = Schema::builder()
            .with_fields([
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            ])
            .build()
            .unwrap();
        let entries = [
            "day(ts)".to_string(),
            "bucket(8, id)".to_string(),
            "id".into(),
        ];
        let spec = partition_spec(&schema, &entries).unwrap();
        let fields: Vec<(&str, i32, Transform)> = spec
            .fields()
            .iter()
            .map(|f| (f.name.as_str(), f.source_id, f.transform))
            .collect();
        assert_eq!(
            fields,
            [
                ("ts_day", 2, Transform::Day),
                ("id_bucket", 1, Transform::Bucket(8)),
                ("id", 1, Transform::Identity),
            ]
        );
        for (entry, why) in [
            ("void(ts)", "unsupported transform"),
            ("day(at)", "no column `at`"),
        ] {
            let error = partition_spec(&schema, &[entry.to_string()]).unwrap_err();
            assert!(error.contains(why), "{entry}: {error}");
        }
    }
}
