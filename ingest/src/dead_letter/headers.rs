//! The headers of a dead letter: the record's own first, then ours (`ingest.*`), which
//! say why it is there and where it came from. Reading a letter back takes the last
//! value of each of ours, so a record that carried such headers already (a replayed
//! one) is described by the newest.

use std::time::{Duration, SystemTime};

use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use crate::decode::{OriginalHeaders, Rejected};

pub const ERROR: &str = "ingest.error";
pub const ERROR_CLASS: &str = "ingest.error.class";
pub const ROUTE: &str = "ingest.route";
pub const GROUP: &str = "ingest.group";
pub const SOURCE_TOPIC: &str = "ingest.source.topic";
pub const SOURCE_PARTITION: &str = "ingest.source.partition";
pub const SOURCE_OFFSET: &str = "ingest.source.offset";
pub const SOURCE_TIMESTAMP: &str = "ingest.source.timestamp";
pub const SCHEMA_ID: &str = "ingest.schema.id";
/// When the record was dead-lettered (RFC 3339, UTC).
pub const TIME: &str = "ingest.time";
/// On a replayed record, and on a dead letter a replay sent back: the dead letter it
/// came from (`<partition>@<offset>/<topic>`).
pub const REPLAY_OF: &str = "ingest.replay.of";
/// On a receipt: the dead letter a replay took (`<partition>@<offset>`).
pub const RECEIPT_OF: &str = "ingest.receipt.of";

/// The headers of `record`'s dead letter.
pub fn for_letter(
    record: &Rejected,
    route: &str,
    group: &str,
    extra: &[(&str, String)],
) -> OwnedHeaders {
    let mut headers = original(&record.headers);
    let mut ours: Vec<(&str, String)> = vec![
        (ERROR, record.error.clone()),
        (ERROR_CLASS, record.class.as_str().to_string()),
        (ROUTE, route.to_string()),
        (GROUP, group.to_string()),
        (SOURCE_TOPIC, record.topic.clone()),
        (SOURCE_PARTITION, record.partition.to_string()),
        (SOURCE_OFFSET, record.offset.to_string()),
        (TIME, now()),
    ];
    if let Some(ts) = record.timestamp {
        ours.push((SOURCE_TIMESTAMP, ts.to_string()));
    }
    if let Some(id) = record.schema_id {
        ours.push((SCHEMA_ID, id.to_string()));
    }
    ours.extend(extra.iter().cloned());
    for (key, value) in &ours {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    headers
}

/// A record's own headers, to produce again.
pub fn original(headers: &OriginalHeaders) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.len() + 10);
    for (key, value) in headers {
        out = out.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    out
}

/// The time now, as [`TIME`] gives it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A time as [`TIME`] gives it, in milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).ok()
}

/// A record's headers split: the record's own, and the last value of each of ours.
pub fn split(headers: Option<&rdkafka::message::BorrowedHeaders>) -> (OriginalHeaders, Ours) {
    let mut own = Vec::new();
    let mut ours = Ours::default();
    if let Some(headers) = headers {
        for h in headers.iter() {
            let text = || h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            if !ours.take(h.key, text()) {
                own.push((h.key.to_string(), h.value.map(<[u8]>::to_vec)));
            }
        }
    }
    // A replayed record's mark is its own header: it travels on with it.
    ours.replay_of = own
        .iter()
        .rev()
        .find(|(k, _)| k == REPLAY_OF)
        .and_then(|(_, v)| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned());
    (own, ours)
}

/// Our headers of a record in the dead-letter topic, each its last value.
#[derive(Debug, Default, Clone)]
pub struct Ours {
    pub error: Option<String>,
    pub class: Option<String>,
    pub route: Option<String>,
    pub group: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub source_timestamp: Option<i64>,
    pub schema_id: Option<u32>,
    pub time: Option<String>,
    /// From the record's own headers (see [`REPLAY_OF`]).
    pub replay_of: Option<String>,
    pub receipt_of: Option<String>,
}

impl Ours {
    /// Takes one of our headers; false for a key that is not one.
    fn take(&mut self, key: &str, value: Option<String>) -> bool {
        fn parsed<T: std::str::FromStr>(v: &Option<String>) -> Option<T> {
            v.as_deref().and_then(|v| v.parse().ok())
        }
        match key {
            ERROR => self.error = value,
            ERROR_CLASS => self.class = value,
            ROUTE => self.route = value,
            GROUP => self.group = value,
            SOURCE_TOPIC => self.source_topic = value,
            SOURCE_PARTITION => self.source_partition = parsed(&value),
            SOURCE_OFFSET => self.source_offset = parsed(&value),
            SOURCE_TIMESTAMP => self.source_timestamp = parsed(&value),
            SCHEMA_ID => self.schema_id = parsed(&value),
            TIME => self.time = value,
            RECEIPT_OF => self.receipt_of = value,
            _ => return false,
        }
        true
    }
}
