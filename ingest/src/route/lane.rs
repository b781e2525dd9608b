//! One sink of a route with its own batch, cadence and progress.
//!
//! Decoded rows are shared by every lane of the route (Arrow buffers are reference
//! counted), but each lane flushes on its own limits and tracks what its sink made
//! durable (in [`crate::protocol::Offsets`]), so a slow or failing sink neither holds
//! back nor replays into the others.

use std::time::{Duration, Instant};

use ingest_sinks::{OffsetMap, Sink, SinkBatch, SinkError};

use crate::config::BatchConfig;

pub struct Lane {
    /// `clickhouse db.table` or `iceberg ns.table`.
    pub name: String,
    pub limits: BatchConfig,
    /// The sink; moved into the write task while a batch is being written.
    pub sink: Option<Box<dyn Sink>>,
    pub in_flight: Option<tokio::task::JoinHandle<LaneOutcome>>,
    open: SinkBatch,
    messages: u64,
    bytes: u64,
    opened_at: Option<Instant>,
}

/// What a finished write hands back.
pub struct LaneOutcome {
    pub sink: Box<dyn Sink>,
    pub result: Result<ingest_sinks::Written, SinkError>,
    pub next_offsets: OffsetMap,
    /// The ownership epoch the batch was started in.
    pub fence_epoch: u64,
    pub rows: usize,
    pub started: Instant,
}

impl Lane {
    pub fn new(sink: Box<dyn Sink>, limits: BatchConfig) -> Self {
        Self {
            name: sink.name().to_string(),
            limits,
            sink: Some(sink),
            in_flight: None,
            open: SinkBatch::default(),
            messages: 0,
            bytes: 0,
            opened_at: None,
        }
    }

    /// Adds decoded rows (and the positions of every message they cover).
    pub fn append(&mut self, chunk: &SinkBatch, messages: u64, bytes: u64, opened_at: Instant) {
        self.open.append(chunk);
        self.messages += messages;
        self.bytes += bytes;
        let first = *self.opened_at.get_or_insert(opened_at);
        self.opened_at = Some(first.min(opened_at));
    }

    /// Full with `pending` more messages and bytes still in the route's decoder.
    pub fn full_with(&self, pending_messages: u64, pending_bytes: u64) -> bool {
        self.holds_times(1, pending_messages, pending_bytes)
    }

    /// Whether it holds `factor` times its row or byte limit, `pending` included.
    pub fn holds_times(&self, factor: u64, pending_messages: u64, pending_bytes: u64) -> bool {
        self.messages + pending_messages >= factor * self.limits.max_rows as u64
            || self.bytes + pending_bytes >= factor * self.limits.max_bytes.as_u64()
    }

    /// Full, or its oldest message (here or, `pending_since`, in the decoder) is due.
    pub fn due(&self, now: Instant, pending_since: Option<Instant>, pending: (u64, u64)) -> bool {
        self.full_with(pending.0, pending.1)
            || self
                .opened_at
                .into_iter()
                .chain(pending_since)
                .min()
                .is_some_and(|t| now.duration_since(t) >= self.limits.max_age)
    }

    /// How long until the oldest message reaches `max_age`.
    pub fn time_left(&self, now: Instant, pending_since: Option<Instant>) -> Option<Duration> {
        self.opened_at
            .into_iter()
            .chain(pending_since)
            .min()
            .map(|t| self.limits.max_age.saturating_sub(now.duration_since(t)))
    }

    pub fn has_open(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Bytes buffered here, to stop reading when a sink cannot keep up.
    pub fn buffered_bytes(&self) -> u64 {
        self.bytes
    }

    /// A write is under way and has not finished.
    pub fn busy(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Closes the open batch for writing.
    pub fn take(&mut self) -> SinkBatch {
        self.messages = 0;
        self.bytes = 0;
        self.opened_at = None;
        std::mem::take(&mut self.open)
    }

    /// Forgets buffered rows of partitions taken away by a rebalance.
    pub fn revoke(&mut self, gone: &impl Fn(&str, i32) -> bool) {
        self.open.drop_partitions(gone);
        if self.open.next_offsets.is_empty() {
            self.messages = 0;
            self.bytes = 0;
            self.opened_at = None;
        }
    }
}
