//! Step 2, decode: Kafka messages decoded once, straight into Arrow columns.
//!
//! The route's [`Format`] (`json.rs`; the seam is `format.rs`) takes each message on its
//! own, so a malformed one is caught and rejected alone, and rows are flushed into
//! record batches in chunks. Everything here is format-free: a chunk whose values do
//! not fit the schema (a string in an int column, a missing required field) is bisected
//! down to the offending records, which are rejected with the format's message; the
//! rest is kept, with the metadata columns and coordinates of its rows. Rows holding a
//! value some sink of the route cannot store are rejected too (see [`refuse`]).

pub mod avro;
mod format;
mod json;
mod metadata;
mod protobuf;
mod reason;
mod refuse;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use arrow_select::concat::concat_batches;

pub use format::{
    Coercions, Format, Learned, Payload, ProtoSchema, Reference, Refusal, WriterSchema, own_schema,
    widens,
};
pub use metadata::{MessageMeta, MetadataBuilder, TopicNames};
pub use reason::{ErrorClass, OriginalHeaders, Reason, Rejected};

use crate::config::MetadataKind;
use ingest_sink_api::{Coordinates, ValueCheck};
use refuse::ValueChecks;

/// One Kafka record as the decoder sees it.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's own headers (kept for its dead letter).
    pub headers: Option<&'a rdkafka::message::BorrowedHeaders>,
}

impl<'a> Message<'a> {
    /// A record with only a payload (no timestamp or key), e.g. a line of a file.
    pub fn payload_only(topic: &'a str, partition: i32, offset: i64, payload: &'a [u8]) -> Self {
        Self {
            topic,
            partition,
            offset,
            timestamp: None,
            key: None,
            payload: Some(payload),
            headers: None,
        }
    }

    /// Key and value bytes together (what `max_message_bytes` bounds).
    pub fn size(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.payload.map_or(0, <[u8]>::len)
    }
}

/// Rows of the open chunk: raw payloads (for bisecting) and their Kafka coordinates.
#[derive(Default)]
struct RawRows {
    raw: Vec<u8>,
    spans: Vec<(usize, usize)>,
    meta: Vec<MessageMeta>,
    keys: Vec<u8>,
}

impl RawRows {
    fn payload(&self, row: usize) -> &[u8] {
        let (start, end) = self.spans[row];
        &self.raw[start..end]
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.spans.clear();
        self.meta.clear();
        self.keys.clear();
    }
}

/// Decodes one route's messages into record batches of its output schema.
pub struct RouteDecoder {
    payload_schema: SchemaRef,
    metadata: MetadataBuilder,
    format: Box<dyn Format>,
    chunk: RawRows,
    chunk_rows: usize,
    pieces: Vec<RecordBatch>,
    /// Coordinates of each piece's rows, to drop a revoked partition's rows.
    piece_meta: Vec<Vec<MessageMeta>>,
    /// Topic names shared by the rows' coordinates.
    topics: TopicNames,
    /// The route's sinks' checks of the values they can store.
    checks: ValueChecks,
    /// Records whose key and value together are larger are refused (`too_large`).
    max_message_bytes: usize,
    /// Whether rows keep their record's headers (for a dead letter found after the
    /// chunk is decoded); a copy per record, so only routes with a dead-letter topic.
    keep_headers: bool,
}

impl RouteDecoder {
    /// Payloads in `format` of `payload_schema`; `chunk_rows` bounds how many raw
    /// payloads are kept for bisecting.
    pub fn new(
        payload: &Payload,
        payload_schema: SchemaRef,
        metadata: Vec<(String, MetadataKind)>,
        chunk_rows: usize,
    ) -> Result<Self, ArrowError> {
        let chunk_rows = chunk_rows.max(1);
        let format = format::for_route(payload, &payload_schema, chunk_rows)
            .map_err(ArrowError::InvalidArgumentError)?;
        Ok(Self::with_format(
            format,
            payload_schema,
            metadata,
            chunk_rows,
        ))
    }

    /// As [`RouteDecoder::new`], with a format decoder already built.
    pub fn with_format(
        format: Box<dyn Format>,
        payload_schema: SchemaRef,
        metadata: Vec<(String, MetadataKind)>,
        chunk_rows: usize,
    ) -> Self {
        let chunk_rows = chunk_rows.max(1);
        Self {
            format,
            metadata: MetadataBuilder::new(&payload_schema, metadata),
            payload_schema,
            chunk: RawRows::default(),
            chunk_rows,
            pieces: Vec::new(),
            piece_meta: Vec::new(),
            topics: TopicNames::default(),
            checks: ValueChecks::default(),
            max_message_bytes: usize::MAX,
            keep_headers: false,
        }
    }

    /// Records whose key and value together are larger than `bytes` are refused.
    /// Rows keep their record's headers, for their dead letters.
    pub fn keep_headers(&mut self) {
        self.keep_headers = true;
    }

    pub fn set_max_message_bytes(&mut self, bytes: usize) {
        self.max_message_bytes = bytes;
    }

    /// Rows `check` refuses are rejected from now on (a sink's column ranges).
    pub fn add_check(&mut self, check: std::sync::Arc<dyn ValueCheck>) {
        self.checks.add(check);
    }

    /// The schema of the batches produced: payload fields, then metadata columns.
    pub fn output_schema(&self) -> SchemaRef {
        self.metadata.schema()
    }

    /// The registry schema id this message names that the format has not learned.
    pub fn schema_wanted(&self, message: &Message<'_>) -> Option<u32> {
        self.format.schema_wanted(message.payload?)
    }

    /// The registry schema id the message names, if its format has them.
    pub fn schema_id(&self, message: &Message<'_>) -> Option<u32> {
        self.format.schema_id(message.payload?)
    }

    /// Teaches the format (and the fresh ones it makes) the writer schema of `id`;
    /// a wider payload when the writer has fields the route's schema lacks.
    pub fn learn(&mut self, id: u32, schema: Option<&WriterSchema>) -> Learned {
        self.format.learn(id, schema)
    }

    /// Refuses the records of writer schema `id` from now on, with `why`.
    pub fn refuse(&mut self, id: u32, why: &str) {
        self.format.refuse(id, why);
    }

    /// Decodes one message. A malformed message is appended to `rejected` and leaves
    /// the decoder as if it had never been seen.
    pub fn push(&mut self, message: &Message<'_>, rejected: &mut Vec<Rejected>) {
        let Some(payload) = message.payload.filter(|p| !p.is_empty()) else {
            let why = Reason::new(ErrorClass::Empty, "empty message (no payload)");
            rejected.push(self.reject(message, why));
            return;
        };
        if message.size() > self.max_message_bytes {
            let why = Reason::new(
                ErrorClass::TooLarge,
                format!(
                    "key and value are {} bytes, over the route's max_message_bytes ({})",
                    message.size(),
                    self.max_message_bytes
                ),
            );
            rejected.push(self.reject(message, why));
            return;
        }
        match self.format.push(payload) {
            Ok(()) => {}
            Err(Refusal::Record(why)) => {
                rejected.push(self.reject(message, why));
                return;
            }
            Err(Refusal::RowsLost(why)) => {
                self.recover(rejected);
                rejected.push(self.reject(message, why));
                return;
            }
        }
        let start = self.chunk.raw.len();
        self.chunk.raw.extend_from_slice(payload);
        self.chunk.spans.push((start, self.chunk.raw.len()));
        self.chunk.meta.push(MessageMeta::new(
            message,
            self.keep_headers,
            &mut self.chunk.keys,
            &mut self.topics,
        ));
    }

    /// The format lost its open rows with a bad message: a fresh one takes the chunk's
    /// good rows, flushed at once, so each good row is fed again at most once however
    /// many bad messages follow.
    fn recover(&mut self, rejected: &mut Vec<Rejected>) {
        self.format = self.format.fresh(self.chunk_rows);
        for row in 0..self.chunk.spans.len() {
            // These rows were taken alone before; together they are taken the same.
            let _ = self.format.push(self.chunk.payload(row));
        }
        self.flush_chunk(rejected);
    }

    /// Whether the open chunk is full and should be flushed.
    pub fn chunk_full(&self) -> bool {
        self.chunk.spans.len() >= self.chunk_rows
    }

    /// Turns the open chunk into a record batch; rows that do not fit the schema are
    /// appended to `rejected`.
    pub fn flush_chunk(&mut self, rejected: &mut Vec<Rejected>) {
        if self.chunk.spans.is_empty() {
            return;
        }
        let rows = self.chunk.spans.len();
        // After bisecting, which chunk row (raw payload) each decoded row came from.
        let mut kept_rows = None;
        let payload = match self.format.flush() {
            Ok(Some(batch)) => Some(batch),
            Ok(None) => None,
            Err(_) => {
                // Some row does not fit: find the culprits.
                let mut good = Vec::new();
                let mut keep = vec![false; rows];
                self.bisect(0, rows, &mut good, &mut keep, rejected);
                let batch =
                    concat_batches(&self.payload_schema, &good).expect("batches share the schema");
                let kept: Vec<MessageMeta> = self
                    .chunk
                    .meta
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(m, _)| m.clone())
                    .collect();
                self.chunk.meta = kept;
                kept_rows = Some((0..rows).filter(|row| keep[*row]).collect::<Vec<_>>());
                Some(batch)
            }
        };
        if let Some(payload) = payload.filter(|b| b.num_rows() > 0) {
            let batch = self
                .metadata
                .append_columns(payload, &self.chunk.meta, &self.chunk.keys);
            let batch = self.reject_refused(batch, kept_rows.as_deref(), rejected);
            if batch.num_rows() > 0 {
                self.pieces.push(batch);
                self.piece_meta.push(std::mem::take(&mut self.chunk.meta));
            }
        }
        self.chunk.clear();
    }

    /// Rows of `batch` some sink cannot store go to `rejected` whole (`chunk_rows[i]`
    /// is the chunk row of batch row `i`, identity when `None`); the rest is returned.
    fn reject_refused(
        &mut self,
        batch: RecordBatch,
        chunk_rows: Option<&[usize]>,
        rejected: &mut Vec<Rejected>,
    ) -> RecordBatch {
        let refused = self.checks.refused(&batch);
        if refused.is_empty() {
            return batch;
        }
        for (row, reason) in &refused {
            let raw = chunk_rows.map_or(*row, |rows| rows[*row]);
            let why = Reason::new(
                ErrorClass::CannotStore,
                format!("cannot be stored: {reason}"),
            );
            rejected.push(self.rejected_row(*row, raw, why));
        }
        let mut row = 0;
        self.chunk.meta.retain(|_| {
            row += 1;
            !refused.contains_key(&(row - 1))
        });
        let keep = refuse::keep_mask(batch.num_rows(), &refused);
        arrow_select::filter::filter_record_batch(&batch, &keep).expect("mask matches the batch")
    }

    /// The record of chunk row `raw`, whose coordinates are `self.chunk.meta[meta]`.
    fn rejected_row(&self, meta: usize, raw: usize, why: Reason) -> Rejected {
        let meta = &self.chunk.meta[meta];
        let payload = self.chunk.payload(raw);
        Rejected {
            topic: meta.topic.to_string(),
            partition: meta.partition,
            offset: meta.offset,
            timestamp: meta.timestamp,
            key: meta.key(&self.chunk.keys).map(<[u8]>::to_vec),
            payload: Some(payload.to_vec()),
            headers: meta.headers(),
            schema_id: self.format.schema_id(payload),
            class: why.class,
            error: why.text,
        }
    }

    /// A message refused whole, before it reached the chunk.
    fn reject(&self, message: &Message<'_>, why: Reason) -> Rejected {
        Rejected {
            topic: message.topic.to_string(),
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
            key: message.key.map(<[u8]>::to_vec),
            payload: message.payload.map(<[u8]>::to_vec),
            headers: metadata::own_headers(message.headers),
            schema_id: message.payload.and_then(|p| self.format.schema_id(p)),
            class: why.class,
            error: why.text,
        }
    }

    /// Decodes rows `lo..hi` with a fresh decoder, halving ranges that fail.
    fn bisect(
        &self,
        lo: usize,
        hi: usize,
        good: &mut Vec<RecordBatch>,
        keep: &mut [bool],
        rejected: &mut Vec<Rejected>,
    ) {
        let mut decoder = self.format.fresh(hi - lo);
        for row in lo..hi {
            let _ = decoder.push(self.chunk.payload(row));
        }
        match decoder.flush() {
            Ok(batch) => {
                good.extend(batch);
                keep[lo..hi].iter_mut().for_each(|k| *k = true);
            }
            Err(e) if hi - lo == 1 => {
                let why = Reason::new(
                    ErrorClass::SchemaMismatch,
                    format!("does not match the schema: {e}"),
                );
                rejected.push(self.rejected_row(lo, lo, why));
            }
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                self.bisect(lo, mid, good, keep, rejected);
                self.bisect(mid, hi, good, keep, rejected);
            }
        }
    }

    /// Flushes the open chunk and hands over every decoded batch.
    pub fn take(&mut self, rejected: &mut Vec<Rejected>) -> Vec<RecordBatch> {
        self.take_with_coordinates(rejected).0
    }

    /// Like `take`, with the Kafka position of every row, piece by piece.
    pub fn take_with_coordinates(
        &mut self,
        rejected: &mut Vec<Rejected>,
    ) -> (Vec<RecordBatch>, Vec<Vec<Coordinates>>) {
        self.flush_chunk(rejected);
        let coordinates = self
            .piece_meta
            .drain(..)
            .map(|rows| {
                rows.into_iter()
                    .map(|m| Coordinates {
                        topic: m.topic,
                        partition: m.partition,
                        offset: m.offset,
                    })
                    .collect()
            })
            .collect();
        (std::mem::take(&mut self.pieces), coordinates)
    }

    /// Forgets buffered rows whose partition `drop` selects (partitions this instance
    /// no longer owns: their new owner reads them again).
    pub fn retain_partitions(
        &mut self,
        rejected: &mut Vec<Rejected>,
        drop: impl Fn(&str, i32) -> bool,
    ) {
        self.flush_chunk(rejected);
        for (piece, meta) in self.pieces.iter_mut().zip(self.piece_meta.iter_mut()) {
            if !meta.iter().any(|m| drop(&m.topic, m.partition)) {
                continue;
            }
            let keep: arrow_array::BooleanArray = meta
                .iter()
                .map(|m| Some(!drop(&m.topic, m.partition)))
                .collect();
            *piece = arrow_select::filter::filter_record_batch(piece, &keep)
                .expect("mask matches the batch");
            meta.retain(|m| !drop(&m.topic, m.partition));
        }
        rejected.retain(|r| !drop(&r.topic, r.partition));
    }
}

#[cfg(test)]
mod format_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;
