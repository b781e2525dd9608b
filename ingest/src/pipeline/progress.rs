//! Where each route's sinks stand, for the metrics and the status page: records behind
//! the log end (`ingest_consumer_lag_records`), the completeness watermark
//! (`ingest_watermark_seconds`, see `watermark/`) and when the oldest record a sink does
//! not hold yet was read (its age, `ingest_oldest_unwritten_seconds`, is taken at each
//! scrape, so it grows even while the loop waits on a write; the lag is as of the
//! last update). Read from what the pipeline knows already (each lane's durable
//! position, librdkafka's last fetch): no request to the broker or the sinks.

use std::time::{Duration, Instant};

use ingest_sink_api::{OffsetMap, Partition};

use super::Pipeline;
use crate::batch::{Lane, RouteBatch};
use crate::consumer::{self, Bounds};
use crate::health::Progress;
use crate::watermark::Standing;

/// How often the gauges are brought up to date.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long after its assignment a partition's cached log bounds are not trusted for
/// the watermark while they are those cached at the assignment: until librdkafka's
/// first fetch they may be those of an earlier ownership (an idle partition is fetched
/// every `fetch.wait.max.ms`, 500 ms). Bounds first cached, or changed, since the
/// assignment come from a fetch of this one.
const BOUNDS_SETTLE: Duration = Duration::from_secs(5);

impl Pipeline<'_> {
    pub(super) fn report_progress(&mut self, routes: &[RouteBatch]) {
        let now = Instant::now();
        if now.duration_since(self.last_progress) < PROGRESS_INTERVAL {
            return;
        }
        self.last_progress = now;
        for route in routes {
            let logs = self.route_logs(route);
            let mut route_watermark = Some(i64::MAX);
            for lane in &route.lanes {
                let lag = lag(&logs, lane);
                // Records still in the route's decoder are the lane's too, unless it is
                // shed (it takes nothing now).
                let pending = route.pending_since().filter(|_| !lane.book.is_shed());
                let since = lane.unwritten_since().into_iter().chain(pending).min();
                let watermark = watermark(&logs, lane, None);
                route_watermark = route_watermark.zip(watermark).map(|(a, b)| a.min(b));
                self.health.set_progress(
                    &route.route.name,
                    &lane.name,
                    Progress {
                        lag,
                        since,
                        watermark,
                    },
                );
            }
            let route_watermark = route_watermark.filter(|_| !route.lanes.is_empty());
            self.health
                .set_route_watermark(&route.route.name, route_watermark);
        }
    }

    /// The route's assigned partitions with their log bounds as librdkafka's last fetch
    /// saw them (`None` before the first, and while they may predate the assignment).
    pub(super) fn route_logs(&self, route: &RouteBatch) -> Vec<(String, i32, Option<Bounds>)> {
        self.offsets
            .assigned()
            .iter()
            .filter(|(topic, _)| self.loaded.route_for(topic) == Some(route.index))
            .map(|(topic, partition)| {
                let bounds = consumer::cached_bounds(self.consumer, topic, partition);
                let assigned = self.assigned_at.get(&Partition::new(topic, partition));
                let settled = assigned.is_none_or(|(at, then)| {
                    then.is_none() || *then != bounds || at.elapsed() >= BOUNDS_SETTLE
                });
                let bounds = bounds.filter(|_| settled);
                (topic.to_string(), partition, bounds)
            })
            .collect()
    }
}

/// Records of the route's assigned partitions the lane's sink does not hold: each
/// partition's log end less the sink's position (the log start while the sink holds
/// nothing of it yet).
fn lag(logs: &[(String, i32, Option<Bounds>)], lane: &Lane) -> i64 {
    logs.iter()
        .filter_map(|(topic, partition, bounds)| {
            let bounds = (*bounds)?;
            let held = lane.book.held(topic, *partition).unwrap_or(bounds.start);
            Some((bounds.end - held).max(0))
        })
        .sum()
}

/// The lane's completeness watermark over the route's partitions (`watermark/`), once
/// `after` is durable too when given.
pub(super) fn watermark(
    logs: &[(String, i32, Option<Bounds>)],
    lane: &Lane,
    after: Option<&OffsetMap>,
) -> Option<i64> {
    let standings = logs.iter().map(|(topic, partition, bounds)| Standing {
        topic,
        partition: *partition,
        log: bounds.map(|b| (b.start, b.end)),
        held: lane.book.held(topic, *partition),
    });
    lane.times.watermark(standings, after)
}
