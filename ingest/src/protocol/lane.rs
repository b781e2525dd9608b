//! A lane's book: per partition, what it was handed, what it must skip when a partition
//! is read again for another lane, whether it shed (took no rows while its sink was
//! down), and where its sink stands. Pure bookkeeping, like the rest of `protocol/`:
//! the runtime's lane (`batch/lane.rs`) applies its answers to Arrow rows, the pipeline
//! reads the partitions again where [`reread_after_shed`] says, and the simulation in
//! `tests/protocol_sim` drives this same code.

use ingest_sink_api::{OffsetMap, Partitions};

use super::Partition;

#[derive(Debug, Default, Clone)]
pub struct LaneBook {
    /// Per partition, the offset after the last record handed to this lane.
    appended: OffsetMap,
    /// Per partition being read again for a lane that shed: records below this were
    /// handed to this lane already and are skipped (gone once reading passes them).
    skip_below: OffsetMap,
    /// While its sink is down the lane takes no rows: the partitions whose rows it
    /// dropped or did not take, to read again for it later.
    shed: Option<Partitions>,
    /// Per partition, the sink's position as last known here: read from the sink on
    /// assignment or before a re-read, or reached by a write.
    held: OffsetMap,
    /// The positions the write under way reaches, once it succeeds.
    in_flight: OffsetMap,
}

/// What a lane takes of a chunk of records: the positions it now reaches, and per
/// partition the offset below which rows are dropped (handed to it before).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    pub positions: OffsetMap,
    pub skip: OffsetMap,
}

impl LaneBook {
    /// Takes a chunk of records reaching `positions`: nothing while shed (its
    /// partitions are noted, to read again), else all of it but the records handed
    /// before a re-read; `None` when that leaves nothing.
    pub fn take(&mut self, positions: &OffsetMap) -> Option<Taken> {
        if let Some(shed) = &mut self.shed {
            shed.extend(positions.partitions());
            return None;
        }
        let mut taken = Taken::default();
        for (topic, partition, next) in positions.iter() {
            if let Some(below) = self.skip_below.get(topic, partition) {
                taken.skip.advance(topic, partition, below);
                if next <= below {
                    continue;
                }
                // Reading passed what this lane had: no more skipping.
                self.skip_below.remove(topic, partition);
            }
            taken.positions.advance(topic, partition, next);
        }
        if taken.positions.is_empty() {
            return None;
        }
        self.appended.merge(&taken.positions);
        Some(taken)
    }

    /// Its sink is down: it drops what it was handed (`open`: the partitions of its
    /// open rows) and takes no more until its write succeeds. Its durable positions do
    /// not move, so the group offset stays behind what it dropped: nothing is lost.
    pub fn shed(&mut self, open: impl IntoIterator<Item = Partition>) {
        let mut partitions: Partitions = open.into_iter().collect();
        partitions.extend(self.appended.partitions());
        self.appended = OffsetMap::default();
        self.skip_below = OffsetMap::default();
        self.shed = Some(partitions);
    }

    pub fn is_shed(&self) -> bool {
        self.shed.is_some()
    }

    /// The partitions whose rows it dropped or did not take while shed.
    pub fn shed_partitions(&self) -> impl Iterator<Item = (&str, i32)> {
        self.shed.iter().flat_map(Partitions::iter)
    }

    /// Takes rows again; returns the partitions to read again for it.
    pub fn unshed(&mut self) -> Vec<Partition> {
        self.shed.take().map(|set| set.to_vec()).unwrap_or_default()
    }

    /// The sink holds these positions (read from it, or reached by a write).
    pub fn learn_positions(&mut self, positions: &OffsetMap) {
        self.held.merge(positions);
    }

    /// The sink's position in a partition as last known here.
    pub fn held(&self, topic: &str, partition: i32) -> Option<i64> {
        self.held.get(topic, partition)
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

    /// Where its sink will stand once the write under way succeeds (as last known
    /// otherwise): records below it are not needed from Kafka any more.
    pub fn position_when_written(&self, topic: &str, partition: i32) -> Option<i64> {
        let writing = self.in_flight.get(topic, partition);
        self.held(topic, partition).max(writing)
    }

    /// A write reaching `positions` starts; `None` when it finished.
    pub fn writing(&mut self, positions: Option<&OffsetMap>) {
        self.in_flight = positions.cloned().unwrap_or_default();
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

    /// Forgets partitions taken away by a rebalance (or rewound).
    pub fn revoke(&mut self, gone: &impl Fn(&str, i32) -> bool) {
        self.appended.retain(|t, p| !gone(t, p));
        self.skip_below.retain(|t, p| !gone(t, p));
        self.held.retain(|t, p| !gone(t, p));
        self.in_flight.retain(|t, p| !gone(t, p));
        if let Some(shed) = &mut self.shed {
            shed.retain(|t, p| !gone(t, p));
        }
    }
}

/// A shed lane's sink is back: where each of its partitions (`partitions`, owned) is
/// read again, given `known`, the route's sinks' positions in lane order. The start is
/// where every lane needs the partition: the shed lane's durable position, the others'
/// next record not handed to them yet (or their durable position), and the lanes are
/// told what to skip. `None`: some lane has no position (start where the group stands).
/// Lanes still shed are left out: they read again once their sink is back.
pub fn reread_after_shed(
    lanes: &mut [&mut LaneBook],
    lane: usize,
    known: &[OffsetMap],
    partitions: &[Partition],
) -> Vec<(Partition, Option<i64>)> {
    let mut starts = Vec::new();
    for p in partitions {
        let (topic, partition) = (p.topic.as_str(), p.partition);
        let position = |index: usize| known.get(index)?.get(topic, partition);
        let mut needs = vec![position(lane)];
        if let Some(next) = position(lane) {
            lanes[lane].skip_below(topic, partition, next);
        }
        for (index, book) in lanes.iter_mut().enumerate() {
            if index != lane && !book.is_shed() {
                let handed = book.skip_replay(topic, partition);
                needs.push(handed.or_else(|| position(index)));
            }
        }
        let start = needs
            .into_iter()
            .collect::<Option<Vec<i64>>>()
            .map(|needs| needs.into_iter().min().unwrap_or(0));
        starts.push((p.clone(), start));
    }
    starts
}
