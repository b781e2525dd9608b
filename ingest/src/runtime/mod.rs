//! The core loop: consume, decode into the route, hand rows to each sink's lane, write
//! each lane on its own cadence, and commit to Kafka what every lane made durable.

mod connections;
mod lanes;
mod setup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ingest_sink_api::{retry, Fence, OffsetMap, PositionReader, SinkError};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{Loaded, OnError};
use crate::consumer::{self, Consumer, GroupFence, RebalanceEvent, Resume};
use crate::dead_letter::DeadLetters;
use crate::decode::{Message, Rejected};
use crate::health::Health;
use crate::protocol::Offsets;
use crate::route::RouteState;

pub use connections::check_connections;
pub use setup::open_routes;

/// How often quiet routes are checked against their `max_age`.
const TICK: Duration = Duration::from_millis(50);

/// Runs until `shutdown` turns true, then flushes, commits and leaves the group.
pub async fn run(
    loaded: Loaded,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer = Arc::new(consumer::create(&loaded.config.kafka)?);
    let committed = Arc::new(Mutex::new(OffsetMap::default()));
    let fence: Arc<dyn Fence> = Arc::new(GroupFence::new(
        Arc::clone(&consumer),
        Arc::clone(&committed),
    ));
    let Some(routes) = open_with_retry(&loaded, fence, shutdown.clone()).await? else {
        return Ok(());
    };
    consume(loaded, health, shutdown, consumer, committed, routes).await
}

/// The loop over opened routes: `committed` is shared with the consumer's fence.
async fn consume(
    loaded: Loaded,
    health: Health,
    shutdown: watch::Receiver<bool>,
    consumer: Arc<Consumer>,
    committed: Arc<Mutex<OffsetMap>>,
    mut routes: Vec<RouteState>,
) -> anyhow::Result<()> {
    let readers: Vec<Vec<Arc<dyn PositionReader>>> = routes
        .iter()
        .map(|r| {
            r.lanes
                .iter()
                .filter_map(|lane| lane.sink.as_ref().map(|s| s.position_reader()))
                .collect()
        })
        .collect();
    let positions = routes
        .iter()
        .zip(&readers)
        .map(|(r, readers)| (r.route.name.clone(), readers.clone()))
        .collect();
    let route_of = {
        let loaded = loaded.clone();
        Box::new(move |topic: &str| loaded.route_for(topic))
    };
    consumer.context().set_resume(Resume::new(
        readers,
        route_of,
        tokio::runtime::Handle::current(),
    ));
    let dead_letters = if routes.iter().any(|r| r.route.dead_letter_topic.is_some()) {
        Some(DeadLetters::new(&loaded.config.kafka)?)
    } else {
        None
    };
    let subscriptions = loaded.subscriptions();
    let topics: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?subscriptions, group = %loaded.config.kafka.group_id, "consuming");
    health.set_ready(true);

    let mut pipeline = Pipeline {
        positions,
        loaded: &loaded,
        consumer: &consumer,
        dead_letters: dead_letters.as_ref(),
        route_of: HashMap::new(),
        last_route: None,
        health: &health,
        offsets: Offsets::new(routes.iter().map(|r| r.lanes.len())),
        committed,
        shutdown: shutdown.clone(),
    };
    let mut last_tick = Instant::now();
    let mut since_tick = 0u32;
    let result: anyhow::Result<()> = async {
        loop {
            if shutdown.has_changed().unwrap_or(true) {
                break;
            }
            // Messages already fetched are taken without arming a timer; only an empty
            // queue waits, and then at most one tick.
            let received = match consumer.recv().now_or_never() {
                Some(received) => Some(received),
                None => tokio::time::timeout(TICK, consumer.recv()).await.ok(),
            };
            let quiet = received.is_none();
            match received {
                None => {}
                Some(Err(e)) if consumer::is_authentication_failure(&e) => {
                    anyhow::bail!(
                        "kafka brokers `{}` refused the login: {e} (check sasl.username, sasl.password and sasl.mechanism)",
                        loaded.config.kafka.brokers
                    );
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka error"),
                Some(Ok(message)) => {
                    pipeline.handle_rebalances(&mut routes)?;
                    let topic = message.topic();
                    if let Some(index) = pipeline.route_index(topic) {
                        let view = Message {
                            topic,
                            partition: message.partition(),
                            offset: message.offset(),
                            timestamp: message.timestamp().to_millis(),
                            key: message.key(),
                            payload: message.payload(),
                        };
                        routes[index].push(&view);
                        drop(message);
                        health.record_consumed();
                        if routes[index].full() {
                            pipeline.flush(&mut routes[index], false).await?;
                        }
                    } else {
                        tracing::warn!(topic, "message from a topic no route matches");
                    }
                }
            }
            // Age limits and finished writes are looked at every tick (the clock is read
            // every 32 messages, not per message: a steady trickle must not delay them).
            since_tick += 1;
            if quiet || since_tick >= 32 {
                since_tick = 0;
                let now = Instant::now();
                if quiet || now.duration_since(last_tick) >= TICK {
                    last_tick = now;
                    pipeline.handle_rebalances(&mut routes)?;
                    pipeline.flush_due(&mut routes).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    health.set_ready(false);
    // On failure nothing past it was committed: the next start replays it.
    result?;
    tracing::info!("shutting down: flushing open batches");
    // Partitions revoked by the last poll must not be flushed or committed.
    pipeline.handle_rebalances(&mut routes)?;
    for route in routes.iter_mut() {
        pipeline.flush(route, true).await?;
        for lane in 0..route.lanes.len() {
            pipeline.finish_lane(route, lane).await?;
        }
    }
    // Async commits may still be in flight: commit everything once more and wait.
    let last = pipeline.offsets.final_commit();
    if !last.is_empty() {
        let tpl = offset_list(&last)?;
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed");
        }
    }
    if let Some(d) = &dead_letters {
        d.flush();
    }
    consumer.unsubscribe();
    tracing::info!("stopped");
    Ok(())
}

/// Opens the sinks, waiting out sinks that are unreachable for now (a ClickHouse or
/// catalog restarting) with backoff; `None` when asked to stop meanwhile.
async fn open_with_retry(
    loaded: &Loaded,
    fence: Arc<dyn Fence>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Vec<RouteState>>> {
    let mut delays = retry::backoff(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match open_routes(loaded, Arc::clone(&fence)).await {
            Ok(routes) => return Ok(Some(routes)),
            Err(e)
                if e.downcast_ref::<SinkError>()
                    .is_some_and(|e| e.is_retryable()) =>
            {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "a sink is unreachable at start-up");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

struct Pipeline<'a> {
    loaded: &'a Loaded,
    consumer: &'a Arc<Consumer>,
    dead_letters: Option<&'a DeadLetters>,
    route_of: HashMap<String, Option<usize>>,
    last_route: Option<(String, Option<usize>)>,
    health: &'a Health,
    /// What each sink made durable, what is owned and committed: the protocol.
    offsets: Offsets,
    /// A copy of what `offsets` committed, for the fence (it commits it again to prove
    /// ownership without moving the group offset).
    committed: Arc<Mutex<OffsetMap>>,
    /// Turns true on SIGTERM/SIGINT; write retries give up on it.
    shutdown: watch::Receiver<bool>,
    /// Per route name, its sinks' position readers.
    positions: HashMap<String, Vec<Arc<dyn PositionReader>>>,
}

impl Pipeline<'_> {
    fn route_index(&mut self, topic: &str) -> Option<usize> {
        // Consecutive messages mostly come from one topic: skip the map then.
        if let Some((last, found)) = &self.last_route
            && last == topic
        {
            return *found;
        }
        let found = self.lookup_route(topic);
        self.last_route = Some((topic.to_string(), found));
        found
    }

    fn lookup_route(&mut self, topic: &str) -> Option<usize> {
        if let Some(found) = self.route_of.get(topic) {
            return *found;
        }
        let found = self.loaded.route_for(topic);
        self.route_of.insert(topic.to_string(), found);
        found
    }

    /// Rows of revoked partitions are dropped: their new owner reads them again from
    /// the committed offset, which never passes what every sink has written.
    fn handle_rebalances(&mut self, routes: &mut [RouteState]) -> anyhow::Result<()> {
        for event in self.consumer.context().take_events() {
            match event {
                RebalanceEvent::Refused(refused) => return Err(consumer::refusal(&refused)),
                RebalanceEvent::LogReset(topic, partition) => {
                    let context = self.consumer.context();
                    let refused =
                        context.check_log_end(self.consumer.as_ref(), &topic, partition)?;
                    if !refused.is_empty() {
                        return Err(consumer::refusal(&refused));
                    }
                }
                RebalanceEvent::Revoked(partitions) => {
                    for route in routes.iter_mut() {
                        route.revoke(&partitions);
                    }
                    // Never commit for a partition another member now owns.
                    self.offsets.revoke(&partitions);
                    *self.committed.lock().expect("offsets poisoned") =
                        self.offsets.committed().clone();
                    self.health.add_partitions(-(partitions.len() as i64));
                }
                RebalanceEvent::Assigned(partitions) => {
                    self.health.add_partitions(partitions.len() as i64);
                    self.offsets.assign(&partitions);
                }
            }
        }
        Ok(())
    }

    async fn flush_due(&mut self, routes: &mut [RouteState]) -> anyhow::Result<()> {
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
    /// holds twice its limits: then reading waits for it, or, when its sink is failing
    /// and another lane of the route still takes rows, the lane sheds (drops its rows
    /// and takes none until its write succeeds, then its partitions are read again).
    async fn flush(&mut self, route: &mut RouteState, all: bool) -> anyhow::Result<()> {
        let now = Instant::now();
        let due: Vec<bool> = (0..route.lanes.len())
            .map(|lane| all || route.lane_due(lane, now))
            .collect();
        let chunk = route.take_chunk();
        self.dispose_rejected(route, &chunk.rejected).await?;
        route.distribute(&chunk);
        for (lane, due) in due.into_iter().enumerate() {
            if !due {
                continue;
            }
            let state = &route.lanes[lane];
            if state.busy() && !all {
                if !state.holds_times(2, 0, 0) {
                    continue;
                }
                if self.may_shed(route, lane) {
                    route.lanes[lane].shed();
                    tracing::warn!(
                        route = %route.route.name,
                        sink = %route.lanes[lane].name,
                        "sink down and its lane full: dropping its unwritten rows, to be read \
                         again from its own positions once it is back"
                    );
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

    async fn dispose_rejected(
        &self,
        route: &RouteState,
        rejected: &[Rejected],
    ) -> anyhow::Result<()> {
        let Some(first) = rejected.first() else {
            return Ok(());
        };
        match (
            route.route.on_error,
            &route.route.dead_letter_topic,
            self.dead_letters,
        ) {
            (OnError::DeadLetter, Some(topic), Some(dl)) => {
                for r in rejected {
                    tracing::warn!(route = %route.route.name, topic = %r.topic, partition = r.partition,
                        offset = r.offset, error = %r.error, dead_letter = %topic, "bad record");
                }
                dl.send(topic, &route.route.name, rejected).await?;
                self.health
                    .record_rejected(&route.route.name, rejected.len() as u64);
                Ok(())
            }
            _ => anyhow::bail!(
                "route `{}`: record {}/{}@{} cannot be decoded ({}); set `dead_letter.topic` to divert bad records",
                route.route.name,
                first.topic,
                first.partition,
                first.offset,
                first.error
            ),
        }
    }

    /// Commits what the protocol answered (the furthest position every sink of the
    /// route reached, per partition of a finished write).
    fn commit(&mut self, offsets: &OffsetMap) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        *self.committed.lock().expect("offsets poisoned") = self.offsets.committed().clone();
        tracing::debug!(?offsets, "committing offsets");
        let tpl = offset_list(offsets)?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // A commit can fail while a rebalance is under way; the data is durable in
            // the sinks and the next commit (or the new owner) moves the offset on.
            tracing::warn!(error = %e, "offset commit failed");
        }
        Ok(())
    }
}

fn offset_list(offsets: &OffsetMap) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets.iter() {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod shed_tests;
#[cfg(test)]
mod tests;
