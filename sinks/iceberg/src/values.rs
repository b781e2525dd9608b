//! The values an Iceberg table's columns cannot hold, found before writing.
//!
//! The sink casts each column to the table's type (`conform`), strictly:
//! a long into an `int` column, seconds or milliseconds into the table's microsecond
//! timestamps (which overflows past about ±292,000 years), a decimal into a smaller
//! precision. A table made by someone else may also require a column the route's schema
//! allows to be null. This check finds those rows first, the same way: a safe cast of
//! the same columns to the same types, and the nulls of required columns.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};

use ingest_sink_api::values::{
    Finding, Refusal, ValueCheck, cast_losses, fold_list_findings, refusals, restrict, valid,
};

/// Checks rows against the table's schema (as Arrow, what the sink casts to).
pub struct TableValues {
    sink: String,
    target: SchemaRef,
    /// The table's type of each top-level column (`int`, `timestamptz`), for reasons.
    type_names: HashMap<String, String>,
}

impl TableValues {
    pub fn new(sink: &str, target: SchemaRef) -> Self {
        Self {
            sink: sink.to_string(),
            target,
            type_names: HashMap::new(),
        }
    }

    /// Names columns' types in reasons as the table's schema does.
    pub fn with_type_names(mut self, schema: &iceberg::spec::Schema) -> Self {
        self.type_names = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.name.clone(), f.field_type.to_string()))
            .collect();
        self
    }
}

impl ValueCheck for TableValues {
    fn refusals(&self, batch: &RecordBatch) -> Vec<Refusal> {
        let mut out = Vec::new();
        for field in self.target.fields() {
            // A table column the batch lacks is written as nulls (checked at open).
            let Some(array) = batch.column_by_name(field.name()) else {
                continue;
            };
            let findings = check(array, field);
            if !findings.is_empty() {
                let type_name = self
                    .type_names
                    .get(field.name())
                    .cloned()
                    .unwrap_or_else(|| field.data_type().to_string());
                out.extend(refusals(
                    &self.sink,
                    field.name(),
                    &type_name,
                    array,
                    findings,
                ));
            }
        }
        out.sort_by_key(|r| r.row);
        out
    }
}

/// What in `array` a table field `target` cannot hold.
fn check(array: &ArrayRef, target: &Field) -> Vec<Finding> {
    let mut out = Vec::new();
    if !target.is_nullable() && array.logical_null_count() > 0 {
        out.push(Finding {
            mask: !&valid(array.as_ref()),
            why: "is not allowed: the table's column is required".into(),
        });
    }
    match (array.data_type(), target.data_type()) {
        (DataType::List(_), DataType::List(item)) => {
            let values = array.as_list::<i32>().values().clone();
            out.extend(fold_list_findings(array, check(&values, item)));
        }
        (DataType::LargeList(_), DataType::LargeList(item)) => {
            let values = array.as_list::<i64>().values().clone();
            out.extend(fold_list_findings(array, check(&values, item)));
        }
        (DataType::Struct(fields), DataType::Struct(targets)) => {
            let structs = array.as_struct();
            let present = valid(array.as_ref());
            for (position, child_target) in targets.iter().enumerate() {
                // Matched by name as Arrow's cast does, by position when names differ.
                let child = structs
                    .column_by_name(child_target.name())
                    .or_else(|| (fields.len() == targets.len()).then(|| structs.column(position)));
                let Some(child) = child else { continue };
                let found = check(child, child_target)
                    .into_iter()
                    .map(|f| Finding {
                        mask: f.mask,
                        why: format!("(field `{}`) {}", child_target.name(), f.why),
                    })
                    .collect();
                out.extend(restrict(found, &present));
            }
        }
        _ => {
            if let (_, Some(mask)) = cast_losses(array, target.data_type()) {
                out.push(Finding {
                    mask,
                    why: "does not fit".into(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray, TimestampSecondArray};
    use arrow_schema::{Schema, TimeUnit};
    use std::sync::Arc;

    fn table(fields: Vec<Field>) -> TableValues {
        TableValues::new("iceberg ns.t", Arc::new(Schema::new(fields)))
    }

    #[test]
    fn longs_into_int_columns_and_overflowing_timestamps_are_refused() {
        let big = Arc::new(Int64Array::from(vec![5, 3_000_000_000, -3_000_000_000])) as ArrayRef;
        let ts = Arc::new(
            TimestampSecondArray::from(vec![1_700_000_000, 1, 10_i64.pow(14)]).with_timezone("UTC"),
        ) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("big", big), ("ts", ts)]).unwrap();
        let check = table(vec![
            Field::new("big", DataType::Int32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
        ]);
        let out = check.refusals(&batch);
        let found: Vec<(usize, &str)> = out
            .iter()
            .map(|r| (r.row, r.reason.split('`').nth(1).unwrap()))
            .collect();
        assert_eq!(found, vec![(1, "big"), (2, "big"), (2, "ts")], "{out:?}");
        assert!(
            out[2]
                .reason
                .contains("value 100000000000000 seconds since 1970-01-01 does not fit"),
            "{out:?}"
        );
        assert!(
            out[0]
                .reason
                .starts_with("iceberg ns.t: column `big` (Int32): value 3000000000 does not fit"),
            "{out:?}"
        );
    }

    #[test]
    fn nulls_in_a_required_column_are_refused() {
        let note = Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("note", note)]).unwrap();
        let out = table(vec![Field::new("note", DataType::Utf8, false)]).refusals(&batch);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].row, 1);
        assert!(out[0].reason.contains("required"), "{out:?}");
    }
}
