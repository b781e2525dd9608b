//! What this member committed, shared by the pipeline (which commits) and the fence
//! (which commits it again to prove ownership): offsets and the metadata that goes
//! with each, so a commit never drops the note another one left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ingest_sink_api::OffsetMap;
use rdkafka::{Offset, TopicPartitionList};

use crate::protocol::Partition;

#[derive(Debug, Default, Clone)]
pub struct Committed {
    pub offsets: OffsetMap,
    /// Per partition, the metadata committed with its offset (the dead-letter hint).
    pub notes: HashMap<Partition, String>,
}

pub type SharedCommitted = Arc<Mutex<Committed>>;

impl Committed {
    /// The commit request of `offsets`, each with its partition's note.
    pub fn list(&self, offsets: &OffsetMap) -> rdkafka::error::KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in offsets.iter() {
            tpl.add_partition_offset(topic, partition, Offset::Offset(next))?;
            if let Some(note) = self.notes.get(&Partition::new(topic, partition))
                && let Some(mut element) = tpl.find_partition(topic, partition)
            {
                element.set_metadata(note);
            }
        }
        Ok(tpl)
    }
}
