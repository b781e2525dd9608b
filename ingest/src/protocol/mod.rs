//! The offset protocol in one place: what counts as durable, what may be committed to
//! Kafka, where a partition starts again and what the last commit is.
//!
//! Everything here is pure bookkeeping (no Kafka, no I/O): the runtime tells it what
//! each sink made durable and what the consumer group gave and took, and does what it
//! answers. The rules (see `docs/exactly-once.md`):
//!
//! - a lane's write counts only for partitions this member still owns, that were not
//!   revoked since the batch started (even if they came back), and that the sink did
//!   not leave to another writer;
//! - the group offset of a partition is the **minimum** over the route's sinks of what
//!   they made durable, and never moves backwards;
//! - a partition starts (on assignment, or again after a dropped batch) at the minimum
//!   of its sinks' own positions, or at the group offset when a sink has none.

mod epochs;
mod lane;
#[cfg(test)]
mod tests;

use ingest_sink_api::{OffsetMap, Partitions};

pub use epochs::Revocations;
pub use lane::{LaneBook, Taken, reread_after_shed};

pub use ingest_sink_api::Partition;

/// One member's offsets: what it owns, what each sink of each route made durable since
/// the partitions were assigned, and what it committed.
#[derive(Debug, Default, Clone)]
pub struct Offsets {
    assigned: Partitions,
    /// Per route, per lane: the sink's positions (the offset after the last record it
    /// made durable, per partition) since the partition was assigned here.
    sink_positions: Vec<Vec<OffsetMap>>,
    /// What was committed per owned partition (never moves backwards).
    committed: OffsetMap,
}

/// How a finished write turned out for the protocol.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The lane's sink positions that now count (owned, not revoked, not left to
    /// another writer).
    pub counted: OffsetMap,
    /// What to commit to Kafka now (the furthest position every sink of the route
    /// reached, for the partitions of the write).
    pub commit: OffsetMap,
}

impl Offsets {
    /// Bookkeeping for routes (by index) with these many sinks each.
    pub fn new(lanes_per_route: impl IntoIterator<Item = usize>) -> Self {
        Self {
            sink_positions: lanes_per_route
                .into_iter()
                .map(|lanes| vec![OffsetMap::default(); lanes])
                .collect(),
            ..Self::default()
        }
    }

    /// The group gave these partitions to this member.
    pub fn assign(&mut self, partitions: &[Partition]) {
        self.assigned.extend(partitions);
    }

    /// The group took these partitions away: their progress is forgotten and they are
    /// never committed by this member again (another member owns them).
    pub fn revoke(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.assigned.remove(&p.topic, p.partition);
            self.committed.remove(&p.topic, p.partition);
        }
        self.forget(partitions);
    }

    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.assigned.contains(topic, partition)
    }

    /// The partitions this member owns.
    pub fn assigned(&self) -> &Partitions {
        &self.assigned
    }

    /// A write of `lane` of `route` succeeded for a batch reaching `positions`.
    /// `revoked` are the batch's partitions revoked since it started, `not_owned` those
    /// the sink left to another writer: neither counts. Returns what now counts as
    /// durable and what to commit.
    pub fn written(
        &mut self,
        route: usize,
        lane: usize,
        positions: &OffsetMap,
        revoked: &[Partition],
        not_owned: &[Partition],
    ) -> Outcome {
        let mut counted = positions.clone();
        let excluded: Partitions = revoked.iter().chain(not_owned).collect();
        counted.retain(|t, p| self.owns(t, p) && !excluded.contains(t, p));
        self.sink_positions[route][lane].merge(&counted);
        let commit = self.commit(&self.committable(route, positions));
        Outcome { counted, commit }
    }

    /// Per partition of `partitions`, the offset every sink of the route made durable
    /// (the minimum over them); partitions some sink has not reached are left out.
    pub fn committable(&self, route: usize, partitions: &OffsetMap) -> OffsetMap {
        let mut out = OffsetMap::default();
        for (topic, partition, _) in partitions.iter() {
            if let Some(next) = min_over(&self.sink_positions[route], topic, partition) {
                out.advance(topic, partition, next);
            }
        }
        out
    }

    /// Records `offsets` as committed and returns, per partition of `offsets`, the
    /// furthest position committed (a group offset never moves backwards).
    fn commit(&mut self, offsets: &OffsetMap) -> OffsetMap {
        self.committed.merge(offsets);
        let mut furthest = OffsetMap::default();
        for (topic, partition, _) in offsets.iter() {
            if let Some(next) = self.committed.get(topic, partition) {
                furthest.advance(topic, partition, next);
            }
        }
        furthest
    }

    /// A sink dropped rows of these partitions (fenced batch, partitions left to
    /// another writer): those this member still owns must be read again from the
    /// sinks' positions. Returns them; their progress in every lane is forgotten (it
    /// counts again once each sink wrote them again). The caller also drops their
    /// buffered rows and starts a new ownership epoch for them.
    pub fn rewind(&mut self, partitions: &[Partition]) -> Vec<Partition> {
        let owned: Vec<Partition> = partitions
            .iter()
            .filter(|p| self.owns(&p.topic, p.partition))
            .cloned()
            .collect();
        self.forget(&owned);
        owned
    }

    /// Everything committed for the partitions owned now: committed once more,
    /// synchronously, at shutdown (async commits may still be in flight).
    pub fn final_commit(&self) -> OffsetMap {
        let mut last = self.committed.clone();
        last.retain(|t, p| self.owns(t, p));
        last
    }

    /// What this member committed so far (the fence commits it again to prove
    /// ownership without moving the group offset).
    pub fn committed(&self) -> &OffsetMap {
        &self.committed
    }

    fn forget(&mut self, partitions: &[Partition]) {
        for lanes in &mut self.sink_positions {
            for lane in lanes {
                for p in partitions {
                    lane.remove(&p.topic, p.partition);
                }
            }
        }
    }
}

/// Where a partition starts reading: the minimum of its sinks' own positions (`known`,
/// one map per sink of its route), or `None` (the group offset) when some sink has
/// no position for it.
pub fn start_offset(known: &[OffsetMap], topic: &str, partition: i32) -> Option<i64> {
    min_over(known, topic, partition)
}

/// The minimum of the maps' positions of a partition; `None` when one lacks it (or
/// there are no maps).
fn min_over(maps: &[OffsetMap], topic: &str, partition: i32) -> Option<i64> {
    maps.iter()
        .map(|m| m.get(topic, partition))
        .collect::<Option<Vec<i64>>>()
        .and_then(|v| v.into_iter().min())
}
