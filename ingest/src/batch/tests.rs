//! Lanes of a route: each sink batches on its own limits, and only what every sink
//! made durable is committable.

use std::time::Instant;

use ingest_sink_api::{OffsetMap, Partition, Sink, SinkBatch, SinkError};

use super::*;
use crate::config::load_str;

/// A sink that accepts everything; these tests look at batching, not at writing.
struct Accepting(&'static str);

#[async_trait::async_trait]
impl Sink for Accepting {
    fn name(&self) -> &str {
        self.0
    }
    async fn write(&mut self, _: &SinkBatch) -> Result<ingest_sink_api::WriteOutcome, SinkError> {
        Ok(Default::default())
    }
    fn position_reader(&self) -> std::sync::Arc<dyn ingest_sink_api::PositionReader> {
        std::sync::Arc::new(Nothing)
    }
}

/// Holds no positions (the sink above keeps nothing).
struct Nothing;

#[async_trait::async_trait]
impl ingest_sink_api::PositionReader for Nothing {
    async fn read(&self, _: &OffsetMap) -> Result<OffsetMap, SinkError> {
        Ok(OffsetMap::default())
    }
}

/// A route with a fast lane (10 rows) and a slow one (100 rows).
pub(super) fn route() -> RouteBatch {
    // One directory per call: tests run in parallel and rewrite the schema file.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ingest-route-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s.yaml"), "fields:\n  - {name: id, type: int64}\n").unwrap();
    let text = r#"
kafka: { brokers: "x:9092", group_id: g }
clickhouse: { url: "http://x:8123" }
iceberg:
  catalog: { type: sql, uri: "sqlite:///tmp/c.db", warehouse: "file:///tmp/w" }
  namespace: n
routes:
  - topics: [t]
    schema: s.yaml
    batch: { max_rows: 100, max_age: 1h }
    clickhouse: { table: a, batch: { max_rows: 10 } }
    iceberg: { table: b }
"#;
    let loaded = load_str(text, &dir.join("c.yaml"), &|_| None).unwrap();
    let route = loaded.routes[0].clone();
    let mut state = RouteBatch::new(route.clone(), 0).unwrap();
    state.add_sink(Box::new(Accepting("fast")), &route.sinks[0].batch);
    state.add_sink(Box::new(Accepting("slow")), &route.sinks[1].batch);
    state
}

pub(super) fn push(route: &mut RouteBatch, partition: i32, offsets: std::ops::Range<i64>) {
    for offset in offsets {
        let payload = format!(r#"{{"id": {offset}}}"#);
        route.push(&Message {
            topic: "t",
            partition,
            offset,
            timestamp: None,
            key: None,
            payload: Some(payload.as_bytes()),
            headers: None,
        });
    }
}

#[test]
fn each_lane_fills_on_its_own_limits() {
    let mut route = route();
    push(&mut route, 0, 0..9);
    assert!(!route.full());
    push(&mut route, 0, 9..10);
    assert!(route.full(), "the fast lane holds 10 rows");
    let now = Instant::now();
    assert!(route.lane_due(0, now) && !route.lane_due(1, now));
    let chunk = route.take_decoded();
    route.distribute(&chunk);
    let fast = route.lanes[0].take();
    assert_eq!(fast.num_rows(), 10);
    assert_eq!(fast.positions.get("t", 0), Some(10));
    // The slow lane keeps its rows until its own limit.
    assert!(route.lanes[1].has_open() && !route.full());
    push(&mut route, 0, 10..100);
    assert!(route.lanes[1].full_with(90, 0));
}

#[test]
fn revoking_drops_buffered_rows_of_the_partition() {
    let mut route = route();
    push(&mut route, 0, 0..5);
    push(&mut route, 1, 0..5);
    let chunk = route.take_decoded();
    route.distribute(&chunk);
    push(&mut route, 1, 5..8);
    route.revoke(&[Partition::new("t", 1)]);
    let chunk = route.take_decoded();
    assert_eq!(chunk.rows.num_rows(), 0);
    assert_eq!(chunk.rows.positions.get("t", 1), None);
    let slow = route.lanes[1].take();
    assert_eq!(slow.num_rows(), 5);
    assert!(slow.coordinates.iter().flatten().all(|p| p.partition == 0));
}
