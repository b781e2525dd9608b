//! One sink of a route with its own batch, cadence and progress.
//!
//! Decoded rows are shared by every lane of the route (Arrow buffers are reference
//! counted), but each lane flushes on its own limits and tracks what its sink made
//! durable (in [`crate::protocol::Offsets`]), so a slow or failing sink neither holds
//! back nor replays into the others. What it takes, skips and sheds is decided by its
//! [`LaneBook`] (pure, driven by the protocol simulation too); this type applies that
//! to Arrow rows and holds the sink and its write.

use std::time::Instant;

use ingest_sink_api::{OffsetMap, Sink, SinkBatch, SinkError};

use crate::protocol::{LaneBook, Partition};
use crate::watermark::{ChunkTimes, LaneTimes};

use crate::config::BatchConfig;

pub struct Lane {
    /// `clickhouse db.table` or `iceberg ns.table`.
    pub name: String,
    pub limits: BatchConfig,
    /// The sink; moved into the write task while a batch is being written.
    pub sink: Option<Box<dyn Sink>>,
    pub in_flight: Option<tokio::task::JoinHandle<LaneOutcome>>,
    /// What it was handed, skips, shed, and where its sink stands (`protocol/lane.rs`).
    pub book: LaneBook,
    /// The times of what it was handed and its sink does not hold (`watermark`).
    pub times: LaneTimes,
    open: SinkBatch,
    messages: u64,
    bytes: u64,
    opened_at: Option<Instant>,
    /// When the oldest record handed to it and not yet durable in its sink was read
    /// (open, being written or shed), for `ingest_oldest_unwritten_seconds`.
    unwritten_since: Option<Instant>,
}

/// What a finished write hands back.
pub struct LaneOutcome {
    pub sink: Box<dyn Sink>,
    pub result: Result<ingest_sink_api::WriteOutcome, SinkError>,
    pub positions: OffsetMap,
    /// The ownership epoch the batch was started in.
    pub epoch: u64,
    pub rows: usize,
    /// Payload bytes of the records the rows came from.
    pub bytes: u64,
    /// What made the batch due: `rows`, `bytes`, `age` or `drain`.
    pub reason: &'static str,
    pub started: Instant,
}

impl Lane {
    pub fn new(sink: Box<dyn Sink>, limits: BatchConfig) -> Self {
        Self {
            name: sink.name().to_string(),
            limits,
            sink: Some(sink),
            in_flight: None,
            book: LaneBook::default(),
            times: LaneTimes::default(),
            open: SinkBatch::default(),
            messages: 0,
            bytes: 0,
            opened_at: None,
            unwritten_since: None,
        }
    }

    /// Adds decoded rows (and the positions of every message they cover) as its book
    /// takes them: all, but those it had before a re-read; nothing while shed.
    pub fn append(
        &mut self,
        chunk: &SinkBatch,
        times: &ChunkTimes,
        messages: u64,
        bytes: u64,
        opened_at: Instant,
    ) {
        let Some(taken) = self.book.take(&chunk.positions) else {
            return;
        };
        self.times.handed(&taken.positions, times);
        let (messages, bytes) = if taken.skip.is_empty() {
            self.open.append(chunk);
            (messages, bytes)
        } else {
            let mut fresh = chunk.skip_held(&taken.skip);
            fresh.positions = taken.positions;
            let (rows, kept) = (chunk.num_rows().max(1) as u64, fresh.num_rows() as u64);
            self.open.append(&fresh);
            (messages * kept / rows, bytes * kept / rows)
        };
        self.messages += messages;
        self.bytes += bytes;
        let first = *self.opened_at.get_or_insert(opened_at);
        self.opened_at = Some(first.min(opened_at));
        let since = *self.unwritten_since.get_or_insert(opened_at);
        self.unwritten_since = Some(since.min(opened_at));
    }

    /// What makes the open batch due now: a limit it reached, its age, or else a drain
    /// (shutdown, rebalance, schema change); the `reason` of `ingest_flushes_total`.
    pub fn due_reason(&self, now: Instant) -> &'static str {
        if self.messages >= self.limits.max_rows as u64 {
            "rows"
        } else if self.bytes >= self.limits.max_bytes.as_u64() {
            "bytes"
        } else if self
            .opened_at
            .is_some_and(|t| now.duration_since(t) >= self.limits.max_age)
        {
            "age"
        } else {
            "drain"
        }
    }

    /// Payload bytes of the records in the open batch.
    pub fn open_bytes(&self) -> u64 {
        self.bytes
    }

    /// After a write ended (written, or dropped as fenced) or a shed lane took rows
    /// again: what is still not durable here is the open batch, unless the lane is
    /// shed (its dropped rows are read again later) or a write is under way. Rows sent
    /// to be read again come back through `append`.
    pub fn settle(&mut self) {
        if !self.book.is_shed() && self.in_flight.is_none() {
            self.unwritten_since = self.opened_at;
        }
    }

    /// When the oldest record it was handed and its sink does not hold was read
    /// (`None` when it holds them all).
    pub fn unwritten_since(&self) -> Option<Instant> {
        self.unwritten_since
    }

    /// Full with `pending` more messages and bytes still in the route's decoder.
    pub fn full_with(&self, pending_messages: u64, pending_bytes: u64) -> bool {
        self.over_limit(1, pending_messages, pending_bytes)
    }

    /// Whether it holds `factor` times its row or byte limit or more, `pending` included.
    pub fn over_limit(&self, factor: u64, pending_messages: u64, pending_bytes: u64) -> bool {
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

    pub fn has_open(&self) -> bool {
        self.opened_at.is_some()
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

    /// Its sink is down and it holds twice its limits: rather than make reading wait
    /// (and stop the route's other sinks), it drops its open rows and takes no more
    /// until its write succeeds (see [`LaneBook::shed`]).
    pub fn shed(&mut self) {
        let open: Vec<Partition> = self.open.positions.partitions().collect();
        self.book.shed(open);
        self.take();
    }

    /// Forgets buffered rows of partitions taken away by a rebalance.
    pub fn revoke(&mut self, gone: &impl Fn(&str, i32) -> bool) {
        self.book.revoke(gone);
        self.times.revoke(gone);
        self.open.drop_partitions(gone);
        if self.open.positions.is_empty() {
            self.messages = 0;
            self.bytes = 0;
            self.opened_at = None;
            if self.in_flight.is_none() && !self.book.is_shed() {
                self.unwritten_since = None;
            }
        }
    }
}
