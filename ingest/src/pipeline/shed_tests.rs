//! A sink in an outage never holds back the healthy sink of its route, whatever the
//! timing (refusing at once or late, hanging, a burst of records), and once it is back
//! both hold every record exactly once (docs/exactly-once.md, "Per-sink lanes"); records
//! Kafka deleted while it was down are reported and follow the route's
//! `on_lost_records` ("Records Kafka deleted").
//!
//! Real Kafka, the real run loop; the two sinks are stand-ins: the shared ClickHouse
//! must not be stopped by a test, and what is tested is the loop's lanes around any
//! sink (which rows each sink got, and when), not a sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest_sink_api::{
    BatchOverride, OffsetMap, PositionReader, Sink, SinkBatch, SinkError, WriteOutcome,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::*;
use crate::batch::RouteBatch;
use crate::config::load_str;

/// What a stand-in sink holds: every row's position, and its durable positions.
#[derive(Default)]
struct Held {
    rows: Vec<(i32, i64)>,
    positions: OffsetMap,
    flushes: Vec<Instant>,
}

/// How a stand-in sink answers.
const UP: u8 = 0;
/// Refuses every write, 300 ms after it was asked (a connection refused through a slow
/// network: the loop must not depend on a failure coming at once).
const REFUSING: u8 = 1;
/// Never answers while set (a server that keeps the connection open and says nothing).
const HANGING: u8 = 2;

/// Writes, but cannot say where it stands: its position reads fail.
const UNREADABLE: u8 = 3;

/// Writes into `held`, or fails or hangs as `mode` says.
struct StandIn {
    name: &'static str,
    held: Arc<Mutex<Held>>,
    mode: Arc<AtomicU8>,
}

#[async_trait::async_trait]
impl Sink for StandIn {
    fn name(&self) -> &str {
        self.name
    }

    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        while self.mode.load(Ordering::SeqCst) == HANGING {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.mode.load(Ordering::SeqCst) == REFUSING {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Err(SinkError::retryable(self.name, "connection refused"));
        }
        let mut held = self.held.lock().unwrap();
        for p in batch.coordinates.iter().flatten() {
            held.rows.push((p.partition, p.offset));
        }
        held.positions.merge(&batch.positions);
        held.flushes.push(Instant::now());
        Ok(WriteOutcome::default())
    }

    fn position_reader(&self) -> Arc<dyn PositionReader> {
        Arc::new(HeldPositions(
            self.name,
            Arc::clone(&self.held),
            Arc::clone(&self.mode),
        ))
    }
}

struct HeldPositions(&'static str, Arc<Mutex<Held>>, Arc<AtomicU8>);

#[async_trait::async_trait]
impl PositionReader for HeldPositions {
    async fn read(&self, wanted: &OffsetMap) -> Result<OffsetMap, SinkError> {
        if self.2.load(Ordering::SeqCst) == UNREADABLE {
            return Err(SinkError::retryable(
                self.0,
                "positions: connection refused",
            ));
        }
        let mut known = self.1.lock().unwrap().positions.clone();
        if !wanted.is_empty() {
            known.retain(|t, p| wanted.get(t, p).is_some());
        }
        Ok(known)
    }

    fn sink(&self) -> &str {
        self.0
    }
}

fn brokers() -> String {
    let host = std::env::var("KAFKA_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into());
    format!("{host}:{port}")
}

/// Each (partition, offset) once, sorted; panics with `what` on a duplicate.
fn exactly_once(what: &str, rows: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for row in rows {
        *counts.entry(*row).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "{what} holds records twice: {twice:?}");
    counts.into_keys().collect()
}

/// A topic of 3 partitions, a route with a sink that can fail ("failing") and one that
/// does not ("healthy"), and what the test's driver needs.
struct Harness {
    topic: String,
    brokers: String,
    failing: Arc<Mutex<Held>>,
    healthy: Arc<Mutex<Held>>,
    mode: Arc<AtomicU8>,
    health: Health,
}

impl Harness {
    /// `route_keys` are added to the route (its `batch`, `on_lost_records`).
    async fn new(route_keys: &str) -> (Self, Loaded, RouteBatch) {
        // The loop's log, shown when a test fails (`RUST_LOG` filters it).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let topic = format!("shed-{unique}");
        let brokers = brokers();
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        admin
            .create_topics(
                &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ingest-shed-test-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("e.yaml"), "fields:\n  - {name: id, type: int64}\n").unwrap();
        // The config's sinks are replaced below.
        let text = format!(
            "kafka: {{ brokers: \"{brokers}\", group_id: \"shed-{unique}\" }}\n\
             clickhouse: {{ url: \"http://127.0.0.1:1\" }}\n\
             routes:\n  - topics: [\"{topic}\"]\n    schema: e.yaml\n    \
             clickhouse: {{ table: e }}\n{route_keys}"
        );
        let loaded = load_str(&text, &dir.join("c.yaml"), &|_| None).unwrap();
        let harness = Self {
            topic,
            brokers,
            failing: Arc::default(),
            healthy: Arc::default(),
            mode: Arc::new(AtomicU8::new(UP)),
            health: Health::new(),
        };
        let mut route = RouteBatch::new(loaded.routes[0].clone(), 0).unwrap();
        for (name, held, mode) in [
            ("failing", &harness.failing, Arc::clone(&harness.mode)),
            ("healthy", &harness.healthy, Arc::new(AtomicU8::new(UP))),
        ] {
            let held = Arc::clone(held);
            route.add_sink(
                Box::new(StandIn { name, held, mode }),
                &BatchOverride::default(),
            );
        }
        (harness, loaded, route)
    }

    /// Runs the loop until the driver stops it (or drops `stop` when it panics);
    /// returns the loop's result.
    async fn run<F>(
        self: Arc<Self>,
        loaded: Loaded,
        route: RouteBatch,
        driver: impl FnOnce(Arc<Self>, watch::Sender<bool>) -> F,
    ) -> (anyhow::Result<()>, F::Output)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let consumer = Arc::new(consumer::create(&loaded.config.kafka).unwrap());
        let (stop, shutdown) = watch::channel(false);
        // The loop is not `Send`: it runs here, the load and the checks in a task.
        let driver = tokio::spawn(driver(Arc::clone(&self), stop));
        let result = consume::consume(
            loaded,
            self.health.clone(),
            shutdown,
            consumer,
            Default::default(),
            vec![route],
        )
        .await;
        let driven = match driver.await {
            Ok(driven) => driven,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        (result, driven)
    }

    /// Produces `count` records, ids from `first`, `at_once` per 100 ms; returns their
    /// (partition, offset).
    async fn produce(&self, first: usize, count: usize, at_once: usize) -> Vec<(i32, i64)> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let mut produced = Vec::new();
        for start in (first..first + count).step_by(at_once) {
            let sends = (start..(start + at_once).min(first + count)).map(|i| {
                let payload = format!("{{\"id\": {i}}}");
                let key = format!("{}", i % 50);
                let producer = &producer;
                async move {
                    let record = FutureRecord::to(&self.topic).payload(&payload).key(&key);
                    producer.send(record, Duration::from_secs(10)).await
                }
            });
            for delivered in futures::future::join_all(sends).await {
                let delivered = delivered.unwrap();
                produced.push((delivered.partition, delivered.offset));
            }
            if at_once < count {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        produced.sort();
        produced
    }

    /// Deletes every record of the topic (what retention does to old segments).
    async fn delete_all_records(&self) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for partition in 0..3 {
            tpl.add_partition_offset(&self.topic, partition, Offset::End)
                .unwrap();
        }
        admin
            .delete_records(&tpl, &AdminOptions::new())
            .await
            .unwrap();
    }

    /// The failing sink writes the first 600 records, then refuses while 3,000 more
    /// arrive (the healthy sink takes them, the failing lane sheds), then Kafka deletes
    /// every record: returns each partition's new log start.
    async fn outage_then_retention(&self) -> Vec<i64> {
        let first = self.produce(0, 600, 600).await;
        self.wait_for(&self.failing, first.len(), Duration::from_secs(20))
            .await;
        self.mode.store(REFUSING, Ordering::SeqCst);
        self.produce(600, 3000, 300).await;
        self.wait_for(&self.healthy, 3600, Duration::from_secs(20))
            .await;
        self.delete_all_records().await;
        self.log_starts()
    }

    /// Each partition's log start (the offsets below it were deleted).
    fn log_starts(&self) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        (0..3)
            .map(|p| {
                consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .unwrap()
                    .0
            })
            .collect()
    }

    /// The offsets the failing sink lacks below the log starts: what the gap must count.
    /// (It holds a prefix of each partition: the records before its outage, and the
    /// batch it was writing when the outage began, which it wrote once back.)
    fn gap(&self, starts: &[i64]) -> u64 {
        let rows = self.failing.lock().unwrap().rows.clone();
        starts
            .iter()
            .enumerate()
            .map(|(p, start)| {
                let below = rows
                    .iter()
                    .filter(|(rp, o)| *rp == p as i32 && o < start)
                    .count() as i64;
                (start - below) as u64
            })
            .sum()
    }

    fn rows(&self, held: &Arc<Mutex<Held>>) -> usize {
        held.lock().unwrap().rows.len()
    }

    async fn wait_for(&self, held: &Arc<Mutex<Held>>, rows: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.rows(held) < rows && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The longest time between two flushes of the healthy sink after `since`.
    fn longest_pause(&self, since: Instant) -> Duration {
        let flushes = self.healthy.lock().unwrap().flushes.clone();
        let mut last = since;
        let mut longest = Duration::ZERO;
        for at in flushes.into_iter().filter(|at| *at > since) {
            longest = longest.max(at - last);
            last = at;
        }
        longest.max(last.elapsed())
    }

    fn lost_metric(&self) -> u64 {
        let text = self.health.metrics_text();
        text.lines()
            .filter(|l| l.starts_with("ingest_records_lost_total{"))
            .filter(|l| l.contains("sink=\"failing\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_does_not_stop_the_healthy_one() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 100, max_age: 300ms }\n").await;
    harness.mode.store(REFUSING, Ordering::SeqCst);
    let (result, _) = Arc::new(harness)
        .run(loaded, route, |h, stop| async move {
            // A steady load: 50 records every 100 ms for 6 s, over 3 partitions.
            let produced = h.produce(0, 3000, 50).await;
            // The healthy sink keeps its cadence although the other one holds far more
            // than twice its limits by now.
            h.wait_for(&h.healthy, produced.len(), Duration::from_secs(5))
                .await;
            assert_eq!(
                h.rows(&h.healthy),
                produced.len(),
                "the healthy sink stopped while the other sink was down"
            );
            assert_eq!(h.rows(&h.failing), 0);
            back_and_exactly_once(&h, stop, &produced).await;
        })
        .await;
    result.unwrap();
}

/// Lets the failing sink back and checks both hold every record of `produced` once.
async fn back_and_exactly_once(h: &Harness, stop: watch::Sender<bool>, produced: &[(i32, i64)]) {
    h.mode.store(UP, Ordering::SeqCst);
    h.wait_for(&h.failing, produced.len(), Duration::from_secs(40))
        .await;
    // Give a duplicate, if any, the time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    for (what, held) in [
        ("the healthy sink", &h.healthy),
        ("the failing sink", &h.failing),
    ] {
        let rows = exactly_once(what, &held.lock().unwrap().rows);
        assert_eq!(rows, produced, "{what} does not hold every record");
    }
}

/// A burst far past both lanes' limits arrives while one sink refuses, its first
/// refusal coming late: the loop used to wait for that lane's write (and then through
/// all its retries), so the healthy sink took one batch and then nothing until the
/// other sink was back (issue 16, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_while_a_sink_refuses_late_does_not_stop_the_healthy_one() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 1000, max_age: 1s }\n").await;
    harness.mode.store(REFUSING, Ordering::SeqCst);
    let (result, _) = Arc::new(harness)
        .run(loaded, route, |h, stop| async move {
            let produced = h.produce(0, 6000, 6000).await;
            h.wait_for(&h.healthy, produced.len(), Duration::from_secs(20))
                .await;
            assert_eq!(
                h.rows(&h.healthy),
                produced.len(),
                "the healthy sink stopped while the other sink refused"
            );
            back_and_exactly_once(&h, stop, &produced).await;
        })
        .await;
    result.unwrap();
}

/// A sink that stops answering without refusing (a network partition, a stuck server):
/// the loop used to wait for its write until the write's own timeouts, and the healthy
/// sink took nothing meanwhile (issue 16, item 2). Now the lane sheds after at most
/// `LANE_WAIT` of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_hangs_does_not_stop_the_healthy_one() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 200, max_age: 300ms }\n").await;
    let (result, _) = Arc::new(harness)
        .run(loaded, route, |h, stop| async move {
            let before = h.produce(0, 300, 300).await;
            h.wait_for(&h.failing, before.len(), Duration::from_secs(20))
                .await;
            h.mode.store(HANGING, Ordering::SeqCst);
            let hang = Instant::now();
            // 100 records every 100 ms for 12 s: the hanging lane holds twice its
            // limits within a second.
            let during = h.produce(300, 12_000, 100).await;
            let pause = h.longest_pause(hang);
            h.wait_for(&h.healthy, 12_300, Duration::from_secs(10))
                .await;
            assert_eq!(h.rows(&h.healthy), 12_300, "the healthy sink fell behind");
            assert!(
                pause < Duration::from_secs(8),
                "the healthy sink wrote nothing for {pause:?} while the other sink hung"
            );
            let mut produced = before;
            produced.extend(during);
            produced.sort();
            back_and_exactly_once(&h, stop, &produced).await;
        })
        .await;
    result.unwrap();
}

/// Retention deletes records a shed lane's sink still needs (it is down): an ERROR, the
/// gap counted, and with `on_lost_records: fail` (the default) the service stops before
/// that sink's position passes the gap (issue 16, item 1: it used to read on from the log
/// start without a word).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_while_a_sink_is_down_stop_the_service() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 100, max_age: 300ms }\n").await;
    let harness = Arc::new(harness);
    let (result, starts) = Arc::clone(&harness)
        .run(loaded, route, |h, stop| async move {
            // Held until the end: dropping it stops the loop.
            let _stop = stop;
            let starts = h.outage_then_retention().await;
            h.mode.store(UP, Ordering::SeqCst);
            // The loop must stop by itself meanwhile; dropping `_stop` ends it otherwise.
            tokio::time::sleep(Duration::from_secs(15)).await;
            starts
        })
        .await;
    let error = result.expect_err("the service went on past records one sink lacks");
    let message = format!("{error:#}");
    assert!(message.contains("records lost"), "{message}");
    assert!(message.contains(&harness.topic), "{message}");
    let past: Vec<(i32, i64)> = (harness.failing.lock().unwrap().rows.iter())
        .filter(|(p, o)| *o >= starts[*p as usize])
        .cloned()
        .collect();
    assert!(past.is_empty(), "rows past the gap were written: {past:?}");
    assert!(harness.gap(&starts) > 0);
    assert_eq!(
        harness.lost_metric(),
        harness.gap(&starts),
        "the gap is counted"
    );
}

/// The same with `on_lost_records: skip`: the gap is reported and counted once, and the
/// sink writes on from the log start, every later record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_skip_a_gap_is_reported_and_the_sink_writes_on() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 100, max_age: 300ms }\n    on_lost_records: skip\n")
            .await;
    let harness = Arc::new(harness);
    let (result, (starts, after)) = Arc::clone(&harness)
        .run(loaded, route, |h, stop| async move {
            let starts = h.outage_then_retention().await;
            // Past the periodic check: the gap is seen while the sink is still down.
            tokio::time::sleep(Duration::from_secs(6)).await;
            h.mode.store(UP, Ordering::SeqCst);
            let after = h.produce(3600, 300, 300).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            let has_after = || {
                let rows = h.failing.lock().unwrap().rows.clone();
                after.iter().all(|r| rows.contains(r))
            };
            while !has_after() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.send(true).unwrap();
            (starts, after)
        })
        .await;
    result.unwrap();
    let failing = exactly_once("the failing sink", &harness.failing.lock().unwrap().rows);
    assert!(
        after.iter().all(|r| failing.contains(r)),
        "the records after the gap"
    );
    let healthy = exactly_once("the healthy sink", &harness.healthy.lock().unwrap().rows);
    assert_eq!(healthy.len(), 3900);
    assert!(harness.gap(&starts) > 0);
    assert_eq!(harness.lost_metric(), harness.gap(&starts), "counted once");
}

/// A sink that cannot say where it stands when partitions are assigned: nothing can be
/// checked against the log, so the partitions are refused and the service stops (issue
/// 16, item 6: they used to start at the group offset, unchecked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_whose_sinks_cannot_say_where_they_stand_are_refused() {
    let (harness, loaded, route) =
        Harness::new("    batch: { max_rows: 100, max_age: 300ms }\n").await;
    harness.mode.store(UNREADABLE, Ordering::SeqCst);
    let harness = Arc::new(harness);
    let (result, _) = Arc::clone(&harness)
        .run(loaded, route, |h, stop| async move {
            let _stop = stop;
            h.produce(0, 300, 300).await;
            // The loop must stop by itself meanwhile; dropping `_stop` ends it otherwise.
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
    let error = result.expect_err("partitions were consumed without any check");
    let message = format!("{error:#}");
    assert!(message.contains(&harness.topic), "{message}");
    assert_eq!(harness.rows(&harness.failing), 0);
    assert_eq!(harness.rows(&harness.healthy), 0);
}
