//! Liveness, readiness and Prometheus metrics over HTTP, for Kubernetes probes and
//! scraping: `/health` (process up), `/ready` (consuming and no sink failing),
//! `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

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
    paused_gauge: IntGaugeVec,
    registry: Registry,
    rows: IntCounterVec,
    rejected: IntCounterVec,
    dead_letters_skipped: IntCounterVec,
    flushes: IntCounterVec,
    lost: IntCounterVec,
    assigned: IntGauge,
    consumed: IntCounter,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let rows = counter(
            "ingest_rows_written_total",
            "Rows of batches a sink made durable (rows it held already are skipped, not rewritten)",
            &["route", "sink"],
        );
        let rejected = counter(
            "ingest_records_rejected_total",
            "Records the dead-letter topic took, by route and reason (the error class)",
            &["route", "reason"],
        );
        let dead_letters_skipped = counter(
            "ingest_dead_letters_skipped_total",
            "Bad records read again that the dead-letter topic held already: not sent twice",
            &["route"],
        );
        let flushes = counter(
            "ingest_flushes_total",
            "Batches written to a sink",
            &["route", "sink"],
        );
        let lost = counter(
            "ingest_records_lost_total",
            "Offsets Kafka deleted (retention, DeleteRecords) before a sink held them: a gap in that sink",
            &["route", "sink"],
        );
        let paused_gauge = IntGaugeVec::new(
            Opts::new(
                "ingest_route_paused",
                "1 while the route is paused (on_incompatible: pause): /ready says why",
            ),
            &["route"],
        )
        .expect("metric");
        registry
            .register(Box::new(paused_gauge.clone()))
            .expect("register");
        let assigned = IntGauge::new(
            "ingest_assigned_partitions",
            "Partitions owned by this instance",
        )
        .expect("metric");
        registry
            .register(Box::new(assigned.clone()))
            .expect("register");
        let consumed = IntCounter::new("ingest_records_consumed_total", "Records read from Kafka")
            .expect("metric");
        registry
            .register(Box::new(consumed.clone()))
            .expect("register");
        Self {
            inner: Arc::new(Inner {
                consuming: AtomicBool::new(false),
                partitions: AtomicI64::new(0),
                failing_sinks: Mutex::new(BTreeSet::new()),
                waiting_for: Mutex::new(BTreeSet::new()),
                paused: Mutex::new(BTreeMap::new()),
                paused_gauge,
                registry,
                rows,
                rejected,
                dead_letters_skipped,
                flushes,
                lost,
                assigned,
                consumed,
            }),
        }
    }

    pub fn set_ready(&self, consuming: bool) {
        self.inner.consuming.store(consuming, Ordering::Relaxed);
    }

    pub fn add_partitions(&self, delta: i64) {
        let now = self.inner.partitions.fetch_add(delta, Ordering::Relaxed) + delta;
        self.inner.assigned.set(now.max(0));
    }

    pub fn set_sink_failing(&self, sink: &str, failing: bool) {
        let mut set = self.inner.failing_sinks.lock().expect("health poisoned");
        if failing {
            set.insert(sink.to_string());
        } else {
            set.remove(sink);
        }
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
        self.inner
            .paused_gauge
            .with_label_values(&[route])
            .set(i64::from(why.is_some()));
    }

    /// Whether the sink's last write attempt failed and it is being retried.
    pub fn sink_failing(&self, sink: &str) -> bool {
        let set = self.inner.failing_sinks.lock().expect("health poisoned");
        set.contains(sink)
    }

    pub fn record_consumed(&self) {
        self.inner.consumed.inc();
    }

    pub fn record_flush(&self, route: &str, sink: &str, rows: u64) {
        self.inner
            .rows
            .with_label_values(&[route, sink])
            .inc_by(rows);
        self.inner.flushes.with_label_values(&[route, sink]).inc();
    }

    pub fn record_rejected(&self, route: &str, reason: &str, rejected: u64) {
        self.inner
            .rejected
            .with_label_values(&[route, reason])
            .inc_by(rejected);
    }

    pub fn record_dead_letters_skipped(&self, route: &str, skipped: u64) {
        self.inner
            .dead_letters_skipped
            .with_label_values(&[route])
            .inc_by(skipped);
    }

    /// A gap of `offsets` records Kafka deleted before the sink held them.
    pub fn record_lost(&self, route: &str, sink: &str, offsets: u64) {
        self.inner
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
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .expect("text encoding");
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves the endpoints until the process ends.
pub async fn serve(listen: &str, health: Health) -> anyhow::Result<()> {
    let ready = health.clone();
    let metrics = health.clone();
    let app = Router::new()
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
    use super::Health;

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
