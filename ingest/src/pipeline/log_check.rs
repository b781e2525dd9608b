//! The log under the consumer still holds what every sink needs, checked from facts (the
//! records' offsets and the partitions' log bounds), never from librdkafka's log lines:
//!
//! - per record: a record below where its partition stood means the log was replaced
//!   (refused: the service stops); past it, the log start says whether records were
//!   deleted before they were read (a gap in every lane that needed them);
//! - every few seconds: a shed lane's position against the log start (its sink may be
//!   down for hours while retention deletes what it needs), and every lane's position
//!   against the log end (a topic recreated while no record arrives);
//! - on assignment (`consumer/resume.rs`), the same against the sinks' own positions.
//!
//! A gap is an ERROR, counted in `ingest_records_lost_total{route,sink}`, and the route's
//! `on_lost_records` decides: `fail` stops the service before any position passes it,
//! `skip` writes on (docs/exactly-once.md, "Records Kafka deleted").

use std::time::{Duration, Instant};

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::config::OnLostRecords;
use crate::consumer::{self, Assignment, Bounds, Lost, Refused, Step, Why};
use crate::protocol::Partition;

/// How often shed lanes and quiet partitions are checked against the log bounds
/// librdkafka's fetches last reported (no request to the broker unless one is off).
const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl Pipeline<'_> {
    /// Checks a record's offset against where its partition stood, before the record is
    /// used.
    pub(super) fn check_step(
        &mut self,
        routes: &[RouteBatch],
        index: usize,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<()> {
        match self.continuity.step(topic, partition, offset) {
            Step::InOrder => Ok(()),
            Step::Back { expected } => {
                let refused = Refused {
                    topic: topic.to_string(),
                    partition,
                    positions: held_positions(&routes[index], topic, partition),
                    why: Why::MovedBack {
                        expected,
                        got: offset,
                        log_end: self.bounds(topic, partition).ok().map(|b| b.end),
                    },
                };
                tracing::error!("{refused}");
                Err(consumer::refusal(&[refused]))
            }
            Step::Forward { expected } => {
                self.moved_forward(&routes[index], topic, partition, expected)
            }
        }
    }

    /// Reading went on past `expected`: a gap in the log (compaction, transaction
    /// markers) unless the log now starts past `expected`, when Kafka deleted records
    /// before they were read: a gap in every lane that needed them.
    fn moved_forward(
        &mut self,
        route: &RouteBatch,
        topic: &str,
        partition: i32,
        expected: i64,
    ) -> anyhow::Result<()> {
        let start = self.log_start(topic, partition)?;
        if start <= expected {
            return Ok(());
        }
        for (lane, state) in route.lanes.iter().enumerate() {
            // A shed lane reads again from its own position later, and is checked then.
            if state.book.is_shed() {
                continue;
            }
            let position = state.book.first_needed(topic, partition, expected);
            let gap = Lost {
                topic: topic.to_string(),
                partition,
                sink: state.name.clone(),
                position,
                log_start: start,
            };
            self.lost(route, lane, gap);
        }
        self.stop_if_lost()
    }

    /// Before a partition is read again for lanes that need it from these positions
    /// (`needs`: lane, position): a position below the log start is a gap in that lane,
    /// known now, before any record arrives (there may be none to come).
    pub(super) fn check_before_seek(
        &mut self,
        route: &RouteBatch,
        topic: &str,
        partition: i32,
        needs: &[(usize, i64)],
    ) -> anyhow::Result<()> {
        let Some(lowest) = needs.iter().map(|(_, position)| *position).min() else {
            return Ok(());
        };
        // Asked of the broker: the last fetch may predate a deletion by a moment.
        let start = self.bounds(topic, partition)?.start;
        if lowest >= start {
            return Ok(());
        }
        for (lane, position) in needs.iter().filter(|(_, p)| *p < start) {
            let gap = Lost {
                topic: topic.to_string(),
                partition,
                sink: route.lanes[*lane].name.clone(),
                position: *position,
                log_start: start,
            };
            self.lost(route, *lane, gap);
        }
        Ok(())
    }

    /// The partition's log start: as librdkafka's last fetch saw it, else asked of the
    /// broker.
    fn log_start(&self, topic: &str, partition: i32) -> anyhow::Result<i64> {
        match consumer::cached_bounds(self.consumer, topic, partition) {
            Some(bounds) => Ok(bounds.start),
            None => Ok(self.bounds(topic, partition)?.start),
        }
    }

    /// What the check of newly assigned partitions found: every sink's position is
    /// learnt by its lane, each partition's start by the continuity check, and gaps
    /// follow the route's policy.
    pub(super) fn assignment_checked(
        &mut self,
        routes: &mut [RouteBatch],
        assignment: Assignment,
    ) -> anyhow::Result<()> {
        for (route, known) in &assignment.known {
            let Some(route) = routes.get_mut(*route) else {
                continue;
            };
            for (lane, positions) in route.lanes.iter_mut().zip(known) {
                lane.book.learn_positions(positions);
                lane.times.durable(positions);
            }
        }
        for (topic, partition, start) in &assignment.starts {
            self.continuity.start(topic, *partition, Some(*start));
        }
        for gap in assignment.lost {
            let Some(index) = self.route_index(&gap.topic) else {
                continue;
            };
            let route = &routes[index];
            let lane = route
                .lanes
                .iter()
                .position(|l| l.name == gap.sink)
                .unwrap_or(0);
            self.lost(route, lane, gap);
        }
        self.stop_if_lost()
    }

    /// Every few seconds: shed lanes against the log start, every lane against the
    /// log end, from the bounds librdkafka's last fetches reported.
    pub(super) fn check_log_bounds(&mut self, routes: &[RouteBatch]) -> anyhow::Result<()> {
        if self.last_log_check.elapsed() < LOG_CHECK_INTERVAL {
            return Ok(());
        }
        self.last_log_check = Instant::now();
        for route in routes {
            for (lane, state) in route.lanes.iter().enumerate() {
                let shed: Vec<Partition> = state
                    .book
                    .shed_partitions()
                    .filter(|(t, p)| self.offsets.owns(t, *p))
                    .map(|(t, p)| Partition::new(t, p))
                    .collect();
                for Partition { topic, partition } in shed {
                    let (Some(position), Some(bounds)) = (
                        state.book.position_when_written(&topic, partition),
                        consumer::cached_bounds(self.consumer, &topic, partition),
                    ) else {
                        continue;
                    };
                    if position < bounds.start {
                        let gap = Lost {
                            topic,
                            partition,
                            sink: state.name.clone(),
                            position,
                            log_start: bounds.start,
                        };
                        self.lost(route, lane, gap);
                    }
                }
            }
            self.check_log_ends(route)?;
        }
        self.stop_if_lost()
    }

    /// A position past the log end librdkafka last saw is confirmed with the broker
    /// (which answers no log end while a new leader catches up) before the partition is
    /// refused.
    fn check_log_ends(&self, route: &RouteBatch) -> anyhow::Result<()> {
        for Partition { topic, partition } in self.offsets.assigned().to_vec() {
            if self.loaded.route_for(&topic) != Some(route.index) {
                continue;
            }
            let highest = route
                .lanes
                .iter()
                .filter_map(|l| l.book.held(&topic, partition))
                .max();
            let (Some(highest), Some(seen)) = (
                highest,
                consumer::cached_bounds(self.consumer, &topic, partition),
            ) else {
                continue;
            };
            if highest <= seen.end {
                continue;
            }
            let end = self.bounds(&topic, partition)?.end;
            if highest > end {
                let refused = Refused {
                    positions: held_positions(route, &topic, partition),
                    topic,
                    partition,
                    why: Why::PastLogEnd(end),
                };
                tracing::error!("{refused}");
                return Err(consumer::refusal(&[refused]));
            }
        }
        Ok(())
    }

    /// A gap in one lane: reported once (an ERROR and the metric); under
    /// `on_lost_records: fail` it also stops the service at the end of the check that
    /// found it ([`Pipeline::stop_if_lost`]), so every gap found is told first.
    fn lost(&mut self, route: &RouteBatch, lane: usize, gap: Lost) {
        let key = (route.index, lane, gap.topic.clone(), gap.partition);
        let told = self.lost_reported.get(&key).copied();
        let gap = Lost {
            position: told.map_or(gap.position, |t| t.max(gap.position)),
            ..gap
        };
        if gap.offsets() == 0 {
            return;
        }
        self.lost_reported.insert(key, gap.log_start);
        let policy = route.route.config.on_lost_records;
        self.health
            .record_lost(&route.route.name, &route.lanes[lane].name, gap.offsets());
        tracing::error!(route = %route.route.name, sink = %route.lanes[lane].name,
            on_lost_records = ?policy, "{gap}");
        if policy == OnLostRecords::Fail {
            self.lost_fail
                .push(format!("route `{}`: {gap}", route.route.name));
        }
    }

    /// Stops the service when a check found gaps on a route with `on_lost_records: fail`:
    /// nothing past them is used, so no position moves past them.
    pub(super) fn stop_if_lost(&mut self) -> anyhow::Result<()> {
        if self.lost_fail.is_empty() {
            return Ok(());
        }
        let gaps = std::mem::take(&mut self.lost_fail).join("; ");
        Err(anyhow::anyhow!(
            "{gaps}. `on_lost_records: fail` stops the service before any position passes \
             the gap; to accept it and write on from the log start, start once with \
             `on_lost_records: skip` on the route"
        ))
    }

    /// The partition's bounds, asked of the broker.
    pub(super) fn bounds(&self, topic: &str, partition: i32) -> anyhow::Result<Bounds> {
        use crate::consumer::LogBounds as _;
        consumer::blocking(|| self.consumer.bounds(topic, partition)).map_err(|e| {
            anyhow::anyhow!(
                "topic `{topic}` partition {partition}: cannot read the log bounds to check \
                 the sinks' positions against them ({e}); stopping rather than risk skipping \
                 records"
            )
        })
    }
}

/// Each lane's known position in a partition, for an error message.
fn held_positions(route: &RouteBatch, topic: &str, partition: i32) -> Vec<(String, i64)> {
    route
        .lanes
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.book.held(topic, partition)?)))
        .collect()
}
