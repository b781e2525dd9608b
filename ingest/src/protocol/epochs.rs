//! Ownership epochs: revocations in order, one epoch each.
//!
//! A batch remembers the epoch it was started in. Rows of a partition revoked since
//! then must not be written, and their offsets must not count as durable, even if the
//! partition came back (sticky assignment): the new owner, or this member after the
//! re-assignment, reads them again from the sinks' positions.

use std::collections::VecDeque;

use ingest_sink_api::{OffsetMap, Partitions};

use super::Partition;

/// Revocations remembered; a batch older than all of them counts as revoked.
const KEPT: usize = 10_000;

#[derive(Debug, Default, Clone)]
pub struct Revocations {
    epoch: u64,
    log: VecDeque<(u64, Partitions)>,
}

impl Revocations {
    /// The current epoch: a batch started now is valid while none of its partitions
    /// is revoked after it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records a revocation: a new epoch.
    pub fn revoke(&mut self, partitions: &[Partition]) {
        self.epoch += 1;
        self.log
            .push_back((self.epoch, partitions.iter().collect()));
        if self.log.len() > KEPT {
            self.log.pop_front();
        }
    }

    /// The partitions of `partitions` revoked after `epoch`.
    pub fn revoked_since(&self, epoch: u64, partitions: &OffsetMap) -> Vec<Partition> {
        let forgotten = self
            .log
            .front()
            .is_some_and(|(first, _)| *first > epoch + 1);
        partitions
            .iter()
            .filter(|(topic, partition, _)| {
                forgotten
                    || self
                        .log
                        .iter()
                        .any(|(e, revoked)| *e > epoch && revoked.contains(topic, *partition))
            })
            .map(|(topic, partition, _)| Partition::new(topic, partition))
            .collect()
    }
}
