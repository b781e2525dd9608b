//! One group member's in-memory state, as the runtime keeps it (all of it is lost in a
//! crash): its view of the assignment, ownership epochs, the protocol's offsets, the
//! consumer's positions, and one lane per sink with an open batch and a write under way.

use std::collections::{BTreeMap, BTreeSet};

use ingest::protocol::{LaneBook, Offsets, Partition, Revocations};
use ingest_sink_api::OffsetMap;

use super::gate::Writer;
use super::{Row, TOPIC};

/// Lane 0 writes ClickHouse, lane 1 Iceberg.
pub const LANES: usize = 2;

#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub next: OffsetMap,
}

impl Batch {
    pub fn partitions(&self) -> Vec<i32> {
        self.next.iter().map(|(_, p, _)| p).collect()
    }

    pub fn without(&self, gone: &[i32]) -> Batch {
        let mut out = self.clone();
        out.drop_partitions(gone);
        out
    }

    pub fn drop_partitions(&mut self, gone: &[i32]) {
        self.rows.retain(|(p, _)| !gone.contains(p));
        self.next.retain(|_, p| !gone.contains(&p));
    }
}

/// Where a write stands. `Ready`: the next attempt starts from scratch (first attempt,
/// or after a retryable error and its backoff). The other stages are the middle of one
/// attempt (a revocation waits for them to end).
#[derive(Debug, Clone)]
pub enum Stage {
    Ready,
    /// ClickHouse: the fence passed; admission and positions come next.
    ChAdmit {
        todo: Batch,
        not_owned: Vec<i32>,
    },
    /// ClickHouse: admitted, positions read: the insert comes next.
    ChInsert {
        fresh: Vec<Row>,
        todo: Batch,
        token: u64,
        not_owned: Vec<i32>,
    },
    /// Iceberg: the table loaded and the rows it holds dropped: the commit comes next.
    IceCommit {
        version: u64,
        todo: Vec<Row>,
    },
    Done(Result<Vec<i32>, Fenced>),
}

/// The write was refused: this member lost the partitions.
#[derive(Debug, Clone)]
pub struct Fenced;

#[derive(Debug, Clone)]
pub struct Flight {
    pub batch: Batch,
    pub epoch: u64,
    pub stage: Stage,
}

#[derive(Debug, Default, Clone)]
pub struct Lane {
    pub open: Batch,
    pub flight: Option<Flight>,
    /// The runtime's own book of what the lane was handed, skips and shed
    /// (`ingest::protocol::LaneBook`, as `batch/lane.rs` keeps it).
    pub book: LaneBook,
}

impl Lane {
    /// `Lane::append`: what the book takes of the chunk (nothing while shed, rows
    /// handed before a re-read skipped, unless `no_skip` breaks that rule).
    pub fn append(&mut self, chunk: &Batch, no_skip: bool) {
        let Some(taken) = self.book.take(&chunk.next) else {
            return;
        };
        let fresh = chunk
            .rows
            .iter()
            .filter(|(p, o)| no_skip || taken.skip.get(TOPIC, *p).is_none_or(|below| *o >= below));
        self.open.rows.extend(fresh);
        self.open.next.merge(&if no_skip {
            chunk.next.clone()
        } else {
            taken.positions
        });
    }

    /// `Lane::shed`.
    pub fn shed(&mut self) {
        self.book.shed(tp(&self.open.partitions()));
        self.open = Batch::default();
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    /// A member of the group (false once the group expelled it or it crashed).
    pub in_group: bool,
    /// Stopped (SIGSTOP, GC pause): does nothing, gets no callbacks.
    pub paused: bool,
    /// The assignment as librdkafka reports it to this member.
    pub view: BTreeSet<i32>,
    /// Rebalance callbacks seen (the fence's generation).
    pub generation: u64,
    pub revocations: Revocations,
    pub offsets: Offsets,
    /// The consumer's next offset to fetch, per partition in the view.
    pub position: BTreeMap<i32, i64>,
    pub lanes: [Lane; LANES],
    pub gate: Writer,
}

impl Member {
    pub fn new() -> Self {
        Self {
            in_group: true,
            paused: false,
            view: BTreeSet::new(),
            generation: 0,
            revocations: Revocations::default(),
            offsets: Offsets::new([LANES]),
            position: BTreeMap::new(),
            lanes: Default::default(),
            gate: Writer::default(),
        }
    }

    /// Can act: not paused (a member the group expelled acts until it hears of it).
    pub fn running(&self) -> bool {
        !self.paused
    }

    /// Drops the buffered rows of `partitions` from every lane (`RouteBatch::revoke`).
    pub fn drop_buffered(&mut self, partitions: &[i32]) {
        let gone = |_: &str, p: i32| partitions.contains(&p);
        for lane in &mut self.lanes {
            lane.open.drop_partitions(partitions);
            lane.book.revoke(&gone);
        }
    }

    pub fn mid_attempt(&self, lane: usize, partitions: &[i32]) -> bool {
        self.lanes[lane].flight.as_ref().is_some_and(|f| {
            !matches!(f.stage, Stage::Ready | Stage::Done(_))
                && f.batch.partitions().iter().any(|p| partitions.contains(p))
        })
    }
}

pub fn tp(partitions: &[i32]) -> Vec<Partition> {
    partitions
        .iter()
        .map(|p| Partition::new(TOPIC, *p))
        .collect()
}

pub fn parts(tps: &[Partition]) -> Vec<i32> {
    tps.iter().map(|p| p.partition).collect()
}
