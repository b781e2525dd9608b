//! The values a ClickHouse table's columns cannot hold, found before encoding.
//!
//! The encoder ([`crate::native`]) casts every Arrow leaf to what its column stores and
//! fails the whole insert on a value that does not fit; this check finds those rows
//! first, the same way (a safe cast of the same leaves, driven by the same column types),
//! plus the documented ranges the Native format itself does not enforce:
//!
//! | column | range |
//! |---|---|
//! | `Date` | 1970-01-01 ..= 2149-06-06 (UInt16 days) |
//! | `DateTime` | 1970-01-01 00:00:00 ..= 2106-02-07 06:28:15 UTC (UInt32 seconds) |
//! | `Date32`, `DateTime64` | 1900-01-01 ..= 2299-12-31 from 22.8, 1925-01-01 ..= 2283-11-11 before |
//!
//! `Date32` and `DateTime64` values outside their range are not refused by the server:
//! they are stored, and read back clamped or wrong. They are refused here instead.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};

use crate::native::{NativeColumn, Source, leaf_arrow_type, nested_element};
use crate::types::{ChType, ServerCaps};
use ingest_sink_api::values::{
    Finding, Refusal, ValueCheck, cast_losses, fold_list_findings, outside, refusals, restrict,
    valid,
};

/// Checks rows against one table's columns (those the sink encodes).
pub struct ColumnRanges {
    sink: String,
    columns: Vec<NativeColumn>,
    caps: ServerCaps,
}

impl ColumnRanges {
    pub fn new(sink: &str, columns: Vec<NativeColumn>, caps: ServerCaps) -> Self {
        Self {
            sink: sink.to_string(),
            columns,
            caps,
        }
    }
}

impl ValueCheck for ColumnRanges {
    fn refusals(&self, batch: &RecordBatch) -> Vec<Refusal> {
        let mut out = Vec::new();
        for column in &self.columns {
            // Columns the batch lacks (Kafka coordinates the sink adds) are not checked.
            let array = match &column.source {
                Source::Field => match batch.column_by_name(&column.name) {
                    Some(array) => array.clone(),
                    None => continue,
                },
                Source::NestedElement { field, element } => {
                    match batch
                        .column_by_name(field)
                        .map(|list| nested_element(list, *element))
                    {
                        Some(Ok(array)) => array,
                        _ => continue,
                    }
                }
            };
            let findings = check(&array, &column.ty, self.caps);
            if !findings.is_empty() {
                out.extend(refusals(
                    &self.sink,
                    &column.name,
                    &column.type_name,
                    &array,
                    findings,
                ));
            }
        }
        out.sort_by_key(|r| r.row);
        out
    }
}

/// What in `array` a column of type `ty` cannot hold, mirroring the encoder's walk.
fn check(array: &ArrayRef, ty: &ChType, caps: ServerCaps) -> Vec<Finding> {
    match ty {
        // Null slots are never checked (the leaves look at valid values only).
        ChType::Nullable(inner) => check(array, inner, caps),
        ChType::Array(inner) => match array.data_type() {
            DataType::List(_) => {
                let values = array.as_list::<i32>().values().clone();
                fold_list_findings(array, check(&values, inner, caps))
            }
            DataType::LargeList(_) => {
                let values = array.as_list::<i64>().values().clone();
                fold_list_findings(array, check(&values, inner, caps))
            }
            _ => Vec::new(),
        },
        ChType::Tuple(elements) => {
            let DataType::Struct(fields) = array.data_type() else {
                return Vec::new();
            };
            if fields.len() != elements.len() {
                return Vec::new();
            }
            let structs = array.as_struct();
            // A null tuple is written as null elements: only present ones count.
            let present = valid(array.as_ref());
            let mut out = Vec::new();
            for (position, (name, element_type)) in elements.iter().enumerate() {
                let child = match name {
                    Some(name) => structs.column_by_name(name),
                    None => Some(structs.column(position)),
                };
                let Some(child) = child else { continue };
                let label = name.clone().unwrap_or_else(|| (position + 1).to_string());
                let found = check(child, element_type, caps)
                    .into_iter()
                    .map(|f| Finding {
                        mask: f.mask,
                        why: format!("(element `{label}`) {}", f.why),
                    })
                    .collect();
                out.extend(restrict(found, &present));
            }
            out
        }
        leaf => check_leaf(array, leaf, caps),
    }
}

fn check_leaf(array: &ArrayRef, ty: &ChType, caps: ServerCaps) -> Vec<Finding> {
    let target = if *ty == ChType::String {
        match array.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => return Vec::new(),
            _ => DataType::Utf8,
        }
    } else {
        match leaf_arrow_type(ty, array.data_type()) {
            Ok(target) => target,
            // Refused when the sink opened; the encoder reports it.
            Err(_) => return Vec::new(),
        }
    };
    let (cast, lost) = cast_losses(array, &target);
    let mut out = Vec::new();
    if let Some(mask) = lost {
        out.push(Finding {
            mask,
            why: format!("does not fit {}", type_label(ty)),
        });
    }
    if let Some(finding) = cast.and_then(|cast| out_of_range(&cast, ty, caps)) {
        out.push(finding);
    }
    out
}

/// Valid values of `cast` (already in the column's Arrow type) outside its range.
fn out_of_range(cast: &ArrayRef, ty: &ChType, caps: ServerCaps) -> Option<Finding> {
    let validity = valid(cast.as_ref());
    let (mask, range) = match ty {
        ChType::Date => {
            let days = cast.as_primitive_opt::<Date32Type>()?.values();
            (
                outside(days, &validity, 0, u16::MAX as i32)?,
                "1970-01-01..2149-06-06 (a Date32 column holds more)".to_string(),
            )
        }
        ChType::DateTime => {
            let seconds = cast.as_primitive_opt::<TimestampSecondType>()?.values();
            (
                outside(seconds, &validity, 0, u32::MAX as i64)?,
                "1970-01-01 00:00:00..2106-02-07 06:28:15 UTC".to_string(),
            )
        }
        ChType::Date32 => {
            let range = ExtendedRange::of(caps);
            let days = cast.as_primitive_opt::<Date32Type>()?.values();
            (
                outside(days, &validity, range.first_day, range.last_day)?,
                range.label.to_string(),
            )
        }
        ChType::DateTime64(_) => {
            let DataType::Timestamp(unit, _) = cast.data_type() else {
                return None;
            };
            let range = ExtendedRange::of(caps);
            let (lo, hi) = range.ticks(*unit);
            let ticks = timestamp_ticks(cast, *unit)?;
            (outside(ticks, &validity, lo, hi)?, range.label.to_string())
        }
        _ => return None,
    };
    Some(Finding {
        mask,
        why: format!("is outside {}'s range {range}", type_label(ty)),
    })
}

fn timestamp_ticks(array: &ArrayRef, unit: TimeUnit) -> Option<&[i64]> {
    Some(match unit {
        TimeUnit::Second => array.as_primitive_opt::<TimestampSecondType>()?.values(),
        TimeUnit::Millisecond => array
            .as_primitive_opt::<TimestampMillisecondType>()?
            .values(),
        TimeUnit::Microsecond => array
            .as_primitive_opt::<TimestampMicrosecondType>()?
            .values(),
        TimeUnit::Nanosecond => array
            .as_primitive_opt::<TimestampNanosecondType>()?
            .values(),
    })
}

/// The documented range of `Date32` and `DateTime64`, which 22.8 widened.
struct ExtendedRange {
    first_day: i32,
    last_day: i32,
    label: &'static str,
}

impl ExtendedRange {
    fn of(caps: ServerCaps) -> Self {
        if caps.version >= (22, 8) {
            Self {
                first_day: -25_567, // 1900-01-01
                last_day: 120_529,  // 2299-12-31
                label: "1900-01-01..2299-12-31",
            }
        } else {
            Self {
                first_day: -16_436, // 1925-01-01
                last_day: 114_635,  // 2283-11-11
                label: "1925-01-01..2283-11-11",
            }
        }
    }

    /// The first and last tick of the range in `unit` (clamped to what an i64 holds).
    fn ticks(&self, unit: TimeUnit) -> (i64, i64) {
        let per_second: i64 = match unit {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        };
        let first = self.first_day as i64 * 86_400;
        let after_last = (self.last_day as i64 + 1) * 86_400;
        (
            first.saturating_mul(per_second),
            after_last.saturating_mul(per_second).saturating_sub(1),
        )
    }
}

/// `Int16`, `Decimal(9, 2)`, `DateTime64(3)`: a leaf type as a reason names it.
fn type_label(ty: &ChType) -> String {
    format!("{ty:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Date32Array, Decimal128Array, Int64Array, ListArray, StructArray, TimestampSecondArray,
    };
    use arrow_schema::Field;
    use std::sync::Arc;

    fn refused(batch: &RecordBatch, columns: Vec<NativeColumn>, version: &str) -> Vec<Refusal> {
        ColumnRanges::new(
            "clickhouse db.t",
            columns,
            ServerCaps::from_version(version),
        )
        .refusals(batch)
    }

    /// The rows `refused` names.
    fn refused_rows(batch: &RecordBatch, columns: Vec<NativeColumn>, version: &str) -> Vec<usize> {
        refused(batch, columns, version)
            .iter()
            .map(|r| r.row)
            .collect()
    }

    fn column(name: &str, type_name: &str) -> NativeColumn {
        NativeColumn::of_field(name, type_name).unwrap()
    }

    fn day(text: &str) -> i32 {
        use arrow_cast::parse::Parser;
        Date32Type::parse(text).unwrap()
    }

    #[test]
    fn dates_outside_date_and_datetime_ranges_are_refused_with_the_column() {
        let days = Arc::new(Date32Array::from(vec![
            Some(day("2024-05-01")),
            Some(day("2150-01-01")),
            None,
            Some(day("1969-12-31")),
            Some(day("2149-06-06")),
            Some(0),
        ])) as ArrayRef;
        let at = Arc::new(
            TimestampSecondArray::from(vec![1, 2, 3, 4, 5_000_000_000, u32::MAX as i64])
                .with_timezone("UTC"),
        ) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("day", days), ("at", at)]).unwrap();
        let out = refused(
            &batch,
            vec![column("day", "Nullable(Date)"), column("at", "DateTime")],
            "18.16.1",
        );
        let rows: Vec<usize> = out.iter().map(|r| r.row).collect();
        assert_eq!(rows, vec![1, 3, 4], "{out:?}");
        assert!(out[0].reason.starts_with("clickhouse db.t: column `day` (Nullable(Date)): value 2150-01-01 is outside Date's range"), "{out:?}");
        assert!(out[2].reason.contains("column `at` (DateTime)"), "{out:?}");
    }

    #[test]
    fn numbers_too_wide_for_a_narrower_column_are_refused() {
        let small = Arc::new(Int64Array::from(vec![1, 40_000, 1, -32_768])) as ArrayRef;
        let level = Arc::new(Int64Array::from(vec![1, 1, -1, 255])) as ArrayRef;
        // Decimal(9, 2) holds up to 9999999.99.
        let amount = Arc::new(
            Decimal128Array::from(vec![1234, 999_999_999, 1_000_000_000, 5])
                .with_precision_and_scale(18, 2)
                .unwrap(),
        ) as ArrayRef;
        let batch =
            RecordBatch::try_from_iter([("small", small), ("level", level), ("amount", amount)])
                .unwrap();
        let out = refused(
            &batch,
            vec![
                column("small", "Int16"),
                column("level", "UInt8"),
                column("amount", "Decimal(9, 2)"),
            ],
            "18.16.1",
        );
        let found: Vec<(usize, &str)> = out
            .iter()
            .map(|r| (r.row, r.reason.split('`').nth(1).unwrap()))
            .collect();
        assert_eq!(
            found,
            vec![(1, "small"), (2, "level"), (2, "amount")],
            "{out:?}"
        );
        assert!(
            out[0].reason.contains("value 40000 does not fit Int16"),
            "{out:?}"
        );
    }

    #[test]
    fn datetime64_and_date32_ranges_follow_the_server_version() {
        // 1910-01-01: inside the range from 22.8, before it on older servers.
        let early = day("1910-01-01");
        let days = Arc::new(Date32Array::from(vec![early, day("2300-01-01")])) as ArrayRef;
        let ts = Arc::new(
            TimestampSecondArray::from(vec![early as i64 * 86_400, 1_700_000_000])
                .with_timezone("UTC"),
        ) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("d", days), ("ts", ts)]).unwrap();
        let columns = vec![column("d", "Date32"), column("ts", "DateTime64(3, 'UTC')")];
        assert_eq!(refused_rows(&batch, columns.clone(), "26.9.1"), vec![1]);
        let old: Vec<(usize, String)> = refused(&batch, columns, "21.9.1")
            .into_iter()
            .map(|r| (r.row, r.reason))
            .collect();
        assert_eq!(old.len(), 3, "{old:?}");
        assert!(
            old.iter()
                .all(|(_, why)| why.contains("1925-01-01..2283-11-11")),
            "{old:?}"
        );
    }

    #[test]
    fn seconds_that_overflow_nanoseconds_are_refused() {
        let ts = Arc::new(TimestampSecondArray::from(vec![1, 10_i64.pow(11)])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("ts", ts)]).unwrap();
        let out = refused(&batch, vec![column("ts", "DateTime64(9)")], "26.9.1");
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].row, 1);
        assert!(
            out[0].reason.contains("does not fit DateTime64(9)"),
            "{out:?}"
        );
    }

    #[test]
    fn nested_values_are_charged_to_their_row() {
        let tags = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1)]),
            Some(vec![Some(2), Some(1_000)]),
        ])) as ArrayRef;
        let inner = Arc::new(Int64Array::from(vec![Some(70_000), Some(3)])) as ArrayRef;
        let point = Arc::new(StructArray::new(
            vec![Field::new("x", DataType::Int64, true)].into(),
            vec![inner],
            Some(vec![false, true].into()),
        )) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("tags", tags), ("point", point)]).unwrap();
        let out = refused(
            &batch,
            vec![
                column("tags", "Array(Int8)"),
                column("point", "Tuple(x Nullable(Int16))"),
            ],
            "26.9.1",
        );
        // Row 0's struct is null: its element is not stored, so not refused.
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].row, 1);
        assert!(out[0].reason.contains("`tags`"), "{out:?}");
    }

    #[test]
    fn the_range_check_agrees_with_the_encoder() {
        // Whatever the check accepts encodes; whatever it refuses fails to encode alone.
        let days = Arc::new(Date32Array::from(vec![-1, 0, 65_535, 65_536, 20_000])) as ArrayRef;
        let n = Arc::new(Int64Array::from(vec![0, 127, -128, 128, -129])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("d", days), ("n", n)]).unwrap();
        let columns = vec![column("d", "Date"), column("n", "Int8")];
        let bad = refused_rows(&batch, columns.clone(), "18.16.1");
        for row in 0..batch.num_rows() {
            let one = batch.slice(row, 1);
            let encoded = crate::native::encode_block(&one, &columns, &mut Vec::new());
            assert_eq!(
                encoded.is_err(),
                bad.contains(&row),
                "row {row}: {encoded:?}"
            );
        }
    }
}
