//! The sinks this service can write to. Adding a sink is its own crate under `sinks/`
//! and one line here; nothing else in the service names a sink.

use ingest_sink_api::SinkPlugin;

/// Every registered sink, in the order routes list their tables.
pub fn registered() -> [&'static SinkPlugin; 2] {
    [
        &ingest_sink_clickhouse::CLICKHOUSE,
        &ingest_sink_iceberg::ICEBERG,
    ]
}
