//! `ingest status --config FILE [--json]`: per route and sink, where things stand, read
//! from where they are kept, so it works from a laptop while the service runs
//! elsewhere, and while it does not run at all:
//! - the broker: each partition's log start and end, and the group's committed offset
//!   (read with a consumer that never joins the group, so the service is not
//!   disturbed);
//! - each sink (`SinkTable::inspect`, SELECTs and catalog reads only): its positions,
//!   its recorded completeness watermarks, its last write;
//! - the service's `/status.json` when it answers: each sink's state and last error.
//!
//! `render.rs` writes the report for a person.

mod render;

use std::collections::BTreeMap;
use std::time::Duration;

use ingest_sink_api::{Partition, TableState, Watermark};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::{Loaded, Route};

pub use render::render;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub group: String,
    pub service: Service,
    pub routes: Vec<RouteReport>,
}

/// What the running service said, if it answered.
#[derive(Debug, Serialize)]
pub struct Service {
    pub url: String,
    pub reachable: bool,
    pub ready: Option<bool>,
    pub not_ready: Vec<String>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteReport {
    pub route: String,
    /// The least of its sinks' watermarks: complete in every sink before it.
    pub watermark_unix_ms: Option<i64>,
    pub watermark: Option<String>,
    pub sinks: Vec<SinkReport>,
    pub partitions: Vec<PartitionReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct SinkReport {
    pub sink: String,
    pub table_exists: bool,
    /// Records of the route's partitions the sink does not hold.
    pub lag_records: Option<i64>,
    /// The least recorded watermark over the route's partitions (unknown while one
    /// has none).
    pub watermark_unix_ms: Option<i64>,
    pub watermark: Option<String>,
    pub last_write_unix: Option<f64>,
    pub last_write: Option<String>,
    /// `up` or `failing`, from the service (`None` when it did not answer).
    pub state: Option<String>,
    pub last_error: Option<String>,
    /// Why the sink could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub log_start: Option<i64>,
    pub log_end: Option<i64>,
    /// The group's committed offset.
    pub committed: Option<i64>,
    /// Each sink's position, in the order of `sinks`.
    pub positions: Vec<Option<i64>>,
}

/// How long each broker request and the service's answer may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Reads everything the report shows; `service` is the admin address to ask (default:
/// the config's `server.listen`, on this machine).
pub async fn report(loaded: &Loaded, service: Option<String>) -> anyhow::Result<Report> {
    let group = loaded.config.kafka.group_id.clone();
    let url = service.unwrap_or_else(|| local_url(&loaded.config.server.listen));
    let (service, live) = ask_service(&url).await;
    let kafka = loaded.config.kafka.clone();
    let routes: Vec<(String, Option<regex::Regex>, Vec<String>)> = loaded
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.pattern.clone(), r.config.topics.clone()))
        .collect();
    let logs = tokio::task::spawn_blocking(move || read_broker(&kafka, &routes)).await??;
    let mut out = Vec::new();
    for (route, partitions) in loaded.routes.iter().zip(logs) {
        out.push(route_report(route, &group, partitions, &live).await);
    }
    Ok(Report {
        group,
        service,
        routes: out,
    })
}

/// `0.0.0.0:9090` → `http://127.0.0.1:9090`.
fn local_url(listen: &str) -> String {
    let port = listen.rsplit(':').next().unwrap_or("9090");
    format!("http://127.0.0.1:{port}")
}

/// Per (route, sink): state and last error, from the service's `/status.json`.
type Live = BTreeMap<(String, String), (String, Option<String>)>;

async fn ask_service(url: &str) -> (Service, Live) {
    let mut service = Service {
        // A URL may carry credentials: shown masked like everything else.
        url: ingest_sink_api::secret::scrub(url).into_owned(),
        reachable: false,
        ready: None,
        not_ready: Vec::new(),
        error: None,
    };
    let mut live = Live::new();
    let answer = async {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let reply = client.get(format!("{url}/status.json")).send().await?;
        let body = reply.error_for_status()?.bytes().await?;
        anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
    };
    match answer.await {
        Ok(status) => {
            service.reachable = true;
            service.ready = status["ready"].as_bool();
            service.not_ready = status["not_ready"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            for s in status["sinks"].as_array().into_iter().flatten() {
                let (Some(route), Some(sink)) = (s["route"].as_str(), s["sink"].as_str()) else {
                    continue;
                };
                let state = s["state"].as_str().unwrap_or("unknown").to_string();
                let error = s["last_error"].as_str().map(str::to_string);
                live.insert((route.to_string(), sink.to_string()), (state, error));
            }
        }
        Err(e) => {
            service.error = Some(ingest_sink_api::secret::scrub(&format!("{e:#}")).into_owned())
        }
    }
    (service, live)
}

/// A partition's log bounds and the group's committed offset.
#[derive(Debug, Clone)]
struct Log {
    partition: Partition,
    start: Option<i64>,
    end: Option<i64>,
    committed: Option<i64>,
}

/// Per route (in config order), its topics' partitions as the broker has them.
fn read_broker(
    kafka: &crate::config::KafkaConfig,
    routes: &[(String, Option<regex::Regex>, Vec<String>)],
) -> anyhow::Result<Vec<Vec<Log>>> {
    // Never subscribed: it only asks, so the group's members are not disturbed.
    let consumer: BaseConsumer = crate::consumer::client_config(kafka)
        .create()
        .map_err(crate::consumer::redact_config_error)?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    let mut out = Vec::new();
    for (_, pattern, topics) in routes {
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            let name = topic.name();
            let routed = topics.iter().any(|t| t == name)
                || pattern.as_ref().is_some_and(|p| p.is_match(name));
            if routed {
                for p in topic.partitions() {
                    partitions.add_partition(name, p.id());
                }
            }
        }
        let committed = if partitions.count() == 0 {
            TopicPartitionList::new()
        } else {
            consumer.committed_offsets(partitions.clone(), TIMEOUT)?
        };
        let mut logs = Vec::new();
        for element in partitions.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let bounds = consumer.fetch_watermarks(topic, partition, TIMEOUT).ok();
            let committed =
                committed
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            logs.push(Log {
                partition: Partition::new(topic, partition),
                start: bounds.map(|b| b.0),
                end: bounds.map(|b| b.1),
                committed,
            });
        }
        out.push(logs);
    }
    Ok(out)
}

async fn route_report(route: &Route, group: &str, logs: Vec<Log>, live: &Live) -> RouteReport {
    let mut sinks = Vec::new();
    let mut states = Vec::new();
    let mut wanted = ingest_sink_api::OffsetMap::default();
    for log in &logs {
        wanted.advance(&log.partition.topic, log.partition.partition, 0);
    }
    for sink in &route.sinks {
        let (mut report, state) = match sink.table.inspect(group, &wanted).await {
            Ok(state) => (sink_report(&state, &logs), Some(state)),
            Err(e) => (
                SinkReport {
                    sink: e.sink.clone(),
                    error: Some(ingest_sink_api::secret::scrub(&e.message).into_owned()),
                    ..SinkReport::default()
                },
                None,
            ),
        };
        if let Some((state, error)) = live.get(&(route.name.clone(), report.sink.clone())) {
            report.state = Some(state.clone());
            report.last_error = error.clone();
        }
        sinks.push(report);
        states.push(state);
    }
    let partitions = logs
        .iter()
        .map(|log| PartitionReport {
            topic: log.partition.topic.clone(),
            partition: log.partition.partition,
            log_start: log.start,
            log_end: log.end,
            committed: log.committed,
            positions: states
                .iter()
                .map(|s| {
                    s.as_ref().and_then(|s| {
                        s.positions
                            .get(&log.partition.topic, log.partition.partition)
                    })
                })
                .collect(),
        })
        .collect();
    let watermark = sinks
        .iter()
        .map(|s| s.watermark_unix_ms)
        .try_fold(i64::MAX, |least, w| w.map(|w| least.min(w)))
        .filter(|_| !sinks.is_empty());
    RouteReport {
        route: route.name.clone(),
        watermark_unix_ms: watermark,
        watermark: watermark.map(Watermark::format),
        sinks,
        partitions,
    }
}

/// A sink's lag and watermark over the route's partitions.
fn sink_report(state: &TableState, logs: &[Log]) -> SinkReport {
    let lag = logs
        .iter()
        .map(|log| {
            let end = log.end?;
            let held = state
                .positions
                .get(&log.partition.topic, log.partition.partition)
                .or(log.start)?;
            Some((end - held).max(0))
        })
        .sum::<Option<i64>>();
    let watermark = logs
        .iter()
        .map(|log| state.watermarks.get(&log.partition).copied())
        .try_fold(i64::MAX, |least, w| w.map(|w| least.min(w)))
        .filter(|_| !logs.is_empty());
    SinkReport {
        sink: state.sink.clone(),
        table_exists: !state.missing,
        lag_records: lag,
        watermark_unix_ms: watermark,
        watermark: watermark.map(Watermark::format),
        last_write_unix: state.last_write_unix,
        last_write: state
            .last_write_unix
            .map(|t| Watermark::format((t * 1000.0) as i64)),
        ..SinkReport::default()
    }
}
