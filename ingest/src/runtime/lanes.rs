//! A lane's write: started in a task of its own, retried with backoff while the sink
//! fails, and finished by telling the protocol what the sink made durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_sink_api::{retry, OffsetMap, Sink, SinkBatch, SinkError, WriteOutcome};
use rdkafka::consumer::Consumer as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::Pipeline;
use crate::consumer::Ownership;
use crate::health::Health;
use crate::protocol::{Partition, start_offset};
use crate::route::{LaneOutcome, RouteState};

impl Pipeline<'_> {
    /// Writes the lane's open batch in a task of its own, so decoding goes on.
    pub(super) fn start_lane(&self, route: &mut RouteState, lane: usize) {
        let state = &mut route.lanes[lane];
        let mut sink = state.sink.take().expect("the lane's sink is home");
        let mut batch = state.take();
        batch.epoch = self.consumer.context().ownership.epoch();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        let consumer = Arc::clone(self.consumer);
        let started = Instant::now();
        state.in_flight = Some(tokio::spawn(async move {
            let rows = batch.num_rows();
            let ownership = &consumer.context().ownership;
            let result =
                write_with_retry(sink.as_mut(), &batch, ownership, &health, shutdown).await;
            LaneOutcome {
                sink,
                result,
                positions: batch.positions,
                epoch: batch.epoch,
                rows,
                started,
            }
        }));
    }

    /// Waits for the lane's write, if any, records what its sink made durable and
    /// commits what every lane of the route has made durable.
    pub(super) async fn finish_lane(
        &mut self,
        route: &mut RouteState,
        lane: usize,
    ) -> anyhow::Result<()> {
        let state = &mut route.lanes[lane];
        let Some(handle) = state.in_flight.take() else {
            return Ok(());
        };
        let outcome = handle.await?;
        state.sink = Some(outcome.sink);
        let written = match outcome.result {
            Ok(written) => written,
            Err(e) if e.is_fenced() => {
                // Another instance owns these partitions now: it writes them. Should
                // this member still be reading some of them (the group kept them here
                // after all), it reads them again from the sinks' positions: a dropped
                // batch must never leave a gap behind the consumer's position.
                tracing::warn!(sink = %state.name, error = %e, "batch dropped: partitions lost");
                let partitions: Vec<Partition> = outcome.positions.partitions().collect();
                self.rewind(route, &partitions).await?;
                return self.unshed(route, lane).await;
            }
            Err(e) => return Err(e.into()),
        };
        // Partitions revoked since the batch started belong to another member, or were
        // given back and are read again from the sinks' positions: their offsets do not
        // count, even if the sink wrote some of their rows.
        let revoked = self
            .consumer
            .context()
            .ownership
            .revoked_since(outcome.epoch, &outcome.positions);
        let counted = self.offsets.written(
            route.index,
            lane,
            &outcome.positions,
            &revoked,
            &written.not_owned,
        );
        let state = &route.lanes[lane];
        self.health
            .record_flush(&route.route.name, &state.name, outcome.rows as u64);
        tracing::info!(
            route = %route.route.name,
            sink = %state.name,
            rows = outcome.rows,
            elapsed_ms = outcome.started.elapsed().as_millis() as u64,
            "flushed"
        );
        if !written.not_owned.is_empty() {
            self.rewind(route, &written.not_owned).await?;
        }
        self.commit(&counted.commit)?;
        self.unshed(route, lane).await
    }

    /// A lane may shed while its sink is failing, unless it is the route's last lane
    /// taking rows (then there is nobody to keep reading for: reading waits for it).
    pub(super) fn may_shed(&self, route: &RouteState, lane: usize) -> bool {
        self.health.sink_failing(&route.lanes[lane].name)
            && route
                .lanes
                .iter()
                .enumerate()
                .any(|(other, state)| other != lane && !state.is_shed())
    }

    /// A shed lane's sink is back (its write finished): the partitions it dropped rows
    /// of are read again from where every lane needs them (its own durable position,
    /// or less), and the other lanes skip what they were handed already. Rows still in
    /// the decoder go to the other lanes first: they lie past where reading restarts.
    async fn unshed(&mut self, route: &mut RouteState, lane: usize) -> anyhow::Result<()> {
        if !route.lanes[lane].is_shed() {
            return Ok(());
        }
        let chunk = route.take_chunk();
        self.dispose_rejected(route, &chunk.rejected).await?;
        route.distribute(&chunk);
        let partitions: Vec<Partition> = route.lanes[lane]
            .unshed()
            .into_iter()
            .filter(|(t, p)| self.offsets.owns(t, *p))
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let known = self.sink_positions(route, &partitions).await?;
        for (topic, partition) in &partitions {
            // Every lane's need: the shed one's durable position, the others' next
            // record not handed to them yet (or their durable position).
            // (Lanes still shed are left out: they read again once their sink is back.)
            let durable = |index: usize| known.get(index)?.get(topic, *partition);
            let mut needs = vec![durable(lane)];
            if let Some(next) = durable(lane) {
                route.lanes[lane].skip_below(topic, *partition, next);
            }
            for (index, state) in route.lanes.iter_mut().enumerate() {
                if index != lane && !state.is_shed() {
                    let handed = state.skip_replay(topic, *partition);
                    needs.push(handed.or_else(|| durable(index)));
                }
            }
            let offset = match needs.into_iter().collect::<Option<Vec<i64>>>() {
                Some(needs) => Offset::Offset(needs.into_iter().min().unwrap_or(0)),
                None => self.group_start(topic, *partition)?,
            };
            self.consumer
                .seek(topic, *partition, offset, Duration::from_secs(10))
                .map_err(|e| rewind_failed(&partitions, &e))?;
            tracing::info!(
                topic,
                partition,
                ?offset,
                sink = %route.lanes[lane].name,
                "sink back: reading the rows it dropped again"
            );
        }
        Ok(())
    }

    /// A sink left these partitions to another writer (its ClickHouse insert gate lost
    /// them), or dropped a batch of them as fenced, while this member still reads them:
    /// the rows read since are dropped from every lane and the partitions are read again
    /// from the minimum of the sinks' positions. Whenever this member writes them again,
    /// it continues exactly where each sink stands (never past rows nobody wrote).
    pub(super) async fn rewind(
        &mut self,
        route: &mut RouteState,
        partitions: &[Partition],
    ) -> anyhow::Result<()> {
        let owned = self.offsets.rewind(partitions);
        if owned.is_empty() {
            return Ok(());
        }
        // Writes already started on them no longer count for them.
        self.consumer.context().ownership.revoke(&owned);
        route.revoke(&owned);
        let known = self.sink_positions(route, &owned).await?;
        for (topic, partition) in &owned {
            let offset = match start_offset(&known, topic, *partition) {
                Some(start) => Offset::Offset(start),
                None => self.group_start(topic, *partition)?,
            };
            self.consumer
                .seek(topic, *partition, offset, Duration::from_secs(10))
                .map_err(|e| rewind_failed(&owned, &e))?;
            tracing::info!(
                topic,
                partition,
                ?offset,
                "a sink did not write this partition's latest rows: reading it again from the sinks' positions"
            );
        }
        Ok(())
    }

    /// Each sink's own positions for `partitions`, in the route's lane order.
    async fn sink_positions(
        &self,
        route: &RouteState,
        partitions: &[Partition],
    ) -> anyhow::Result<Vec<OffsetMap>> {
        let mut wanted = OffsetMap::default();
        for (topic, partition) in partitions {
            wanted.advance(topic, *partition, 0);
        }
        let readers = self
            .positions
            .get(&route.route.name)
            .cloned()
            .unwrap_or_default();
        futures::future::join_all(readers.iter().map(|r| r.read(&wanted)))
            .await
            .into_iter()
            .collect::<Result<Vec<OffsetMap>, _>>()
            .map_err(|e| rewind_failed(partitions, &e))
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
            .map_err(|e| rewind_failed(&[(topic.to_string(), partition)], &e))?;
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

/// A rewind that cannot set where the partitions are read from would leave the rows it
/// dropped behind the consumer: stop instead, and the restart starts them from the
/// sinks' positions.
fn rewind_failed(partitions: &[(String, i32)], error: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot re-read partitions {partitions:?} from the sinks' positions: {error}; \
         stopping so that a restart reads them from there"
    )
}

/// Retries retryable failures with exponential backoff (capped at 30 s); the service
/// reports itself not ready meanwhile. Other failures stop the service. A revocation of
/// the batch's partitions waits for an attempt under way, never for the backoff between
/// attempts: a rebalance during a sink outage must not stall the group (the next attempt
/// passes the fence again, which refuses partitions revoked since the batch started).
pub(super) async fn write_with_retry(
    sink: &mut dyn Sink,
    batch: &SinkBatch,
    ownership: &Ownership,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<WriteOutcome, SinkError> {
    let mut delays = retry::backoff(Duration::from_millis(200), Duration::from_secs(30));
    let mut failures = 0u32;
    loop {
        let attempt = {
            let _writing = ownership.writing(&batch.positions);
            sink.write(batch).await
        };
        match attempt {
            Ok(written) => {
                if failures > 0 {
                    tracing::info!(sink = sink.name(), failures, "sink recovered");
                    health.set_sink_failing(sink.name(), false);
                }
                return Ok(written);
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                health.set_sink_failing(sink.name(), true);
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "sink write failed");
                // A shutdown during retries gives up without committing: the next start
                // replays the batch.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {
                        return Err(SinkError::permanent(sink.name().to_string(), format!("shutting down while retrying ({e}); the batch is not committed and will be replayed")));
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
