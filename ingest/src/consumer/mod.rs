//! The Kafka consumer: a group member with manual offsets and cooperative rebalancing.

mod committed;
mod continuity;
mod fence;
mod log_bounds;
mod ownership;
mod readers;
mod resume;

pub use committed::{Committed, SharedCommitted};
pub use continuity::{Continuity, Step};
pub use fence::GroupFence;
pub use log_bounds::{Bounds, LogBounds, Lost, Refused, Why, cached_bounds, refusal};
pub use ownership::Ownership;
pub use readers::PositionReaders;
pub use resume::{Assignment, Resume};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer as _, ConsumerContext, Rebalance, RebalanceProtocol, StreamConsumer,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::protocol::Partition;

/// Partitions gained or lost, reported by librdkafka inside `poll` and handled by the
/// main loop right after (the callback itself must not block on sink I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
    /// Assigned partitions whose sinks hold positions past the log end (or could not be
    /// checked): the service must stop before it consumes anything of them.
    Refused(Vec<Refused>),
    /// What the check of newly assigned partitions found: where each starts, what every
    /// sink holds, and gaps Kafka's retention left in single sinks (before `Assigned`).
    Checked(Assignment),
}

#[derive(Default)]
pub struct IngestContext {
    events: Mutex<Vec<RebalanceEvent>>,
    /// Set with each event, so the per-message check is one atomic load.
    pending: AtomicBool,
    /// Start offsets of assigned partitions from the sinks' positions, once set.
    resume: OnceLock<Resume>,
    /// Revocations and writes under way, for fencing.
    pub ownership: Ownership,
}

/// How long a revocation waits for a sink write attempt under way on its partitions
/// (below librdkafka's default `max.poll.interval.ms` of 300 s). A failing sink's backoff
/// between attempts is not waited for (see `pipeline::write::write_with_retry`).
const REVOKE_WAIT: Duration = Duration::from_secs(60);

impl IngestContext {
    /// From now on, assigned partitions start at their sinks' positions.
    pub fn set_resume(&self, resume: Resume) {
        let _ = self.resume.set(resume);
    }

    fn push_event(&self, event: RebalanceEvent) {
        self.events
            .lock()
            .expect("rebalance events poisoned")
            .push(event);
        self.pending.store(true, Ordering::Release);
    }

    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.events.lock().expect("rebalance events poisoned"))
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| Partition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for IngestContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }
}

/// librdkafka's log lines as tracing events, at their level.
fn forward_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as Level;
    match level {
        Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        Level::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Level::Notice | Level::Info => {
            tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        Level::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}

impl ConsumerContext for IngestContext {
    /// librdkafka's default handling, with the start offsets of assigned partitions
    /// taken from the sinks first.
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        self.ownership.rebalanced();
        if assign && let Some(resume) = self.resume.get() {
            let mut assignment = resume.set_start_offsets(tpl, base);
            let refused = std::mem::take(&mut assignment.refused);
            if !refused.is_empty() {
                for partition in &refused {
                    tracing::error!("{partition}");
                }
                self.push_event(RebalanceEvent::Refused(refused));
            }
            self.push_event(RebalanceEvent::Checked(assignment));
        }
        if !assign {
            // From now on fences refuse these partitions; then let writes already past
            // their fence finish before the partitions can go to another member.
            let revoked = partitions(tpl);
            self.ownership.revoke(&revoked);
            let done = blocking(|| self.ownership.wait_for_writes(&revoked, REVOKE_WAIT));
            if !done {
                tracing::warn!(partitions = ?revoked, "giving partitions up while a sink write on them is still under way");
            }
        }
        let event = if assign {
            Rebalance::Assign(tpl)
        } else if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            Rebalance::Revoke(tpl)
        } else {
            Rebalance::Error(rdkafka::error::KafkaError::Rebalance(err.into()))
        };
        self.pre_rebalance(base, &event);
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        // As librdkafka's default: anything but an assignment (a revoke, an error)
        // gives the partitions up.
        let result = match (assign, cooperative) {
            (true, true) => base.incremental_assign(tpl),
            (true, false) => base.assign(tpl),
            (false, true) => base.incremental_unassign(tpl),
            (false, false) => base.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "applying the rebalance failed");
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        tracing::info!(?event, "rebalance");
        self.push_event(event);
    }
}

pub type Consumer = StreamConsumer<IngestContext>;

/// Runs blocking work from the rebalance callback, which librdkafka calls on the thread
/// polling the consumer: on a multi-threaded runtime worker the worker's other tasks
/// move elsewhere meanwhile.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// librdkafka settings: ours first, then the user's `kafka.properties` on top.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.partition.eof", "false")
        // When the local queue is full, librdkafka waits this long before fetching again
        // (default 1 s): with a consumer that decodes slower than the broker serves, the
        // queue runs dry and the pipeline idles for most of that second.
        .set("fetch.queue.backoff.ms", "20")
        // New topics matching a pattern are found by this refresh (default 5 minutes).
        .set(
            "topic.metadata.refresh.interval.ms",
            kafka.topic_discovery_interval.as_millis().to_string(),
        );
    for (k, v) in &kafka.properties {
        config.set(k, v);
    }
    config
}

pub fn create(kafka: &KafkaConfig) -> rdkafka::error::KafkaResult<Consumer> {
    client_config(kafka)
        .create_with_context(IngestContext::default())
        .map_err(redact_config_error)
}

/// Whether the brokers refused our credentials (SASL): retrying with the same ones
/// cannot succeed, so the service stops with this error instead of waiting.
pub fn is_authentication_failure(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode;
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// The context of `validate --connect`'s probe: keeps librdkafka's first failure
/// that says why the brokers are unreachable (a refused login, an unknown CA), since
/// the metadata request itself only fails with "broker transport failure".
#[derive(Default)]
pub struct ProbeContext {
    first_failure: Mutex<Option<String>>,
}

impl ProbeContext {
    pub fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        if matches!(
            level,
            Level::Emerg | Level::Alert | Level::Critical | Level::Error
        ) && fac == "FAIL"
            && let Ok(mut first) = self.first_failure.lock()
            && first.is_none()
        {
            // "[thrd:sasl_ssl://host:9094/bootstrap]: sasl_ssl://host:9094/...: why"
            let message = match message.strip_prefix("[thrd:") {
                Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
                None => message,
            };
            *first = Some(message.to_string());
        }
        forward_log(level, fac, message);
    }
}

impl ConsumerContext for ProbeContext {}

/// librdkafka's refusal of a setting prints the key and its value. The value is
/// masked when it may be a secret: under a sensitive key (`sasl.password`, ...), or
/// under one librdkafka does not know (perhaps a misspelt `sasl.password`).
pub fn redact_config_error(error: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use ingest_sink_api::secret::{MASK, is_sensitive_key};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;
    match error {
        KafkaError::ClientConfig(code, description, key, value)
            if is_sensitive_key(&key) || code == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN =>
        {
            let description = if value.is_empty() {
                description
            } else {
                description.replace(&value, MASK)
            };
            KafkaError::ClientConfig(code, description, key, MASK.into())
        }
        other => other,
    }
}
