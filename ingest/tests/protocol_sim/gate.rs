//! One writer's side of the ClickHouse insert gates, as `sinks/clickhouse/src/gate.rs`
//! does it: a writer keeps one gate for the partitions it writes; taking a partition
//! registers a new, later gate and closes the earlier gates of those partitions; a
//! writer whose gate was closed leaves the partitions registered after it alone until
//! its consumer rebalances.

use std::collections::{BTreeMap, BTreeSet};

/// The server side: which gates were registered for which partition, and which exist.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    registered: Vec<(u64, i32)>,
    closed: BTreeSet<u64>,
    next: u64,
}

impl Registry {
    fn latest(&self, partition: i32) -> Option<u64> {
        self.registered
            .iter()
            .filter(|(_, p)| *p == partition)
            .map(|(t, _)| *t)
            .max()
    }

    pub fn is_open(&self, token: u64) -> bool {
        !self.closed.contains(&token)
    }
}

#[derive(Debug, Clone)]
struct Gate {
    token: u64,
    generation: u64,
    admitted: BTreeSet<i32>,
}

/// A writer's gate state (lost when the writer crashes).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    current: Option<Gate>,
    closed: Option<Gate>,
    lost: BTreeMap<i32, u64>,
}

impl Writer {
    /// Admits `partitions`: the gate token to insert through and the refused ones.
    pub fn admit(
        &mut self,
        registry: &mut Registry,
        partitions: &[i32],
        generation: u64,
    ) -> (Option<u64>, Vec<i32>) {
        self.lost.retain(|_, g| *g == generation);
        if let Some(closed) = self.closed.take()
            && closed.generation == generation
        {
            for p in &closed.admitted {
                if registry.latest(*p).is_some_and(|t| t > closed.token) {
                    self.lost.insert(*p, generation);
                }
            }
        }
        let refused: Vec<i32> = partitions
            .iter()
            .filter(|p| self.lost.contains_key(p))
            .copied()
            .collect();
        let wanted: BTreeSet<i32> = partitions
            .iter()
            .filter(|p| !self.lost.contains_key(p))
            .copied()
            .collect();
        let covered = self
            .current
            .as_ref()
            .is_some_and(|g| wanted.is_subset(&g.admitted));
        if !covered && !wanted.is_empty() {
            // Only the partitions of this write, which passed the fence. gate.rs today
            // also takes its current gate's other partitions along, including ones
            // revoked since: that closes the gate of the partition's new owner, which
            // then leaves it alone until its next rebalance (a stall; shown by this
            // simulation: SIM_SEED=1155 with those partitions added here).
            let all = wanted.clone();
            registry.next += 1;
            let token = registry.next;
            for p in &all {
                registry.registered.push((token, *p));
            }
            // Drops the earlier gates of these partitions (and this writer's previous one).
            let earlier: Vec<u64> = registry
                .registered
                .iter()
                .filter(|(t, p)| *t < token && all.contains(p))
                .map(|(t, _)| *t)
                .collect();
            registry.closed.extend(earlier);
            self.current = Some(Gate {
                token,
                generation,
                admitted: all,
            });
        }
        (self.current.as_ref().map(|g| g.token), refused)
    }

    /// The insert failed because the gate was closed: the next admission finds out
    /// which partitions were taken.
    pub fn gate_closed(&mut self) {
        self.closed = self.current.take();
    }
}
