//! The format-free half of decoding works with any [`Format`]: a STAND-IN format of
//! decimal numbers (no real second format exists yet) shows bad records rejected alone
//! with the format's reasons, lost open rows taken again, a chunk whose rows do not all
//! fit bisected down to the culprit, and the metadata columns and coordinates kept.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::*;
use crate::decode::format::Refusal;

/// Payloads are decimal numbers. `x…` is not a record (the open rows stay), `!…` loses
/// the open rows, and a negative number is taken but does not fit the schema at flush.
struct Digits {
    schema: SchemaRef,
    open: Vec<i64>,
}

impl Format for Digits {
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        let text = String::from_utf8_lossy(payload);
        if text.starts_with('!') {
            self.open.clear();
            return Err(Refusal::RowsLost(Reason::new(
                ErrorClass::Undecodable,
                "a bang",
            )));
        }
        let n = text.parse().map_err(|_| {
            Refusal::Record(Reason::new(
                ErrorClass::Undecodable,
                format!("not a number: {text}"),
            ))
        })?;
        self.open.push(n);
        Ok(())
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        let open = std::mem::take(&mut self.open);
        if open.is_empty() {
            return Ok(None);
        }
        if let Some(n) = open.iter().find(|n| **n < 0) {
            return Err(format!("{n} is negative"));
        }
        let column = Arc::new(Int64Array::from(open));
        Ok(Some(
            RecordBatch::try_new(self.schema.clone(), vec![column]).unwrap(),
        ))
    }

    fn fresh(&self, _rows: usize) -> Box<dyn Format> {
        Box::new(Digits {
            schema: self.schema.clone(),
            open: Vec::new(),
        })
    }
}

#[test]
fn any_format_gets_rejects_bisection_and_coordinates() {
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let format = Box::new(Digits {
        schema: schema.clone(),
        open: Vec::new(),
    });
    let metadata = vec![("_offset".to_string(), MetadataKind::Offset)];
    let mut decoder = RouteDecoder::with_format(format, schema, metadata, 100);
    let mut rejected = Vec::new();
    for (offset, payload) in ["1", "2", "x", "3", "!", "4", "-5", "6"].iter().enumerate() {
        let message = Message::payload_only("t", 0, offset as i64, payload.as_bytes());
        decoder.push(&message, &mut rejected);
    }
    let (batches, coordinates) = decoder.take_with_coordinates(&mut rejected);
    let values: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(values, [1, 2, 3, 4, 6], "every good record once, in order");
    let offsets: Vec<i64> = coordinates.iter().flatten().map(|c| c.offset).collect();
    assert_eq!(offsets, [0, 1, 3, 5, 7]);
    let metadata: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(metadata, offsets, "the offset column follows the rows");
    let reasons: Vec<(i64, &str)> = rejected
        .iter()
        .map(|r| (r.offset, r.error.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (2, "not a number: x"),
            (4, "a bang"),
            (6, "does not match the schema: -5 is negative"),
        ]
    );
}
