//! Bad records to the dead-letter topic, exactly once per source position (see
//! `dead_letter/`): before a chunk's rows reach any lane, its bad records are sent,
//! unless the topic holds them already, and the chunk waits until the topic took them.
//!
//! Read aloud: the records of partitions this member no longer owns are left to their
//! new owner; the dead-letter partition of each source partition not known yet (or
//! whose last send failed: some of it may have landed) is read back from the hint the
//! last committer left; what it does not hold is sent; a topic that is down, unknown
//! or refusing for now is waited for (not ready) and the round starts again; one that
//! will never take a record (too large for it) stops the service with what to change.
//! Every commit carries each partition's hint (`commit.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ingest_sink_api::{Fence as _, OffsetMap, Partitions};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::config::OnError;
use crate::dead_letter::{self, DeadLetters, Hint, Ledger, SendError, scan};
use crate::decode::Rejected;
use crate::protocol::Partition;

/// How `/ready` names the dead-letter topic while it is waited for.
const READY_NAME: &str = "dead-letter topic";

/// The pipeline's knowledge of its dead-letter topics.
#[derive(Default)]
pub(super) struct DeadLetterBook {
    ledger: Ledger,
    /// Partition counts of the dead-letter topics, read once.
    partitions: HashMap<String, i32>,
    /// Source partitions whose last send failed: read back before sending again.
    suspect: HashSet<Partition>,
}

impl Pipeline<'_> {
    /// The decoder's chunk goes on: its bad records to the dead-letter topic, then its
    /// rows to every lane. Partitions this member turned out not to own any more are
    /// left out of both: their new owner reads them from the sinks' positions.
    pub(super) async fn hand_over(&mut self, route: &mut RouteBatch) -> anyhow::Result<()> {
        let mut chunk = route.take_decoded();
        let gone = self.dispose_rejected(route, &chunk.rejected).await?;
        if !gone.is_empty() {
            tracing::warn!(route = %route.route.name, partitions = ?gone.to_vec(),
                "partitions no longer owned: their decoded records are dropped");
            chunk.rows.drop_partitions(|t, p| gone.contains(t, p));
        }
        if route.route.on_error == OnError::DeadLetter && route.route.dead_letter_topic.is_some() {
            self.dead_letters_decided(&chunk.rows);
        }
        route.distribute(&chunk);
        Ok(())
    }

    /// Where the chunk's good records end, per partition (see `Ledger::decided`).
    fn dead_letters_decided(&mut self, rows: &ingest_sink_api::SinkBatch) {
        // Only partitions that had a bad record since their assignment are tracked:
        // most chunks of most routes cost no pass over their rows here.
        let tracked: Vec<Partition> = rows
            .positions
            .partitions()
            .filter(|p| self.dead.ledger.knows(p))
            .collect();
        if tracked.is_empty() {
            return;
        }
        let mut last_good: HashMap<(&str, i32), i64> = HashMap::new();
        for c in rows.coordinates.iter().flatten() {
            let entry = last_good.entry((&c.topic, c.partition)).or_insert(c.offset);
            *entry = (*entry).max(c.offset);
        }
        for p in tracked {
            let good = last_good.get(&(p.topic.as_str(), p.partition)).copied();
            if let Some(end) = rows.positions.get(&p.topic, p.partition) {
                self.dead.ledger.decided(&p, end, good);
            }
        }
    }

    /// Bad records go to the route's dead-letter topic (their offsets count once it
    /// holds them), or stop the service when the route has none. Returns the
    /// partitions this member does not own any more.
    async fn dispose_rejected(
        &mut self,
        route: &RouteBatch,
        rejected: &[Rejected],
    ) -> anyhow::Result<Partitions> {
        let Some(first) = rejected.first() else {
            return Ok(Partitions::default());
        };
        let (OnError::DeadLetter, Some(topic), Some(dl)) = (
            route.route.on_error,
            &route.route.dead_letter_topic,
            self.dead_letters,
        ) else {
            anyhow::bail!(
                "route `{}`: record {}/{}@{} cannot be decoded ({}); set `dead_letter.topic` to divert bad records",
                route.route.name,
                first.topic,
                first.partition,
                first.offset,
                first.error
            );
        };
        let name = route.route.name.as_str();
        let mut stop = self.shutdown.clone();
        let mut wait = Duration::from_millis(200);
        loop {
            match self.send_dead_letters(name, topic, dl, rejected).await {
                Ok(gone) => {
                    self.health.set_waiting_for(READY_NAME, false);
                    return Ok(gone);
                }
                Err(SendError::Refused(why)) => anyhow::bail!("route `{name}`: {why}"),
                Err(SendError::Unavailable(why)) => {
                    self.health.set_waiting_for(READY_NAME, true);
                    tracing::warn!(route = name, error = %why, retry_in = ?wait,
                        "dead-letter topic unavailable; the route waits");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stop| *stop) => {
                    anyhow::bail!(
                        "stopped while waiting for dead-letter topic `{topic}`: nothing past its records was committed"
                    );
                }
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// One round: sends what the topic does not hold yet.
    async fn send_dead_letters(
        &mut self,
        route: &str,
        topic: &str,
        dl: &DeadLetters,
        rejected: &[Rejected],
    ) -> Result<Partitions, SendError> {
        let count = self.dead_letter_partition_count(topic, dl).await?;
        let gone = self.gone(rejected).await?;
        let mut by_partition: BTreeMap<Partition, Vec<&Rejected>> = BTreeMap::new();
        for r in rejected {
            if !gone.contains(&r.topic, r.partition) {
                let p = Partition::new(&r.topic, r.partition);
                by_partition.entry(p).or_default().push(r);
            }
        }
        let unread: Vec<Partition> = by_partition
            .keys()
            .filter(|p| !self.dead.ledger.knows(p) || self.dead.suspect.contains(*p))
            .cloned()
            .collect();
        self.read_back(topic, count, dl.group(), &unread).await?;

        let mut skipped = 0u64;
        let mut sends = Vec::new();
        for (p, records) in by_partition {
            let (held, rest): (Vec<&Rejected>, Vec<&Rejected>) = records
                .into_iter()
                .partition(|r| self.dead.ledger.holds(&p, r.offset));
            skipped += held.len() as u64;
            if !rest.is_empty() {
                let q = dead_letter::partition_for(&p.topic, p.partition, count);
                self.dead.ledger.sending(&p);
                sends.push(async move { (p, dl.send(topic, q, route, &rest).await, rest) });
            }
        }
        if skipped > 0 {
            tracing::info!(
                route,
                skipped,
                "records read again are in the dead-letter topic already: not sent again"
            );
            self.health.record_dead_letters_skipped(route, skipped);
        }
        let mut failed = None;
        for (p, results, records) in futures::future::join_all(sends).await {
            let mut ok = true;
            for (result, r) in results.into_iter().zip(records) {
                match result {
                    Ok(offset) => {
                        self.dead.ledger.sent(&p, r.offset, offset);
                        self.health.record_rejected(route, r.class.as_str(), 1);
                        tracing::warn!(route, topic = %r.topic, partition = r.partition,
                            offset = r.offset, class = %r.class, error = %r.error,
                            dead_letter = %topic, "bad record");
                    }
                    Err(e) => {
                        ok = false;
                        if !matches!(failed, Some(SendError::Refused(_))) {
                            failed = Some(e);
                        }
                    }
                }
            }
            if ok {
                self.dead.ledger.delivered(&p);
                self.dead.suspect.remove(&p);
            } else {
                // Some of it may have landed without an answer: read it back first.
                self.dead.suspect.insert(p);
            }
        }
        failed.map_or(Ok(gone), Err)
    }

    async fn dead_letter_partition_count(
        &mut self,
        topic: &str,
        dl: &DeadLetters,
    ) -> Result<i32, SendError> {
        if let Some(count) = self.dead.partitions.get(topic) {
            return Ok(*count);
        }
        let producer = dl.producer().clone();
        let name = topic.to_string();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(10))
        })
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?
        .map_err(|e| SendError::Unavailable(format!("dead-letter topic `{topic}`: {e}")))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if count == 0 {
            return Err(SendError::Unavailable(format!(
                "dead-letter topic `{topic}` does not exist"
            )));
        }
        self.dead.partitions.insert(topic.to_string(), count);
        Ok(count)
    }

    /// The partitions of `rejected` this member no longer owns (their new owner
    /// dead-letters their records). Ownership the group coordinator cannot confirm
    /// now (a rebalance under way, no answer) counts as kept: a member still in the
    /// group gives partitions up in its own revocation callback, which runs only when
    /// this loop polls again, before any other member gets them; waiting here for the
    /// rebalance to end would keep that from happening.
    async fn gone(&self, rejected: &[Rejected]) -> Result<Partitions, SendError> {
        let mut partitions = OffsetMap::default();
        for r in rejected {
            partitions.advance(&r.topic, r.partition, r.offset + 1);
        }
        let epoch = self.consumer.context().ownership.epoch();
        match self.fence.check(&partitions, epoch).await {
            Ok(gone) => Ok(gone.iter().collect()),
            Err(fenced) if fenced.lost => Ok(partitions.partitions().collect()),
            Err(fenced) => {
                tracing::debug!(reason = %fenced.message, "ownership not confirmed; sending");
                Ok(Partitions::default())
            }
        }
    }

    /// Reads back what the dead-letter topic holds for `partitions`.
    async fn read_back(
        &mut self,
        topic: &str,
        count: i32,
        group: &str,
        partitions: &[Partition],
    ) -> Result<(), SendError> {
        if partitions.is_empty() {
            return Ok(());
        }
        // Per dead-letter partition, where to start: the lowest of its source
        // partitions' starting points (`None`: its beginning).
        let mut from: BTreeMap<i32, Option<i64>> = BTreeMap::new();
        for p in partitions {
            let q = dead_letter::partition_for(&p.topic, p.partition, count);
            let start = self.dead.ledger.read_from(p, topic, q);
            from.entry(q)
                .and_modify(|s| *s = s.zip(start).map(|(a, b)| a.min(b)))
                .or_insert(start);
        }
        let wanted: HashSet<Partition> = partitions.iter().cloned().collect();
        let kafka = self.loaded.config.kafka.clone();
        let (topic_name, group) = (topic.to_string(), group.to_string());
        let from: Vec<(i32, Option<i64>)> = from.into_iter().collect();
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            let reader = scan::Reader::new(&kafka)?;
            let keep = |ours: &dead_letter::headers::Ours| {
                ours.group.as_deref() == Some(group.as_str())
                    && match (&ours.source_topic, ours.source_partition) {
                        (Some(t), Some(p)) => wanted.contains(&Partition::new(t, p)),
                        _ => false,
                    }
            };
            reader.read(&topic_name, &from, &keep)
        })
        .await
        .map_err(|e| SendError::Unavailable(e.to_string()))?
        .map_err(|e| SendError::Unavailable(format!("{e:#}")))?;
        let (letters, ends) = read;
        let mut found: HashMap<Partition, Vec<(i64, i64)>> = HashMap::new();
        for letter in &letters {
            if let (Some(t), Some(p), Some(o)) = (
                &letter.ours.source_topic,
                letter.ours.source_partition,
                letter.ours.source_offset,
            ) {
                found
                    .entry(Partition::new(t, p))
                    .or_default()
                    .push((o, letter.offset));
            }
        }
        for p in partitions {
            let q = dead_letter::partition_for(&p.topic, p.partition, count);
            let end = ends
                .iter()
                .find(|(e, _)| *e == q)
                .map_or(0, |(_, end)| *end);
            let letters = found.remove(p).unwrap_or_default();
            self.dead.ledger.learn(p, q, letters, end);
        }
        tracing::info!(
            topic,
            partitions = partitions.len(),
            letters = letters.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "read back what the dead-letter topic holds"
        );
        Ok(())
    }

    /// Newly assigned partitions of routes with a dead-letter topic: the hints the last
    /// committer left in the group offsets' metadata.
    pub(super) fn dead_letters_assigned(&mut self, partitions: &[Partition]) {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            if self.dead_letter_topic_of(&p.topic).is_some() {
                tpl.add_partition(&p.topic, p.partition);
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10));
        let committed = match committed {
            Ok(committed) => committed,
            Err(e) => {
                // Without a hint the dead-letter partition is read from its start.
                tracing::warn!(error = %e, "cannot read the group's dead-letter hints");
                TopicPartitionList::new()
            }
        };
        for p in partitions {
            if self.dead_letter_topic_of(&p.topic).is_none() {
                continue;
            }
            let hint = committed
                .find_partition(&p.topic, p.partition)
                .filter(|e| matches!(e.offset(), Offset::Offset(_)))
                .and_then(|e| Hint::decode(e.metadata()));
            self.dead.ledger.assigned(p.clone(), hint);
            self.dead.suspect.remove(p);
        }
    }

    pub(super) fn dead_letters_revoked(&mut self, partitions: &[Partition]) {
        self.dead.ledger.revoke(partitions);
        let mut shared = self.committed.lock().expect("offsets poisoned");
        for p in partitions {
            self.dead.suspect.remove(p);
            shared.notes.remove(p);
        }
    }

    /// The hints to commit with `offsets`.
    pub(super) fn dead_letter_notes(&mut self, offsets: &OffsetMap) -> Vec<(Partition, String)> {
        let mut notes = Vec::new();
        for (topic, partition, next) in offsets.iter() {
            let Some(dead_letter_topic) = self.dead_letter_topic_of(topic) else {
                continue;
            };
            let p = Partition::new(topic, partition);
            if let Some(hint) = self.dead.ledger.hint(&p, &dead_letter_topic, next) {
                notes.push((p, hint.encode()));
            }
        }
        notes
    }

    fn dead_letter_topic_of(&mut self, topic: &str) -> Option<String> {
        let index = self.route_index(topic)?;
        let route = &self.loaded.routes[index];
        (route.on_error == OnError::DeadLetter)
            .then(|| route.dead_letter_topic.clone())
            .flatten()
    }
}
