//! Kafka coordinates (topic, partition, offset, timestamp, key) as extra columns.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::Message;
use crate::config::MetadataKind;

/// Per-row coordinates, small and `Copy` so a chunk keeps them without allocating.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta {
    /// Topic names are interned per process: routes see few distinct topics.
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    key: Option<(usize, usize)>,
}

impl MessageMeta {
    pub fn new(message: &Message<'_>, keys: &mut Vec<u8>) -> Self {
        let key = message.key.map(|k| {
            let start = keys.len();
            keys.extend_from_slice(k);
            (start, keys.len())
        });
        Self {
            topic: intern(message.topic),
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
            key,
        }
    }

    pub fn key<'a>(&self, keys: &'a [u8]) -> Option<&'a [u8]> {
        self.key.map(|(s, e)| &keys[s..e])
    }
}

/// Leaks each distinct topic name once; the set of topics is bounded by the cluster.
fn intern(topic: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static TOPICS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut guard = TOPICS.lock().expect("topic interner poisoned");
    let set = guard.get_or_insert_with(HashSet::new);
    if let Some(existing) = set.get(topic) {
        return existing;
    }
    let leaked: &'static str = Box::leak(topic.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
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
                    meta.iter().for_each(|m| b.append_value(m.topic));
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
