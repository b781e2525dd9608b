//! A sink in an outage never holds back the healthy sink of its route, and once it is
//! back both hold every record exactly once (docs/exactly-once.md, "Per-sink lanes").
//!
//! Real Kafka, the real run loop; the two sinks are stand-ins: the shared ClickHouse
//! must not be stopped by a test, and what is tested is the loop's lanes around any
//! sink (which rows each sink got, and when), not a sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingest_sink_api::{
    BatchOverride, OffsetMap, PositionReader, Sink, SinkBatch, SinkError, WriteOutcome,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{FutureProducer, FutureRecord};

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

/// Writes into `held`, or fails with a retryable error while `down` is set (a sink
/// whose server is unreachable).
struct StandIn {
    name: &'static str,
    held: Arc<Mutex<Held>>,
    down: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Sink for StandIn {
    fn name(&self) -> &str {
        self.name
    }

    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        if self.down.load(Ordering::SeqCst) {
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
        Arc::new(HeldPositions(Arc::clone(&self.held)))
    }
}

struct HeldPositions(Arc<Mutex<Held>>);

#[async_trait::async_trait]
impl PositionReader for HeldPositions {
    async fn read(&self, wanted: &OffsetMap) -> Result<OffsetMap, SinkError> {
        let mut known = self.0.lock().unwrap().positions.clone();
        if !wanted.is_empty() {
            known.retain(|t, p| wanted.get(t, p).is_some());
        }
        Ok(known)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_does_not_stop_the_healthy_one() {
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
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
    // Both lanes flush at 100 rows or 300 ms; the config's sinks are replaced below.
    let text = format!(
        "kafka: {{ brokers: \"{brokers}\", group_id: \"shed-{unique}\" }}\n\
         clickhouse: {{ url: \"http://127.0.0.1:1\" }}\n\
         routes:\n  - topics: [\"{topic}\"]\n    schema: e.yaml\n    \
         batch: {{ max_rows: 100, max_age: 300ms }}\n    clickhouse: {{ table: e }}\n"
    );
    let loaded = load_str(&text, &dir.join("c.yaml"), &|_| None).unwrap();
    let failing = Arc::new(Mutex::new(Held::default()));
    let healthy = Arc::new(Mutex::new(Held::default()));
    let down = Arc::new(AtomicBool::new(true));
    let mut route = RouteBatch::new(loaded.routes[0].clone(), 0).unwrap();
    route.add_sink(
        Box::new(StandIn {
            name: "failing",
            held: Arc::clone(&failing),
            down: Arc::clone(&down),
        }),
        &BatchOverride::default(),
    );
    route.add_sink(
        Box::new(StandIn {
            name: "healthy",
            held: Arc::clone(&healthy),
            down: Arc::new(AtomicBool::new(false)),
        }),
        &BatchOverride::default(),
    );

    let consumer = Arc::new(consumer::create(&loaded.config.kafka).unwrap());
    let (stop, shutdown) = watch::channel(false);
    // The loop is not `Send`: it runs here, the load and the checks in a task (which
    // stops the loop when done, or when it panics by dropping `stop`).
    let driver = tokio::spawn(drive(topic, brokers, stop, failing, healthy, down));
    consume::consume(
        loaded,
        Health::new(),
        shutdown,
        consumer,
        Arc::new(Mutex::new(OffsetMap::default())),
        vec![route],
    )
    .await
    .unwrap();
    driver.await.unwrap();
}

async fn drive(
    topic: String,
    brokers: String,
    stop: watch::Sender<bool>,
    failing: Arc<Mutex<Held>>,
    healthy: Arc<Mutex<Held>>,
    down: Arc<AtomicBool>,
) {
    // A steady load: 50 records every 100 ms for 6 s, over 3 partitions.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut produced = Vec::new();
    for step in 0..60 {
        let sends = (0..50).map(|i| {
            let payload = format!("{{\"id\": {}}}", step * 50 + i);
            let key = format!("{i}");
            let producer = &producer;
            let topic = &topic;
            async move {
                let record = FutureRecord::to(topic).payload(&payload).key(&key);
                producer.send(record, Duration::from_secs(10)).await
            }
        });
        for delivered in futures::future::join_all(sends).await {
            let delivered = delivered.unwrap();
            produced.push((delivered.partition, delivered.offset));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produced.sort();
    let total = produced.len();

    // The healthy sink keeps its cadence although the other one holds far more than
    // twice its limits by now.
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthy.lock().unwrap().rows.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let held = healthy.lock().unwrap();
        let since_last = held.flushes.last().map(Instant::elapsed);
        assert_eq!(
            held.rows.len(),
            total,
            "the healthy sink stopped at {} of {total} rows while the other sink was down \
             ({} flushes, the last {since_last:?} ago)",
            held.rows.len(),
            held.flushes.len(),
        );
        assert!(failing.lock().unwrap().rows.is_empty());
    }

    // The failing sink comes back: it catches up from its own positions, and neither
    // sink holds a record twice or misses one.
    down.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(40);
    while failing.lock().unwrap().rows.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a duplicate, if any, the time to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    for (what, held) in [
        ("the healthy sink", &healthy),
        ("the failing sink", &failing),
    ] {
        let rows = exactly_once(what, &held.lock().unwrap().rows);
        assert_eq!(rows, produced, "{what} does not hold every record");
    }
}
