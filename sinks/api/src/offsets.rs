//! Kafka positions as sinks record them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Partition;

/// topic → partition → next offset to read (the offset after the last durable record).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OffsetMap(BTreeMap<String, BTreeMap<i32, i64>>);

impl OffsetMap {
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }

    /// Records `next` for the partition, never moving a position backwards.
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        let slot = self
            .0
            .entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_insert(next);
        *slot = (*slot).max(next);
    }

    /// Folds every position of `other` into this map.
    pub fn merge(&mut self, other: &OffsetMap) {
        for (topic, partitions) in &other.0 {
            for (partition, next) in partitions {
                self.advance(topic, *partition, *next);
            }
        }
    }

    /// Forgets the partition's position.
    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let parts = self.0.get_mut(topic)?;
        let removed = parts.remove(&partition);
        if parts.is_empty() {
            self.0.remove(topic);
        }
        removed
    }

    /// Keeps the positions of the partitions `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, i32) -> bool) {
        self.0
            .iter_mut()
            .for_each(|(topic, parts)| parts.retain(|p, _| keep(topic, *p)));
        self.0.retain(|_, parts| !parts.is_empty());
    }

    /// The partitions this map has a position for.
    pub fn partitions(&self) -> impl Iterator<Item = Partition> + '_ {
        self.iter().map(|(t, p, _)| Partition::new(t, p))
    }

    /// The topics this map has positions for.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether the map has a position for the partition.
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.get(topic, partition).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeMap::is_empty)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |(p, o)| (t.as_str(), *p, *o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_furthest_position() {
        let mut a = OffsetMap::default();
        a.advance("t", 0, 10);
        a.advance("t", 0, 5);
        let mut b = OffsetMap::default();
        b.advance("t", 0, 7);
        b.advance("t", 1, 3);
        a.merge(&b);
        assert_eq!(a.get("t", 0), Some(10));
        assert_eq!(a.get("t", 1), Some(3));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"t":{"0":10,"1":3}}"#);
        assert_eq!(serde_json::from_str::<OffsetMap>(&json).unwrap(), a);
    }

    #[test]
    fn removed_and_filtered_partitions_leave_no_empty_topic() {
        let mut a = OffsetMap::default();
        a.advance("t", 0, 1);
        a.advance("u", 0, 2);
        a.advance("u", 1, 3);
        assert_eq!(a.remove("t", 0), Some(1));
        assert_eq!(a.remove("t", 0), None);
        a.retain(|_, p| p == 1);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"u":{"1":3}}"#);
        a.retain(|_, _| false);
        assert!(a.is_empty());
        assert_eq!(serde_json::to_string(&a).unwrap(), "{}");
    }
}
