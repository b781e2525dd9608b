//! `ingest dlq replay`: dead letters back through their route once a fix is in, exactly
//! once.
//!
//! Read aloud: every dead-letter topic of the config is read to its end; the letters
//! of this config's group and routes that no replay took yet (no receipt) and that
//! match the filters are taken; each is decoded with its route's decoder as it is now;
//! one that decodes goes back into its source topic and partition (the running service
//! reads it like any record: both sinks, exactly once, its value checks, and the
//! dead-letter topic again if a sink cannot store it), one that fails for another
//! reason now goes back to the dead-letter topic with it; and a receipt naming the
//! letter goes to the letter's partition, in the same Kafka transaction as the record
//! it produced. One that fails for the same reason as before is left as it is (no
//! receipt, nothing produced), so running a replay again adds nothing.
//! A replay killed half way leaves its open transaction to be aborted by the next one
//! (same `transactional.id`), which finds the receipts of what committed and takes the
//! rest: each letter is replayed once, however often the command runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::headers::{self, RECEIPT_OF, REPLAY_OF};
use super::scan::{self, Letter};
use crate::config::{Loaded, OnError, Route, metadata_fields};
use crate::decode::{ErrorClass, Learned, Message, Rejected, RouteDecoder};
use crate::registry::Registry;

/// Letters per transaction, unless told otherwise.
pub const PER_TRANSACTION: usize = 500;

/// Which dead letters to replay.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub reason: Option<ErrorClass>,
    /// Dead-lettered at or after (milliseconds since the epoch).
    pub from: Option<i64>,
    /// Dead-lettered before.
    pub to: Option<i64>,
    /// Only these source topics (all when empty).
    pub source_topics: Vec<String>,
}

/// What a replay did, per route.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Letters that matched and no replay had taken.
    pub took: u64,
    /// Decoded, and produced to their source topic.
    pub written: u64,
    /// Failing for another reason now: sent back to the dead-letter topic with it.
    pub sent_back: u64,
    /// Failing for the same reason as before: left as they are.
    pub unchanged: u64,
    /// Matched but replayed before (a receipt exists).
    pub replayed_before: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "took {}, wrote {} back to their source topics, sent {} back to the dead-letter topic with a new reason, left {} failing for the same reason, {} replayed before",
            self.took, self.written, self.sent_back, self.unchanged, self.replayed_before
        )
    }
}

/// A dead letter of this config: the letter and its route's index.
pub(super) struct Found {
    pub letter: Letter,
    pub route: usize,
    /// A replay took it (a receipt exists).
    pub receipted: bool,
    /// It is what the service sent back for a record a replay wrote, for the same
    /// reason as the letter replayed (a value a sink still cannot store): replaying it
    /// again would only go round again.
    pub repeats: bool,
}

/// Every letter of this config's group and routes in each of its dead-letter topics.
pub(super) async fn read_all(loaded: &Loaded) -> anyhow::Result<BTreeMap<String, Vec<Found>>> {
    let mut out = BTreeMap::new();
    for topic in topics(loaded) {
        let found = read_topic(loaded, &topic).await?;
        out.insert(topic, found);
    }
    Ok(out)
}

/// Every letter of this config's group and routes in dead-letter topic `topic`.
async fn read_topic(loaded: &Loaded, topic: &str) -> anyhow::Result<Vec<Found>> {
    let kafka = loaded.config.kafka.clone();
    let name = topic.to_string();
    let letters = tokio::task::spawn_blocking(move || {
        let reader = scan::Reader::new(&kafka)?;
        let count = reader.partition_count(&name)?;
        let from: Vec<(i32, Option<i64>)> = (0..count).map(|q| (q, None)).collect();
        reader
            .read(&name, &from, &|_| true)
            .map(|(letters, _)| letters)
    })
    .await??;
    let group = loaded.config.kafka.group_id.as_str();
    let ours: Vec<&Letter> = letters
        .iter()
        .filter(|l| l.ours.group.as_deref() == Some(group))
        .collect();
    let receipts: HashSet<(i32, i64)> = ours
        .iter()
        .filter_map(|l| parse_at(l.ours.receipt_of.as_deref()?))
        .collect();
    let errors: HashMap<(i32, i64), Option<&str>> = ours
        .iter()
        .map(|l| ((l.partition, l.offset), l.ours.error.as_deref()))
        .collect();
    let repeats = |l: &Letter| {
        let Some(of) = l.ours.replay_of.as_deref() else {
            return false;
        };
        of.split_once('/').is_some_and(|(_, t)| t == topic)
            && parse_at(of).and_then(|at| errors.get(&at).copied()) == Some(l.ours.error.as_deref())
    };
    let found = ours
        .iter()
        .filter(|l| l.ours.source_offset.is_some())
        .filter_map(|letter| {
            let route = loaded.routes.iter().position(|r| {
                Some(r.name.as_str()) == letter.ours.route.as_deref()
                    && r.dead_letter_topic.as_deref() == Some(topic)
            })?;
            Some(Found {
                letter: (*letter).clone(),
                route,
                receipted: receipts.contains(&(letter.partition, letter.offset)),
                repeats: repeats(letter),
            })
        })
        .collect();
    Ok(found)
}

/// Replays the letters `filter` selects, `per_transaction` at a time (0: only counts
/// them, a dry run).
pub async fn replay(
    loaded: &Loaded,
    filter: &Filter,
    per_transaction: usize,
) -> anyhow::Result<Report> {
    let dry_run = per_transaction == 0;
    let mut report = Report::default();
    let registry = match &loaded.config.schema_registry {
        Some(config) => Some(Registry::new(config).map_err(anyhow::Error::msg)?),
        None => None,
    };
    for topic in topics(loaded) {
        // Fences a replay still running (and aborts what it left open) before the
        // receipts are read: none can commit between this read and our own.
        let mut replayer = match dry_run {
            true => None,
            false => Some(Replayer::new(loaded, &topic, registry.as_ref())?),
        };
        let found = read_topic(loaded, &topic).await?;
        let chosen: Vec<&Found> = found.iter().filter(|f| filter.selects(&f.letter)).collect();
        report.replayed_before += chosen.iter().filter(|f| f.receipted).count() as u64;
        let chosen: Vec<&Found> = chosen.into_iter().filter(|f| !f.receipted).collect();
        report.took += chosen.len() as u64;
        let (repeats, chosen): (Vec<&Found>, Vec<&Found>) =
            chosen.into_iter().partition(|f| f.repeats);
        report.unchanged += repeats.len() as u64;
        let Some(replayer) = replayer.as_mut() else {
            continue;
        };
        for batch in chosen.chunks(per_transaction) {
            let done = replayer.transaction(batch).await?;
            report.written += done.written;
            report.sent_back += done.sent_back;
            report.unchanged += done.unchanged;
            tracing::info!(topic = %topic, written = done.written, sent_back = done.sent_back,
                unchanged = done.unchanged, "replay transaction committed");
        }
    }
    Ok(report)
}

/// The dead-letter topics of the config's routes that send bad records there.
fn topics(loaded: &Loaded) -> Vec<String> {
    let mut topics: Vec<String> = loaded
        .routes
        .iter()
        .filter(|r| r.on_error == OnError::DeadLetter)
        .filter_map(|r| r.dead_letter_topic.clone())
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// `<partition>@<offset>`.
fn parse_at(text: &str) -> Option<(i32, i64)> {
    let (partition, offset) = text.split('/').next()?.split_once('@')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

impl Filter {
    pub(super) fn selects(&self, letter: &Letter) -> bool {
        let ours = &letter.ours;
        let time = ours.time.as_deref().and_then(headers::parse_time);
        self.reason
            .is_none_or(|r| ours.class.as_deref() == Some(r.as_str()))
            && self.from.is_none_or(|from| time.is_some_and(|t| t >= from))
            && self.to.is_none_or(|to| time.is_some_and(|t| t < to))
            && (self.source_topics.is_empty()
                || ours
                    .source_topic
                    .as_ref()
                    .is_some_and(|t| self.source_topics.contains(t)))
    }
}

/// Produces one dead-letter topic's replays, a transaction at a time.
struct Replayer<'a> {
    loaded: &'a Loaded,
    topic: String,
    producer: FutureProducer,
    partitions: i32,
    decoders: BTreeMap<usize, RouteDecoder>,
    /// Writer schema ids the routes will widen to: their records are written back
    /// without being decoded here (the service widens first).
    wider: HashSet<(usize, u32)>,
    registry: Option<&'a Registry>,
}

impl<'a> Replayer<'a> {
    fn new(
        loaded: &'a Loaded,
        topic: &str,
        registry: Option<&'a Registry>,
    ) -> anyhow::Result<Self> {
        let kafka = &loaded.config.kafka;
        let mut config = super::client_config(kafka);
        // One replayer per group and topic at a time: a new one fences the last and
        // aborts what it left open.
        config
            .set(
                "transactional.id",
                format!("ingest-dlq-replay.{}.{topic}", kafka.group_id),
            )
            .set("enable.idempotence", "true")
            // A replay killed mid-transaction holds back readers of the topic (they
            // read committed records only) until its transaction is aborted: soon.
            .set("transaction.timeout.ms", "15000")
            .set("message.max.bytes", "1000000000");
        let producer: FutureProducer = config
            .create()
            .map_err(crate::consumer::redact_config_error)?;
        producer.init_transactions(Timeout::After(Duration::from_secs(60)))?;
        let partitions = scan::Reader::new(kafka)?.partition_count(topic)?;
        Ok(Self {
            loaded,
            topic: topic.to_string(),
            producer,
            partitions,
            decoders: BTreeMap::new(),
            wider: HashSet::new(),
            registry,
        })
    }

    /// Replays `batch` in one transaction.
    async fn transaction(&mut self, batch: &[&Found]) -> anyhow::Result<Report> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for found in batch {
            outcomes.push(self.decode(found).await?);
        }
        self.producer.begin_transaction()?;
        let mut deliveries = Vec::new();
        let mut done = Report::default();
        for (found, outcome) in batch.iter().zip(&outcomes) {
            if let Some(rejected) = outcome
                && found.letter.ours.error.as_deref() == Some(rejected.error.as_str())
            {
                done.unchanged += 1;
                continue;
            }
            let letter = &found.letter;
            let route = &self.loaded.routes[found.route];
            let of = format!("{}@{}/{}", letter.partition, letter.offset, self.topic);
            let (Some(source), Some(partition), Some(_)) = (
                letter.ours.source_topic.as_deref(),
                letter.ours.source_partition,
                letter.ours.source_offset,
            ) else {
                continue;
            };
            let record = match outcome {
                None => {
                    done.written += 1;
                    let headers = headers::original(&letter.headers).insert(Header {
                        key: REPLAY_OF,
                        value: Some(of.as_str()),
                    });
                    self.record(source, partition, letter, headers)
                }
                Some(rejected) => {
                    done.sent_back += 1;
                    let headers = headers::for_letter(
                        rejected,
                        &route.name,
                        &self.loaded.config.kafka.group_id,
                        &[(REPLAY_OF, of.clone())],
                    );
                    let q = super::partition_for(source, partition, self.partitions);
                    self.record(&self.topic, q, letter, headers)
                }
            };
            deliveries.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            let receipt = OwnedHeaders::new()
                .insert(Header {
                    key: RECEIPT_OF,
                    value: Some(format!("{}@{}", letter.partition, letter.offset).as_str()),
                })
                .insert(Header {
                    key: headers::GROUP,
                    value: Some(self.loaded.config.kafka.group_id.as_str()),
                })
                .insert(Header {
                    key: headers::ROUTE,
                    value: Some(route.name.as_str()),
                })
                .insert(Header {
                    key: headers::TIME,
                    value: Some(headers::now().as_str()),
                });
            let receipt = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .partition(letter.partition)
                .headers(receipt);
            deliveries.push(self.producer.send_result(receipt).map_err(|(e, _)| e)?);
        }
        for delivery in futures::future::join_all(deliveries).await {
            if let Err(e) = delivery
                .map_err(anyhow::Error::from)
                .and_then(|d| d.map_err(|(e, _)| e.into()))
            {
                self.producer
                    .abort_transaction(Timeout::After(Duration::from_secs(60)))?;
                return Err(
                    e.context("replay: a record was not delivered; the transaction was aborted")
                );
            }
        }
        self.producer
            .commit_transaction(Timeout::After(Duration::from_secs(60)))?;
        Ok(done)
    }

    fn record<'r>(
        &self,
        topic: &'r str,
        partition: i32,
        letter: &'r Letter,
        headers: OwnedHeaders,
    ) -> FutureRecord<'r, [u8], [u8]> {
        super::record_to(
            (topic, partition),
            letter.key.as_deref(),
            letter.value.as_deref(),
            letter.ours.source_timestamp,
            headers,
        )
    }

    /// `None` when the letter decodes with its route as it is now, else the refusal.
    async fn decode(&mut self, found: &Found) -> anyhow::Result<Option<Rejected>> {
        let route: &Route = &self.loaded.routes[found.route];
        let decoder = match self.decoders.entry(found.route) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut decoder = RouteDecoder::new(
                    &route.payload,
                    route.schema.clone(),
                    metadata_fields(&route.config.metadata),
                    1,
                )?;
                decoder.set_max_message_bytes(route.config.max_message_bytes);
                e.insert(decoder)
            }
        };
        let letter = &found.letter;
        let view = Message {
            topic: letter.ours.source_topic.as_deref().unwrap_or_default(),
            partition: letter.ours.source_partition.unwrap_or_default(),
            offset: letter.ours.source_offset.unwrap_or_default(),
            timestamp: letter.ours.source_timestamp,
            key: letter.key.as_deref(),
            payload: letter.value.as_deref(),
            headers: None,
        };
        while let Some(id) = decoder.schema_wanted(&view) {
            let registry = self.registry.ok_or_else(|| {
                anyhow::anyhow!(
                    "route `{}` names schema ids but the config has no schema_registry",
                    route.name
                )
            })?;
            let schema = registry.schema(id).await.map_err(anyhow::Error::msg)?;
            if let Learned::Wider(_) = decoder.learn(id, schema.as_ref()) {
                self.wider.insert((found.route, id));
            }
        }
        if decoder
            .schema_id(&view)
            .is_some_and(|id| self.wider.contains(&(found.route, id)))
        {
            // The running service widens its route and tables to this version.
            return Ok(None);
        }
        let mut rejected = Vec::new();
        decoder.push(&view, &mut rejected);
        decoder.take(&mut rejected);
        Ok(rejected.into_iter().next().map(|mut r| {
            r.headers = letter.headers.clone();
            r
        }))
    }
}
