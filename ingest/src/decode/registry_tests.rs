//! Shared by the tests of the formats whose payloads name a registry schema id.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;

use super::{Message, Rejected, RouteDecoder, WriterSchema};

/// A writer schema as the registry would give it.
pub fn schema(kind: &str, text: &str) -> WriterSchema {
    WriterSchema::standalone(kind, text)
}

/// Pushes `payloads` (learning ids as the consumer would), returns rows and rejects.
pub fn run(
    decoder: &mut RouteDecoder,
    registry: &HashMap<u32, WriterSchema>,
    payloads: &[Vec<u8>],
) -> (Vec<RecordBatch>, Vec<Rejected>) {
    let mut rejected = Vec::new();
    for (offset, payload) in payloads.iter().enumerate() {
        let message = Message::payload_only("t", 0, offset as i64, payload);
        if let Some(id) = decoder.schema_wanted(&message) {
            decoder.learn(id, registry.get(&id));
        }
        decoder.push(&message, &mut rejected);
        if decoder.chunk_full() {
            decoder.flush_chunk(&mut rejected);
        }
    }
    let batches = decoder.take(&mut rejected);
    (batches, rejected)
}

/// The `id` column of every batch, in order.
pub fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}
