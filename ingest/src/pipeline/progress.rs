//! Where each route's sinks stand, for the metrics and the status page: records behind
//! the log end (`ingest_consumer_lag_records`) and when the oldest record a sink does
//! not hold yet was read (its age, `ingest_oldest_unwritten_seconds`, is taken at each
//! scrape, so it grows even while the loop waits on a write; the lag is as of the
//! last update). Read from what the pipeline knows already (each lane's durable
//! position, librdkafka's last fetch): no request to the broker or the sinks.

use std::time::{Duration, Instant};

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::consumer;

/// How often the gauges are brought up to date.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

impl Pipeline<'_> {
    pub(super) fn report_progress(&mut self, routes: &[RouteBatch]) {
        let now = Instant::now();
        if now.duration_since(self.last_progress) < PROGRESS_INTERVAL {
            return;
        }
        self.last_progress = now;
        for route in routes {
            for lane in &route.lanes {
                let lag = self.lag(route, lane);
                // Records still in the route's decoder are the lane's too, unless it is
                // shed (it takes nothing now).
                let pending = route.pending_since().filter(|_| !lane.book.is_shed());
                let since = lane.unwritten_since().into_iter().chain(pending).min();
                self.health
                    .set_progress(&route.route.name, &lane.name, lag, since);
            }
        }
    }

    /// Records of the route's assigned partitions the lane's sink does not hold: each
    /// partition's log end (as librdkafka's last fetch saw it) less the sink's position
    /// (the log start while the sink holds nothing of it yet).
    fn lag(&self, route: &RouteBatch, lane: &crate::batch::Lane) -> i64 {
        self.offsets
            .assigned()
            .iter()
            .filter(|(topic, _)| self.loaded.route_for(topic) == Some(route.index))
            .filter_map(|(topic, partition)| {
                let bounds = consumer::cached_bounds(self.consumer, topic, partition)?;
                let held = lane.book.held(topic, partition).unwrap_or(bounds.start);
                Some((bounds.end - held).max(0))
            })
            .sum()
    }
}
