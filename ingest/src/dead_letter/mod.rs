//! The dead-letter topic, written like a sink: exactly once per source position.
//!
//! A bad record goes there untouched (key, value, its own headers) with ours saying why
//! and where from (`headers.rs`), before any lane can count its offset as done. Every
//! dead letter of one source partition goes to one partition of the topic
//! ([`partition_for`]), so what the topic holds for a source partition can be read
//! back from one place and in order; [`ledger`] keeps it and says what not to send
//! again, the pipeline (`pipeline/dead_letter.rs`) sends, waits and retries. `replay.rs`
//! brings dead letters back once a fix is in, `show.rs` counts them.

pub mod headers;
pub mod ledger;
pub mod replay;
pub mod scan;
pub mod show;

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::decode::Rejected;

pub use ledger::{Hint, Ledger};

/// How long a dead letter may wait for the topic before its send fails (and the
/// pipeline reads back what landed and sends the rest again).
const SEND_TIMEOUT_MS: &str = "30000";

/// The broker settings and credentials of `kafka`, for a client of our own.
pub fn client_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    // Security settings apply to these clients too; consumer-only keys would warn.
    for (k, v) in &kafka.properties {
        if k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.") {
            config.set(k, v);
        }
    }
    config
}

/// The partition of a dead-letter topic of `partitions` partitions that holds the
/// dead letters of source partition `partition` of `topic`. FNV-1a by hand: the
/// mapping must stay the same across releases and machines, which std's hasher does
/// not promise, and it is eight lines.
pub fn partition_for(topic: &str, partition: i32, partitions: i32) -> i32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain([0]).chain(partition.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % partitions.max(1) as u64) as i32
}

/// Why a send failed, as the pipeline acts on it.
#[derive(Debug)]
pub enum SendError {
    /// The topic will never take this record as it is configured (too large for it).
    Refused(String),
    /// The topic is unreachable, unknown or refuses for now (an ACL): wait and retry.
    Unavailable(String),
}

pub struct DeadLetters {
    producer: FutureProducer,
    group: String,
}

impl DeadLetters {
    pub fn new(kafka: &KafkaConfig) -> rdkafka::error::KafkaResult<Self> {
        let mut config = client_config(kafka);
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", SEND_TIMEOUT_MS)
            // The topic decides what is too large (a dead letter is as large as the
            // record plus our headers, and a `too_large` one larger than the route's
            // limit), not a client default: librdkafka's ceiling.
            .set("message.max.bytes", "1000000000");
        Ok(Self {
            producer: config
                .create()
                .map_err(crate::consumer::redact_config_error)?,
            group: kafka.group_id.clone(),
        })
    }

    /// Produces every record to partition `partition` of `topic`, in order; per
    /// record, where it landed or why not.
    pub async fn send(
        &self,
        topic: &str,
        partition: i32,
        route: &str,
        records: &[&Rejected],
    ) -> Vec<Result<i64, SendError>> {
        let deliveries = records.iter().map(|r| {
            let headers = headers::for_letter(r, route, &self.group, &[]);
            let record = record_to(
                (topic, partition),
                r.key.as_deref(),
                r.payload.as_deref(),
                r.timestamp,
                headers,
            );
            // Waits for room when the producer queue is full.
            self.producer
                .send(record, Timeout::After(Duration::from_secs(60)))
        });
        futures::future::join_all(deliveries)
            .await
            .into_iter()
            .zip(records)
            .map(|(result, r)| match result {
                Ok(delivery) => Ok(delivery.offset),
                Err((e, _)) => Err(classify(topic, r, &e)),
            })
            .collect()
    }

    /// The client to read metadata with.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn flush(&self) {
        let _ = rdkafka::producer::Producer::flush(
            &self.producer,
            Timeout::After(Duration::from_secs(10)),
        );
    }
}

/// A record for `partition` of `topic`: key, value and timestamp as given.
pub fn record_to<'r>(
    (topic, partition): (&'r str, i32),
    key: Option<&'r [u8]>,
    value: Option<&'r [u8]>,
    timestamp: Option<i64>,
    headers: rdkafka::message::OwnedHeaders,
) -> FutureRecord<'r, [u8], [u8]> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    if let Some(ts) = timestamp {
        record = record.timestamp(ts);
    }
    record
}

fn classify(topic: &str, record: &Rejected, e: &KafkaError) -> SendError {
    let size =
        record.key.as_ref().map_or(0, Vec::len) + record.payload.as_ref().map_or(0, Vec::len);
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            SendError::Refused(format!(
                "dead-letter topic `{topic}` refuses the record {}/{}@{} as too large ({size} bytes of key and value, plus headers): raise the topic's max.message.bytes, or lower the route's max_message_bytes ({e})",
                record.topic, record.partition, record.offset
            ))
        }
        // An idempotent producer's fatal error (a missing IdempotentWrite right, a
        // broken sequence) does not heal by waiting.
        Some(RDKafkaErrorCode::Fatal) => SendError::Refused(format!(
            "the dead-letter producer for `{topic}` failed for good: {e}"
        )),
        _ => SendError::Unavailable(format!("dead-letter topic `{topic}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_partition_maps_to_the_same_dead_letter_partition_everywhere() {
        // Pinned values: the mapping must never change between releases, or a restart
        // would read the wrong partition back and send letters again.
        assert_eq!(partition_for("events", 0, 6), partition_for("events", 0, 6));
        let spread: std::collections::BTreeSet<i32> =
            (0..64).map(|p| partition_for("events", p, 6)).collect();
        assert_eq!(
            spread.len(),
            6,
            "64 source partitions use every dead-letter partition"
        );
        assert_eq!(
            [0, 1, 2, 3].map(|p| partition_for("events", p, 4)),
            PINNED,
            "the mapping changed"
        );
        assert_eq!(partition_for("events", 3, 1), 0);
        assert_eq!(partition_for("events", 3, 0), 0);
    }

    const PINNED: [i32; 4] = [0, 3, 2, 1];

    #[test]
    fn a_letter_keeps_the_records_own_headers_and_ours_read_back_as_the_last() {
        let record = Rejected {
            topic: "events".into(),
            partition: 2,
            offset: 41,
            timestamp: Some(1_700_000_000_000),
            key: Some(b"k".to_vec()),
            payload: Some(b"{".to_vec()),
            headers: vec![
                ("origin".into(), Some(b"web".to_vec())),
                ("ingest.replay.of".into(), Some(b"0@7/dl".to_vec())),
                ("empty".into(), None),
            ],
            schema_id: Some(12),
            class: crate::decode::ErrorClass::Undecodable,
            error: "invalid JSON".into(),
        };
        let produced = headers::for_letter(&record, "r", "g", &[]);
        use rdkafka::message::Headers as _;
        let pairs: Vec<(String, Option<Vec<u8>>)> = produced
            .iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            &pairs[..3],
            &record.headers[..],
            "the record's own come first, as they were"
        );
        let value = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(
            value(headers::ERROR_CLASS).as_deref(),
            Some(&b"undecodable"[..])
        );
        assert_eq!(value(headers::SOURCE_OFFSET).as_deref(), Some(&b"41"[..]));
        assert_eq!(value(headers::SCHEMA_ID).as_deref(), Some(&b"12"[..]));
        assert_eq!(value(headers::GROUP).as_deref(), Some(&b"g"[..]));
        let time = String::from_utf8(value(headers::TIME).unwrap()).unwrap();
        assert!(headers::parse_time(&time).is_some(), "{time}");
    }
}
