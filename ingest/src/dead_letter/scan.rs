//! Reading the dead-letter topic back: one partition from an offset (what the service
//! needs to know what it holds), or every partition (replay, show). Committed records
//! only (`read_committed`): a replay's transaction that did not commit is not there.
//! Blocking calls: run them off the async threads.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::headers::{self, Ours};
use crate::config::KafkaConfig;
use crate::decode::OriginalHeaders;

/// How long a read may go without getting further before it fails (and the caller
/// retries).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a read found, and where each partition's end was.
pub type Read = (Vec<Letter>, Vec<(i32, i64)>);

/// A record of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The original record's headers.
    pub headers: OriginalHeaders,
    pub ours: Ours,
}

/// Reads partitions it is given (no group, nothing committed): committed records only,
/// up to the end of the log as a read_uncommitted client sees it (a read_committed one
/// is told the last stable offset, which stops before letters appended after a replay's
/// open transaction).
pub struct Reader {
    committed: BaseConsumer,
    ends: BaseConsumer,
}

impl Reader {
    pub fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let client = |isolation: &str| -> anyhow::Result<BaseConsumer> {
            let mut config = super::client_config(kafka);
            config
                .set("group.id", "ingest-dead-letter-reader")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("isolation.level", isolation)
                .set("auto.offset.reset", "earliest");
            config
                .create()
                .map_err(crate::consumer::redact_config_error)
                .map_err(Into::into)
        };
        Ok(Self {
            committed: client("read_committed")?,
            ends: client("read_uncommitted")?,
        })
    }

    /// The number of partitions of `topic`.
    pub fn partition_count(&self, topic: &str) -> anyhow::Result<i32> {
        let metadata = self
            .ends
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("dead-letter topic `{topic}`: {e}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty());
        match found {
            Some(t) => Ok(t.partitions().len() as i32),
            None => anyhow::bail!("dead-letter topic `{topic}` does not exist"),
        }
    }

    /// The records of `topic`'s partitions from the given offsets (`None`: the start)
    /// to their end as it is now, `keep` choosing which to return. Returns them and
    /// each partition's end. Fails when reading makes no progress for a while (an open
    /// transaction that does not end, the broker gone).
    pub fn read(
        &self,
        topic: &str,
        from: &[(i32, Option<i64>)],
        keep: &dyn Fn(&Ours) -> bool,
    ) -> anyhow::Result<Read> {
        let consumer = &self.committed;
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        let mut open = Vec::new();
        for (partition, start) in from {
            let (low, high) = self
                .ends
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("dead-letter topic `{topic}` [{partition}]: {e}"))?;
            ends.push((*partition, high));
            let start = start.unwrap_or(low).max(low);
            if start < high {
                assignment.add_partition_offset(topic, *partition, Offset::Offset(start))?;
                open.push((*partition, high));
            }
        }
        let mut letters = Vec::new();
        if open.is_empty() {
            return Ok((letters, ends));
        }
        consumer.assign(&assignment)?;
        let mut progress = Instant::now();
        while !open.is_empty() {
            if progress.elapsed() > STALL_TIMEOUT {
                consumer.unassign()?;
                anyhow::bail!(
                    "reading dead-letter topic `{topic}` back made no progress for {STALL_TIMEOUT:?}"
                );
            }
            if let Some(message) = consumer.poll(Duration::from_millis(200)) {
                let message =
                    message.map_err(|e| anyhow::anyhow!("dead-letter topic `{topic}`: {e}"))?;
                progress = Instant::now();
                let (own, ours) = headers::split(message.headers());
                if keep(&ours) {
                    letters.push(Letter {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                        headers: own,
                        ours,
                    });
                }
            }
            // Past the last committed record there may be only transaction markers or
            // aborted records: the position tells where reading stands.
            let position = consumer.position()?;
            open.retain(|(partition, end)| {
                let at = position
                    .find_partition(topic, *partition)
                    .and_then(|e| e.offset().to_raw());
                at.is_none_or(|at| at < *end)
            });
        }
        consumer.unassign()?;
        Ok((letters, ends))
    }
}
