//! `ingest produce`: a load generator writing schema-shaped events to a topic at a
//! given rate, for the demo, the tests and the benchmarks.

mod generate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_schema::SchemaRef;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

pub use generate::EventGenerator;

pub struct ProduceOptions {
    pub brokers: String,
    pub topic: String,
    pub schema: SchemaRef,
    pub count: u64,
    /// Events per second; None for as fast as the broker takes them.
    pub rate: Option<u64>,
    pub id_field: Option<String>,
    pub start_id: i64,
    pub seed: u64,
    /// Timestamps are the moment of production (for latency measurements).
    pub live_time: bool,
    pub properties: Vec<(String, String)>,
}

#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct CountingContext(Arc<Deliveries>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            self.0
                .first_error
                .lock()
                .expect("poisoned")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Produces `count` events and waits until every one is acknowledged.
pub fn produce(options: &ProduceOptions) -> anyhow::Result<Duration> {
    let deliveries = Arc::new(Deliveries::default());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "lz4");
    for (k, v) in &options.properties {
        config.set(k, v);
    }
    let producer: ThreadedProducer<CountingContext> = config
        .create_with_context(CountingContext(deliveries.clone()))
        .map_err(crate::consumer::redact_config_error)?;
    let mut generator = EventGenerator::new(
        options.schema.clone(),
        options.id_field.clone(),
        options.start_id,
        options.seed,
    );
    if options.live_time {
        generator = generator.with_live_time();
    }
    let started = Instant::now();
    let mut payload = Vec::with_capacity(1024);
    for sent in 0..options.count {
        if let Some(rate) = options.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        payload.clear();
        let id = generator.next_event(&mut payload);
        let key = id.to_string();
        let mut record = BaseRecord::to(&options.topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => anyhow::bail!("producing to `{}`: {e}", options.topic),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .expect("poisoned")
            .clone()
            .unwrap_or_default();
        anyhow::bail!(
            "{failed} of {} events were not delivered: {first}",
            options.count
        );
    }
    Ok(started.elapsed())
}
