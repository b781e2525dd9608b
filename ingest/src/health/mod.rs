//! Liveness, readiness and Prometheus metrics over HTTP, for Kubernetes probes and
//! scraping: `/health` (process up), `/ready` (consuming and no sink failing),
//! `/metrics`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    consuming: AtomicBool,
    partitions: AtomicI64,
    failing_sinks: Mutex<BTreeSet<String>>,
    registry: Registry,
    rows: IntCounterVec,
    rejected: IntCounterVec,
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
            "Records sent to the dead-letter topic",
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
                registry,
                rows,
                rejected,
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

    pub fn record_rejected(&self, route: &str, rejected: u64) {
        self.inner
            .rejected
            .with_label_values(&[route])
            .inc_by(rejected);
    }

    /// A gap of `offsets` records Kafka deleted before the sink held them.
    pub fn record_lost(&self, route: &str, sink: &str, offsets: u64) {
        self.inner
            .lost
            .with_label_values(&[route, sink])
            .inc_by(offsets);
    }

    /// Ready when consuming and every sink accepts writes.
    pub fn ready(&self) -> Result<(), String> {
        if !self.inner.consuming.load(Ordering::Relaxed) {
            return Err("not consuming".into());
        }
        let failing = self.inner.failing_sinks.lock().expect("health poisoned");
        if !failing.is_empty() {
            return Err(format!(
                "failing sinks: {}",
                failing.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
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
