//! Where newly assigned partitions start: at the minimum of the positions their sinks
//! have made durable, read from the sinks' own storage.
//!
//! The group offset is committed as that minimum, so normally the two agree; they differ
//! when the group offset is behind (a crash between a sink write and the Kafka commit:
//! less to re-read) or gone (offsets expired, reset by hand: nothing is skipped or
//! re-read past what the sinks hold). A partition some sink has no position for keeps
//! the group offset. A partition whose sinks hold positions past its log end is refused
//! (see `log_end`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ingest_sink_api::{OffsetMap, PositionReader};
use rdkafka::{Offset, TopicPartitionList};

use super::log_end::{self, LogEnds, Refused, SinkPositions};
use crate::protocol::start_offset;

/// Bounds how long an assignment may wait for the sinks to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Start offsets: (topic, partition, offset).
type Starts = Vec<(String, i32, i64)>;

/// Which route a topic belongs to.
pub type RouteOf = Box<dyn Fn(&str) -> Option<usize> + Send + Sync>;

pub struct Resume {
    /// Per route, a reader of each sink's positions.
    readers: Vec<Vec<Arc<dyn PositionReader>>>,
    route_of: RouteOf,
    runtime: tokio::runtime::Handle,
}

impl Resume {
    pub fn new(
        readers: Vec<Vec<Arc<dyn PositionReader>>>,
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
    /// position. Runs inside librdkafka's rebalance callback, which must finish before
    /// fetching starts: it blocks on the sinks' answers (bounded by a timeout). Returns
    /// the partitions refused because a sink's position lies past their log end.
    pub fn set_start_offsets(
        &self,
        assigned: &mut TopicPartitionList,
        ends: &dyn LogEnds,
    ) -> Vec<Refused> {
        let Some((mut starts, held)) = self.read_positions(assigned) else {
            tracing::warn!(
                "sinks did not report their positions in time: starting at the group offsets"
            );
            return Vec::new();
        };
        let refused = super::blocking(|| log_end::refused(&held, ends));
        starts.retain(|(t, p, _)| !refused.iter().any(|r| (&r.topic, r.partition) == (t, *p)));
        for (topic, partition, start) in &starts {
            if let Err(e) = assigned.set_partition_offset(topic, *partition, Offset::Offset(*start))
            {
                tracing::warn!(topic, partition, error = %e, "cannot set the start offset");
            }
        }
        if !starts.is_empty() {
            tracing::info!(?starts, "resuming at the minimum of the sinks' positions");
        }
        refused
    }

    /// The partitions of `partitions` whose sinks hold positions past the log end, for a
    /// log reset under a running consumer; `None` when the sinks did not answer in time.
    pub fn check_log_ends(
        &self,
        partitions: &TopicPartitionList,
        ends: &dyn LogEnds,
    ) -> Option<Vec<Refused>> {
        let (_, held) = self.read_positions(partitions)?;
        Some(super::blocking(|| log_end::refused(&held, ends)))
    }

    /// Each partition's start (the minimum of its sinks' positions, where all know one)
    /// and every sink's position; `None` when the sinks did not answer in time.
    fn read_positions(
        &self,
        assigned: &TopicPartitionList,
    ) -> Option<(Starts, Vec<SinkPositions>)> {
        let mut by_route: HashMap<usize, OffsetMap> = HashMap::new();
        for element in assigned.elements() {
            if let Some(route) = (self.route_of)(element.topic()) {
                by_route
                    .entry(route)
                    .or_default()
                    .advance(element.topic(), element.partition(), 0);
            }
        }
        let lookups = by_route.into_iter().map(|(route, partitions)| {
            let readers = self.readers[route].clone();
            async move {
                let reads = readers.iter().map(|r| r.read(&partitions));
                let results = futures::future::join_all(reads).await;
                let sinks: Vec<String> = readers.iter().map(|r| r.sink().to_string()).collect();
                (partitions, sinks, results)
            }
        });
        let work = async move {
            tokio::time::timeout(READ_TIMEOUT, futures::future::join_all(lookups)).await
        };
        let answers = super::blocking(|| self.runtime.block_on(work));
        let answers = answers.ok()?;
        let mut starts = Vec::new();
        let mut held = Vec::new();
        for (partitions, sinks, results) in answers {
            let Ok(known) = results.into_iter().collect::<Result<Vec<OffsetMap>, _>>() else {
                tracing::warn!(
                    "a sink could not report its positions: starting at the group offsets"
                );
                continue;
            };
            for (topic, partition, _) in partitions.iter() {
                held.push(SinkPositions {
                    topic: topic.to_string(),
                    partition,
                    positions: (sinks.iter().zip(&known))
                        .filter_map(|(sink, k)| Some((sink.clone(), k.get(topic, partition)?)))
                        .collect(),
                });
                if let Some(start) = start_offset(&known, topic, partition) {
                    starts.push((topic.to_string(), partition, start));
                }
            }
        }
        Some((starts, held))
    }
}
