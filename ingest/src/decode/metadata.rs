//! Kafka coordinates (topic, partition, offset, timestamp, key) as extra columns.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::{Message, OriginalHeaders};
use crate::config::MetadataKind;

/// Per-row coordinates, small so a chunk keeps them without allocating.
#[derive(Debug, Clone)]
pub struct MessageMeta {
    /// Shared with every row of the same topic (see [`TopicNames`]).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    key: Option<(usize, usize)>,
    /// The record's own headers, when it has any (for its dead letter).
    headers: Option<Arc<OriginalHeaders>>,
}

impl MessageMeta {
    pub fn new(
        message: &Message<'_>,
        keep_headers: bool,
        keys: &mut Vec<u8>,
        topics: &mut TopicNames,
    ) -> Self {
        let key = message.key.map(|k| {
            let start = keys.len();
            keys.extend_from_slice(k);
            (start, keys.len())
        });
        Self {
            topic: topics.get(message.topic),
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
            key,
            headers: message
                .headers
                .filter(|_| keep_headers)
                .map(|h| Arc::new(own_headers(Some(h))))
                .filter(|h| !h.is_empty()),
        }
    }

    pub fn headers(&self) -> OriginalHeaders {
        self.headers.as_deref().cloned().unwrap_or_default()
    }

    pub fn key<'a>(&self, keys: &'a [u8]) -> Option<&'a [u8]> {
        self.key.map(|(s, e)| &keys[s..e])
    }
}

/// An owned copy of a record's headers.
pub fn own_headers(headers: Option<&rdkafka::message::BorrowedHeaders>) -> OriginalHeaders {
    use rdkafka::message::Headers as _;
    headers
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The topic names a decoder has seen: each is allocated once and shared by its rows
/// (a route reads few topics), and freed with the decoder.
#[derive(Debug, Default)]
pub struct TopicNames {
    known: HashSet<Arc<str>>,
    /// Consecutive records mostly come from one topic: no hashing then.
    last: Option<Arc<str>>,
}

impl TopicNames {
    pub fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(last) = self.last.as_ref().filter(|last| ***last == *topic) {
            return Arc::clone(last);
        }
        let name = match self.known.get(topic) {
            Some(known) => Arc::clone(known),
            None => {
                let name: Arc<str> = Arc::from(topic);
                self.known.insert(Arc::clone(&name));
                name
            }
        };
        self.last = Some(Arc::clone(&name));
        name
    }
}

/// The Arrow type of each metadata column.
fn field(name: &str, kind: MetadataKind) -> Field {
    match kind {
        MetadataKind::Topic => Field::new(name, DataType::Utf8, false),
        MetadataKind::Partition => Field::new(name, DataType::Int32, false),
        MetadataKind::Offset => Field::new(name, DataType::Int64, false),
        MetadataKind::Timestamp => Field::new(
            name,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        MetadataKind::Key => Field::new(name, DataType::Binary, true),
    }
}

/// The payload schema followed by the requested metadata columns.
pub fn output_schema(payload: &SchemaRef, columns: &[(String, MetadataKind)]) -> SchemaRef {
    let mut fields: Vec<Field> = payload
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(columns.iter().map(|(name, kind)| field(name, *kind)));
    Arc::new(Schema::new(fields))
}

/// Appends metadata columns to decoded payload batches.
pub struct MetadataBuilder {
    columns: Vec<(String, MetadataKind)>,
    schema: SchemaRef,
}

impl MetadataBuilder {
    pub fn new(payload: &SchemaRef, columns: Vec<(String, MetadataKind)>) -> Self {
        Self {
            schema: output_schema(payload, &columns),
            columns,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn append_columns(
        &self,
        payload: RecordBatch,
        meta: &[MessageMeta],
        keys: &[u8],
    ) -> RecordBatch {
        if self.columns.is_empty() {
            return payload;
        }
        let mut arrays: Vec<ArrayRef> = payload.columns().to_vec();
        for (_, kind) in &self.columns {
            let array: ArrayRef = match kind {
                MetadataKind::Topic => {
                    let mut b = StringBuilder::with_capacity(meta.len(), meta.len() * 16);
                    meta.iter().for_each(|m| b.append_value(&m.topic));
                    Arc::new(b.finish())
                }
                MetadataKind::Partition => Arc::new(Int32Array::from_iter_values(
                    meta.iter().map(|m| m.partition),
                )),
                MetadataKind::Offset => {
                    Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.offset)))
                }
                MetadataKind::Timestamp => Arc::new(
                    TimestampMillisecondArray::from_iter(meta.iter().map(|m| m.timestamp))
                        .with_timezone("UTC"),
                ),
                MetadataKind::Key => {
                    let mut b = BinaryBuilder::with_capacity(meta.len(), keys.len());
                    meta.iter().for_each(|m| b.append_option(m.key(keys)));
                    Arc::new(b.finish())
                }
            };
            arrays.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("metadata columns match the schema")
    }
}
