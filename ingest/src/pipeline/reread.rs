//! Reading partitions again from the sinks' own positions: after a batch was dropped
//! (its partitions lost, or left to another writer) and when a shed lane's sink is
//! back. A gap behind the consumer's position must never be left.

use std::time::Duration;

use ingest_sink_api::OffsetMap;
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::protocol::{LaneBook, Partition, reread_after_shed, start_offset};

impl Pipeline<'_> {
    /// A lane may shed unless it is the route's last lane taking rows (then there is
    /// nobody to keep reading for: reading waits for it).
    pub(super) fn may_shed(&self, route: &RouteBatch, lane: usize) -> bool {
        route
            .lanes
            .iter()
            .enumerate()
            .any(|(other, state)| other != lane && !state.book.is_shed())
    }

    /// A shed lane's sink is back (its write finished): the partitions it dropped rows
    /// of are read again from where every lane needs them (its own durable position,
    /// or less), and the other lanes skip what they were handed already
    /// ([`reread_after_shed`]). Rows still in the decoder go to the other lanes first:
    /// they lie past where reading restarts.
    pub(super) async fn unshed(
        &mut self,
        route: &mut RouteBatch,
        lane: usize,
    ) -> anyhow::Result<()> {
        if !route.lanes[lane].book.is_shed() {
            return Ok(());
        }
        self.hand_over(route).await?;
        let partitions: Vec<Partition> = route.lanes[lane]
            .book
            .unshed()
            .into_iter()
            .filter(|p| self.offsets.owns(&p.topic, p.partition))
            .collect();
        route.lanes[lane].settle();
        if partitions.is_empty() {
            return Ok(());
        }
        self.health
            .record_reread(&route.route.name, partitions.len() as u64);
        let known = self.sink_positions(route, &partitions).await?;
        learn(route, &known);
        for Partition { topic, partition } in &partitions {
            if let Some(next) = known.get(lane).and_then(|k| k.get(topic, *partition)) {
                self.check_before_seek(route, topic, *partition, &[(lane, next)])?;
            }
        }
        let mut books: Vec<&mut LaneBook> = route.lanes.iter_mut().map(|l| &mut l.book).collect();
        let starts = reread_after_shed(&mut books, lane, &known, &partitions);
        for (Partition { topic, partition }, start) in starts {
            let offset = self.seek(&topic, partition, start, &partitions)?;
            tracing::info!(
                topic,
                partition,
                ?offset,
                sink = %route.lanes[lane].name,
                "sink back: reading the rows it dropped again"
            );
        }
        self.stop_if_lost()
    }

    /// A sink left these partitions to another writer (its ClickHouse insert gate lost
    /// them), or dropped a batch of them as fenced, while this member still reads them:
    /// the rows read since are dropped from every lane and the partitions are read again
    /// from the minimum of the sinks' positions. Whenever this member writes them again,
    /// it continues exactly where each sink stands (never past rows nobody wrote).
    pub(super) async fn rewind(
        &mut self,
        route: &mut RouteBatch,
        partitions: &[Partition],
    ) -> anyhow::Result<()> {
        let owned = self.offsets.rewind(partitions);
        if owned.is_empty() {
            return Ok(());
        }
        self.health
            .record_reread(&route.route.name, owned.len() as u64);
        // Writes already started on them no longer count for them.
        self.consumer.context().ownership.revoke(&owned);
        route.revoke(&owned);
        let known = self.sink_positions(route, &owned).await?;
        learn(route, &known);
        for Partition { topic, partition } in &owned {
            let needs: Vec<(usize, i64)> = (known.iter().enumerate())
                .filter_map(|(lane, k)| Some((lane, k.get(topic, *partition)?)))
                .collect();
            self.check_before_seek(route, topic, *partition, &needs)?;
            let start = start_offset(&known, topic, *partition);
            let offset = self.seek(topic, *partition, start, &owned)?;
            tracing::info!(
                topic,
                partition,
                ?offset,
                "a sink did not write this partition's latest rows: reading it again from the sinks' positions"
            );
        }
        self.stop_if_lost()
    }

    /// Each sink's own positions for `partitions`, in the route's lane order.
    async fn sink_positions(
        &self,
        route: &RouteBatch,
        partitions: &[Partition],
    ) -> anyhow::Result<Vec<OffsetMap>> {
        let mut wanted = OffsetMap::default();
        for Partition { topic, partition } in partitions {
            wanted.advance(topic, *partition, 0);
        }
        self.positions
            .read(route.index, &wanted)
            .await
            .map_err(|e| rewind_failed(partitions, &e))
    }

    /// Moves the consumer of a partition back to `start`, or to where the group stands
    /// when no sink knows the partition; `partitions` are named if that fails.
    pub(super) fn seek(
        &mut self,
        topic: &str,
        partition: i32,
        start: Option<i64>,
        partitions: &[Partition],
    ) -> anyhow::Result<Offset> {
        let offset = match start {
            Some(start) => Offset::Offset(start),
            None => self.group_start(topic, partition)?,
        };
        let next = match offset {
            Offset::Offset(next) => Some(next),
            _ => None,
        };
        // Never below the log start: librdkafka would reset the position as
        // `auto.offset.reset` says, which may be the log end. Reading from the log start
        // instead, the continuity check reports the gap (see `log_check.rs`).
        let target = match next {
            Some(next) => Offset::Offset(next.max(self.bounds(topic, partition)?.start)),
            None => offset,
        };
        self.consumer
            .seek(topic, partition, target, Duration::from_secs(10))
            .map_err(|e| rewind_failed(partitions, &e))?;
        self.continuity.start(topic, partition, next);
        self.sought_while_paused(topic, partition, next);
        Ok(target)
    }

    /// Where a partition some sink has no position for starts again: where a new
    /// assignment would start it, at the group's committed offset, or where there is
    /// none, at the beginning (`auto.offset.reset=earliest`, our default).
    fn group_start(&self, topic: &str, partition: i32) -> anyhow::Result<Offset> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| rewind_failed(&[Partition::new(topic, partition)], &e))?;
        match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => Ok(Offset::Offset(offset)),
            _ if self.resets_to_earliest() => Ok(Offset::Beginning),
            _ => Err(anyhow::anyhow!(
                "cannot re-read {topic}/{partition}: no sink position, no group offset, and \
                 auto.offset.reset is not earliest; stopping so a restart starts it afresh"
            )),
        }
    }

    fn resets_to_earliest(&self) -> bool {
        self.loaded
            .config
            .kafka
            .properties
            .get("auto.offset.reset")
            .is_none_or(|v| matches!(v.as_str(), "earliest" | "smallest" | "beginning"))
    }
}

/// Each lane learns its sink's positions, just read (`known` is in lane order).
fn learn(route: &mut RouteBatch, known: &[OffsetMap]) {
    for (lane, positions) in route.lanes.iter_mut().zip(known) {
        lane.book.learn_positions(positions);
        lane.times.durable(positions);
    }
}

/// A rewind that cannot set where the partitions are read from would leave the rows it
/// dropped behind the consumer: stop instead, and the restart starts them from the
/// sinks' positions.
fn rewind_failed(partitions: &[Partition], error: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot re-read partitions {partitions:?} from the sinks' positions: {error}; \
         stopping so that a restart reads them from there"
    )
}
