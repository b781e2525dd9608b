//! Step 1, consume: poll records and hand each to its route's batch; act on rebalances; and at
//! shutdown flush what is open and commit it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Message as _};
use tokio::sync::watch;

use super::Pipeline;
use super::evolve::Widened;
use crate::batch::RouteBatch;
use crate::config::{Loaded, OnIncompatible};
use crate::consumer::{
    self, Consumer, GroupFence, PositionReaders, RebalanceEvent, Resume, SharedCommitted,
};
use crate::dead_letter::DeadLetters;
use crate::decode::{Learned, Message, WriterSchema};
use crate::health::Health;
use crate::protocol::{Offsets, Partition};
use crate::registry::Registry;

/// How often quiet routes are checked against their `max_age`.
const TICK: Duration = Duration::from_millis(50);

/// The loop over opened routes: `committed` is shared with the consumer's fence.
pub(super) async fn consume(
    loaded: Loaded,
    health: Health,
    shutdown: watch::Receiver<bool>,
    consumer: Arc<Consumer>,
    committed: SharedCommitted,
    mut routes: Vec<RouteBatch>,
) -> anyhow::Result<()> {
    let positions = resume_from_sinks(&loaded, &consumer, &routes);
    let dead_letters = if routes.iter().any(|r| r.route.dead_letter_topic.is_some()) {
        Some(DeadLetters::new(&loaded.config.kafka)?)
    } else {
        None
    };
    let registry = match &loaded.config.schema_registry {
        Some(config) => Some(Registry::new(config).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let subscriptions = loaded.subscriptions();
    let topics: Vec<&str> = subscriptions.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?subscriptions, group = %loaded.config.kafka.group_id, "consuming");
    for route in &routes {
        for lane in &route.lanes {
            health.sink_opened(&route.route.name, &lane.name);
        }
    }
    health.set_ready(true);

    let mut pipeline = Pipeline {
        positions,
        loaded: &loaded,
        consumer: &consumer,
        dead_letters: dead_letters.as_ref(),
        registry: registry.as_ref(),
        // SIGHUP: read the routes' schema files again.
        hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        route_of: HashMap::new(),
        last_route: None,
        health: &health,
        offsets: Offsets::new(routes.iter().map(|r| r.lanes.len())),
        shutdown,
        continuity: Default::default(),
        lost_reported: HashMap::new(),
        lost_fail: Vec::new(),
        last_log_check: Instant::now(),
        last_progress: Instant::now(),
        assigned_at: HashMap::new(),
        paused: Default::default(),
        dead: Default::default(),
        fence: GroupFence::new(Arc::clone(&consumer), Arc::clone(&committed)),
        committed,
    };
    let result = pipeline.consume_until_stopped(&mut routes).await;
    health.set_ready(false);
    // On failure nothing past it was committed: the next start replays it.
    result?;
    pipeline.shut_down(&mut routes).await?;
    if let Some(d) = &dead_letters {
        d.flush();
    }
    consumer.unsubscribe();
    tracing::info!("stopped");
    Ok(())
}

/// Newly assigned partitions start where their sinks stand (read from the sinks
/// themselves); returns each route's position readers, by route index.
fn resume_from_sinks(
    loaded: &Loaded,
    consumer: &Consumer,
    routes: &[RouteBatch],
) -> PositionReaders {
    let readers = PositionReaders::new(
        routes
            .iter()
            .map(|r| {
                r.lanes
                    .iter()
                    .filter_map(|lane| lane.sink.as_ref().map(|s| s.position_reader()))
                    .collect()
            })
            .collect(),
    );
    let route_of = {
        let loaded = loaded.clone();
        Box::new(move |topic: &str| loaded.route_for(topic))
    };
    consumer.context().set_resume(Resume::new(
        readers.clone(),
        route_of,
        tokio::runtime::Handle::current(),
    ));
    readers
}

impl Pipeline<'_> {
    /// Reads records until asked to stop; every tick, finished writes are collected
    /// and batches past their age are flushed.
    async fn consume_until_stopped(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        let consumer = self.consumer;
        let mut last_tick = Instant::now();
        let mut since_tick = 0u32;
        loop {
            if self.shutdown.has_changed().unwrap_or(true) {
                return Ok(());
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
                        self.loaded.config.kafka.brokers
                    );
                }
                Some(Err(e)) => tracing::warn!(error = %e, "kafka error"),
                Some(Ok(message)) => self.take(routes, message).await?,
            }
            // Age limits and finished writes are looked at every tick (the clock is read
            // every 32 messages, not per message: a steady trickle must not delay them).
            since_tick += 1;
            if quiet || since_tick >= 32 {
                since_tick = 0;
                let now = Instant::now();
                if quiet || now.duration_since(last_tick) >= TICK {
                    last_tick = now;
                    if self
                        .hangup
                        .as_mut()
                        .and_then(|h| h.recv().now_or_never().flatten())
                        .is_some()
                    {
                        self.reread_schemas(routes).await?;
                        if !*self.shutdown.borrow() {
                            self.resume_paused(routes).await?;
                        }
                    }
                    self.handle_rebalances(routes)?;
                    self.check_log_bounds(routes)?;
                    self.flush_due(routes).await?;
                    self.report_progress(routes);
                }
            }
        }
    }

    /// Hands one record to its route's batch (it is decoded there); a full batch is
    /// flushed.
    async fn take(
        &mut self,
        routes: &mut [RouteBatch],
        message: BorrowedMessage<'_>,
    ) -> anyhow::Result<()> {
        self.handle_rebalances(routes)?;
        let topic = message.topic();
        let Some(index) = self.route_index(topic) else {
            tracing::warn!(topic, "message from a topic no route matches");
            return Ok(());
        };
        if self.held(index, topic, message.partition(), message.offset()) {
            return Ok(());
        }
        self.check_step(routes, index, topic, message.partition(), message.offset())?;
        let view = Message {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            payload: message.payload(),
            headers: message.headers(),
        };
        // A new writer schema may first widen the route (then its decoder is new and
        // learns the id again, from the registry's cache).
        while let Some(id) = routes[index].schema_wanted(&view) {
            let Some(schema) = self.writer_schema(id).await else {
                // Stopping: the record is not taken, so no position passes it.
                return Ok(());
            };
            let refused = match routes[index].learn(id, schema.as_ref()) {
                Learned::Same => continue,
                Learned::Wider(wider) => match self.widen_to(&mut routes[index], wider).await? {
                    Widened::Stopping => return Ok(()),
                    // The writes the widening finished may have sent this partition
                    // back (a fenced batch): the record comes round again after them.
                    _ if !self
                        .continuity
                        .expects(topic, view.partition, view.offset + 1) =>
                    {
                        return Ok(());
                    }
                    Widened::Done => continue,
                    Widened::Refused(why) => {
                        let why =
                            format!("the route could not widen to writer schema id {id}: {why}");
                        // `dead_letter`: the records of that version are refused.
                        routes[index].refuse(id, &why);
                        why
                    }
                },
                // `dead_letter`: the decoder refuses the record with the reason.
                Learned::Incompatible(why) => why,
            };
            if routes[index].route.config.on_incompatible == OnIncompatible::Pause {
                self.pause(&routes[index], refused, &view);
                return Ok(());
            }
            tracing::error!(route = %routes[index].route.name, id, reason = %refused, "the records of this writer version go to the dead-letter topic (on_incompatible: dead_letter)");
        }
        let bytes = view.payload.map_or(0, <[u8]>::len) as u64;
        routes[index].push(&view);
        drop(message);
        self.health
            .record_consumed(&routes[index].route.name, bytes);
        if routes[index].full() {
            self.flush(&mut routes[index], false).await?;
        }
        Ok(())
    }

    /// The writer schema of `id` from the registry (`Some(None)`: it has no such id).
    /// An unreachable registry is retried with backoff while `/ready` says so, until
    /// it answers or the service stops (`None`).
    async fn writer_schema(&mut self, id: u32) -> Option<Option<WriterSchema>> {
        const READY_NAME: &str = "schema registry";
        let registry = self
            .registry
            .expect("routes naming schema ids have a registry");
        // A copy: seeing the stop here must not hide it from the consume loop.
        let mut stop = self.shutdown.clone();
        let mut wait = Duration::from_millis(200);
        loop {
            match registry.schema(id).await {
                Ok(found) => {
                    self.health.set_waiting_for(READY_NAME, false);
                    return Some(found);
                }
                Err(e) => {
                    self.health.set_waiting_for(READY_NAME, true);
                    tracing::warn!(id, error = %e, retry_in = ?wait, "schema registry unreachable; the route waits");
                }
            }
            if *stop.borrow() {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return None,
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// Flushes every open batch, waits for the writes, and commits what they made
    /// durable.
    async fn shut_down(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        tracing::info!("shutting down: flushing open batches");
        // Partitions revoked by the last poll must not be flushed or committed.
        self.handle_rebalances(routes)?;
        for route in routes.iter_mut() {
            self.flush(route, true).await?;
            for lane in 0..route.lanes.len() {
                self.finish_lane(route, lane).await?;
            }
        }
        self.final_commit()
    }

    pub(super) fn route_index(&mut self, topic: &str) -> Option<usize> {
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
    pub(super) fn handle_rebalances(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        for event in self.consumer.context().take_events() {
            match event {
                RebalanceEvent::Refused(refused) => return Err(consumer::refusal(&refused)),
                RebalanceEvent::Checked(assignment) => {
                    self.assignment_checked(routes, assignment)?;
                }
                RebalanceEvent::Revoked(partitions) => {
                    for route in routes.iter_mut() {
                        route.revoke(&partitions);
                    }
                    for Partition { topic, partition } in &partitions {
                        self.continuity.forget(topic, *partition);
                    }
                    self.forget_held(&partitions);
                    self.dead_letters_revoked(&partitions);
                    // Never commit for a partition another member now owns.
                    self.offsets.revoke(&partitions);
                    self.committed.lock().expect("offsets poisoned").offsets =
                        self.offsets.committed().clone();
                    self.health.add_partitions(-(partitions.len() as i64));
                    for p in &partitions {
                        self.assigned_at.remove(p);
                    }
                }
                RebalanceEvent::Assigned(partitions) => {
                    self.pause_or_resume_assigned(&partitions);
                    self.health.add_partitions(partitions.len() as i64);
                    self.offsets.assign(&partitions);
                    let now = Instant::now();
                    for p in &partitions {
                        let cached = consumer::cached_bounds(self.consumer, &p.topic, p.partition);
                        self.assigned_at.insert(p.clone(), (now, cached));
                    }
                    self.dead_letters_assigned(&partitions);
                }
            }
        }
        Ok(())
    }
}
