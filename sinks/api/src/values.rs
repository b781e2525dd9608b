//! Values a sink cannot store: found per row before anything is written, so a record
//! whose date is outside a column's range, whose number is too wide for a narrower
//! column or whose timestamp overflows a unit conversion goes to the dead-letter topic
//! instead of failing the whole write (which would stop the service: the same batch
//! fails again on every retry).
//!
//! The checks are vectorised: a column is cast with Arrow's *safe* cast (a value that
//! does not fit becomes null) and compared with its source's validity, and ranges are
//! compared over the value buffers. Nothing is done per row but for the rows found.

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, TimeUnit};

/// One row a sink cannot store, and why: the sink, the column and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub row: usize,
    pub reason: String,
}

/// Finds the rows a sink would fail to store. Built by the sink from its table's
/// columns; run on every decoded piece before any sink of the route sees it.
pub trait ValueCheck: Send + Sync {
    /// The rows of `batch` (the route's output schema) this sink cannot store, in row
    /// order; a row breaking several columns appears once per column.
    fn refusals(&self, batch: &RecordBatch) -> Vec<Refusal>;
}

/// The elements of one array that break one rule (`mask` true), and the rule.
pub struct Finding {
    pub mask: BooleanBuffer,
    pub why: String,
}

impl Finding {
    /// Only the elements `keep` selects (e.g. those under a non-null parent).
    fn and(self, keep: &BooleanBuffer) -> Finding {
        Finding {
            mask: &self.mask & keep,
            why: self.why,
        }
    }
}

/// Where an array holds a value (not null).
pub fn valid(array: &dyn Array) -> BooleanBuffer {
    match array.logical_nulls() {
        Some(nulls) => nulls.inner().clone(),
        None => BooleanBuffer::new_set(array.len()),
    }
}

/// `findings` with every mask restricted to `keep`, dropping those left empty.
pub fn restrict(findings: Vec<Finding>, keep: &BooleanBuffer) -> Vec<Finding> {
    findings
        .into_iter()
        .map(|f| f.and(keep))
        .filter(|f| f.mask.count_set_bits() > 0)
        .collect()
}

/// `source` cast safely to `target`, and the valid source values the cast lost (the
/// ones the target type cannot hold); `None` when every value fits. An impossible cast
/// (refused when the sink opened) finds nothing: the sink's own error reports it.
pub fn cast_losses(
    source: &ArrayRef,
    target: &DataType,
) -> (Option<ArrayRef>, Option<BooleanBuffer>) {
    if source.data_type() == target {
        return (Some(source.clone()), None);
    }
    let safe = CastOptions {
        safe: true,
        format_options: FormatOptions::new(),
    };
    let Ok(cast) = cast_with_options(source, target, &safe) else {
        return (None, None);
    };
    // A cast never turns a null into a value: equal counts mean nothing was lost.
    if cast.logical_null_count() == source.logical_null_count() {
        return (Some(cast), None);
    }
    let lost = &valid(source.as_ref()) & &!&valid(cast.as_ref());
    (Some(cast), Some(lost))
}

/// The rows of a list array some element of which `child` marks.
pub fn fold_list<O: OffsetSizeTrait>(offsets: &[O], child: &BooleanBuffer) -> BooleanBuffer {
    BooleanBuffer::collect_bool(offsets.len().saturating_sub(1), |row| {
        let (start, end) = (offsets[row].as_usize(), offsets[row + 1].as_usize());
        (start..end).any(|i| child.value(i))
    })
}

/// Findings over a list's values, carried up to the list's (non-null) rows.
pub fn fold_list_findings(list: &ArrayRef, child: Vec<Finding>) -> Vec<Finding> {
    if child.is_empty() {
        return child;
    }
    let rows = valid(list.as_ref());
    let fold = |f: Finding| Finding {
        mask: match list.data_type() {
            DataType::LargeList(_) => fold_list(list.as_list::<i64>().value_offsets(), &f.mask),
            _ => fold_list(list.as_list::<i32>().value_offsets(), &f.mask),
        },
        why: format!("an element {}", f.why),
    };
    restrict(child.into_iter().map(fold).collect(), &rows)
}

/// Elements of `values` (valid ones) outside `lo..=hi`.
pub fn outside<T: Copy + PartialOrd>(
    values: &[T],
    validity: &BooleanBuffer,
    lo: T,
    hi: T,
) -> Option<BooleanBuffer> {
    let mask = BooleanBuffer::collect_bool(values.len(), |i| {
        validity.value(i) && !(lo <= values[i] && values[i] <= hi)
    });
    (mask.count_set_bits() > 0).then_some(mask)
}

/// The refusals `findings` make of the rows of one column.
pub fn refusals(
    sink: &str,
    column: &str,
    type_name: &str,
    array: &ArrayRef,
    findings: Vec<Finding>,
) -> Vec<Refusal> {
    let formatter =
        ArrayFormatter::try_new(array.as_ref(), &FormatOptions::new().with_null("null"));
    let mut out = Vec::new();
    for finding in findings {
        for row in finding.mask.set_indices() {
            let value = formatter
                .as_ref()
                .ok()
                .and_then(|f| f.value(row).try_to_string().ok())
                .unwrap_or_else(|| raw_number(array, row));
            let value = shorten(value);
            out.push(Refusal {
                row,
                reason: format!(
                    "{sink}: column `{column}` ({type_name}): value {value} {}",
                    finding.why
                ),
            });
        }
    }
    out
}

/// A date or timestamp too far out to show as one, as its number.
fn raw_number(array: &ArrayRef, row: usize) -> String {
    let unit = match array.data_type() {
        DataType::Date32 => "days",
        DataType::Timestamp(TimeUnit::Second, _) => "seconds",
        DataType::Timestamp(TimeUnit::Millisecond, _) => "milliseconds",
        DataType::Timestamp(TimeUnit::Microsecond, _) => "microseconds",
        DataType::Timestamp(TimeUnit::Nanosecond, _) => "nanoseconds",
        _ => return "?".into(),
    };
    match arrow_cast::cast(&array.slice(row, 1), &DataType::Int64) {
        Ok(n) if n.is_valid(0) => format!(
            "{} {unit} since 1970-01-01",
            n.as_primitive::<arrow_array::types::Int64Type>().value(0)
        ),
        _ => "?".into(),
    }
}

/// A value shown in a reason stays short (a dead-letter header, a log line).
fn shorten(mut text: String) -> String {
    const MAX: usize = 120;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, ListArray, types::Int64Type};
    use std::sync::Arc;

    #[test]
    fn a_safe_cast_finds_the_values_that_do_not_fit() {
        let source = Arc::new(Int64Array::from(vec![
            Some(1),
            None,
            Some(40_000),
            Some(-3),
        ])) as ArrayRef;
        let (_, lost) = cast_losses(&source, &DataType::Int16);
        let lost = lost.expect("40000 is no Int16");
        assert_eq!(lost.set_indices().collect::<Vec<_>>(), vec![2]);
        let (_, lost) = cast_losses(&source, &DataType::Int32);
        assert!(lost.is_none());
    }

    #[test]
    fn list_elements_are_charged_to_their_row() {
        let list = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![Some(3), Some(70_000)]),
            Some(vec![]),
        ])) as ArrayRef;
        let values = list.as_list::<i32>().values().clone();
        let (_, lost) = cast_losses(&values, &DataType::Int16);
        let child = vec![Finding {
            mask: lost.unwrap(),
            why: "does not fit Int16".into(),
        }];
        let rows = fold_list_findings(&list, child);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].mask.set_indices().collect::<Vec<_>>(), vec![2]);
        let refused = refusals("s", "l", "Array(Int16)", &list, rows);
        assert_eq!(refused[0].row, 2);
        assert!(
            refused[0].reason.contains("[3, 70000]") && refused[0].reason.contains("an element"),
            "{:?}",
            refused[0]
        );
    }
}
