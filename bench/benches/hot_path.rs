//! Hot-path micro-benchmarks in bytes of input per second (one core): JSON → Arrow
//! with our route decoder, next to arrow-json's own reader and a parse-only serde pass
//! on the same data; the same events as Avro and as Protobuf (Confluent framing) →
//! Arrow, and the three formats in events per second; Arrow → ClickHouse Native; Arrow → Parquet.

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::{Message, Payload, ProtoSchema, RouteDecoder, WriterSchema};
use ingest_sink_clickhouse::{ClickHouseTable, offline_payload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const EVENTS: usize = 16 * 1024;

fn decode_all(events: &[Vec<u8>]) -> Vec<RecordBatch> {
    decode_json(ingest_bench::events_schema(), events)
}

fn decode_json(schema: arrow_schema::SchemaRef, events: &[Vec<u8>]) -> Vec<RecordBatch> {
    let mut decoder = RouteDecoder::new(&Payload::json(), schema, vec![], EVENTS).unwrap();
    let mut rejected = Vec::new();
    for (offset, payload) in events.iter().enumerate() {
        let message = Message::payload_only("bench", 0, offset as i64, payload);
        decoder.push(&message, &mut rejected);
    }
    let batches = decoder.take(&mut rejected);
    assert!(rejected.is_empty());
    batches
}

/// Registry-framed events through the route decoder, their writer schema (`kind`,
/// `text`) learned under `id` as the consumer would from the registry.
fn decode_framed(
    payload: &Payload,
    (kind, text, id): (&str, String, u32),
    events: &[Vec<u8>],
) -> Vec<RecordBatch> {
    let schema = ingest::own_schema(payload).unwrap().unwrap();
    let mut decoder = RouteDecoder::new(payload, schema, vec![], EVENTS).unwrap();
    let writer = WriterSchema::standalone(kind, &text);
    decoder.learn(id, Some(&writer));
    let mut rejected = Vec::new();
    for (offset, payload) in events.iter().enumerate() {
        let message = Message::payload_only("bench", 0, offset as i64, payload);
        decoder.push(&message, &mut rejected);
    }
    let batches = decoder.take(&mut rejected);
    assert!(rejected.is_empty(), "{:?}", rejected.first());
    batches
}

fn decode_all_avro(events: &[Vec<u8>]) -> Vec<RecordBatch> {
    let payload = Payload::Avro {
        reader: ingest_bench::events_avsc().into(),
        registry: true,
    };
    decode_framed(
        &payload,
        ("AVRO", ingest_bench::events_avsc(), AVRO_ID),
        events,
    )
}

fn decode_all_protobuf(events: &[Vec<u8>]) -> Vec<RecordBatch> {
    let payload = Payload::Protobuf {
        schema: ProtoSchema::Source {
            text: ingest_bench::events_proto().into(),
            imports: std::sync::Arc::from([]),
        },
        message: None,
        registry: true,
    };
    decode_framed(
        &payload,
        ("PROTOBUF", ingest_bench::events_proto(), PROTOBUF_ID),
        events,
    )
}

const AVRO_ID: u32 = 7;
const PROTOBUF_ID: u32 = 8;

/// JSON → Arrow with our route decoder, next to arrow-json's reader on the same bytes,
/// a parse-only serde pass and a parse-only SIMD pass (simd-json's tape: the structure
/// found, no column built; it parses in place, so each event is copied first).
fn json_to_arrow(
    c: &mut Criterion,
    group: &str,
    schema: arrow_schema::SchemaRef,
    events: &[Vec<u8>],
) {
    let bytes: u64 = events.iter().map(|e| e.len() as u64).sum();
    let newline_joined: Vec<u8> = events
        .iter()
        .flat_map(|e| e.iter().copied().chain([b'\n']))
        .collect();
    let rows: usize = decode_json(schema.clone(), events)
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert_eq!(rows, events.len());
    let mut decode = c.benchmark_group(group);
    decode.throughput(Throughput::Bytes(bytes));
    // Both decoders live on across iterations, as a route's does in the service.
    let mut ours = RouteDecoder::new(&Payload::json(), schema.clone(), vec![], EVENTS).unwrap();
    let mut rejected = Vec::new();
    decode.bench_function("ingest_route_decoder", |b| {
        b.iter(|| {
            for (offset, payload) in events.iter().enumerate() {
                let message = Message::payload_only("bench", 0, offset as i64, payload);
                ours.push(&message, &mut rejected);
            }
            black_box(ours.take(&mut rejected))
        })
    });
    assert!(rejected.is_empty());
    let mut theirs = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(EVENTS)
        .build_decoder()
        .unwrap();
    decode.bench_function("arrow_json_reader_reference", |b| {
        b.iter(|| {
            theirs.decode(&newline_joined).unwrap();
            black_box(theirs.flush().unwrap())
        })
    });
    decode.bench_function("serde_json_parse_only_reference", |b| {
        b.iter(|| {
            for e in events {
                black_box(serde_json::from_slice::<serde::de::IgnoredAny>(e).unwrap());
            }
        })
    });
    let mut copy = Vec::with_capacity(4096);
    decode.bench_function("simd_json_parse_only_reference", |b| {
        b.iter(|| {
            for e in events {
                copy.clear();
                copy.extend_from_slice(e);
                black_box(simd_json::to_tape(&mut copy).unwrap());
            }
        })
    });
    decode.finish();
}

/// The route decoder with its full chunks (2,048 events) decoded in place (`0`) or on
/// 1, 2 and 4 decode workers: bytes of JSON per second of wall time.
fn decode_workers(c: &mut Criterion, events: &[Vec<u8>]) {
    let bytes: u64 = events.iter().map(|e| e.len() as u64).sum();
    let mut group = c.benchmark_group("json_to_arrow_workers");
    group.throughput(Throughput::Bytes(bytes));
    for threads in [0, 1, 2, 4] {
        let mut decoder = RouteDecoder::new(
            &Payload::json(),
            ingest_bench::events_schema(),
            vec![],
            2048,
        )
        .unwrap();
        if let Some(workers) = ingest::Workers::new(threads) {
            decoder.decode_on(Arc::new(workers));
        }
        let mut rejected = Vec::new();
        group.bench_function(format!("{threads}"), |b| {
            b.iter(|| {
                for (offset, payload) in events.iter().enumerate() {
                    let message = Message::payload_only("bench", 0, offset as i64, payload);
                    decoder.push(&message, &mut rejected);
                    if decoder.chunk_full() {
                        decoder.flush_chunk(&mut rejected);
                    }
                }
                black_box(decoder.take(&mut rejected))
            })
        });
        assert!(rejected.is_empty());
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let events = ingest_bench::sample_events(EVENTS);
    let bytes: u64 = events.iter().map(|e| e.len() as u64).sum();

    json_to_arrow(c, "json_to_arrow", ingest_bench::events_schema(), &events);
    decode_workers(c, &events);
    let wide = ingest_bench::sample_wide_events(EVENTS);
    json_to_arrow(c, "wide_json_to_arrow", ingest_bench::wide_schema(), &wide);

    // The same events as Avro: MB/s of Avro input, and events/s next to JSON's.
    let avro = ingest_bench::sample_avro_events(EVENTS, AVRO_ID);
    let avro_bytes: u64 = avro.iter().map(|e| e.len() as u64).sum();
    assert_eq!(
        decode_all_avro(&avro)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        EVENTS
    );
    let mut decode = c.benchmark_group("avro_to_arrow");
    decode.throughput(Throughput::Bytes(avro_bytes));
    decode.bench_function("ingest_route_decoder", |b| {
        b.iter(|| black_box(decode_all_avro(&avro)))
    });
    decode.finish();
    let protobuf = ingest_bench::sample_protobuf_events(EVENTS, PROTOBUF_ID);
    let protobuf_bytes: u64 = protobuf.iter().map(|e| e.len() as u64).sum();
    assert_eq!(
        decode_all_protobuf(&protobuf)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        EVENTS
    );
    let mut decode = c.benchmark_group("protobuf_to_arrow");
    decode.throughput(Throughput::Bytes(protobuf_bytes));
    decode.bench_function("ingest_route_decoder", |b| {
        b.iter(|| black_box(decode_all_protobuf(&protobuf)))
    });
    decode.finish();
    let mut per_event = c.benchmark_group("events_to_arrow");
    per_event.throughput(Throughput::Elements(EVENTS as u64));
    per_event.bench_function("json", |b| b.iter(|| black_box(decode_all(&events))));
    per_event.bench_function("avro", |b| b.iter(|| black_box(decode_all_avro(&avro))));
    per_event.bench_function("protobuf", |b| {
        b.iter(|| black_box(decode_all_protobuf(&protobuf)))
    });
    per_event.finish();

    let batches = decode_all(&events);
    let schema = batches[0].schema();
    let table = ClickHouseTable {
        table: "events".into(),
        order_by: vec![],
        partition_by: None,
        engine: "MergeTree".into(),
        batch: Default::default(),
    };
    let mut encode = c.benchmark_group("arrow_to_sink");
    encode.throughput(Throughput::Bytes(bytes));
    for version in ["18.16.1", "26.9"] {
        encode.bench_function(format!("clickhouse_native_{version}"), |b| {
            b.iter(|| {
                black_box(offline_payload("db", &table, &schema, version, &batches, None).unwrap())
            })
        });
    }
    encode.finish();
    parquet_settings(c, &schema, &batches, bytes);
}

/// Arrow → Parquet under the settings the Iceberg sink could use: codecs and zstd
/// levels, and data page sizes. Throughput in bytes of JSON per second (the same events);
/// each setting's file size is printed beside it (`parquet size`), so the default can be
/// chosen on size against CPU.
fn parquet_settings(
    c: &mut Criterion,
    schema: &arrow_schema::SchemaRef,
    batches: &[RecordBatch],
    json_bytes: u64,
) {
    let zstd = |level| Compression::ZSTD(ZstdLevel::try_new(level).unwrap());
    let settings: Vec<(String, WriterProperties)> = vec![
        (
            "uncompressed".into(),
            WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .build(),
        ),
        (
            "snappy".into(),
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        ),
        (
            "lz4_raw".into(),
            WriterProperties::builder()
                .set_compression(Compression::LZ4_RAW)
                .build(),
        ),
        (
            "zstd1".into(),
            WriterProperties::builder().set_compression(zstd(1)).build(),
        ),
        (
            "zstd3".into(),
            WriterProperties::builder().set_compression(zstd(3)).build(),
        ),
        (
            "zstd6".into(),
            WriterProperties::builder().set_compression(zstd(6)).build(),
        ),
        (
            "zstd1_page_64k".into(),
            WriterProperties::builder()
                .set_compression(zstd(1))
                .set_data_page_size_limit(64 * 1024)
                .build(),
        ),
        (
            "zstd1_no_dictionary".into(),
            WriterProperties::builder()
                .set_compression(zstd(1))
                .set_dictionary_enabled(false)
                .build(),
        ),
    ];
    let write = |props: &WriterProperties| {
        let mut out = Vec::with_capacity(json_bytes as usize);
        let mut writer =
            ArrowWriter::try_new(&mut out, Arc::clone(schema), Some(props.clone())).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        out.len()
    };
    let mut group = c.benchmark_group("parquet_settings");
    group.throughput(Throughput::Bytes(json_bytes));
    for (name, props) in &settings {
        let size = write(props);
        println!(
            "parquet size {name}: {size} bytes, {:.3} of the JSON",
            size as f64 / json_bytes as f64
        );
        group.bench_function(name.as_str(), |b| b.iter(|| black_box(write(props))));
    }
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = benches
}
criterion_main!(hot_path);
