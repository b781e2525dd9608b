//! The seam between a payload format and the rest of decoding. A [`Format`] turns
//! payloads into rows of the route's payload schema; everything around it (metadata
//! columns, the sinks' value checks, coordinates, bad records, revoked partitions) is
//! format-free, in `decode/mod.rs`. One module per format (`json.rs`); the route names
//! its format in config (`format:`), and [`for_route`] builds it. `tests/boundaries.rs`
//! keeps each format's crate inside its module.

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};

use crate::config::PayloadFormat;

/// Why a payload was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a record; the format's open rows are as before.
    Record(String),
    /// Not a record, and the format lost its open rows: they are fed to a
    /// [`Format::fresh`] one again.
    RowsLost(String),
}

/// Decodes payloads of one format into batches of one payload schema.
pub trait Format: Send {
    /// Takes one payload into the open rows.
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal>;

    /// The open rows as one batch (`None` when there are none). An error means some
    /// row does not fit the schema: the open rows are dropped, and the caller finds
    /// the culprits by decoding parts of them with [`Format::fresh`] decoders.
    fn flush(&mut self) -> Result<Option<RecordBatch>, String>;

    /// A decoder of the same format and schema, with no open rows, for up to `rows`
    /// payloads at a time.
    fn fresh(&self, rows: usize) -> Box<dyn Format>;
}

/// The decoder of `format` for payloads of `schema`, `rows` payloads at a time.
pub fn for_route(
    format: PayloadFormat,
    schema: &SchemaRef,
    rows: usize,
) -> Result<Box<dyn Format>, ArrowError> {
    match format {
        PayloadFormat::Json => Ok(Box::new(super::json::Json::new(schema.clone(), rows)?)),
    }
}
