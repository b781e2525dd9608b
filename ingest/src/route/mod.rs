//! A route at run time: its decoder, its open batch and the sinks it feeds.

use std::time::{Duration, Instant};

use ingest_sinks::{OffsetMap, Sink, SinkBatch, SinkError};

use crate::config::{Route, metadata_fields};
use crate::decode::{JsonDecoder, Message, Rejected};

/// Rows are turned into record batches this many at a time (bounds the raw payloads
/// kept for isolating bad records, and the size of each Arrow piece).
const CHUNK_ROWS: usize = 16 * 1024;

pub struct RouteState {
    pub route: Route,
    decoder: JsonDecoder,
    /// The route's sinks; moved into the write task while a batch is being written.
    pub sinks: Vec<Box<dyn Sink>>,
    /// The batch being written, at most one per route (back-pressure on decoding).
    pub in_flight: Option<tokio::task::JoinHandle<FlushOutcome>>,
    /// Positions covered by the open batch, rejected records included.
    next_offsets: OffsetMap,
    rejected: Vec<Rejected>,
    bytes: u64,
    messages: u64,
    opened_at: Option<Instant>,
}

impl RouteState {
    pub fn new(route: Route, sinks: Vec<Box<dyn Sink>>) -> anyhow::Result<Self> {
        let metadata = metadata_fields(&route.config.metadata);
        let chunk_rows = CHUNK_ROWS.min(route.config.batch.max_rows);
        let decoder = JsonDecoder::new(route.schema.clone(), metadata, chunk_rows)?;
        Ok(Self {
            route,
            decoder,
            sinks,
            in_flight: None,
            next_offsets: OffsetMap::default(),
            rejected: Vec::new(),
            bytes: 0,
            messages: 0,
            opened_at: None,
        })
    }

    /// The Arrow schema of what this route writes (payload then metadata columns).
    pub fn output_schema(&self) -> arrow_schema::SchemaRef {
        self.decoder.output_schema()
    }

    pub fn push(&mut self, message: &Message<'_>) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.decoder.push(message, &mut self.rejected);
        if self.decoder.chunk_full() {
            self.decoder.flush_chunk(&mut self.rejected);
        }
        self.bytes += message.payload.map_or(0, |p| p.len()) as u64;
        self.messages += 1;
        self.next_offsets
            .advance(message.topic, message.partition, message.offset + 1);
    }

    /// True when the open batch reached its row or byte limit (checked per message,
    /// without reading the clock).
    pub fn full(&self) -> bool {
        let batch = &self.route.config.batch;
        self.messages >= batch.max_rows as u64 || self.bytes >= batch.max_bytes.as_u64()
    }

    /// True when the open batch is full or waited `max_age`.
    pub fn due(&self, now: Instant) -> bool {
        self.full()
            || self
                .opened_at
                .is_some_and(|t| now.duration_since(t) >= self.route.config.batch.max_age)
    }

    pub fn is_empty(&self) -> bool {
        self.opened_at.is_none()
    }

    /// Closes the open batch: decoded rows and positions for the sinks, and the records
    /// that failed to decode.
    pub fn take_batch(&mut self) -> (SinkBatch, Vec<Rejected>) {
        let (batches, positions) = self.decoder.take_with_positions(&mut self.rejected);
        let batch = SinkBatch {
            batches,
            positions,
            next_offsets: std::mem::take(&mut self.next_offsets),
        };
        self.bytes = 0;
        self.messages = 0;
        self.opened_at = None;
        (batch, std::mem::take(&mut self.rejected))
    }

    /// Drops buffered rows of partitions taken away by a rebalance.
    pub fn revoke(&mut self, revoked: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            revoked.iter().any(|(t, p)| t == topic && *p == partition)
        };
        if !self.next_offsets.iter().any(|(t, p, _)| gone(t, p)) {
            return;
        }
        self.decoder.retain_partitions(&mut self.rejected, gone);
        for (topic, partition) in revoked {
            if let Some(parts) = self.next_offsets.0.get_mut(topic) {
                parts.remove(partition);
            }
        }
        if self.next_offsets.is_empty() {
            self.opened_at = None;
            self.bytes = 0;
            self.messages = 0;
        }
    }

    /// How long until this route's open batch reaches `max_age`.
    pub fn time_left(&self, now: Instant) -> Option<Duration> {
        self.opened_at.map(|t| {
            self.route
                .config
                .batch
                .max_age
                .saturating_sub(now.duration_since(t))
        })
    }
}

/// What a finished write task hands back: the sinks, and the positions it made durable.
pub struct FlushOutcome {
    pub sinks: Vec<Box<dyn Sink>>,
    pub result: Result<(), SinkError>,
    pub next_offsets: OffsetMap,
    pub rows: usize,
    pub rejected: usize,
    pub started: Instant,
}
