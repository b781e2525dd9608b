//! The core loop: consume, decode into the route, hand rows to each sink's lane, write
//! each lane on its own cadence, and commit to Kafka what every lane made durable.

mod setup;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ingest_sinks::{Fence, OffsetMap, Positions, Sink, SinkBatch, SinkError, Written};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{Loaded, OnError};
use crate::consumer::{self, Consumer, GroupFence, RebalanceEvent, Resume};
use crate::dead_letter::DeadLetters;
use crate::decode::{Message, Rejected};
use crate::health::Health;
use crate::route::{LaneOutcome, RouteState};

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
    let Some(mut routes) = open_with_retry(&loaded, fence, shutdown.clone()).await? else {
        return Ok(());
    };
    let readers: Vec<Vec<Arc<dyn Positions>>> = routes
        .iter()
        .map(|r| {
            r.lanes
                .iter()
                .filter_map(|lane| lane.sink.as_ref().map(|s| s.positions()))
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
        committed,
        assigned: HashSet::new(),
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
    let last = pipeline.committed.lock().expect("offsets poisoned").clone();
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
    let mut delay = Duration::from_millis(500);
    loop {
        match open_routes(loaded, Arc::clone(&fence)).await {
            Ok(routes) => return Ok(Some(routes)),
            Err(e) if e.downcast_ref::<SinkError>().is_some_and(|e| e.retryable) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "a sink is unreachable at start-up");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(30));
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
    /// Every position committed so far: committed again synchronously at shutdown, and
    /// re-committed by the fence to prove ownership.
    committed: Arc<Mutex<OffsetMap>>,
    /// Partitions this member owns now.
    assigned: HashSet<(String, i32)>,
    /// Turns true on SIGTERM/SIGINT; write retries give up on it.
    shutdown: watch::Receiver<bool>,
    /// Per route name, its sinks' position readers.
    positions: HashMap<String, Vec<Arc<dyn Positions>>>,
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
                    let mut committed = self.committed.lock().expect("offsets poisoned");
                    for (topic, partition) in &partitions {
                        if let Some(parts) = committed.0.get_mut(topic) {
                            parts.remove(partition);
                        }
                    }
                    self.health.add_partitions(-(partitions.len() as i64));
                    for p in &partitions {
                        self.assigned.remove(p);
                    }
                }
                RebalanceEvent::Assigned(partitions) => {
                    self.health.add_partitions(partitions.len() as i64);
                    self.assigned.extend(partitions);
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
    /// holds twice its limits: then reading waits for it.
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
            if state.busy() && !all && !state.holds_times(2, 0, 0) {
                continue;
            }
            self.finish_lane(route, lane).await?;
            if route.lanes[lane].has_open() {
                self.start_lane(route, lane);
            }
        }
        Ok(())
    }

    /// Writes the lane's open batch in a task of its own, so decoding goes on.
    fn start_lane(&self, route: &mut RouteState, lane: usize) {
        let state = &mut route.lanes[lane];
        let mut sink = state.sink.take().expect("the lane's sink is home");
        let mut batch = state.take();
        batch.fence_epoch = self.consumer.context().ownership.epoch();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        let consumer = Arc::clone(self.consumer);
        let started = Instant::now();
        state.in_flight = Some(tokio::spawn(async move {
            let rows = batch.num_rows();
            // A revocation of these partitions waits for this write to end.
            let writing = consumer.context().ownership.writing(&batch.next_offsets);
            let result = write_with_retry(sink.as_mut(), &batch, &health, shutdown).await;
            drop(writing);
            LaneOutcome {
                sink,
                result,
                next_offsets: batch.next_offsets,
                fence_epoch: batch.fence_epoch,
                rows,
                started,
            }
        }));
    }

    /// Waits for the lane's write, if any, records what its sink made durable and
    /// commits what every lane of the route has made durable.
    async fn finish_lane(&mut self, route: &mut RouteState, lane: usize) -> anyhow::Result<()> {
        let state = &mut route.lanes[lane];
        let Some(handle) = state.in_flight.take() else {
            return Ok(());
        };
        let outcome = handle.await?;
        state.sink = Some(outcome.sink);
        let written = match outcome.result {
            Ok(written) => written,
            Err(e) if e.fenced => {
                // Another instance owns these partitions now: it writes them. Should
                // this member still be reading some of them (the group kept them here
                // after all), it reads them again from the sinks' positions: a dropped
                // batch must never leave a gap behind the consumer's position.
                tracing::warn!(sink = %state.name, error = %e, "batch dropped: partitions lost");
                let partitions: Vec<(String, i32)> = outcome
                    .next_offsets
                    .iter()
                    .map(|(topic, partition, _)| (topic.to_string(), partition))
                    .collect();
                self.rewind(route, &partitions).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Partitions revoked since the batch started belong to another member, or were
        // given back and are read again from the sinks' positions: their offsets do not
        // count, even if the sink wrote some of their rows.
        let mut offsets = outcome.next_offsets;
        let revoked = self
            .consumer
            .context()
            .ownership
            .revoked_since(outcome.fence_epoch, &offsets);
        offsets.0.iter_mut().for_each(|(topic, parts)| {
            parts.retain(|p, _| {
                let gone = |(t, r): &(String, i32)| t == topic && r == p;
                self.assigned.contains(&(topic.clone(), *p))
                    && !revoked.iter().any(gone)
                    && !written.not_owned.iter().any(gone)
            })
        });
        state.durable.merge(&offsets);
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
        let committable = route.committable(&offsets);
        self.commit(&committable)
    }

    /// A sink left these partitions to another writer (its ClickHouse insert gate lost
    /// them), or dropped a batch of them as fenced, while this member still reads them:
    /// the rows read since are dropped from every lane and the partitions are read again
    /// from the minimum of the sinks' positions. Whenever this member writes them again,
    /// it continues exactly where each sink stands (never past rows nobody wrote).
    async fn rewind(
        &mut self,
        route: &mut RouteState,
        partitions: &[(String, i32)],
    ) -> anyhow::Result<()> {
        let owned: Vec<(String, i32)> = partitions
            .iter()
            .filter(|p| self.assigned.contains(*p))
            .cloned()
            .collect();
        if owned.is_empty() {
            return Ok(());
        }
        // Writes already started on them no longer count for them.
        self.consumer.context().ownership.revoke(&owned);
        route.revoke(&owned);
        let mut wanted = OffsetMap::default();
        for (topic, partition) in &owned {
            wanted.advance(topic, *partition, 0);
        }
        let readers = self
            .positions
            .get(&route.route.name)
            .cloned()
            .unwrap_or_default();
        let known = futures::future::join_all(readers.iter().map(|r| r.read(&wanted)))
            .await
            .into_iter()
            .collect::<Result<Vec<OffsetMap>, _>>()
            .map_err(|e| rewind_failed(&owned, &e))?;
        for (topic, partition) in &owned {
            let start = known
                .iter()
                .map(|k| k.get(topic, *partition))
                .collect::<Option<Vec<i64>>>()
                .and_then(|v| v.into_iter().min());
            let offset = match start {
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

    fn commit(&mut self, offsets: &OffsetMap) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        // Never move a partition's group offset backwards: commit the furthest position
        // known for every partition in this batch.
        let furthest = {
            let mut committed = self.committed.lock().expect("offsets poisoned");
            committed.merge(offsets);
            let mut furthest = OffsetMap::default();
            for (topic, partition, _) in offsets.iter() {
                if let Some(next) = committed.get(topic, partition) {
                    furthest.advance(topic, partition, next);
                }
            }
            furthest
        };
        tracing::debug!(offsets = ?furthest, "committing offsets");
        let tpl = offset_list(&furthest)?;
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
/// reports itself not ready meanwhile. Other failures stop the service.
async fn write_with_retry(
    sink: &mut dyn Sink,
    batch: &SinkBatch,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Written, SinkError> {
    let mut delay = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match sink.write(batch).await {
            Ok(written) => {
                if failures > 0 {
                    tracing::info!(sink = sink.name(), failures, "sink recovered");
                    health.set_sink_failing(sink.name(), false);
                }
                return Ok(written);
            }
            Err(e) if e.retryable => {
                failures += 1;
                health.set_sink_failing(sink.name(), true);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "sink write failed");
                // A shutdown during retries gives up without committing: the next start
                // replays the batch.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {
                        return Err(SinkError {
                            sink: sink.name().to_string(),
                            message: format!("shutting down while retrying ({e}); the batch is not committed and will be replayed"),
                            retryable: false,
                            fenced: false,
                        });
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `validate --connect`: reaches the broker, ClickHouse and the Iceberg catalog.
pub async fn check_connections(loaded: &Loaded, timeout: Duration) -> anyhow::Result<()> {
    let (brokers, topics) = check_kafka(&loaded.config.kafka, timeout).await?;
    println!("kafka: {brokers} broker(s), {topics} topic(s)");
    if let Some(conn) = &loaded.config.clickhouse {
        let version = check_clickhouse(conn, timeout).await?;
        println!("clickhouse: server {version}");
    }
    if let Some(iceberg) = &loaded.config.iceberg {
        let namespaces = check_iceberg(iceberg, timeout).await?;
        println!("iceberg: catalog reachable, {namespaces} namespace(s)");
    }
    Ok(())
}

/// Fetches the cluster's metadata: how many brokers and topics it has.
async fn check_kafka(
    kafka: &crate::config::KafkaConfig,
    timeout: Duration,
) -> anyhow::Result<(usize, usize)> {
    use rdkafka::consumer::BaseConsumer;
    let probe: BaseConsumer<consumer::ProbeContext> = consumer::client_config(kafka)
        .create_with_context(consumer::ProbeContext::default())
        .map_err(consumer::redact_config_error)?;
    let brokers = kafka.brokers.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        probe.fetch_metadata(None, timeout).map_err(|e| {
            // librdkafka's reasons (logs, error events) wait in its queue: serve them.
            let mut refused = None;
            for _ in 0..100 {
                match probe.poll(Duration::ZERO) {
                    Some(Err(e)) if consumer::is_authentication_failure(&e) => refused = Some(e),
                    Some(_) => {}
                    None => break,
                }
            }
            let why = probe
                .context()
                .first_failure()
                .or(refused.map(|e| e.to_string()));
            match why {
                Some(why) => anyhow::anyhow!("kafka brokers `{brokers}` unreachable: {e} ({why})"),
                None => anyhow::anyhow!("kafka brokers `{brokers}` unreachable: {e}"),
            }
        })
    })
    .await??;
    Ok((metadata.brokers().len(), metadata.topics().len()))
}

/// Asks ClickHouse its version.
async fn check_clickhouse(
    conn: &ingest_sinks::clickhouse::ClickHouseConnection,
    timeout: Duration,
) -> anyhow::Result<String> {
    use ingest_sinks::clickhouse::{connect, server_caps, try_client};
    let url = conn.display_url();
    let client = try_client(conn).map_err(|e| anyhow::anyhow!("clickhouse `{url}`: {e}"))?;
    let (version, _) = tokio::time::timeout(timeout, server_caps(&client))
        .await
        .map_err(|_| anyhow::anyhow!("clickhouse `{url}` unreachable: timed out"))?
        .map_err(|e| {
            anyhow::anyhow!("clickhouse `{url}` unreachable: {}", connect::describe(&e))
        })?;
    Ok(version)
}

/// A catalog failure; whatever the catalog client quotes (a URL) loses its password.
fn catalog_error(uri: &str, error: &dyn std::fmt::Display) -> anyhow::Error {
    let message = format!("iceberg catalog `{uri}`: {error}");
    anyhow::anyhow!("{}", ingest_sinks::secret::redact_uris(&message))
}

/// Opens the Iceberg catalog and lists its namespaces: how many there are.
async fn check_iceberg(
    iceberg: &crate::config::IcebergConfig,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let uri = iceberg.catalog.display_uri();
    let catalog = tokio::time::timeout(
        timeout,
        ingest_sinks::iceberg::open_catalog(&iceberg.catalog),
    )
    .await
    .map_err(|_| anyhow::anyhow!("iceberg catalog `{uri}` unreachable: timed out"))?
    .map_err(|e| catalog_error(&uri, &e))?;
    let namespaces = catalog
        .list_namespaces(None)
        .await
        .map_err(|e| catalog_error(&uri, &e))?;
    Ok(namespaces.len())
}

#[cfg(test)]
mod tests;
