//! One chunk of a route's records, decoded on its own: the payloads through a format
//! decoder, a row that does not fit found by bisecting, the metadata columns added and
//! the rows some sink cannot store rejected. Nothing here touches the route's state, so
//! a chunk can be decoded on a worker thread while the route reads the next
//! (`workers.rs`); chunks are taken back in the order they were read.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;

use super::format::{Format, Refusal};
use super::metadata::{MessageMeta, MetadataBuilder};
use super::refuse::{self, ValueChecks};
use super::{ErrorClass, Reason, Rejected};

/// A chunk's records as read: raw payloads (kept for bisecting and for their dead
/// letters) and their Kafka coordinates.
#[derive(Default)]
pub struct RawRows {
    raw: Vec<u8>,
    spans: Vec<(usize, usize)>,
    pub meta: Vec<MessageMeta>,
    /// The records' keys, which `meta` points into.
    pub keys: Vec<u8>,
}

impl RawRows {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds a record (its coordinates in `meta`, already pointing into `keys`).
    pub fn push(&mut self, payload: &[u8], meta: MessageMeta) {
        let start = self.raw.len();
        self.raw.extend_from_slice(payload);
        self.spans.push((start, self.raw.len()));
        self.meta.push(meta);
    }

    fn payload(&self, row: usize) -> &[u8] {
        let (start, end) = self.spans[row];
        &self.raw[start..end]
    }

    pub fn clear(&mut self) {
        self.raw.clear();
        self.spans.clear();
        self.meta.clear();
        self.keys.clear();
    }
}

/// What a chunk became: rows with their coordinates, piece by piece, and the records
/// rejected, in the order they were read.
pub struct Decoded {
    pub pieces: Vec<(RecordBatch, Vec<MessageMeta>)>,
    pub rejected: Vec<Rejected>,
    /// The format decoder, to decode a later chunk with.
    pub format: Box<dyn Format>,
    /// The chunk's buffers, emptied, to read a later chunk into.
    pub rows: RawRows,
}

/// What decoding a chunk needs besides its rows and a format decoder; shared by the
/// route and its chunks on the workers.
#[derive(Clone)]
pub struct Recipe {
    pub payload_schema: SchemaRef,
    pub metadata: Arc<MetadataBuilder>,
    /// The route's sinks' checks of the values they can store.
    pub checks: ValueChecks,
}

impl Recipe {
    /// Decodes `rows` with `format` (which has no open rows).
    pub fn decode(&self, format: Box<dyn Format>, mut rows: RawRows) -> Decoded {
        let mut chunk = Chunk {
            recipe: self,
            rows: &rows,
            format,
            open: Vec::new(),
            pieces: Vec::new(),
            rejected: Vec::new(),
        };
        for row in 0..rows.len() {
            chunk.push(row);
        }
        chunk.flush();
        let Chunk {
            format,
            pieces,
            rejected,
            ..
        } = chunk;
        rows.clear();
        Decoded {
            pieces,
            rejected,
            format,
            rows,
        }
    }
}

/// A chunk being decoded.
struct Chunk<'r> {
    recipe: &'r Recipe,
    rows: &'r RawRows,
    format: Box<dyn Format>,
    /// The rows the format holds open, by chunk row.
    open: Vec<usize>,
    pieces: Vec<(RecordBatch, Vec<MessageMeta>)>,
    rejected: Vec<Rejected>,
}

impl Chunk<'_> {
    fn push(&mut self, row: usize) {
        match self.format.push(self.rows.payload(row)) {
            Ok(()) => self.open.push(row),
            Err(Refusal::Record(why)) => self.reject(row, why),
            Err(Refusal::RowsLost(why)) => {
                // The format lost its open rows with a bad one: a fresh decoder takes
                // them again, flushed at once, so each good row is fed again at most
                // once however many bad ones follow.
                self.format = self.format.fresh(self.rows.len());
                for &open in &self.open {
                    // These rows were taken alone before; together they are taken the same.
                    let _ = self.format.push(self.rows.payload(open));
                }
                self.flush();
                self.reject(row, why);
            }
        }
    }

    /// The open rows become a piece; rows that do not fit the schema, or that a sink
    /// cannot store, are rejected.
    fn flush(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let open = std::mem::take(&mut self.open);
        let (payload, kept) = match self.format.flush() {
            Ok(batch) => (batch, open),
            Err(_) => {
                // Some row does not fit: find the culprits.
                let mut good = Vec::new();
                let mut kept = Vec::new();
                self.bisect(&open, &mut good, &mut kept);
                let batch = concat_batches(&self.recipe.payload_schema, &good)
                    .expect("batches share the schema");
                (Some(batch), kept)
            }
        };
        let Some(payload) = payload.filter(|b| b.num_rows() > 0) else {
            return;
        };
        let meta: Vec<MessageMeta> = kept
            .iter()
            .map(|&row| self.rows.meta[row].clone())
            .collect();
        let batch = self
            .recipe
            .metadata
            .append_columns(payload, &meta, &self.rows.keys);
        let refused = self.recipe.checks.refused(&batch);
        if refused.is_empty() {
            self.pieces.push((batch, meta));
            return;
        }
        for (row, reason) in &refused {
            let why = Reason::new(
                ErrorClass::CannotStore,
                format!("cannot be stored: {reason}"),
            );
            self.reject(kept[*row], why);
        }
        let keep = refuse::keep_mask(batch.num_rows(), &refused);
        let batch = arrow_select::filter::filter_record_batch(&batch, &keep)
            .expect("mask matches the batch");
        let meta = meta
            .into_iter()
            .enumerate()
            .filter(|(row, _)| !refused.contains_key(row))
            .map(|(_, m)| m)
            .collect();
        if batch.num_rows() > 0 {
            self.pieces.push((batch, meta));
        }
    }

    /// Decodes `rows` with a fresh decoder, halving sets that fail; the rows decoded
    /// are appended to `kept` in order, their batches to `good`.
    fn bisect(&mut self, rows: &[usize], good: &mut Vec<RecordBatch>, kept: &mut Vec<usize>) {
        let mut decoder = self.format.fresh(rows.len());
        for &row in rows {
            let _ = decoder.push(self.rows.payload(row));
        }
        match decoder.flush() {
            Ok(batch) => {
                good.extend(batch);
                kept.extend_from_slice(rows);
            }
            Err(e) if rows.len() == 1 => {
                let why = Reason::new(
                    ErrorClass::SchemaMismatch,
                    format!("does not match the schema: {e}"),
                );
                self.reject(rows[0], why);
            }
            Err(_) => {
                let (low, high) = rows.split_at(rows.len() / 2);
                self.bisect(low, good, kept);
                self.bisect(high, good, kept);
            }
        }
    }

    fn reject(&mut self, row: usize, why: Reason) {
        let meta = &self.rows.meta[row];
        let payload = self.rows.payload(row);
        self.rejected.push(Rejected {
            topic: meta.topic.to_string(),
            partition: meta.partition,
            offset: meta.offset,
            timestamp: meta.timestamp,
            key: meta.key(&self.rows.keys).map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            headers: meta.headers(),
            schema_id: self.format.schema_id(payload),
            class: why.class,
            error: why.text,
        });
    }
}
