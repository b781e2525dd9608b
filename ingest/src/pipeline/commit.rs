//! Step 6, Kafka commit: the commit of what every sink of a route made durable (which offsets
//! may be committed is the protocol's rule, see `crate::protocol`), each with the
//! dead-letter hint of its partition (`pipeline/dead_letter.rs`).

use ingest_sink_api::OffsetMap;
use rdkafka::consumer::{CommitMode, Consumer as _};

use super::Pipeline;

impl Pipeline<'_> {
    /// Commits what the protocol answered (the furthest position every sink of the
    /// route reached, per partition of a finished write).
    pub(super) fn commit(&mut self, offsets: &OffsetMap) -> anyhow::Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let notes = self.dead_letter_notes(offsets);
        let tpl = {
            let mut shared = self.committed.lock().expect("offsets poisoned");
            shared.offsets = self.offsets.committed().clone();
            shared.notes.extend(notes);
            shared.list(offsets)?
        };
        tracing::debug!(?offsets, "committing offsets");
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
        let tpl = self
            .committed
            .lock()
            .expect("offsets poisoned")
            .list(&last)?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(error = %e, "final offset commit failed");
        }
        Ok(())
    }
}
