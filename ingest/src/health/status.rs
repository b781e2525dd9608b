//! What the status page (`/`) and `/status.json` show: each route's sinks with their
//! state, how far behind they are, their last write and last error, and why `/ready` is
//! what it is. Kept beside the metrics (same events feed both) because a person asks
//! "what is wrong now", which counters and histograms do not answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One sink of one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStatus {
    pub route: String,
    pub sink: String,
    /// `up`, or `failing` while its writes fail or go unanswered.
    pub state: &'static str,
    pub lag_records: i64,
    pub oldest_unwritten_seconds: f64,
    pub rows_written: u64,
    pub last_write_unix: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_unix: Option<f64>,
    pub retries: u64,
    /// The completeness watermark (`watermark/`), ms since the epoch and as RFC 3339:
    /// every record of the partitions read here with an earlier time is in the sink.
    pub watermark_unix_ms: Option<i64>,
    pub watermark: Option<String>,
    /// When the oldest record not yet durable in the sink was read: the age is taken
    /// when asked, so it keeps growing while the pipeline is blocked on a write.
    #[serde(skip)]
    pub unwritten_since: Option<Instant>,
}

/// The whole service, as one page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub ready: bool,
    /// Why `/ready` is 503 (empty when ready).
    pub not_ready: Vec<String>,
    pub assigned_partitions: i64,
    pub started_unix: f64,
    pub now_unix: f64,
    pub version: &'static str,
    pub sinks: Vec<SinkStatus>,
    /// Each route's watermark across all its sinks (the least of theirs).
    pub routes: Vec<RouteStatus>,
}

/// A route's watermark across its sinks.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub route: String,
    pub watermark_unix_ms: Option<i64>,
    pub watermark: Option<String>,
}

impl RouteStatus {
    pub fn new(route: &str, watermark: Option<i64>) -> Self {
        Self {
            route: route.to_string(),
            watermark_unix_ms: watermark,
            watermark: watermark.map(ingest_sink_api::Watermark::format),
        }
    }
}

/// The sinks' statuses, by (route, sink).
#[derive(Debug, Default)]
pub(crate) struct Sinks(BTreeMap<(String, String), SinkStatus>);

impl Sinks {
    pub fn opened(&mut self, route: &str, sink: &str) {
        self.0
            .entry((route.to_string(), sink.to_string()))
            .or_insert_with(|| SinkStatus {
                route: route.to_string(),
                sink: sink.to_string(),
                state: "up",
                ..SinkStatus::default()
            });
    }

    pub fn flushed(&mut self, route: &str, sink: &str, rows: u64) {
        if let Some(s) = self.0.get_mut(&(route.to_string(), sink.to_string())) {
            s.rows_written += rows;
            s.last_write_unix = Some(unix(SystemTime::now()));
        }
    }

    pub fn progress(&mut self, route: &str, sink: &str, progress: &super::Progress) {
        if let Some(s) = self.0.get_mut(&(route.to_string(), sink.to_string())) {
            s.lag_records = progress.lag;
            s.unwritten_since = progress.since;
            s.watermark_unix_ms = progress.watermark;
            s.watermark = progress.watermark.map(ingest_sink_api::Watermark::format);
        }
    }

    /// A sink name may serve several routes (one table fed by two routes).
    fn of_sink(&mut self, sink: &str) -> impl Iterator<Item = &mut SinkStatus> {
        self.0.values_mut().filter(move |s| s.sink == sink)
    }

    pub fn failing(&mut self, sink: &str, failing: bool) {
        for s in self.of_sink(sink) {
            s.state = if failing { "failing" } else { "up" };
        }
    }

    pub fn retried(&mut self, sink: &str, error: &str) {
        for s in self.of_sink(sink) {
            s.retries += 1;
        }
        self.error(sink, error);
    }

    /// The sink's latest trouble, whether or not a retry follows (a write not answered).
    pub fn error(&mut self, sink: &str, error: &str) {
        let now = unix(SystemTime::now());
        // The page is served to whoever reaches the admin port: the same masking as
        // the logs (registered secrets, URI passwords).
        let error = ingest_sink_api::secret::scrub(error).into_owned();
        for s in self.of_sink(sink) {
            s.last_error = Some(error.clone());
            s.last_error_unix = Some(now);
        }
    }

    /// Every sink, with the age of its oldest unwritten record as of `now`.
    pub fn list(&self, now: Instant) -> Vec<SinkStatus> {
        self.0
            .values()
            .map(|s| SinkStatus {
                oldest_unwritten_seconds: s
                    .unwritten_since
                    .map_or(0.0, |t| now.duration_since(t).as_secs_f64()),
                ..s.clone()
            })
            .collect()
    }
}

pub(crate) fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The page: the facts rendered here, and a little script that fetches them again
/// (`/?part=facts`) every 2 s, so one renderer serves both.
pub fn page(status: &Status) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ingest status</title><style>{STYLE}</style></head>\
         <body><h1>ingest</h1><div id=\"facts\">{}</div>\
         <p class=\"foot\">Refreshed every 2 s. <a href=\"/status.json\">status.json</a> · \
         <a href=\"/metrics\">metrics</a> · <a href=\"/ready\">ready</a></p>\
         <script>{SCRIPT}</script></body></html>\n",
        facts(status)
    )
}

/// The part of the page that changes.
pub fn facts(status: &Status) -> String {
    let mut out = String::new();
    let (class, said) = if status.ready {
        ("ok", "ready".to_string())
    } else {
        ("bad", format!("not ready: {}", status.not_ready.join("; ")))
    };
    let _ = write!(
        out,
        "<p id=\"ready\" class=\"{class}\">{}</p><p>version {} · up {} · {} partitions assigned</p>",
        escape(&said),
        escape(status.version),
        age(status.now_unix - status.started_unix),
        status.assigned_partitions
    );
    out.push_str(
        "<table><thead><tr><th>route</th><th>sink</th><th>state</th><th>records behind</th>\
         <th>oldest unwritten</th><th>complete to</th><th>rows written</th><th>last write</th>\
         <th>retries</th><th>last error</th></tr></thead><tbody>",
    );
    for s in &status.sinks {
        let ago = |t: Option<f64>| {
            t.map_or("never".to_string(), |t| {
                format!("{} ago", age(status.now_unix - t))
            })
        };
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"state\">{}</td><td class=\"lag\">{}</td>\
             <td>{}</td><td class=\"watermark\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"error\">{}</td></tr>",
            s.state,
            escape(&s.route),
            escape(&s.sink),
            s.state,
            s.lag_records,
            age(s.oldest_unwritten_seconds),
            s.watermark.as_deref().unwrap_or("unknown"),
            s.rows_written,
            ago(s.last_write_unix),
            s.retries,
            s.last_error.as_deref().map_or(String::new(), |e| format!(
                "{} ({})",
                escape(e),
                ago(s.last_error_unix)
            )),
        );
    }
    out.push_str("</tbody></table>");
    for r in &status.routes {
        let _ = write!(
            out,
            "<p class=\"route-watermark\">route {} is complete in all its sinks to {}</p>",
            escape(&r.route),
            r.watermark.as_deref().unwrap_or("an unknown time")
        );
    }
    out
}

/// `12.3 s`, `4 min 5 s`, `2 h 3 min`.
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// HTML text: by hand, five characters (a template engine for one page is more than
/// this needs).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
    table{border-collapse:collapse}th,td{padding:.35em .8em;border-bottom:1px solid #ddd;text-align:left}\
    .ok{color:#176f2c;font-weight:600}.bad{color:#b3261e;font-weight:600}\
    tr.failing td.state{color:#b3261e;font-weight:600}tr.up td.state{color:#176f2c}\
    td.error{color:#b3261e;max-width:40em}.foot{color:#777;margin-top:2em}";

const SCRIPT: &str = "setInterval(async()=>{try{const r=await fetch('/?part=facts');\
    if(r.ok)document.getElementById('facts').innerHTML=await r.text();}catch(e){}},2000);";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_says_what_is_wrong_and_escapes_what_it_is_told() {
        let mut sinks = Sinks::default();
        sinks.opened("orders", "clickhouse db.orders");
        sinks.opened("orders", "iceberg lake.orders");
        sinks.flushed("orders", "iceberg lake.orders", 10);
        sinks.failing("clickhouse db.orders", true);
        sinks.retried(
            "clickhouse db.orders",
            "insert failed: <Connection refused>",
        );
        sinks.error(
            "iceberg lake.orders",
            "catalog postgres://ingest:hunter2@db:5432/lake unreachable",
        );
        let now = Instant::now();
        let read = now - std::time::Duration::from_secs(75);
        sinks.progress(
            "orders",
            "clickhouse db.orders",
            &crate::health::Progress {
                lag: 1234,
                since: Some(read),
                watermark: Some(1_796_000_000_000),
            },
        );
        let status = Status {
            ready: false,
            not_ready: vec!["failing sinks: clickhouse db.orders".into()],
            assigned_partitions: 4,
            started_unix: 1000.0,
            now_unix: 1100.0,
            version: "0.1.0",
            sinks: sinks.list(now),
            routes: vec![RouteStatus::new("orders", None)],
        };
        let html = page(&status);
        assert!(
            html.contains("not ready: failing sinks: clickhouse db.orders"),
            "{html}"
        );
        assert!(html.contains("<td class=\"lag\">1234</td>"), "{html}");
        assert!(html.contains("1 min 15 s"), "{html}");
        assert!(
            html.contains("<td class=\"watermark\">2026-11-30T"),
            "{html}"
        );
        assert!(
            html.contains("route orders is complete in all its sinks to an unknown time"),
            "{html}"
        );
        assert!(
            html.contains("insert failed: &lt;Connection refused&gt;"),
            "{html}"
        );
        assert!(!html.contains("<Connection"), "{html}");
        assert!(
            html.contains("<tr class=\"failing\"><td>orders</td><td>clickhouse db.orders</td>")
        );
        assert!(html.contains("<tr class=\"up\"><td>orders</td><td>iceberg lake.orders</td>"));
        assert!(!html.contains("hunter2"), "{html}");
        assert!(
            html.contains("postgres://ingest:***@db:5432/lake"),
            "{html}"
        );
        assert_eq!(sinks.list(now)[1].rows_written, 10);
        assert_eq!(sinks.list(now)[0].retries, 1);
    }
}
