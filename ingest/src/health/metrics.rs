//! Every Prometheus metric the service exports, named in one place (docs/operations.md
//! explains each; the dashboard and alert rules in deploy/ query them).
//!
//! Labels are bounded by the configuration: `route` (a route's name), `sink` (a sink
//! with its table: `clickhouse db.events`, `iceberg ns.events`), `reason` (a fixed set).
//! Nothing is labelled per partition, per topic or per record, so a scrape stays the
//! same size however many partitions an instance owns.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Seconds a write (all its attempts) may take: from a fast insert to a sink that
/// came back after an outage.
const WRITE_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub(crate) struct Metrics {
    pub registry: Registry,
    pub consumed: IntCounterVec,
    pub consumed_bytes: IntCounterVec,
    pub rows: IntCounterVec,
    pub bytes_written: IntCounterVec,
    pub flushes: IntCounterVec,
    pub write_seconds: HistogramVec,
    pub files: IntCounterVec,
    pub commits: IntCounterVec,
    pub retries: IntCounterVec,
    pub sink_up: IntGaugeVec,
    pub lag: IntGaugeVec,
    pub oldest_unwritten: GaugeVec,
    pub watermark: GaugeVec,
    pub route_watermark: GaugeVec,
    pub shed: IntCounterVec,
    pub reread: IntCounterVec,
    pub rejected: IntCounterVec,
    pub dead_letters_skipped: IntCounterVec,
    pub lost: IntCounterVec,
    pub paused: IntGaugeVec,
    pub assigned: IntGauge,
    pub rebalances: IntCounterVec,
    pub up_since: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let route_sink = &["route", "sink"][..];
        let metrics = Self {
            consumed: counter(
                "ingest_records_consumed_total",
                "Records read from Kafka, by route",
                &["route"],
            ),
            consumed_bytes: counter(
                "ingest_bytes_consumed_total",
                "Payload bytes of the records read from Kafka, by route",
                &["route"],
            ),
            rows: counter(
                "ingest_rows_written_total",
                "Rows of batches a sink made durable (rows it held already are skipped, not rewritten)",
                route_sink,
            ),
            bytes_written: counter(
                "ingest_bytes_written_total",
                "Payload bytes of the records whose rows a sink made durable",
                route_sink,
            ),
            flushes: counter(
                "ingest_flushes_total",
                "Batches written to a sink, by what made them due: rows, bytes, age (max_age) or drain (shutdown, rebalance, schema change)",
                &["route", "sink", "reason"],
            ),
            write_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "ingest_write_seconds",
                        "Time from a batch's write starting to its sink holding it durably (every retry included)",
                    )
                    .buckets(WRITE_BUCKETS.to_vec()),
                    route_sink,
                )
                .expect("metric");
                registry.register(Box::new(h.clone())).expect("register");
                h
            },
            files: counter(
                "ingest_files_written_total",
                "Data files a sink committed (Iceberg: Parquet files in snapshots; 0 for ClickHouse)",
                route_sink,
            ),
            commits: counter(
                "ingest_commits_total",
                "Table commits a sink made (Iceberg: snapshots; 0 for ClickHouse, whose inserts are counted by ingest_flushes_total)",
                route_sink,
            ),
            retries: counter(
                "ingest_write_retries_total",
                "Failed write attempts that are retried (the sink is down or refused for a while)",
                &["sink"],
            ),
            sink_up: gauge(
                "ingest_writes_up",
                "1 while the sink's writes succeed, 0 while they fail or go unanswered (/ready says why)",
                &["sink"],
            ),
            lag: gauge(
                "ingest_consumer_lag_records",
                "Records in the route's assigned partitions a sink does not hold yet: log end less the sink's position",
                route_sink,
            ),
            oldest_unwritten: {
                let g = GaugeVec::new(
                    Opts::new(
                        "ingest_oldest_unwritten_seconds",
                        "Seconds since the oldest record read for a sink and not yet durable in it was read (0 when it holds all)",
                    ),
                    route_sink,
                )
                .expect("metric");
                registry.register(Box::new(g.clone())).expect("register");
                g
            },
            watermark: float_gauge(
                "ingest_watermark_seconds",
                "Completeness watermark (Unix seconds): every record of the route's partitions read here with an earlier time (Kafka timestamp or the route's watermark.time_field) is durable in the sink; 0 while unknown",
                route_sink,
            ),
            route_watermark: float_gauge(
                "ingest_route_watermark_seconds",
                "The least of the route's sinks' watermarks: complete in every sink before this time (Unix seconds; 0 while unknown)",
                &["route"],
            ),
            shed: counter(
                "ingest_lanes_shed_total",
                "Times a sink's buffered rows were dropped because it was down or hung with its lane full (read again once it is back)",
                route_sink,
            ),
            reread: counter(
                "ingest_partitions_reread_total",
                "Partitions read again from a sink's own position (after shedding, a fenced batch or a rebalance)",
                &["route"],
            ),
            rejected: counter(
                "ingest_records_rejected_total",
                "Records the dead-letter topic took, by route and reason (the error class)",
                &["route", "reason"],
            ),
            dead_letters_skipped: counter(
                "ingest_dead_letters_skipped_total",
                "Bad records read again that the dead-letter topic held already: not sent twice",
                &["route"],
            ),
            lost: counter(
                "ingest_records_lost_total",
                "Offsets Kafka deleted (retention, DeleteRecords) before a sink held them: a gap in that sink",
                route_sink,
            ),
            paused: gauge(
                "ingest_route_paused",
                "1 while the route is paused (on_incompatible: pause): /ready says why",
                &["route"],
            ),
            assigned: {
                let g = IntGauge::new(
                    "ingest_assigned_partitions",
                    "Partitions owned by this instance",
                )
                .expect("metric");
                registry.register(Box::new(g.clone())).expect("register");
                g
            },
            rebalances: counter(
                "ingest_rebalances_total",
                "Partition assignments and revocations this instance took part in",
                &["kind"],
            ),
            up_since: {
                let g = Gauge::new(
                    "ingest_start_time_seconds",
                    "When this process started (Unix seconds)",
                )
                .expect("metric");
                registry.register(Box::new(g.clone())).expect("register");
                g
            },
            registry,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics.up_since.set(now);
        for kind in ["assigned", "revoked"] {
            metrics.rebalances.with_label_values(&[kind]).inc_by(0);
        }
        metrics
    }

    /// Every series of a route's sink at zero, so the dashboard and the alerts see the
    /// sink before its first write (an absent series would make `rate()` and
    /// comparisons quietly empty).
    pub fn sink_opened(&self, route: &str, sink: &str) {
        let both = &[route, sink];
        for c in [
            &self.rows,
            &self.bytes_written,
            &self.files,
            &self.commits,
            &self.shed,
            &self.lost,
        ] {
            c.with_label_values(both).inc_by(0);
        }
        for reason in FLUSH_REASONS {
            self.flushes
                .with_label_values(&[route, sink, reason])
                .inc_by(0);
        }
        self.write_seconds.with_label_values(both);
        self.lag.with_label_values(both).set(0);
        self.oldest_unwritten.with_label_values(both).set(0.0);
        self.watermark.with_label_values(both).set(0.0);
        self.route_watermark.with_label_values(&[route]).set(0.0);
        self.retries.with_label_values(&[sink]).inc_by(0);
        self.sink_up.with_label_values(&[sink]).set(1);
        self.consumed.with_label_values(&[route]).inc_by(0);
        self.consumed_bytes.with_label_values(&[route]).inc_by(0);
        self.reread.with_label_values(&[route]).inc_by(0);
        self.dead_letters_skipped
            .with_label_values(&[route])
            .inc_by(0);
        self.paused.with_label_values(&[route]).set(0);
    }
}

/// What made a batch due (the `reason` of `ingest_flushes_total`).
pub(crate) const FLUSH_REASONS: [&str; 4] = ["rows", "bytes", "age", "drain"];
