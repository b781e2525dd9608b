//! What this member owned when, shared by the rebalance callback, the main loop and the
//! sinks' fences: revocations in order (see [`Revocations`]) and the sink writes under
//! way per partition. A revocation waits for writes under way on its partitions, so
//! the next owner never reads a sink's position while this member is still adding to
//! it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ingest_sink_api::OffsetMap;

use crate::protocol::Partition;
use crate::protocol::Revocations;

#[derive(Default)]
pub struct Ownership {
    revocations: Mutex<Revocations>,
    /// The generation: rebalance callbacks seen (assignments and revocations).
    generation: AtomicU64,
    writing: Mutex<HashMap<Partition, usize>>,
    write_done: Condvar,
}

impl Ownership {
    /// The current epoch (see [`Revocations::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.revocations.lock().expect("ownership poisoned").epoch()
    }

    /// Counts a rebalance callback (called for assignments and revocations alike).
    pub fn rebalanced(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation: how many rebalance callbacks this member has seen. A sink that
    /// lost a partition to another writer leaves it alone until this moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records a revocation (called from the rebalance callback, before the partitions
    /// are given up).
    pub fn revoke(&self, partitions: &[Partition]) {
        self.revocations
            .lock()
            .expect("ownership poisoned")
            .revoke(partitions);
    }

    /// The partitions of `partitions` revoked after `epoch`.
    pub fn revoked_since(&self, epoch: u64, partitions: &OffsetMap) -> Vec<Partition> {
        self.revocations
            .lock()
            .expect("ownership poisoned")
            .revoked_since(epoch, partitions)
    }

    /// Marks a write of these partitions as under way until the guard is dropped.
    pub fn writing(&self, partitions: &OffsetMap) -> WriteGuard<'_> {
        let keys: Vec<Partition> = partitions
            .iter()
            .map(|(t, p, _)| Partition::new(t, p))
            .collect();
        let mut writing = self.writing.lock().expect("ownership poisoned");
        for key in &keys {
            *writing.entry(key.clone()).or_default() += 1;
        }
        WriteGuard { owner: self, keys }
    }

    /// Waits until no write of these partitions is under way; false on timeout.
    pub fn wait_for_writes(&self, partitions: &[Partition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut writing = self.writing.lock().expect("ownership poisoned");
        loop {
            if !partitions
                .iter()
                .any(|k| writing.get(k).is_some_and(|n| *n > 0))
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            writing = self
                .write_done
                .wait_timeout(writing, left)
                .expect("ownership poisoned")
                .0;
        }
    }
}

/// A write under way; dropping it (the write finished, failed or panicked) ends it.
pub struct WriteGuard<'a> {
    owner: &'a Ownership,
    keys: Vec<Partition>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut writing = self.owner.writing.lock().expect("ownership poisoned");
        for key in &self.keys {
            if let Some(n) = writing.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    writing.remove(key);
                }
            }
        }
        self.owner.write_done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(parts: &[i32]) -> OffsetMap {
        let mut m = OffsetMap::default();
        for p in parts {
            m.advance("t", *p, 1);
        }
        m
    }

    #[test]
    fn a_revocation_waits_for_writes_of_its_partitions() {
        let o = Ownership::default();
        let guard = o.writing(&map(&[2]));
        assert!(o.wait_for_writes(&[Partition::new("t", 3)], Duration::ZERO));
        assert!(!o.wait_for_writes(&[Partition::new("t", 2)], Duration::from_millis(10)));
        drop(guard);
        assert!(o.wait_for_writes(&[Partition::new("t", 2)], Duration::ZERO));
    }
}
