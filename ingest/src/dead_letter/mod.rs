//! Records that fail to decode are produced to a dead-letter topic, untouched, with
//! the reason and their origin in headers. Their offsets are committed only after the
//! dead-letter topic acknowledged them, so a bad record is never silently lost.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::decode::Rejected;

pub struct DeadLetters {
    producer: FutureProducer,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig) -> rdkafka::error::KafkaResult<Self> {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        // Security settings apply to this client too; consumer-only keys would warn.
        for (k, v) in &kafka.properties {
            if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
                config.set(k, v);
            }
        }
        Ok(Self {
            producer: config
                .create()
                .map_err(crate::consumer::redact_config_error)?,
        })
    }

    /// Produces every record and waits until all are acknowledged.
    pub async fn send(&self, topic: &str, route: &str, records: &[Rejected]) -> anyhow::Result<()> {
        let deliveries = records.iter().map(|r| {
            let partition = r.partition.to_string();
            let offset = r.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "ingest.error",
                    value: Some(r.error.as_str()),
                })
                .insert(Header {
                    key: "ingest.route",
                    value: Some(route),
                })
                .insert(Header {
                    key: "ingest.source.topic",
                    value: Some(r.topic.as_str()),
                })
                .insert(Header {
                    key: "ingest.source.partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "ingest.source.offset",
                    value: Some(offset.as_str()),
                });
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key.as_slice());
            }
            if let Some(payload) = &r.payload {
                record = record.payload(payload.as_slice());
            }
            if let Some(ts) = r.timestamp {
                record = record.timestamp(ts);
            }
            // Waits for room when the producer queue is full.
            self.producer
                .send(record, Timeout::After(Duration::from_secs(60)))
        });
        for result in futures::future::join_all(deliveries).await {
            if let Err((e, _)) = result {
                anyhow::bail!("dead-letter topic `{topic}`: {e}");
            }
        }
        Ok(())
    }

    pub fn flush(&self) {
        let _ = rdkafka::producer::Producer::flush(
            &self.producer,
            Timeout::After(Duration::from_secs(10)),
        );
    }
}
