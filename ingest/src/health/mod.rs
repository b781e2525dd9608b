//! Liveness, readiness, Prometheus metrics and a status page over HTTP, for Kubernetes
//! probes, scraping and people: `/health` (process up), `/ready` (consuming and no sink
//! failing), `/metrics` (`metrics.rs`), `/` and `/status.json` (`status.rs`).

mod metrics;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};

use metrics::Metrics;
pub use status::Status;

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    consuming: AtomicBool,
    partitions: AtomicI64,
    failing_sinks: Mutex<BTreeSet<String>>,
    /// Services other than sinks being waited for (the schema registry).
    waiting_for: Mutex<BTreeSet<String>>,
    /// Paused routes, with why.
    paused: Mutex<BTreeMap<String, String>>,
    metrics: Metrics,
    /// What the status page shows per route and sink.
    sinks: Mutex<status::Sinks>,
    /// Each route's watermark across its sinks, ms since the epoch.
    routes: Mutex<BTreeMap<String, Option<i64>>>,
    started: std::time::SystemTime,
}

/// Where a route's sink stands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Records behind the log end.
    pub lag: i64,
    /// When the oldest record it was handed and does not hold yet was read (its age is
    /// taken at each scrape).
    pub since: Option<Instant>,
    /// Its completeness watermark, ms since the epoch (`None`: unknown).
    pub watermark: Option<i64>,
}

/// A watermark in Unix seconds, 0 when unknown: "complete to nothing yet", which
/// `min` across pods keeps (it would skip a NaN) and the stalled alert sees.
fn seconds(watermark: Option<i64>) -> f64 {
    watermark.map_or(0.0, |ms| ms as f64 / 1000.0)
}

/// What one finished write did, for the metrics.
pub struct Flushed<'a> {
    pub route: &'a str,
    pub sink: &'a str,
    pub rows: u64,
    /// Payload bytes of the records the rows came from.
    pub bytes: u64,
    /// One of `metrics::FLUSH_REASONS`.
    pub reason: &'static str,
    pub took: Duration,
    pub files: u64,
    pub commits: u64,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                consuming: AtomicBool::new(false),
                partitions: AtomicI64::new(0),
                failing_sinks: Mutex::new(BTreeSet::new()),
                waiting_for: Mutex::new(BTreeSet::new()),
                paused: Mutex::new(BTreeMap::new()),
                metrics: Metrics::new(),
                sinks: Mutex::new(status::Sinks::default()),
                routes: Mutex::new(BTreeMap::new()),
                started: std::time::SystemTime::now(),
            }),
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn sinks(&self) -> std::sync::MutexGuard<'_, status::Sinks> {
        self.inner.sinks.lock().expect("health poisoned")
    }

    /// A route's sink is open: its series start at zero.
    pub fn sink_opened(&self, route: &str, sink: &str) {
        self.metrics().sink_opened(route, sink);
        self.sinks().opened(route, sink);
    }

    /// Everything the status page shows.
    pub fn status(&self) -> Status {
        let not_ready = match self.ready() {
            Ok(()) => Vec::new(),
            Err(why) => why.split("; ").map(str::to_string).collect(),
        };
        Status {
            ready: not_ready.is_empty(),
            not_ready,
            assigned_partitions: self.inner.partitions.load(Ordering::Relaxed).max(0),
            started_unix: status::unix(self.inner.started),
            now_unix: status::unix(std::time::SystemTime::now()),
            version: env!("CARGO_PKG_VERSION"),
            sinks: self.sinks().list(Instant::now()),
            routes: self
                .inner
                .routes
                .lock()
                .expect("health poisoned")
                .iter()
                .map(|(route, watermark)| status::RouteStatus::new(route, *watermark))
                .collect(),
        }
    }

    pub fn set_ready(&self, consuming: bool) {
        self.inner.consuming.store(consuming, Ordering::Relaxed);
    }

    pub fn add_partitions(&self, delta: i64) {
        let now = self.inner.partitions.fetch_add(delta, Ordering::Relaxed) + delta;
        self.metrics().assigned.set(now.max(0));
        let kind = if delta >= 0 { "assigned" } else { "revoked" };
        self.metrics().rebalances.with_label_values(&[kind]).inc();
    }

    pub fn set_sink_failing(&self, sink: &str, failing: bool) {
        let mut set = self.inner.failing_sinks.lock().expect("health poisoned");
        if failing {
            set.insert(sink.to_string());
        } else {
            set.remove(sink);
        }
        drop(set);
        self.metrics()
            .sink_up
            .with_label_values(&[sink])
            .set(i64::from(!failing));
        self.sinks().failing(sink, failing);
    }

    /// A write attempt has gone unanswered for a while (it goes on).
    pub fn record_unanswered(&self, sink: &str, waited: Duration) {
        let why = format!(
            "write not answered for {} s (still waiting)",
            waited.as_secs()
        );
        self.sinks().error(sink, &why);
    }

    /// A write attempt failed with `error` and is retried.
    pub fn record_retry(&self, sink: &str, error: &str) {
        self.metrics().retries.with_label_values(&[sink]).inc();
        self.sinks().retried(sink, error);
    }

    /// A service the pipeline needs besides its sinks (the schema registry) does not
    /// answer, and is waited for.
    pub fn set_waiting_for(&self, service: &str, waiting: bool) {
        let mut set = self.inner.waiting_for.lock().expect("health poisoned");
        if waiting {
            set.insert(service.to_string());
        } else {
            set.remove(service);
        }
    }

    /// The route is paused (`Some(why)`) or reads again (`None`).
    pub fn set_route_paused(&self, route: &str, why: Option<&str>) {
        let mut paused = self.inner.paused.lock().expect("health poisoned");
        match why {
            Some(why) => paused.insert(route.to_string(), why.to_string()),
            None => paused.remove(route),
        };
        self.metrics()
            .paused
            .with_label_values(&[route])
            .set(i64::from(why.is_some()));
    }

    /// Whether the sink's last write attempt failed and it is being retried.
    pub fn sink_failing(&self, sink: &str) -> bool {
        let set = self.inner.failing_sinks.lock().expect("health poisoned");
        set.contains(sink)
    }

    pub fn record_consumed(&self, route: &str, bytes: u64) {
        let m = self.metrics();
        m.consumed.with_label_values(&[route]).inc();
        m.consumed_bytes.with_label_values(&[route]).inc_by(bytes);
    }

    pub fn record_flush(&self, f: &Flushed<'_>) {
        let m = self.metrics();
        let both = &[f.route, f.sink];
        m.rows.with_label_values(both).inc_by(f.rows);
        m.bytes_written.with_label_values(both).inc_by(f.bytes);
        m.flushes
            .with_label_values(&[f.route, f.sink, f.reason])
            .inc();
        m.write_seconds
            .with_label_values(both)
            .observe(f.took.as_secs_f64());
        m.files.with_label_values(both).inc_by(f.files);
        m.commits.with_label_values(both).inc_by(f.commits);
        self.sinks().flushed(f.route, f.sink, f.rows);
    }

    /// A sink's lane dropped its buffered rows (its sink down or hung, the lane full).
    pub fn record_shed(&self, route: &str, sink: &str) {
        self.metrics().shed.with_label_values(&[route, sink]).inc();
    }

    /// Partitions of the route read again from a sink's position.
    pub fn record_reread(&self, route: &str, partitions: u64) {
        self.metrics()
            .reread
            .with_label_values(&[route])
            .inc_by(partitions);
    }

    /// Where a route's sink stands (see [`Progress`]).
    pub fn set_progress(&self, route: &str, sink: &str, progress: Progress) {
        let progress = Progress {
            lag: progress.lag.max(0),
            ..progress
        };
        let m = self.metrics();
        m.lag.with_label_values(&[route, sink]).set(progress.lag);
        m.watermark
            .with_label_values(&[route, sink])
            .set(seconds(progress.watermark));
        self.sinks().progress(route, sink, &progress);
    }

    /// A route's watermark across all its sinks (the least of theirs).
    pub fn set_route_watermark(&self, route: &str, watermark: Option<i64>) {
        self.metrics()
            .route_watermark
            .with_label_values(&[route])
            .set(seconds(watermark));
        let mut routes = self.inner.routes.lock().expect("health poisoned");
        routes.insert(route.to_string(), watermark);
    }

    pub fn record_rejected(&self, route: &str, reason: &str, rejected: u64) {
        self.metrics()
            .rejected
            .with_label_values(&[route, reason])
            .inc_by(rejected);
    }

    pub fn record_dead_letters_skipped(&self, route: &str, skipped: u64) {
        self.metrics()
            .dead_letters_skipped
            .with_label_values(&[route])
            .inc_by(skipped);
    }

    /// A gap of `offsets` records Kafka deleted before the sink held them.
    pub fn record_lost(&self, route: &str, sink: &str, offsets: u64) {
        self.metrics()
            .lost
            .with_label_values(&[route, sink])
            .inc_by(offsets);
    }

    /// Ready when consuming, every sink accepts writes, every service answers and no
    /// route is paused; else every reason, `; `-separated.
    pub fn ready(&self) -> Result<(), String> {
        if !self.inner.consuming.load(Ordering::Relaxed) {
            return Err("not consuming".into());
        }
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut why = Vec::new();
        let failing = self.inner.failing_sinks.lock().expect("health poisoned");
        if !failing.is_empty() {
            why.push(format!("failing sinks: {}", list(&failing)));
        }
        let waiting = self.inner.waiting_for.lock().expect("health poisoned");
        if !waiting.is_empty() {
            why.push(format!("waiting for: {}", list(&waiting)));
        }
        let paused = self.inner.paused.lock().expect("health poisoned");
        for (route, reason) in paused.iter() {
            why.push(format!("route `{route}` paused: {reason}"));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    pub(crate) fn metrics_text(&self) -> String {
        for s in self.sinks().list(Instant::now()) {
            self.metrics()
                .oldest_unwritten
                .with_label_values(&[&s.route, &s.sink])
                .set(s.oldest_unwritten_seconds);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.metrics().registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(listen: &str, health: Health) -> anyhow::Result<()> {
    let ready = health.clone();
    let metrics = health.clone();
    let page = health.clone();
    let json = health.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |RawQuery(query): RawQuery| {
                let h = page.clone();
                async move {
                    let status = h.status();
                    let body = if query.as_deref() == Some("part=facts") {
                        status::facts(&status)
                    } else {
                        status::page(&status)
                    };
                    ([(CONTENT_TYPE, "text/html; charset=utf-8")], body)
                }
            }),
        )
        .route(
            "/status.json",
            get(move || {
                let h = json.clone();
                async move {
                    let body = serde_json::to_string_pretty(&h.status()).unwrap_or_default();
                    ([(CONTENT_TYPE, "application/json")], body)
                }
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let h = ready.clone();
                async move {
                    match h.ready() {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let h = metrics.clone();
                async move { h.metrics_text() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen `{listen}`: {e}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Flushed, Health};

    /// The value of the one sample of `name` whose labels are exactly `labels`.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn a_sink_is_seen_before_its_first_write_and_every_write_is_counted() {
        let health = Health::new();
        let (route, sink) = ("orders", "clickhouse db.orders");
        health.sink_opened(route, sink);
        let text = health.metrics_text();
        let both = r#"route="orders",sink="clickhouse db.orders""#;
        assert_eq!(sample(&text, "ingest_rows_written_total", both), Some(0.0));
        assert_eq!(
            sample(&text, "ingest_consumer_lag_records", both),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "ingest_writes_up", r#"sink="clickhouse db.orders""#),
            Some(1.0)
        );
        for _ in 0..3 {
            health.record_consumed(route, 100);
        }
        health.record_flush(&Flushed {
            route,
            sink,
            rows: 3,
            bytes: 300,
            reason: "age",
            took: Duration::from_millis(40),
            files: 2,
            commits: 1,
        });
        health.record_retry(sink, "insert failed: connection refused");
        health.set_sink_failing(sink, true);
        // Unknown until the pipeline knows it: 0, complete to nothing yet.
        let before = sample(&health.metrics_text(), "ingest_watermark_seconds", both);
        assert_eq!(before, Some(0.0));
        health.set_progress(
            route,
            sink,
            super::Progress {
                lag: 7,
                since: Some(std::time::Instant::now() - Duration::from_millis(1500)),
                watermark: Some(1_796_000_000_250),
            },
        );
        health.set_route_watermark(route, Some(1_796_000_000_000));
        health.add_partitions(4);
        let text = health.metrics_text();
        assert_eq!(
            sample(&text, "ingest_records_consumed_total", r#"route="orders""#),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "ingest_bytes_consumed_total", r#"route="orders""#),
            Some(300.0)
        );
        assert_eq!(sample(&text, "ingest_rows_written_total", both), Some(3.0));
        assert_eq!(
            sample(&text, "ingest_bytes_written_total", both),
            Some(300.0)
        );
        assert_eq!(sample(&text, "ingest_files_written_total", both), Some(2.0));
        assert_eq!(sample(&text, "ingest_commits_total", both), Some(1.0));
        let by_reason = |reason: &str| {
            sample(
                &text,
                "ingest_flushes_total",
                &format!(r#"reason="{reason}",{both}"#),
            )
        };
        assert_eq!(by_reason("age"), Some(1.0));
        assert_eq!(by_reason("rows"), Some(0.0));
        assert_eq!(sample(&text, "ingest_write_seconds_count", both), Some(1.0));
        assert_eq!(
            sample(
                &text,
                "ingest_write_seconds_bucket",
                &format!(r#"{both},le="0.05""#)
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "ingest_write_retries_total",
                r#"sink="clickhouse db.orders""#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "ingest_writes_up", r#"sink="clickhouse db.orders""#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "ingest_consumer_lag_records", both),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "ingest_watermark_seconds", both),
            Some(1_796_000_000.25)
        );
        assert_eq!(
            sample(&text, "ingest_route_watermark_seconds", r#"route="orders""#),
            Some(1_796_000_000.0)
        );
        assert_eq!(
            health.status().routes[0].watermark.as_deref(),
            Some("2026-11-30T00:53:20.000Z")
        );
        let age = sample(&text, "ingest_oldest_unwritten_seconds", both).unwrap();
        assert!((1.5..3.0).contains(&age), "{age}");
        assert_eq!(
            sample(&text, "ingest_rebalances_total", r#"kind="assigned""#),
            Some(1.0)
        );
        assert!(text.contains("\ningest_assigned_partitions 4\n"));
    }

    #[test]
    fn ready_names_every_reason_and_the_paused_metric_follows() {
        let health = Health::new();
        health.set_ready(true);
        assert_eq!(health.ready(), Ok(()));
        health.set_waiting_for("schema registry", true);
        health.set_route_paused("orders", Some("writer schema id 9 cannot be read"));
        assert_eq!(
            health.ready(),
            Err("waiting for: schema registry; route `orders` paused: writer schema id 9 cannot be read".into())
        );
        assert!(
            health
                .metrics_text()
                .contains("ingest_route_paused{route=\"orders\"} 1")
        );
        health.set_waiting_for("schema registry", false);
        health.set_route_paused("orders", None);
        assert_eq!(health.ready(), Ok(()));
        assert!(
            health
                .metrics_text()
                .contains("ingest_route_paused{route=\"orders\"} 0")
        );
    }
}
