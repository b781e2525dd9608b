//! A payload field named like a coordinate column never becomes a position, against
//! the real ClickHouse server of the local stack (`CLICKHOUSE_URL`).
//!
//! The service refuses such a config (a schema field `_offset` on a route without
//! `metadata:`); the sink itself must still never read a position from the payload:
//! the coordinate columns are always filled from the rows' Kafka positions.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::{coordinates, drop_database, events_table, fresh_database, number, sql, try_open};
use ingest_sink_api::{OffsetMap, Sink, SinkBatch};

#[tokio::test]
async fn a_payload_offset_field_does_not_move_the_position() {
    let conn = fresh_database("coordinate_columns").await;
    let db = conn.database.clone();
    // The payload has its own `_offset` (say, a byte offset in a source file) and a
    // `_topic` of another type: neither is a Kafka coordinate.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_topic", DataType::Utf8, false),
    ]));
    let mut sink = try_open(&conn, &events_table(), schema.clone())
        .await
        .unwrap();

    let kafka_offsets: Vec<i64> = (0..10).collect();
    let payload_offsets: Vec<i64> = kafka_offsets.iter().map(|o| 1_000_000 + o).collect();
    let mut positions = OffsetMap::default();
    positions.advance("events", 0, 10);
    let batch = SinkBatch {
        batches: vec![
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(kafka_offsets.clone())),
                    Arc::new(Int64Array::from(payload_offsets)),
                    Arc::new(StringArray::from(vec!["file.log"; 10])),
                ],
            )
            .unwrap(),
        ],
        coordinates: vec![coordinates(&kafka_offsets)],
        positions,
        epoch: 0,
        watermark: None,
    };
    sink.write(&batch).await.unwrap();

    let positions: Vec<(String, i32, i64)> = sink
        .read_positions(&OffsetMap::default())
        .await
        .unwrap()
        .iter()
        .map(|(topic, partition, next)| (topic.to_string(), partition, next))
        .collect();
    assert_eq!(
        positions,
        vec![("events".to_string(), 0, 10)],
        "the position is the Kafka offset after the last row, not the payload's `_offset`"
    );
    let row = &sql(
        &conn,
        &format!(
            "SELECT min(_offset) AS lo, max(_offset) AS hi, uniqExact(_topic) AS topics, \
             any(_topic) AS topic FROM {db}.events"
        ),
    )
    .await[0];
    assert_eq!((number(&row["lo"]), number(&row["hi"])), (0, 9));
    assert_eq!(
        (number(&row["topics"]), row["topic"].as_str()),
        (1, Some("events"))
    );
    drop_database(&conn).await;
}
