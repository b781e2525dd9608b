//! Realistic synthetic events for a schema: values follow each field's type, and common
//! field names (`event_type`, `country`, `user_id`, `url`, ...) get plausible values.

use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EVENT_TYPES: [&str; 6] = [
    "page_view",
    "click",
    "add_to_cart",
    "purchase",
    "signup",
    "logout",
];
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "IN", "BR", "JP", "GB", "NG"];
const DEVICES: [&str; 4] = ["desktop", "mobile", "tablet", "tv"];
const SERVICES: [&str; 5] = ["checkout", "search", "auth", "catalog", "payments"];
const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];
const WORDS: [&str; 12] = [
    "alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima", "omega", "sigma", "tango", "vega",
    "zulu",
];

/// Writes one JSON object per call; ids are sequential from `start_id`.
pub struct EventGenerator {
    schema: SchemaRef,
    id_field: Option<String>,
    next_id: i64,
    rng: StdRng,
    /// Event time base (ms since the epoch); each event lands within the last minute.
    now_ms: i64,
    /// Stamp timestamps with the wall clock at generation (for latency measurements).
    live_time: bool,
}

impl EventGenerator {
    pub fn new(schema: SchemaRef, id_field: Option<String>, start_id: i64, seed: u64) -> Self {
        Self {
            schema,
            id_field,
            next_id: start_id,
            rng: StdRng::seed_from_u64(seed),
            now_ms: chrono::Utc::now().timestamp_millis(),
            live_time: false,
        }
    }

    /// Timestamps become the moment each event is generated, so `now - ts` in a sink
    /// is the event's end-to-end latency.
    pub fn with_live_time(mut self) -> Self {
        self.live_time = true;
        self
    }

    /// Appends the next event to `out`; returns its id.
    pub fn next_event(&mut self, out: &mut Vec<u8>) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        out.push(b'{');
        let schema = self.schema.clone();
        for (i, field) in schema.fields().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(out, field.name());
            out.push(b':');
            if self.id_field.as_deref() == Some(field.name().as_str()) {
                match field.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 => {
                        write_json_string(out, &format!("evt-{id:012}"))
                    }
                    _ => out.extend_from_slice(id.to_string().as_bytes()),
                }
            } else {
                self.value(field, out);
            }
        }
        out.push(b'}');
        id
    }

    fn value(&mut self, field: &Field, out: &mut Vec<u8>) {
        if field.is_nullable() && self.rng.random_ratio(1, 10) {
            out.extend_from_slice(b"null");
            return;
        }
        let name = field.name().to_ascii_lowercase();
        let rng = &mut self.rng;
        let text = match field.data_type() {
            DataType::Boolean => rng.random_bool(0.5).to_string(),
            DataType::Int8 => rng.random_range(-100..100i8).to_string(),
            DataType::Int16 => rng.random_range(-1000..1000i16).to_string(),
            DataType::UInt8 => rng.random_range(0..200u8).to_string(),
            DataType::UInt16 => rng.random_range(0..60000u16).to_string(),
            DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
                if name.contains("user") {
                    rng.random_range(1..100_000).to_string()
                } else if name.contains("count")
                    || name.contains("qty")
                    || name.contains("quantity")
                {
                    rng.random_range(1..10).to_string()
                } else if name.contains("ms") || name.contains("duration") {
                    rng.random_range(1..30_000).to_string()
                } else {
                    rng.random_range(0..1_000_000).to_string()
                }
            }
            DataType::Float32 | DataType::Float64 => {
                format!("{:.3}", rng.random_range(0.0..1000.0f64))
            }
            DataType::Decimal128(p, s) => {
                // Amounts of a few thousand at most, like prices and revenue.
                let int_digits = (*p as i32 - *s as i32).clamp(0, 4) as u32;
                let whole = rng.random_range(0..10u64.pow(int_digits).max(1));
                let frac = rng.random_range(0..10u64.pow((*s as u32).min(9)).max(1));
                if *s > 0 {
                    format!("{whole}.{frac:0width$}", width = (*s as usize).min(9))
                } else {
                    whole.to_string()
                }
            }
            DataType::Utf8 | DataType::LargeUtf8 => {
                let value = if name.contains("type") || name.contains("event") {
                    EVENT_TYPES[rng.random_range(0..EVENT_TYPES.len())].to_string()
                } else if name.contains("country") {
                    COUNTRIES[rng.random_range(0..COUNTRIES.len())].to_string()
                } else if name.contains("service") {
                    SERVICES[rng.random_range(0..SERVICES.len())].to_string()
                } else if name.contains("level") {
                    LEVELS[rng.random_range(0..LEVELS.len())].to_string()
                } else if name.contains("device") {
                    DEVICES[rng.random_range(0..DEVICES.len())].to_string()
                } else if name.contains("url") || name.contains("path") || name.contains("page") {
                    format!(
                        "/products/{}/{}",
                        WORDS[rng.random_range(0..WORDS.len())],
                        rng.random_range(1..5000)
                    )
                } else if name.contains("user") {
                    format!("user-{}", rng.random_range(1..100_000))
                } else if name.contains("session") {
                    format!("{:016x}", rng.random::<u64>())
                } else {
                    format!(
                        "{}-{}",
                        WORDS[rng.random_range(0..WORDS.len())],
                        rng.random_range(0..1000)
                    )
                };
                let mut buf = Vec::new();
                write_json_string(&mut buf, &value);
                String::from_utf8(buf).expect("utf8")
            }
            DataType::Binary | DataType::LargeBinary => format!("\"{:08x}\"", rng.random::<u32>()),
            DataType::Date32 => {
                let day = self.now_ms / 86_400_000 - rng.random_range(0..30);
                let date = chrono::DateTime::from_timestamp(day * 86_400, 0).expect("date");
                format!("\"{}\"", date.format("%Y-%m-%d"))
            }
            DataType::Timestamp(unit, _) => {
                let ms = if self.live_time {
                    chrono::Utc::now().timestamp_millis()
                } else {
                    self.now_ms - rng.random_range(0..60_000)
                };
                let sub = rng.random_range(0..1000);
                let at = chrono::DateTime::from_timestamp_millis(ms).expect("time");
                match unit {
                    TimeUnit::Second => format!("\"{}\"", at.format("%Y-%m-%dT%H:%M:%SZ")),
                    TimeUnit::Millisecond => format!("\"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
                    _ => format!("\"{}{sub:03}Z\"", at.format("%Y-%m-%dT%H:%M:%S%.3f")),
                }
            }
            DataType::List(item) => {
                let n = rng.random_range(0..4);
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(item, out);
                }
                out.push(b']');
                return;
            }
            DataType::Struct(fields) => {
                out.push(b'{');
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json_string(out, f.name());
                    out.push(b':');
                    self.value(f, out);
                }
                out.push(b'}');
                return;
            }
            _ => "null".to_string(),
        };
        out.extend_from_slice(text.as_bytes());
    }
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Payload;
    use crate::decode::{Message, RouteDecoder};

    #[test]
    fn generated_events_decode_against_their_schema() {
        let schema = ingest_schemas::parse_schema(
            "fields:\n  - {name: id, type: int64}\n  - {name: event_type, type: string}\n  - {name: ts, type: \"timestamp(us, UTC)\"}\n  - {name: price, type: \"decimal(10, 2)?\"}\n  - {name: tags, type: \"list<string>\"}\n  - {name: ctx, type: \"struct<device: string, n: int32?>?\"}\n  - {name: day, type: date}\n",
        )
        .unwrap();
        let mut generator = EventGenerator::new(schema.clone(), Some("id".into()), 100, 7);
        let mut decoder = RouteDecoder::new(&Payload::json(), schema, vec![], 1000).unwrap();
        let mut rejected = Vec::new();
        for _ in 0..500 {
            let mut buf = Vec::new();
            generator.next_event(&mut buf);
            let m = Message {
                topic: "t",
                partition: 0,
                offset: 0,
                timestamp: None,
                key: None,
                payload: Some(&buf),
                headers: None,
            };
            decoder.push(&m, &mut rejected);
        }
        let batches = decoder.take(&mut rejected);
        assert!(rejected.is_empty(), "{:?}", rejected.first());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 500);
    }
}
