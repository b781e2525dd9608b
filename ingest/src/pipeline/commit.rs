//! Step 6, Kafka commit: the commit of what every sink of a route made durable (which offsets
//! may be committed is the protocol's rule, see `crate::protocol`).

use ingest_sink_api::OffsetMap;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};

use super::Pipeline;

impl Pipeline<'_> {
    /// Commits what the protocol answered (the furthest position every sink of the
    /// route reached, per partition of a finished write).
    pub(super) fn commit(&mut self, offsets: &OffsetMap) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        *self.committed.lock().expect("offsets poisoned") = self.offsets.committed().clone();
        tracing::debug!(?offsets, "committing offsets");
        let tpl = offset_list(offsets)?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // A commit can fail while a rebalance is under way; the data is durable in
            // the sinks and the next commit (or the new owner) moves the offset on.
            tracing::warn!(error = %e, "offset commit failed");
        }
        Ok(())
    }

    /// At shutdown: async commits may still be in flight, so everything is committed
    /// once more, and waited for.
    pub(super) fn final_commit(&mut self) -> anyhow::Result<()> {
        let last = self.offsets.final_commit();
        if last.is_empty() {
            return Ok(());
        }
        let tpl = offset_list(&last)?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed");
        }
        Ok(())
    }
}

fn offset_list(offsets: &OffsetMap) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets.iter() {
        tpl.add_partition_offset(topic, partition, Offset::Offset(next))?;
    }
    Ok(tpl)
}
