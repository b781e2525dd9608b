//! One sink of a route with its own batch, cadence and progress.
//!
//! Decoded rows are shared by every lane of the route (Arrow buffers are reference
//! counted), but each lane flushes on its own limits and tracks what its sink made
//! durable (in [`crate::protocol::Offsets`]), so a slow or failing sink neither holds
//! back nor replays into the others.

use std::collections::BTreeSet;
use std::time::Instant;

use ingest_sink_api::{OffsetMap, Sink, SinkBatch, SinkError};

use crate::protocol::Partition;

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
    /// Per partition, the offset after the last record handed to this lane.
    appended: OffsetMap,
    /// Per partition being read again for a lane that shed: records below this were
    /// handed to this lane already and are skipped (gone once reading passes them).
    skip_below: OffsetMap,
    /// While its sink is down this lane takes no rows (see [`Lane::shed`]): the
    /// partitions whose rows it dropped or did not take, to read again for it later.
    shed: Option<BTreeSet<Partition>>,
    /// Per partition, the sink's position as last known here: read from the sink on
    /// assignment or before a re-read, or reached by a write. Checked against the log
    /// start while the lane is shed (records its sink still needs may be deleted).
    held: OffsetMap,
    /// The positions its write under way reaches, once it succeeds.
    in_flight_positions: OffsetMap,
}

/// What a finished write hands back.
pub struct LaneOutcome {
    pub sink: Box<dyn Sink>,
    pub result: Result<ingest_sink_api::WriteOutcome, SinkError>,
    pub positions: OffsetMap,
    /// The ownership epoch the batch was started in.
    pub epoch: u64,
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
            appended: OffsetMap::default(),
            skip_below: OffsetMap::default(),
            shed: None,
            held: OffsetMap::default(),
            in_flight_positions: OffsetMap::default(),
        }
    }

    /// Adds decoded rows (and the positions of every message they cover), but those
    /// this lane already had before a re-read; a shed lane takes nothing.
    pub fn append(&mut self, chunk: &SinkBatch, messages: u64, bytes: u64, opened_at: Instant) {
        if let Some(shed) = &mut self.shed {
            shed.extend(chunk.positions.partitions());
            return;
        }
        let replayed = chunk
            .positions
            .iter()
            .any(|(t, p, _)| self.skip_below.get(t, p).is_some());
        let (messages, bytes) = if replayed {
            let fresh = self.skip_replayed(chunk);
            let (rows, kept) = (chunk.num_rows().max(1) as u64, fresh.num_rows() as u64);
            if fresh.positions.is_empty() {
                return;
            }
            self.open.append(&fresh);
            self.appended.merge(&fresh.positions);
            (messages * kept / rows, bytes * kept / rows)
        } else {
            self.open.append(chunk);
            self.appended.merge(&chunk.positions);
            (messages, bytes)
        };
        self.messages += messages;
        self.bytes += bytes;
        let first = *self.opened_at.get_or_insert(opened_at);
        self.opened_at = Some(first.min(opened_at));
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

    /// The chunk without the records this lane was handed before (a partition read
    /// again for another lane); partitions it holds nothing new of are left out.
    fn skip_replayed(&mut self, chunk: &SinkBatch) -> SinkBatch {
        let mut fresh = chunk.skip_held(&self.skip_below);
        let skip = &self.skip_below;
        fresh
            .positions
            .retain(|t, p| match (skip.get(t, p), chunk.positions.get(t, p)) {
                (Some(below), Some(next)) => next > below,
                _ => true,
            });
        // Partitions read past what this lane had need no more skipping.
        let passed: Vec<Partition> = fresh.positions.partitions().collect();
        for (topic, partition) in passed {
            self.skip_below.remove(&topic, partition);
        }
        fresh
    }

    /// Its sink is down and it holds twice its limits: rather than make reading wait
    /// (and stop the route's other sinks), it drops its open rows and takes no more
    /// until its write succeeds. Its durable positions do not move, so the group offset
    /// (the minimum over the sinks) stays behind what it dropped: nothing is lost.
    pub fn shed(&mut self) {
        let mut partitions: BTreeSet<Partition> = self.open.positions.partitions().collect();
        partitions.extend(self.appended.partitions());
        self.take();
        self.appended = OffsetMap::default();
        self.skip_below = OffsetMap::default();
        self.shed = Some(partitions);
    }

    pub fn is_shed(&self) -> bool {
        self.shed.is_some()
    }

    /// The partitions whose rows it dropped or did not take while shed.
    pub fn shed_partitions(&self) -> impl Iterator<Item = &Partition> {
        self.shed.iter().flatten()
    }

    /// The sink holds these positions (read from it, or reached by a write).
    pub fn learn_positions(&mut self, positions: &OffsetMap) {
        self.held.merge(positions);
    }

    /// Where this lane needs a partition from when reading resumes at `reading_from`:
    /// there, or past it where the lane was handed those records already or its sink
    /// holds them.
    pub fn first_needed(&self, topic: &str, partition: i32, reading_from: i64) -> i64 {
        let handed = self.skip_below.get(topic, partition);
        let held = self.held(topic, partition);
        reading_from
            .max(handed.unwrap_or(i64::MIN))
            .max(held.unwrap_or(i64::MIN))
    }

    /// The sink's position in a partition as last known here.
    pub fn held(&self, topic: &str, partition: i32) -> Option<i64> {
        self.held.get(topic, partition)
    }

    /// Where its sink will stand once the write under way succeeds (as last known
    /// otherwise): records below it are not needed from Kafka any more.
    pub fn position_when_written(&self, topic: &str, partition: i32) -> Option<i64> {
        let writing = self.in_flight_positions.get(topic, partition);
        self.held(topic, partition).max(writing)
    }

    /// A write reaching `positions` starts; `None` when it finished.
    pub fn writing(&mut self, positions: Option<&OffsetMap>) {
        self.in_flight_positions = positions.cloned().unwrap_or_default();
    }

    /// Takes rows again; returns the partitions to read again for it.
    pub fn unshed(&mut self) -> Vec<Partition> {
        self.shed.take().into_iter().flatten().collect()
    }

    /// Where this lane stands in a partition, to be read again for another lane: rows
    /// below the offset after the last one it was handed are skipped from now on.
    pub fn skip_replay(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let next = self.appended.get(topic, partition)?;
        self.skip_below.advance(topic, partition, next);
        Some(next)
    }

    /// Rows of the partition below `next` are skipped from now on (its sink holds them).
    pub fn skip_below(&mut self, topic: &str, partition: i32, next: i64) {
        self.skip_below.advance(topic, partition, next);
    }

    /// Forgets buffered rows of partitions taken away by a rebalance.
    pub fn revoke(&mut self, gone: &impl Fn(&str, i32) -> bool) {
        self.appended.retain(|t, p| !gone(t, p));
        self.skip_below.retain(|t, p| !gone(t, p));
        self.held.retain(|t, p| !gone(t, p));
        self.in_flight_positions.retain(|t, p| !gone(t, p));
        if let Some(shed) = &mut self.shed {
            shed.retain(|(t, p)| !gone(t, *p));
        }
        self.open.drop_partitions(gone);
        if self.open.positions.is_empty() {
            self.messages = 0;
            self.bytes = 0;
            self.opened_at = None;
        }
    }
}
