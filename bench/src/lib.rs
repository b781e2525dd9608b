//! Shared by the benchmarks: sample events and the pieces under measurement.

use std::path::Path;

use arrow_schema::SchemaRef;
use ingest::EventGenerator;

/// The example clickstream schema (`schemas/examples/events.yaml`).
pub fn events_schema() -> SchemaRef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/events.yaml");
    ingest_schemas::load_schema(&path).expect("example schema")
}

/// The wide event (`schemas/examples/wide.yaml`: 30 fields, about 600 bytes).
pub fn wide_schema() -> SchemaRef {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/wide.yaml");
    ingest_schemas::load_schema(&path).expect("wide example schema")
}

/// `count` generated events, one JSON object each (the same generator `ingest produce` uses).
pub fn sample_events(count: usize) -> Vec<Vec<u8>> {
    sample_events_of(events_schema(), "event_id", count)
}

/// `count` generated wide events.
pub fn sample_wide_events(count: usize) -> Vec<Vec<u8>> {
    sample_events_of(wide_schema(), "order_id", count)
}

fn sample_events_of(schema: SchemaRef, id: &str, count: usize) -> Vec<Vec<u8>> {
    let mut generator = EventGenerator::new(schema, Some(id.into()), 0, 42);
    (0..count)
        .map(|_| {
            let mut buf = Vec::with_capacity(400);
            generator.next_event(&mut buf);
            buf
        })
        .collect()
}

/// The example events' Avro schema (`schemas/examples/events.avsc`).
pub fn events_avsc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/events.avsc");
    std::fs::read_to_string(path).expect("example Avro schema")
}

/// The same `count` events as [`sample_events`], as Avro in Confluent's wire format
/// under schema id `id`, written by apache-avro.
pub fn sample_avro_events(count: usize, id: u32) -> Vec<Vec<u8>> {
    let schema = apache_avro::Schema::parse_str(&events_avsc()).expect("Avro schema");
    sample_events(count)
        .iter()
        .map(|json| {
            let json: serde_json::Value = serde_json::from_slice(json).expect("sample JSON");
            let mut out = vec![0];
            out.extend(id.to_be_bytes());
            let value = to_avro(&json, &schema);
            out.extend(apache_avro::to_avro_datum(&schema, value).expect("Avro record"));
            out
        })
        .collect()
}

/// A sample event's JSON value as an Avro value of `schema` (the types the example
/// schema uses).
fn to_avro(json: &serde_json::Value, schema: &apache_avro::Schema) -> apache_avro::types::Value {
    use apache_avro::Schema as S;
    use apache_avro::types::Value as V;
    match schema {
        S::Long => V::Long(json.as_i64().expect("long")),
        S::Int => V::Int(json.as_i64().expect("int") as i32),
        S::String => V::String(json.as_str().expect("string").to_string()),
        S::Union(union) => match json {
            serde_json::Value::Null => V::Union(0, Box::new(V::Null)),
            _ => V::Union(1, Box::new(to_avro(json, &union.variants()[1]))),
        },
        S::Array(items) => V::Array(
            json.as_array()
                .expect("array")
                .iter()
                .map(|item| to_avro(item, &items.items))
                .collect(),
        ),
        S::Record(record) => V::Record(
            record
                .fields
                .iter()
                .map(|f| (f.name.clone(), to_avro(&json[&f.name], &f.schema)))
                .collect(),
        ),
        S::TimestampMillis => {
            let text = json.as_str().expect("RFC 3339 timestamp");
            let at = chrono::DateTime::parse_from_rfc3339(text).expect("timestamp");
            V::TimestampMillis(at.timestamp_millis())
        }
        S::Date => {
            let day = chrono::NaiveDate::parse_from_str(json.as_str().expect("date"), "%Y-%m-%d")
                .expect("date");
            V::Date((day - chrono::NaiveDate::default()).num_days() as i32)
        }
        S::Decimal(decimal) => {
            let text = json.to_string().trim_matches('"').to_string();
            let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
            let fraction = format!("{fraction:0<width$}", width = decimal.scale);
            let unscaled: i128 = format!("{whole}{fraction}").parse().expect("decimal");
            V::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes().to_vec()))
        }
        other => panic!("no sample value for {other:?}"),
    }
}

/// The example events' Protobuf schema (`schemas/examples/events.proto`).
pub fn events_proto() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/examples/events.proto");
    std::fs::read_to_string(path).expect("example Protobuf schema")
}

/// The same `count` events as [`sample_events`], as `ingest.examples.Event` in
/// Confluent's wire format under schema id `id`. Encoded here by hand (the wire format
/// is a few rules) so the decoder under measurement does not read its own library's
/// output.
pub fn sample_protobuf_events(count: usize, id: u32) -> Vec<Vec<u8>> {
    sample_events(count)
        .iter()
        .map(|json| {
            let e: serde_json::Value = serde_json::from_slice(json).expect("sample JSON");
            let mut out = vec![0];
            out.extend(id.to_be_bytes());
            out.push(0); // the message-index list [0]
            let ts =
                chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().expect("ts")).expect("ts");
            let mut at = Vec::new();
            varint_field(&mut at, 1, ts.timestamp() as u64);
            varint_field(&mut at, 2, u64::from(ts.timestamp_subsec_nanos()));
            varint_field(&mut out, 1, e["event_id"].as_i64().expect("id") as u64);
            bytes_field(&mut out, 2, &at);
            bytes_field(
                &mut out,
                3,
                e["event_type"].as_str().expect("type").as_bytes(),
            );
            varint_field(&mut out, 4, e["user_id"].as_i64().expect("user") as u64);
            bytes_field(
                &mut out,
                5,
                e["session_id"].as_str().expect("session").as_bytes(),
            );
            if let Some(country) = e["country"].as_str() {
                bytes_field(&mut out, 6, country.as_bytes());
            }
            bytes_field(&mut out, 7, e["url"].as_str().expect("url").as_bytes());
            if let Some(ms) = e["duration_ms"].as_i64() {
                varint_field(&mut out, 8, ms as u64);
            }
            if !e["revenue"].is_null() {
                let text = e["revenue"].to_string().trim_matches('"').to_string();
                let (whole, cents) = text.split_once('.').unwrap_or((&text, "0"));
                let cents: i64 = format!("{whole}{cents:0<2}").parse().expect("revenue");
                varint_field(&mut out, 9, cents as u64);
            }
            for tag in e["tags"].as_array().expect("tags") {
                bytes_field(&mut out, 10, tag.as_str().expect("tag").as_bytes());
            }
            let d = &e["device"];
            let mut device = Vec::new();
            bytes_field(
                &mut device,
                1,
                d["device"].as_str().expect("device").as_bytes(),
            );
            if let Some(v) = d["os_version"].as_str() {
                bytes_field(&mut device, 2, v.as_bytes());
            }
            if let Some(w) = d["screen_width"].as_i64() {
                varint_field(&mut device, 3, w as u64);
            }
            bytes_field(&mut out, 11, &device);
            let day = chrono::NaiveDate::parse_from_str(
                e["event_date"].as_str().expect("date"),
                "%Y-%m-%d",
            )
            .expect("date");
            varint_field(
                &mut out,
                12,
                (day - chrono::NaiveDate::default()).num_days() as u64,
            );
            out
        })
        .collect()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, number: u64, v: u64) {
    varint(out, number << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, (number << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
