//! Shared by the benchmarks: sample events and the pieces under measurement.

use std::path::Path;

use arrow_schema::SchemaRef;
use ingest::EventGenerator;

/// The example clickstream schema (`schemas/examples/events.yaml`).
pub fn events_schema() -> SchemaRef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/events.yaml");
    ingest_schemas::load_schema(&path).expect("example schema")
}

/// `count` generated events, one JSON object each (the same generator `ingest produce` uses).
pub fn sample_events(count: usize) -> Vec<Vec<u8>> {
    let mut generator = EventGenerator::new(events_schema(), Some("event_id".into()), 0, 42);
    (0..count)
        .map(|_| {
            let mut buf = Vec::with_capacity(400);
            generator.next_event(&mut buf);
            buf
        })
        .collect()
}
