//! The completeness watermark: per route and sink, the time before which every record of
//! every partition this instance reads is durable in that sink.
//!
//! A record's time is its Kafka timestamp, or a payload field the route names
//! (`watermark.time_field`). Per partition, a lane keeps the earliest and latest time of
//! each piece of rows it was handed and its sink does not hold yet ([`LaneTimes`]); a
//! partition's bound is then:
//! - caught up (its sink holds everything up to the log end last fetched): no bound;
//! - else the earliest time among its rows handed and not durable, or, with none handed
//!   (records still unread or in the decoder), the latest time its sink holds;
//! - unknown when none of those is known (a partition just assigned and not read yet).
//!
//! The watermark is the least bound, or, with every partition caught up, the latest
//! time held (the newest event written). It assumes times do not go back within a
//! partition (true of `LogAppendTime`, nearly of `CreateTime`): a record older than one
//! before it in its partition weakens it by that disorder. Pure, so it is unit tested
//! without Kafka; `pipeline/progress.rs` and `pipeline/write.rs` drive it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, TimeUnit};
use ingest_sink_api::{Coordinates, OffsetMap};

#[cfg(test)]
mod tests;

/// Pending pieces kept per partition before the oldest two are merged (a merged piece
/// is kept until its later end is durable: the bound stays conservative).
const MAX_PIECES: usize = 64;

/// Per partition, the earliest and latest time among the rows of a chunk (partitions
/// whose rows carry no time are absent). A chunk holds few partitions and its rows come
/// in runs of one: a short list searched from the last hit, comparing the shared topic
/// name by pointer first, costs a row far less than hashing its topic.
#[derive(Debug, Default, Clone)]
pub struct ChunkTimes {
    spans: Vec<(Arc<str>, i32, i64, i64)>,
    last: usize,
}

impl ChunkTimes {
    pub fn add(&mut self, topic: &Arc<str>, partition: i32, time: i64) {
        let same = |(t, p, ..): &(Arc<str>, i32, i64, i64)| {
            *p == partition && (Arc::ptr_eq(t, topic) || **t == **topic)
        };
        let at = match self.spans.get(self.last) {
            Some(span) if same(span) => self.last,
            _ => match self.spans.iter().position(same) {
                Some(at) => at,
                None => {
                    self.spans.push((Arc::clone(topic), partition, time, time));
                    self.spans.len() - 1
                }
            },
        };
        self.last = at;
        let span = &mut self.spans[at];
        span.2 = span.2.min(time);
        span.3 = span.3.max(time);
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<(i64, i64)> {
        self.spans
            .iter()
            .find(|(t, p, ..)| *p == partition && **t == *topic)
            .map(|&(_, _, lo, hi)| (lo, hi))
    }

    /// The times of a payload column (`Timestamp` of any unit, `Date32`, `Date64`), row
    /// by row with its coordinates; rows with a null time are skipped.
    pub fn add_column(&mut self, batch: &RecordBatch, field: &str, coordinates: &[Coordinates]) {
        let Some(column) = batch.column_by_name(field) else {
            return;
        };
        let target = DataType::Timestamp(TimeUnit::Millisecond, None);
        let Ok(millis) = arrow_cast::cast(column, &target) else {
            return;
        };
        let Some(millis) = millis.as_any().downcast_ref::<TimestampMillisecondArray>() else {
            return;
        };
        for (row, at) in coordinates.iter().enumerate() {
            if row < millis.len() && millis.is_valid(row) {
                self.add(&at.topic, at.partition, millis.value(row));
            }
        }
    }
}

/// What a partition's bound is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Caught up: it holds nothing back.
    None,
    At(i64),
    Unknown,
}

/// One partition's pieces handed to the lane and not durable yet, by the offset after
/// each piece, with their earliest and latest time; and the latest time held.
#[derive(Debug, Default, Clone)]
struct PartitionTimes {
    pending: BTreeMap<i64, (Option<i64>, Option<i64>)>,
    held_latest: Option<i64>,
}

impl PartitionTimes {
    /// Pieces ending at or before `position` are durable: their latest time is held.
    fn durable(&mut self, position: i64) {
        let rest = self.pending.split_off(&(position + 1));
        for (_, (_, hi)) in std::mem::replace(&mut self.pending, rest) {
            self.held_latest = self.held_latest.max(hi);
        }
    }

    /// The bound once everything before `position` is durable (`caught_up`: that is
    /// the log end).
    fn bound(&self, position: Option<i64>, caught_up: bool) -> (Bound, Option<i64>) {
        let mut held = self.held_latest;
        let mut earliest = None::<i64>;
        for (&end, &(lo, hi)) in &self.pending {
            if position.is_some_and(|p| end <= p) {
                held = held.max(hi);
            } else if let Some(lo) = lo {
                earliest = Some(earliest.map_or(lo, |e| e.min(lo)));
            }
        }
        let bound = match (caught_up, earliest, held) {
            (true, _, _) => Bound::None,
            (false, Some(t), _) => Bound::At(t),
            (false, None, Some(t)) => Bound::At(t),
            (false, None, None) => Bound::Unknown,
        };
        (bound, held)
    }
}

/// A lane's times: what it was handed and its sink does not hold, per partition.
#[derive(Debug, Default, Clone)]
pub struct LaneTimes {
    partitions: HashMap<(String, i32), PartitionTimes>,
}

/// A partition the watermark covers: its log bounds (as last fetched) and where the
/// sink stands in it (`None`: it holds nothing of it, so it stands at the log start).
#[derive(Debug, Clone, Copy)]
pub struct Standing<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub log: Option<(i64, i64)>,
    pub held: Option<i64>,
}

impl LaneTimes {
    /// The lane took rows up to `positions` (per partition, the offset after them),
    /// whose times `times` gives.
    pub fn handed(&mut self, positions: &OffsetMap, times: &ChunkTimes) {
        for (topic, partition, end) in positions.iter() {
            let entry = self
                .partitions
                .entry((topic.to_string(), partition))
                .or_default();
            let (lo, hi) = times
                .get(topic, partition)
                .map_or((None, None), |(lo, hi)| (Some(lo), Some(hi)));
            let piece = entry.pending.entry(end).or_insert((lo, hi));
            piece.0 = min_some(piece.0, lo);
            piece.1 = piece.1.max(hi);
            if entry.pending.len() > MAX_PIECES {
                let (_, first) = entry.pending.pop_first().expect("more than one piece");
                let mut second = entry.pending.first_entry().expect("more than one piece");
                let second = second.get_mut();
                second.0 = min_some(second.0, first.0);
                second.1 = second.1.max(first.1);
            }
        }
    }

    /// The sink made `positions` durable.
    pub fn durable(&mut self, positions: &OffsetMap) {
        for (topic, partition, position) in positions.iter() {
            if let Some(p) = self.partitions.get_mut(&(topic.to_string(), partition)) {
                p.durable(position);
            }
        }
    }

    /// Forgets partitions taken away by a rebalance: they drop out of the watermark.
    pub fn revoke(&mut self, gone: &impl Fn(&str, i32) -> bool) {
        self.partitions.retain(|(t, p), _| !gone(t, *p));
    }

    /// The watermark over `partitions` (ms since the epoch), once `after` is durable too
    /// (`None`: as things stand); `None` when some partition's bound is unknown, or
    /// when nothing is known at all.
    pub fn watermark<'a>(
        &self,
        partitions: impl IntoIterator<Item = Standing<'a>>,
        after: Option<&OffsetMap>,
    ) -> Option<i64> {
        let empty = PartitionTimes::default();
        let mut least: Option<i64> = None;
        let mut latest: Option<i64> = None;
        for s in partitions {
            let times = self
                .partitions
                .get(&(s.topic.to_string(), s.partition))
                .unwrap_or(&empty);
            let held = s.held.or(s.log.map(|(start, _)| start));
            let position = match (held, after.and_then(|a| a.get(s.topic, s.partition))) {
                (Some(h), Some(a)) => Some(h.max(a)),
                (h, a) => h.or(a),
            };
            // Past the log end means the cached end is stale: not caught up.
            let caught_up = matches!((position, s.log), (Some(p), Some((_, end))) if p == end);
            let (bound, held) = times.bound(position, caught_up);
            latest = latest.max(held);
            match bound {
                Bound::None => {}
                Bound::At(t) => least = Some(least.map_or(t, |l| l.min(t))),
                Bound::Unknown => return None,
            }
        }
        least.or(latest)
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
