//! Ownership checks against the consumer group, asked for by sinks right before a write.

use std::sync::Arc;
use std::time::Duration;

use super::{Committed, Consumer, SharedCommitted};
use crate::protocol::Partition;
use ingest_sink_api::{Fence, Fenced, OffsetMap, Partitions};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Proves ownership three ways: librdkafka has not declared the assignment lost (it
/// does so as soon as it sees its session expired, e.g. right after a SIGSTOP ends),
/// the partitions are in its current assignment, and the group coordinator accepts a
/// synchronous commit of the offsets already committed (a commit carries the member id,
/// so Kafka refuses a member the group has removed with `UNKNOWN_MEMBER_ID`). A commit
/// refused with `ILLEGAL_GENERATION` or `REBALANCE_IN_PROGRESS` only says a rebalance
/// is under way: the member is still in the group, and partitions that move are revoked
/// here (and seen by the first checks) before any other member gets them, so ownership
/// is "not confirmed yet" and the write is retried, never dropped as lost (measured on
/// Kafka 4.4: dropping it left a gap in partitions the member kept).
pub struct GroupFence {
    consumer: Arc<Consumer>,
    /// What this instance committed last, per partition (the probe commits it again,
    /// so the group offset does not move).
    committed: SharedCommitted,
}

impl GroupFence {
    pub fn new(consumer: Arc<Consumer>, committed: SharedCommitted) -> Self {
        Self {
            consumer,
            committed,
        }
    }
}

#[async_trait::async_trait]
impl Fence for GroupFence {
    async fn check(&self, partitions: &OffsetMap, epoch: u64) -> Result<Vec<Partition>, Fenced> {
        // Partitions revoked since the batch started are gone even if assigned again.
        let mut gone = self
            .consumer
            .context()
            .ownership
            .revoked_since(epoch, partitions);
        let mut rest = partitions.clone();
        let gone_set: Partitions = gone.iter().collect();
        rest.retain(|t, p| !gone_set.contains(t, p));
        if rest.is_empty() {
            return Ok(gone);
        }
        let consumer = Arc::clone(&self.consumer);
        let committed = self.committed.lock().expect("offsets poisoned").clone();
        let partitions = rest;
        let probe = tokio::task::spawn_blocking(move || probe(&consumer, &partitions, &committed));
        // A synchronous commit has no timeout of its own (it waits for the coordinator).
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(result)) => result.map(|unassigned| {
                gone.extend(unassigned);
                gone
            }),
            Ok(Err(e)) => Err(Fenced::unconfirmed(format!("ownership check failed: {e}"))),
            Err(_) => Err(Fenced::unconfirmed(
                "the group coordinator did not confirm ownership in time",
            )),
        }
    }

    fn generation(&self) -> u64 {
        self.consumer.context().ownership.generation()
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions no longer in the assignment; fails if the rest cannot be confirmed.
fn probe(
    consumer: &Consumer,
    partitions: &OffsetMap,
    committed: &Committed,
) -> Result<Vec<Partition>, Fenced> {
    if consumer.assignment_lost() {
        return Err(Fenced::lost(
            "the group session expired: the assignment is lost",
        ));
    }
    let assignment = consumer
        .assignment()
        .map_err(|e| Fenced::unconfirmed(format!("cannot read the assignment: {e}")))?;
    let mut again = OffsetMap::default();
    let mut unassigned = Vec::new();
    for (topic, partition, _) in partitions.iter() {
        if assignment.find_partition(topic, partition).is_none() {
            unassigned.push(Partition::new(topic, partition));
            continue;
        }
        if let Some(next) = committed.offsets.get(topic, partition) {
            again.advance(topic, partition, next);
        }
    }
    if again.is_empty() {
        return Ok(unassigned);
    }
    let tpl = committed
        .list(&again)
        .map_err(|e| Fenced::unconfirmed(format!("cannot build the commit: {e}")))?;
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => Ok(unassigned),
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::IllegalGeneration | RDKafkaErrorCode::RebalanceInProgress),
        )) => Err(Fenced::unconfirmed(format!(
            "the consumer group is rebalancing ({code:?}): ownership not confirmed yet"
        ))),
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::UnknownMemberId | RDKafkaErrorCode::FencedInstanceId),
        )) => Err(Fenced::lost(format!(
            "the consumer group refused this member ({code:?}): another instance owns the partitions"
        ))),
        Err(e) => Err(Fenced::unconfirmed(format!(
            "cannot confirm partition ownership with the group coordinator: {e}"
        ))),
    }
}
