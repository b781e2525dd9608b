//! JSON objects read straight into the route's columns: a strict scanner
//! (`scan.rs`) hands each column (`columns.rs`) the value it expects, so a record is
//! parsed once, with no tape, DOM or serde pass in between. A record that is not JSON,
//! or not a record of the schema, is refused on its own with the reason, and the rows
//! before it are kept.
//!
//! Numbers are strict: `"7"` or `2.5` for an integer field, `"1.5"` for a float one is
//! refused unless the route allows the coercion (`coerce:`).

mod columns;
mod dates;
mod scan;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;

use super::format::{Format, Refusal};
use super::{ErrorClass, Reason};
use columns::{Cx, Problem, Record};
use scan::{Kind, Scan};

/// Which lenient readings a route allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coercions {
    /// `"7"` for a number field.
    pub string_to_number: bool,
    /// `2.0` (or `2e0`) for an integer field; `2.5` is refused either way.
    pub integral_float_to_int: bool,
}

pub struct Json {
    schema: SchemaRef,
    record: Record,
    cx: Cx,
}

impl Json {
    pub fn new(schema: SchemaRef, coerce: Coercions) -> Result<Self, String> {
        Ok(Self {
            record: Record::new(schema.fields())?,
            schema,
            cx: Cx {
                coerce,
                scratch: Vec::new(),
                keys: Vec::new(),
            },
        })
    }
}

impl Format for Json {
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        let rows = self.record.len();
        let mut scan = Scan::new(payload);
        let read = match scan.kind() {
            Ok(Kind::Object) => match self.record.object(&mut scan, &mut self.cx, 0) {
                // Bytes that are not JSON are undecodable, whatever else they are.
                Err(Problem::Mismatch(m)) => {
                    let mut whole = Scan::new(payload);
                    Err(match whole.skip(0).and_then(|()| whole.end()) {
                        Err(e) => Problem::Syntax(e),
                        Ok(()) => Problem::Mismatch(m),
                    })
                }
                read => read.and_then(|()| Ok(scan.end()?)),
            },
            Ok(other) => Err(not_an_object(&mut scan, other)),
            Err(e) => Err(Problem::Syntax(e)),
        };
        read.map_err(|problem| {
            self.record.truncate(rows);
            Refusal::Record(match problem {
                Problem::Syntax(e) => {
                    Reason::new(ErrorClass::Undecodable, format!("invalid JSON: {e}"))
                }
                Problem::Mismatch(m) => Reason::new(
                    ErrorClass::SchemaMismatch,
                    format!("does not match the schema: {m}"),
                ),
            })
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        let rows = self.record.len();
        if rows == 0 {
            return Ok(None);
        }
        let columns = self.record.columns().map_err(|e| e.to_string())?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn fresh(&self, _rows: usize) -> Box<dyn Format> {
        Box::new(Self::new(self.schema.clone(), self.cx.coerce).expect("the schema was accepted"))
    }
}

/// Why a payload that does not start with `{` is refused: it is not JSON at all
/// (undecodable), or it is a JSON value of another kind (not of the schema).
fn not_an_object(scan: &mut Scan<'_>, kind: Kind) -> Problem {
    match scan.skip(0).and_then(|()| scan.end()) {
        Err(e) => Problem::Syntax(e),
        Ok(()) => Problem::Mismatch(format!("{} where an object is expected", kind.described())),
    }
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
