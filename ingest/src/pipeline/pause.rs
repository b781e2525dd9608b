//! `on_incompatible: pause`: a route whose records name a writer schema its table
//! cannot take stops reading, and nothing passes the first record it did not take.
//!
//! Its partitions are paused at the consumer; messages already fetched for them are
//! held (not taken), and the first held offset of each partition is kept. Its open
//! rows are still written as their limits say, so its positions reach exactly the
//! record it paused on. `/ready` and `ingest_route_paused` say why; other routes go on.
//! SIGHUP (after a fix: an edited schema file, a new policy needs a restart) tries
//! again: the route's decoder forgets its writer schemas, each partition is read again
//! from its first held record, and the route pauses again if that record still cannot
//! be taken. A restart starts from the sinks' positions, which is the same place.

use std::collections::{BTreeMap, HashMap};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::decode::Message;
use crate::protocol::Partition;

/// Paused routes by index.
pub(super) type PausedRoutes = HashMap<usize, Paused>;

pub(super) struct Paused {
    name: String,
    /// The first offset not taken, per partition.
    from: BTreeMap<(String, i32), i64>,
}

impl Pipeline<'_> {
    /// Pauses `route` on `message` (not taken), whose writer schema it cannot take.
    pub(super) fn pause(&mut self, route: &RouteBatch, why: String, message: &Message<'_>) {
        let name = route.route.name.clone();
        tracing::error!(
            route = %name,
            topic = message.topic,
            partition = message.partition,
            offset = message.offset,
            reason = %why,
            "the route is paused (on_incompatible: pause): fix the schema and send SIGHUP, or set on_incompatible: dead_letter and restart"
        );
        self.health.set_route_paused(&name, Some(&why));
        let from = BTreeMap::from([(
            (message.topic.to_string(), message.partition),
            message.offset,
        )]);
        self.paused.insert(route.index, Paused { name, from });
        let assigned = self.assigned_to(route.index);
        self.set_paused(&assigned, true);
    }

    /// Whether a message's route is paused: then it is not taken, and its partition
    /// will be read again from the first such message.
    pub(super) fn held(&mut self, route: usize, topic: &str, partition: i32, offset: i64) -> bool {
        let Some(paused) = self.paused.get_mut(&route) else {
            return false;
        };
        paused
            .from
            .entry((topic.to_string(), partition))
            .or_insert(offset);
        true
    }

    /// Partitions newly assigned to a paused route are paused too.
    pub(super) fn pause_assigned(&mut self, partitions: &[Partition]) {
        if self.paused.is_empty() {
            return;
        }
        let of_paused: Vec<Partition> = partitions
            .iter()
            .filter(|p| {
                self.lookup(&p.topic)
                    .is_some_and(|r| self.paused.contains_key(&r))
            })
            .cloned()
            .collect();
        self.set_paused(&of_paused, true);
    }

    /// Revoked partitions: their new owner reads them from the sinks' positions.
    pub(super) fn forget_held(&mut self, partitions: &[Partition]) {
        for paused in self.paused.values_mut() {
            for p in partitions {
                paused.from.remove(&(p.topic.clone(), p.partition));
            }
        }
    }

    /// SIGHUP: every paused route tries again from its first held records.
    pub(super) async fn resume_paused(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        for (index, paused) in std::mem::take(&mut self.paused) {
            let route = &mut routes[index];
            // Rows decoded before the pause are written before the decoder is new.
            self.flush(route, true).await?;
            for lane in 0..route.lanes.len() {
                self.finish_lane(route, lane).await?;
            }
            route.relearn()?;
            for ((topic, partition), offset) in &paused.from {
                if self.offsets.owns(topic, *partition) {
                    let here = [Partition::new(topic, *partition)];
                    self.seek(topic, *partition, Some(*offset), &here)?;
                }
            }
            let assigned = self.assigned_to(index);
            self.set_paused(&assigned, false);
            self.health.set_route_paused(&paused.name, None);
            tracing::info!(route = %paused.name, "SIGHUP: the paused route reads again from the first record it did not take");
        }
        Ok(())
    }

    /// The partitions this member owns of the route at `index`.
    fn assigned_to(&mut self, index: usize) -> Vec<Partition> {
        let assignment = match self.consumer.assignment() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment");
                return Vec::new();
            }
        };
        assignment
            .elements()
            .iter()
            .map(|e| Partition::new(e.topic(), e.partition()))
            .filter(|p| self.lookup(&p.topic) == Some(index))
            .collect()
    }

    fn lookup(&mut self, topic: &str) -> Option<usize> {
        self.route_index(topic)
    }

    /// Pauses or resumes fetching `partitions`. A failure is only logged: held
    /// messages are never taken either way.
    fn set_paused(&self, partitions: &[Partition], pause: bool) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(&p.topic, p.partition);
        }
        let done = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
        }
    }
}
