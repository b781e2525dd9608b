//! Where newly assigned partitions start: at the minimum of the positions their sinks
//! have made durable, read from the sinks' own storage.
//!
//! The group offset is committed as that minimum, so normally the two agree; they differ
//! when the group offset is behind (a crash between a sink write and the Kafka commit:
//! less to re-read) or gone (offsets expired, reset by hand: nothing is skipped or
//! re-read past what the sinks hold). A partition some sink has no position for keeps
//! the group offset. Every position is checked against the partition's log bounds first
//! (see `log_bounds`): past the log end, or unanswered, the partition is refused; below
//! the log start, the gap is reported and the partition starts at the log start.

use std::collections::HashMap;
use std::time::Duration;

use ingest_sink_api::OffsetMap;
use rdkafka::{Offset, TopicPartitionList};

use super::log_bounds::{self, LogBounds, Lost, Refused, SinkPositions};
use super::readers::PositionReaders;
use crate::protocol::Partition;
use crate::protocol::start_offset;

/// Bounds how long an assignment may wait for the sinks to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Start offsets: (topic, partition, offset).
pub type Starts = Vec<(String, i32, i64)>;

/// Which route a topic belongs to.
pub type RouteOf = Box<dyn Fn(&str) -> Option<usize> + Send + Sync>;

pub struct Resume {
    readers: PositionReaders,
    route_of: RouteOf,
    runtime: tokio::runtime::Handle,
}

impl Resume {
    pub fn new(
        readers: PositionReaders,
        route_of: RouteOf,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            readers,
            route_of,
            runtime,
        }
    }

    /// Sets the start offset of every partition in `assigned` whose sinks all know a
    /// position, after checking those positions against the partitions' log bounds.
    /// Runs inside librdkafka's rebalance callback, which must finish before fetching
    /// starts: it blocks on the sinks' answers (bounded by a timeout). A partition whose
    /// sinks did not all answer is refused: nothing could be checked.
    pub fn set_start_offsets(
        &self,
        assigned: &mut TopicPartitionList,
        bounds: &dyn LogBounds,
    ) -> Assignment {
        let read = self.read_positions(assigned);
        let mut checked = super::blocking(|| log_bounds::check(&read.held, bounds));
        checked
            .refused
            .extend(log_bounds::unanswered(&read.silent, &read.why_silent));
        let refused = |t: &str, p: i32| {
            checked
                .refused
                .iter()
                .any(|r| r.topic == t && r.partition == p)
        };
        let mut starts = read.starts;
        starts.retain(|(t, p, _)| !refused(t, *p));
        // A sink below the log start reads on from there (whatever `auto.offset.reset`
        // says): the route's `on_lost_records` decides whether that happens at all.
        for (topic, partition, log_start) in &checked.starts {
            match starts
                .iter_mut()
                .find(|(t, p, _)| t == topic && p == partition)
            {
                Some(start) => start.2 = start.2.max(*log_start),
                None => starts.push((topic.clone(), *partition, *log_start)),
            }
        }
        for (topic, partition, start) in &starts {
            if let Err(e) = assigned.set_partition_offset(topic, *partition, Offset::Offset(*start))
            {
                tracing::warn!(topic, partition, error = %e, "cannot set the start offset");
            }
        }
        if !starts.is_empty() {
            tracing::info!(?starts, "resuming at the minimum of the sinks' positions");
        }
        Assignment {
            refused: checked.refused,
            lost: checked.lost,
            starts,
            known: read.known,
        }
    }

    /// Each partition's start (the minimum of its sinks' positions, where all know one),
    /// every sink's position, and the partitions whose sinks did not all answer in time.
    fn read_positions(&self, assigned: &TopicPartitionList) -> Read {
        let mut by_route: HashMap<usize, OffsetMap> = HashMap::new();
        for element in assigned.elements() {
            if let Some(route) = (self.route_of)(element.topic()) {
                by_route
                    .entry(route)
                    .or_default()
                    .advance(element.topic(), element.partition(), 0);
            }
        }
        let wanted: Vec<(usize, OffsetMap)> = by_route.into_iter().collect();
        let lookups = wanted.iter().map(|(route, partitions)| {
            let readers = self.readers.clone();
            async move {
                let sinks = readers.sinks(*route);
                (sinks, readers.read(*route, partitions).await)
            }
        });
        let work = async move {
            tokio::time::timeout(READ_TIMEOUT, futures::future::join_all(lookups)).await
        };
        let answers = super::blocking(|| self.runtime.block_on(work));
        let mut read = Read::default();
        let Ok(answers) = answers else {
            read.why_silent = format!("the sinks did not answer within {READ_TIMEOUT:?}");
            read.silent = wanted.iter().flat_map(|(_, p)| partitions_of(p)).collect();
            return read;
        };
        for ((route, partitions), (sinks, results)) in wanted.iter().zip(answers) {
            let known = match results {
                Ok(known) => known,
                Err(e) => {
                    read.why_silent = e.to_string();
                    read.silent.extend(partitions_of(partitions));
                    continue;
                }
            };
            for (topic, partition, _) in partitions.iter() {
                read.held.push(SinkPositions {
                    topic: topic.to_string(),
                    partition,
                    positions: (sinks.iter().zip(&known))
                        .filter_map(|(sink, k)| Some((sink.clone(), k.get(topic, partition)?)))
                        .collect(),
                });
                if let Some(start) = start_offset(&known, topic, partition) {
                    read.starts.push((topic.to_string(), partition, start));
                }
            }
            read.known.push((*route, known));
        }
        read
    }
}

/// What the sinks said about a set of partitions.
#[derive(Default)]
struct Read {
    starts: Starts,
    held: Vec<SinkPositions>,
    /// Per route, each sink's positions (in the route's lane order).
    known: Vec<(usize, Vec<OffsetMap>)>,
    /// Partitions some sink of whose route did not answer, and why.
    silent: Vec<Partition>,
    why_silent: String,
}

/// What an assignment found: partitions to refuse, gaps to report, where each
/// partition starts and what every sink holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub refused: Vec<Refused>,
    pub lost: Vec<Lost>,
    pub starts: Starts,
    /// Per route (by index), each sink's positions, in the route's lane order.
    pub known: Vec<(usize, Vec<OffsetMap>)>,
}

fn partitions_of(map: &OffsetMap) -> Vec<Partition> {
    map.iter().map(|(t, p, _)| Partition::new(t, p)).collect()
}
