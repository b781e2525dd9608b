//! Step 2, decode: Kafka messages decoded once, straight into Arrow columns.
//!
//! A route reads its records into chunks (`chunk.rs`); a full chunk is decoded on its
//! own, on a decode worker when the machine has cores to spare (`workers.rs`), and
//! chunks are taken back in the order they were read. In a chunk, the route's
//! [`Format`] (`json/`, `avro/`, `protobuf/`; the seam is `format.rs`) takes each
//! message on its own, so a malformed one is rejected alone. Everything else is
//! format-free: a chunk whose values do not fit the schema is bisected down to the
//! offending records, the rest is kept with the metadata columns and coordinates of
//! its rows, and rows holding a value some sink of the route cannot store are rejected
//! too (see [`refuse`]).

pub mod avro;
mod chunk;
mod format;
mod json;
mod metadata;
mod protobuf;
mod reason;
mod refuse;
mod workers;

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};

pub use format::{
    Coercions, Format, Learned, Payload, ProtoSchema, Reference, WriterSchema, own_schema, widens,
};
pub use metadata::{MessageMeta, MetadataBuilder, TopicNames};
pub use reason::{ErrorClass, OriginalHeaders, Reason, Rejected};
pub use workers::Workers;

use crate::config::MetadataKind;
use chunk::{Decoded, RawRows, Recipe};
use ingest_sink_api::{Coordinates, ValueCheck};
use refuse::ValueChecks;
use workers::Pending;

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

/// Decodes one route's messages into record batches of its output schema.
pub struct RouteDecoder {
    recipe: Recipe,
    /// The route's format decoder: it learns writer schemas and names records' ids;
    /// chunks are decoded by copies of it (`spare`, or [`Format::fresh`] ones).
    format: Box<dyn Format>,
    /// Format decoders whose chunk is done, as they know what `format` knows.
    spare: Vec<Box<dyn Format>>,
    /// Counts what `format` learned: a chunk's decoder made before the last lesson is
    /// not kept as a spare.
    lessons: u64,
    chunk: RawRows,
    /// Emptied chunk buffers, to read the next chunk into without growing them.
    spare_rows: Vec<RawRows>,
    chunk_rows: usize,
    /// Chunks being decoded, in the order they were read, with the lessons their
    /// decoder knew.
    pending: VecDeque<(Pending, u64)>,
    workers: Option<Arc<Workers>>,
    pieces: Vec<RecordBatch>,
    /// Coordinates of each piece's rows, to drop a revoked partition's rows.
    piece_meta: Vec<Vec<MessageMeta>>,
    /// Topic names shared by the rows' coordinates.
    topics: TopicNames,
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
            spare: Vec::new(),
            lessons: 0,
            recipe: Recipe {
                metadata: Arc::new(MetadataBuilder::new(&payload_schema, metadata)),
                payload_schema,
                checks: ValueChecks::default(),
            },
            chunk: RawRows::default(),
            spare_rows: Vec::new(),
            chunk_rows,
            pending: VecDeque::new(),
            workers: None,
            pieces: Vec::new(),
            piece_meta: Vec::new(),
            topics: TopicNames::default(),
            max_message_bytes: usize::MAX,
            keep_headers: false,
        }
    }

    /// Full chunks are decoded on `workers` while the route reads on.
    pub fn decode_on(&mut self, workers: Arc<Workers>) {
        self.workers = Some(workers);
    }

    /// Rows keep their record's headers, for their dead letters.
    pub fn keep_headers(&mut self) {
        self.keep_headers = true;
    }

    /// Records whose key and value together are larger than `bytes` are refused.
    pub fn set_max_message_bytes(&mut self, bytes: usize) {
        self.max_message_bytes = bytes;
    }

    /// Rows `check` refuses are rejected from now on (a sink's column ranges).
    pub fn add_check(&mut self, check: std::sync::Arc<dyn ValueCheck>) {
        self.recipe.checks.add(check);
    }

    /// The schema of the batches produced: payload fields, then metadata columns.
    pub fn output_schema(&self) -> SchemaRef {
        self.recipe.metadata.schema()
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
        self.spare.clear();
        self.lessons += 1;
        self.format.learn(id, schema)
    }

    /// Refuses the records of writer schema `id` from now on, with `why`.
    pub fn refuse(&mut self, id: u32, why: &str) {
        self.spare.clear();
        self.lessons += 1;
        self.format.refuse(id, why);
    }

    /// Takes one message into the open chunk. A message refused whole (empty, too
    /// large) is appended to `rejected` now; one the format refuses, when its chunk is
    /// decoded. Either leaves the other rows as if it had never been seen.
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
        let meta = MessageMeta::new(
            message,
            self.keep_headers,
            &mut self.chunk.keys,
            &mut self.topics,
        );
        self.chunk.push(payload, meta);
    }

    /// Whether the open chunk is full and should be flushed.
    pub fn chunk_full(&self) -> bool {
        self.chunk.len() >= self.chunk_rows
    }

    /// Sends the open chunk to be decoded: on a worker when the route has them (at
    /// most two chunks per worker wait; beyond that the oldest is waited for), else
    /// here. Rows that do not fit the schema are appended to `rejected` when their
    /// chunk is taken back.
    pub fn flush_chunk(&mut self, rejected: &mut Vec<Rejected>) {
        if self.chunk.is_empty() {
            return;
        }
        let rows = std::mem::replace(&mut self.chunk, self.spare_rows.pop().unwrap_or_default());
        let format = self
            .spare
            .pop()
            .unwrap_or_else(|| self.format.fresh(self.chunk_rows));
        match &self.workers {
            Some(workers) => {
                let waiting = 2 * workers.threads();
                let chunk = workers.decode(self.recipe.clone(), format, rows);
                self.pending.push_back((chunk, self.lessons));
                while self.pending.len() > waiting {
                    let (oldest, lessons) = self.pending.pop_front().expect("more than none");
                    self.keep(oldest.wait(), lessons, rejected);
                }
            }
            None => {
                let decoded = self.recipe.decode(format, rows);
                self.keep(decoded, self.lessons, rejected);
            }
        }
    }

    /// A decoded chunk's rows and rejected records join those before it; its decoder
    /// is kept for a later chunk if it knows all the route's format knows.
    fn keep(&mut self, decoded: Decoded, lessons: u64, rejected: &mut Vec<Rejected>) {
        for (batch, meta) in decoded.pieces {
            self.pieces.push(batch);
            self.piece_meta.push(meta);
        }
        rejected.extend(decoded.rejected);
        if lessons == self.lessons {
            self.spare.push(decoded.format);
        }
        if self.spare_rows.len() < 2 {
            self.spare_rows.push(decoded.rows);
        }
    }

    /// Decodes the open chunk and waits for every chunk still being decoded. Records
    /// rejected whole at `push` were appended before those rejected in earlier
    /// chunks: `rejected` is put back in each partition's order.
    fn finish_chunks(&mut self, rejected: &mut Vec<Rejected>) {
        self.flush_chunk(rejected);
        while let Some((pending, lessons)) = self.pending.pop_front() {
            self.keep(pending.wait(), lessons, rejected);
        }
        if !rejected.is_sorted_by(|a, b| {
            (&a.topic, a.partition, a.offset) <= (&b.topic, b.partition, b.offset)
        }) {
            rejected.sort_by(|a, b| {
                (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
            });
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

    /// Flushes the open chunk and hands over every decoded batch.
    pub fn take(&mut self, rejected: &mut Vec<Rejected>) -> Vec<RecordBatch> {
        self.take_with_coordinates(rejected).0
    }

    /// Like `take`, with the Kafka position of every row, piece by piece.
    pub fn take_with_coordinates(
        &mut self,
        rejected: &mut Vec<Rejected>,
    ) -> (Vec<RecordBatch>, Vec<Vec<Coordinates>>) {
        let (batches, coordinates, _) = self.take_with_times(rejected, false);
        (batches, coordinates)
    }

    /// [`RouteDecoder::take_with_coordinates`], with each partition's earliest and
    /// latest Kafka timestamp among the rows when `kafka_times` (for the watermark).
    pub fn take_with_times(
        &mut self,
        rejected: &mut Vec<Rejected>,
        kafka_times: bool,
    ) -> (
        Vec<RecordBatch>,
        Vec<Vec<Coordinates>>,
        crate::watermark::ChunkTimes,
    ) {
        self.finish_chunks(rejected);
        let mut times = crate::watermark::ChunkTimes::default();
        let coordinates = self
            .piece_meta
            .drain(..)
            .map(|rows| {
                rows.into_iter()
                    .inspect(|m| {
                        if let (true, Some(at)) = (kafka_times, m.timestamp) {
                            times.add(&m.topic, m.partition, at);
                        }
                    })
                    .map(|m| Coordinates {
                        topic: m.topic,
                        partition: m.partition,
                        offset: m.offset,
                    })
                    .collect()
            })
            .collect();
        (std::mem::take(&mut self.pieces), coordinates, times)
    }

    /// Forgets buffered rows whose partition `drop` selects (partitions this instance
    /// no longer owns: their new owner reads them again).
    pub fn retain_partitions(
        &mut self,
        rejected: &mut Vec<Rejected>,
        drop: impl Fn(&str, i32) -> bool,
    ) {
        self.finish_chunks(rejected);
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
