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

/// Paused routes by index; `ever` once any route was paused in this process (its
/// partitions may carry the consumer's pause flag after a rebalance).
#[derive(Default)]
pub(super) struct PausedRoutes {
    routes: HashMap<usize, Paused>,
    ever: bool,
}

impl PausedRoutes {
    /// A paused route's partition was sought to `next` (a rewind to the sinks'
    /// positions, which lie at or below its first held record): it resumes from there
    /// (`None`: from where the seek put it, so its held offset is dropped).
    fn sought(&mut self, topic: &str, partition: i32, next: Option<i64>) {
        let key = (topic.to_string(), partition);
        for paused in self.routes.values_mut() {
            if let Some(from) = paused.from.get_mut(&key) {
                match next {
                    Some(next) => *from = (*from).min(next),
                    None => {
                        paused.from.remove(&key);
                    }
                }
            }
        }
    }
}

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
        self.paused
            .routes
            .insert(route.index, Paused { name, from });
        self.paused.ever = true;
        let assigned = self.assigned_to(route.index);
        self.set_paused(&assigned, true);
    }

    /// Whether a message's route is paused: then it is not taken, and its partition
    /// will be read again from the first such message.
    pub(super) fn held(&mut self, route: usize, topic: &str, partition: i32, offset: i64) -> bool {
        let Some(paused) = self.paused.routes.get_mut(&route) else {
            return false;
        };
        paused
            .from
            .entry((topic.to_string(), partition))
            .or_insert(offset);
        true
    }

    /// Partitions newly assigned to a paused route are paused too; those of other
    /// routes are resumed, once any route was paused here: a partition paused, revoked
    /// and assigned back after its route read again keeps the consumer's pause flag.
    pub(super) fn pause_or_resume_assigned(&mut self, partitions: &[Partition]) {
        if !self.paused.ever {
            return;
        }
        let (pause, resume): (Vec<Partition>, Vec<Partition>) =
            partitions.iter().cloned().partition(|p| {
                self.route_index(&p.topic)
                    .is_some_and(|r| self.paused.routes.contains_key(&r))
            });
        self.set_paused(&pause, true);
        self.set_paused(&resume, false);
    }

    /// Revoked partitions: their new owner reads them from the sinks' positions.
    pub(super) fn forget_held(&mut self, partitions: &[Partition]) {
        for paused in self.paused.routes.values_mut() {
            for p in partitions {
                paused.from.remove(&(p.topic.clone(), p.partition));
            }
        }
    }

    /// A paused route's partition was sought (a rewind to the sinks' positions): see
    /// [`PausedRoutes::sought`].
    pub(super) fn sought_while_paused(&mut self, topic: &str, partition: i32, next: Option<i64>) {
        self.paused.sought(topic, partition, next);
    }

    /// SIGHUP: every paused route tries again from its first held records.
    pub(super) async fn resume_paused(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        let indexes: Vec<usize> = self.paused.routes.keys().copied().collect();
        for index in indexes {
            let route = &mut routes[index];
            // Rows decoded before the pause are written before the decoder is new;
            // a rewind meanwhile lowers where the route reads again.
            self.flush(route, true).await?;
            for lane in 0..route.lanes.len() {
                self.finish_lane(route, lane).await?;
            }
            let Some(paused) = self.paused.routes.remove(&index) else {
                continue;
            };
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
            .filter(|p| self.route_index(&p.topic) == Some(index))
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewind_while_paused_lowers_where_the_partition_reads_again() {
        let mut paused = PausedRoutes::default();
        let from = BTreeMap::from([(("t".to_string(), 0), 50), (("t".to_string(), 1), 70)]);
        paused.routes.insert(
            0,
            Paused {
                name: "r".into(),
                from,
            },
        );
        // A fenced batch sent partition 0 back to the sinks' position 30.
        paused.sought("t", 0, Some(30));
        // A seek to where the group stands: no offset known, the seek decides.
        paused.sought("t", 1, None);
        // Another partition's seek changes nothing.
        paused.sought("t", 2, Some(5));
        let from = &paused.routes[&0].from;
        assert_eq!(from.get(&("t".to_string(), 0)), Some(&30));
        assert_eq!(from.get(&("t".to_string(), 1)), None);
        assert_eq!(from.len(), 1);
    }
}
