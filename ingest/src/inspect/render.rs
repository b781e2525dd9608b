//! The report for a person: per route, its sinks (state, records behind, watermark,
//! last write, last error), then each partition's log, committed offset and each
//! sink's position.

use std::fmt::Write as _;

use super::Report;

/// The report as aligned text; `now_unix` dates the "ago"s.
pub fn render(report: &Report, now_unix: f64) -> String {
    let mut out = String::new();
    let service = &report.service;
    let said = match (service.reachable, service.ready) {
        (true, Some(true)) => "ready".to_string(),
        (true, _) => format!("not ready: {}", service.not_ready.join("; ")),
        (false, _) => format!(
            "not answering ({}): states and errors unknown",
            service.error.as_deref().unwrap_or("no answer")
        ),
    };
    let _ = writeln!(
        out,
        "group {} · service {}: {said}",
        report.group, service.url
    );
    for route in &report.routes {
        let _ = writeln!(
            out,
            "\nroute {}: complete in every sink to {}",
            route.route,
            route.watermark.as_deref().unwrap_or("an unknown time")
        );
        let mut rows = vec![vec![
            "sink".to_string(),
            "state".into(),
            "behind".into(),
            "complete to".into(),
            "last write".into(),
            "last error".into(),
        ]];
        for s in &route.sinks {
            let last_write = match (&s.last_write, s.last_write_unix) {
                (Some(at), Some(t)) => format!("{at} ({:.0} s ago)", (now_unix - t).max(0.0)),
                _ if !s.table_exists && s.error.is_none() => "no table yet".into(),
                _ => "never".into(),
            };
            rows.push(vec![
                s.sink.clone(),
                s.state.clone().unwrap_or_else(|| "?".into()),
                s.lag_records.map_or("?".into(), |l| l.to_string()),
                s.watermark.clone().unwrap_or_else(|| "unknown".into()),
                last_write,
                s.error
                    .as_ref()
                    .map(|e| format!("cannot read: {e}"))
                    .or_else(|| s.last_error.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        aligned(&mut out, &rows);
        let mut rows = vec![vec![
            "partition".to_string(),
            "log start".into(),
            "log end".into(),
            "committed".into(),
        ]];
        rows[0].extend(route.sinks.iter().map(|s| s.sink.clone()));
        let number = |n: Option<i64>| n.map_or("-".into(), |n| n.to_string());
        for p in &route.partitions {
            let mut row = vec![
                format!("{}/{}", p.topic, p.partition),
                number(p.log_start),
                number(p.log_end),
                number(p.committed),
            ];
            row.extend(p.positions.iter().map(|n| number(*n)));
            rows.push(row);
        }
        out.push('\n');
        aligned(&mut out, &rows);
    }
    out
}

/// Columns padded to their widest cell, two spaces apart (a table crate would bring
/// terminal handling this plain output does not want).
fn aligned(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
}
