//! Step 4, sink write: a lane's batch goes to its sink. Each write runs in a task of its own (so
//! decoding goes on), is retried with backoff while the sink fails, and is finished by
//! telling the protocol what the sink made durable, then committing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_sink_api::{Sink, SinkBatch, SinkError, Watermark, WriteOutcome, retry};
use rdkafka::consumer::Consumer as _;
use tokio::sync::watch;

use super::Pipeline;
use crate::batch::{LaneOutcome, RouteBatch};
use crate::consumer::Ownership;
use crate::health::{Flushed, Health};
use crate::protocol::Partition;

/// How long reading waits for a busy lane that holds twice its limits before it sheds
/// (when another lane of the route takes rows): the longest a slow or hanging sink can
/// hold back the healthy ones.
const LANE_WAIT: Duration = Duration::from_secs(5);
const WAIT_STEP: Duration = Duration::from_millis(20);

/// A write attempt without an answer for this long marks its sink failing (`/ready` 503,
/// its lane may shed); one without an answer for [`ATTEMPT_DEADLINE`] is abandoned and
/// retried (the sink finds out on the next attempt what the abandoned one did: see
/// `Sink::write`).
const NO_ANSWER: Duration = Duration::from_secs(30);
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(600);

impl Pipeline<'_> {
    pub(super) async fn flush_due(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        let now = Instant::now();
        for route in routes.iter_mut() {
            for lane in 0..route.lanes.len() {
                if route.lanes[lane]
                    .in_flight
                    .as_ref()
                    .is_some_and(|h| h.is_finished())
                {
                    self.finish_lane(route, lane).await?;
                }
            }
            if route.due(now) {
                self.flush(route, false).await?;
            }
        }
        Ok(())
    }

    /// Hands the decoded rows to every lane (after the dead-letter topic took the bad
    /// records), then starts a write for each lane that is due (every lane with rows
    /// when `all`). A lane still writing its previous batch keeps collecting, unless it
    /// holds twice its limits: then reading waits for it, at most [`LANE_WAIT`] and only
    /// while its sink is not failing, when another lane of the route still takes rows;
    /// past that the lane sheds (drops its rows and takes none until its write
    /// succeeds, then its partitions are read again). The last lane taking rows is
    /// waited for: there is nobody else to read for.
    pub(super) async fn flush(&mut self, route: &mut RouteBatch, all: bool) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<bool> = (0..route.lanes.len())
            .map(|lane| all || route.lane_due(lane, now))
            .collect();
        self.hand_over(route).await?;
        for (lane, due) in due.into_iter().enumerate() {
            if !due {
                continue;
            }
            let state = &route.lanes[lane];
            if state.busy() && !all {
                if !state.over_limit(2, 0, 0) {
                    continue;
                }
                if !self.wait_or_shed(route, lane).await {
                    continue;
                }
            }
            self.finish_lane(route, lane).await?;
            if route.lanes[lane].has_open() {
                self.start_lane(route, lane);
            }
        }
        Ok(())
    }

    /// A busy lane holding twice its limits: waits for its write to finish (true), or
    /// sheds it (false) once its sink is failing or the write took [`LANE_WAIT`] longer,
    /// while another lane of the route takes rows. Never waits on a write that may hang or
    /// retry for as long as its sink is down: the healthy lanes would stop with it.
    async fn wait_or_shed(&self, route: &mut RouteBatch, lane: usize) -> bool {
        let deadline = Instant::now() + LANE_WAIT;
        loop {
            let state = &route.lanes[lane];
            if !state.busy() {
                return true;
            }
            if !self.may_shed(route, lane) {
                // The route's last lane taking rows: reading waits for it.
                return true;
            }
            let failing = self.health.sink_failing(&state.name);
            if failing || Instant::now() >= deadline {
                route.lanes[lane].shed();
                self.health
                    .record_shed(&route.route.name, &route.lanes[lane].name);
                tracing::warn!(
                    route = %route.route.name,
                    sink = %route.lanes[lane].name,
                    failing,
                    "sink failing or not answering and its lane full: dropping its unwritten \
                     rows, to be read again from its own positions once it is back"
                );
                return false;
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Writes the lane's open batch in a task of its own, so decoding goes on.
    pub(super) fn start_lane(&self, route: &mut RouteBatch, lane: usize) {
        let logs = self.route_logs(route);
        let state = &mut route.lanes[lane];
        let mut sink = state.sink.take().expect("the lane's sink is home");
        let reason = state.due_reason(Instant::now());
        let bytes = state.open_bytes();
        let mut batch = state.take();
        batch.epoch = self.consumer.context().ownership.epoch();
        batch.watermark =
            super::progress::watermark(&logs, state, Some(&batch.positions)).map(|time_ms| {
                Watermark {
                    time_ms,
                    partitions: logs
                        .iter()
                        .map(|(topic, partition, _)| Partition::new(topic, *partition))
                        .collect(),
                }
            });
        state.book.writing(Some(&batch.positions));
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
                bytes,
                reason,
                started,
            }
        }));
    }

    /// Waits for the lane's write, if any, records what its sink made durable and
    /// commits what every lane of the route has made durable.
    pub(super) async fn finish_lane(
        &mut self,
        route: &mut RouteBatch,
        lane: usize,
    ) -> anyhow::Result<()> {
        let state = &mut route.lanes[lane];
        let Some(handle) = state.in_flight.take() else {
            return Ok(());
        };
        let outcome = handle.await?;
        state.sink = Some(outcome.sink);
        state.book.writing(None);
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
                route.lanes[lane].settle();
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
        let state = &mut route.lanes[lane];
        state.book.learn_positions(&counted.counted);
        state.times.durable(&counted.counted);
        state.settle();
        self.health.record_flush(&Flushed {
            route: &route.route.name,
            sink: &state.name,
            rows: outcome.rows as u64,
            bytes: outcome.bytes,
            reason: outcome.reason,
            took: outcome.started.elapsed(),
            files: written.files,
            commits: written.commits,
        });
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
            attempt_with_deadline(sink, batch, health).await
        };
        match attempt {
            Ok(written) => {
                if failures > 0 || health.sink_failing(sink.name()) {
                    tracing::info!(sink = sink.name(), failures, "sink recovered");
                    health.set_sink_failing(sink.name(), false);
                }
                return Ok(written);
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                health.record_retry(sink.name(), &e.to_string());
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

/// One write attempt, bounded: after [`NO_ANSWER`] its sink is marked failing (the
/// attempt goes on), after [`ATTEMPT_DEADLINE`] it is abandoned as a retryable failure.
async fn attempt_with_deadline(
    sink: &mut dyn Sink,
    batch: &SinkBatch,
    health: &Health,
) -> Result<WriteOutcome, SinkError> {
    let name = sink.name().to_string();
    let write = tokio::time::timeout(ATTEMPT_DEADLINE, sink.write(batch));
    tokio::pin!(write);
    let silence = tokio::time::sleep(NO_ANSWER);
    tokio::pin!(silence);
    let mut marked = false;
    loop {
        tokio::select! {
            done = &mut write => {
                return done.unwrap_or_else(|_| {
                    Err(SinkError::retryable(
                        &name,
                        format!("no answer within {ATTEMPT_DEADLINE:?}: the attempt is abandoned"),
                    ))
                });
            }
            _ = &mut silence, if !marked => {
                marked = true;
                health.set_sink_failing(&name, true);
                health.record_unanswered(&name, NO_ANSWER);
                tracing::warn!(sink = %name, waited_s = NO_ANSWER.as_secs(),
                    "sink write not answered yet: marking the sink failing");
            }
        }
    }
}

#[cfg(test)]
mod tests;
