//! The JSON decoder before `columns.rs`, kept for tests only: arrow-json's tape decoder
//! after `strict.rs` checked that numbers are numbers of their fields' kinds. The
//! differential test in `../tests.rs` holds the new decoder to its readings.

mod strict;

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::{ArrowError, SchemaRef};

use super::Coercions;

use crate::decode::format::{Format, Refusal};
use crate::decode::{ErrorClass, Reason};
use strict::Strict;

pub struct Reference {
    schema: SchemaRef,
    decoder: Decoder,
    rows: usize,
    strict: std::sync::Arc<Strict>,
    coerce: Coercions,
}

impl Reference {
    pub fn new(schema: SchemaRef, rows: usize, coerce: Coercions) -> Result<Self, ArrowError> {
        let rows = rows.max(1);
        Ok(Self {
            decoder: decoder(&schema, rows)?,
            strict: std::sync::Arc::new(Strict::of(schema.fields())),
            schema,
            rows,
            coerce,
        })
    }
}

impl Format for Reference {
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        if !self.strict.is_empty() {
            self.strict.check(payload, self.coerce).map_err(|e| {
                Refusal::Record(Reason::new(
                    ErrorClass::SchemaMismatch,
                    format!("does not match the schema: {e}"),
                ))
            })?;
        }
        let before = self.decoder.len();
        let problem = match self.decoder.decode(payload) {
            Err(e) => format!("invalid JSON: {e}"),
            Ok(_) if self.decoder.has_partial_record() => "truncated JSON value".into(),
            Ok(_) if self.decoder.len() != before + 1 => format!(
                "expected one JSON object, found {} values",
                self.decoder.len().saturating_sub(before)
            ),
            Ok(_) => return Ok(()),
        };
        // The tape holds garbage now: a fresh decoder takes the good rows again.
        Err(Refusal::RowsLost(Reason::new(
            ErrorClass::Undecodable,
            problem,
        )))
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        self.decoder.flush().map_err(|e| {
            // Unusable after a failed flush.
            self.decoder = decoder(&self.schema, self.rows).expect("the schema was accepted");
            e.to_string()
        })
    }

    fn fresh(&self, rows: usize) -> Box<dyn Format> {
        let rows = rows.max(1);
        Box::new(Self {
            decoder: decoder(&self.schema, rows).expect("the schema was accepted"),
            strict: self.strict.clone(),
            schema: self.schema.clone(),
            rows,
            coerce: self.coerce,
        })
    }
}

fn decoder(schema: &SchemaRef, rows: usize) -> Result<Decoder, ArrowError> {
    ReaderBuilder::new(schema.clone())
        // One more than a chunk holds, so `decode` never stops short of a message's end.
        .with_batch_size(rows + 1)
        .build_decoder()
}
