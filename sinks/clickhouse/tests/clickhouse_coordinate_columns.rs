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
use common::{connection, number, sql};
use ingest_sink_api::{Coordinates, OffsetMap, Sink, SinkBatch};
use ingest_sink_clickhouse::{ClickHouseSink, ClickHouseTable, CoordinateColumns};

#[tokio::test]
async fn a_payload_offset_field_does_not_move_the_position() {
    let conn = connection(&format!("coordinate_columns_{}", std::process::id()));
    let db = conn.database.clone();
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
    // The payload has its own `_offset` (say, a byte offset in a source file) and a
    // `_topic` of another type: neither is a Kafka coordinate.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_topic", DataType::Utf8, false),
    ]));
    let table: ClickHouseTable =
        serde_json::from_value(serde_json::json!({ "table": "events", "order_by": ["id"] }))
            .unwrap();
    let mut sink =
        ClickHouseSink::open(&conn, &table, schema.clone(), CoordinateColumns::default())
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
        coordinates: vec![
            kafka_offsets
                .iter()
                .map(|&offset| Coordinates {
                    topic: "events",
                    partition: 0,
                    offset,
                })
                .collect(),
        ],
        positions,
        epoch: 0,
    };
    sink.write(&batch).await.unwrap();

    let durable = sink.read_positions(&OffsetMap::default()).await.unwrap();
    let positions: Vec<(String, i32, i64)> = durable
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
    sql(&conn, &format!("DROP DATABASE IF EXISTS {db}")).await;
}
