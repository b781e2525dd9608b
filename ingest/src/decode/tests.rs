use super::*;
use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int64Type, TimestampMicrosecondType};

fn schema() -> SchemaRef {
    ingest_schemas::parse_schema(
        r#"
fields:
  - { name: id, type: int64 }
  - { name: ts, type: "timestamp(us, UTC)" }
  - { name: day, type: date? }
  - { name: price, type: "decimal(12, 3)?" }
  - { name: tags, type: "list<string>?" }
  - { name: user, type: "struct<name: string, age: int32?>?" }
"#,
    )
    .unwrap()
}

fn message(offset: i64, payload: &str) -> Message<'_> {
    Message {
        topic: "events",
        partition: 3,
        offset,
        timestamp: Some(1_700_000_000_000),
        key: Some(b"k"),
        payload: Some(payload.as_bytes()),
        headers: None,
    }
}

fn decoder(chunk_rows: usize) -> RouteDecoder {
    let meta = vec![
        ("_partition".to_string(), MetadataKind::Partition),
        ("_offset".to_string(), MetadataKind::Offset),
        ("_key".to_string(), MetadataKind::Key),
    ];
    RouteDecoder::new(&Payload::json(), schema(), meta, chunk_rows).unwrap()
}

#[test]
fn decodes_every_type_with_metadata() {
    let mut d = decoder(100);
    let mut rejected = Vec::new();
    d.push(
        &message(
            10,
            r#"{"id": 1, "ts": "2026-11-24T10:00:00.123456+02:00", "day": "2026-11-24", "price": 12.345,
                "tags": ["a", "b"], "user": {"name": "ann", "age": 31}, "ignored": true}"#,
        ),
        &mut rejected,
    );
    d.push(
        &message(11, r#"{"id": 2, "ts": 1700000000000000, "price": "0.001"}"#),
        &mut rejected,
    );
    let batches = d.take(&mut rejected);
    assert!(rejected.is_empty(), "{rejected:?}");
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 2);
    let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
    // 10:00 at +02:00 is 08:00 UTC.
    assert_eq!(ts.value(0), 1_795_507_200_123_456);
    assert_eq!(ts.value(1), 1_700_000_000_000_000);
    let price = batch.column(3).as_primitive::<Decimal128Type>();
    assert_eq!(price.value(0), 12_345);
    assert_eq!(price.value(1), 1);
    assert!(batch.column(2).is_null(1));
    assert!(batch.column(4).is_null(1));
    assert_eq!(batch.column(4).as_list::<i32>().value(0).len(), 2);
    assert_eq!(
        batch
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(1),
        11
    );
    assert_eq!(
        batch
            .column_by_name("_key")
            .unwrap()
            .as_binary::<i32>()
            .value(0),
        b"k"
    );
}

#[test]
fn rejects_bad_records_and_keeps_the_rest_in_order() {
    let mut d = decoder(4);
    let mut rejected = Vec::new();
    let inputs = [
        r#"{"id": 0, "ts": 0}"#,
        r#"{"id": 1, "ts": 0"#, // truncated
        r#"{"id": 2, "ts": 0}"#,
        r#"{"id": "x", "ts": 0}"#,                  // wrong type
        r#"{"id": 4, "ts": 0} {"id": 5, "ts": 0}"#, // two objects
        r#"{"ts": 0}"#,                             // missing required id
        r#"{"id": 6, "ts": 0}"#,
        r#"not json"#,
        r#"{"id": 7, "ts": 0, "user": {"age": 3}}"#, // struct lacks required name
        r#"{"id": 8, "ts": 0}"#,
    ];
    for (offset, text) in inputs.iter().enumerate() {
        d.push(&message(offset as i64, text), &mut rejected);
        if d.chunk_full() {
            d.flush_chunk(&mut rejected);
        }
    }
    let batches = d.take(&mut rejected);
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(ids, vec![0, 2, 6, 8]);
    let offsets: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("_offset")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(offsets, vec![0, 2, 6, 9]);
    let mut bad: Vec<i64> = rejected.iter().map(|r| r.offset).collect();
    bad.sort();
    assert_eq!(bad, vec![1, 3, 4, 5, 7, 8]);
    assert!(
        rejected
            .iter()
            .all(|r| !r.error.is_empty() && r.payload.is_some())
    );
    let truncated = rejected.iter().find(|r| r.offset == 1).unwrap();
    assert!(truncated.error.contains("truncated"), "{}", truncated.error);
}

#[test]
fn empty_payload_is_rejected() {
    let mut d = decoder(10);
    let mut rejected = Vec::new();
    let mut m = message(0, "");
    m.payload = None;
    d.push(&m, &mut rejected);
    assert_eq!(rejected.len(), 1);
    assert!(d.take(&mut rejected).is_empty());
}

/// Chunks decoded on workers come back as decoding them in place gives: the same rows
/// in the same order with the same coordinates, and the same rejected records in each
/// partition's order (records refused whole at `push` are found before those a worker
/// refuses in earlier chunks, and put back in order). Partitions interleave, chunks are
/// small, and a revocation meets chunks still on the workers.
#[test]
fn workers_give_what_decoding_in_place_gives() {
    let records: Vec<(i32, i64, String)> = (0..6_000i64)
        .map(|i| {
            let text = match i % 97 {
                0 => String::new(),
                1 => "x".repeat(300),
                2 => r#"{"id": 1, "ts": 0"#.to_string(),
                3 => r#"{"id": "x", "ts": 0}"#.to_string(),
                _ => format!(
                    r#"{{"id": {i}, "ts": {i}, "tags": ["t{i}"], "user": {{"name": "n{i}"}}}}"#
                ),
            };
            ((i % 3) as i32, i / 3, text)
        })
        .collect();
    let run = |workers: Option<usize>, revoke_at: Option<usize>| {
        let mut d = decoder(64);
        d.set_max_message_bytes(200);
        if let Some(threads) = workers {
            d.decode_on(std::sync::Arc::new(Workers::new(threads).unwrap()));
        }
        let mut rejected = Vec::new();
        let mut rows = Vec::new();
        let mut take = |d: &mut RouteDecoder, rejected: &mut Vec<Rejected>| {
            let (batches, coordinates) = d.take_with_coordinates(rejected);
            for (batch, coordinates) in batches.iter().zip(coordinates) {
                let ids = batch.column(0).as_primitive::<Int64Type>();
                for (row, c) in coordinates.iter().enumerate() {
                    rows.push((c.partition, c.offset, ids.value(row)));
                }
            }
        };
        for (n, (partition, offset, text)) in records.iter().enumerate() {
            let mut m = message(*offset, text);
            m.partition = *partition;
            if text.is_empty() {
                m.payload = None;
            }
            d.push(&m, &mut rejected);
            if d.chunk_full() {
                d.flush_chunk(&mut rejected);
            }
            if Some(n) == revoke_at {
                d.retain_partitions(&mut rejected, |_, p| p == 1);
            }
            if n % 2_500 == 2_499 {
                take(&mut d, &mut rejected);
            }
        }
        take(&mut d, &mut rejected);
        let rejected: Vec<_> = rejected
            .iter()
            .map(|r| (r.partition, r.offset, r.class))
            .collect();
        (rows, rejected)
    };
    let (rows, rejected) = run(None, None);
    assert_eq!(rows.len() + rejected.len(), records.len());
    let bad = (0..records.len()).filter(|i| i % 97 < 4).count();
    assert_eq!(rejected.len(), bad);
    for partition in 0..3 {
        let offsets: Vec<i64> = rejected
            .iter()
            .filter(|r| r.0 == partition)
            .map(|r| r.1)
            .collect();
        assert!(offsets.is_sorted(), "partition {partition}: {offsets:?}");
    }
    for threads in [2, 4] {
        assert_eq!(
            run(Some(threads), None),
            (rows.clone(), rejected.clone()),
            "{threads} workers"
        );
        assert_eq!(
            run(Some(threads), Some(4_000)),
            run(None, Some(4_000)),
            "{threads} workers, revoked"
        );
    }
}
