//! A Kafka partition (its topic and number), and a set of them that answers
//! "contains" without a scan: what ownership, fences and re-reads are kept for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A topic and one of its partitions; shown (also in debug output, as in the logs'
/// rebalance lines) as `topic/partition`, which is unambiguous: Kafka topic names hold
/// no `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl Partition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// Whether this is `topic`'s partition `partition`.
    pub fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && self.topic == topic
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A set of partitions, ordered by topic then number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partitions(BTreeMap<String, BTreeSet<i32>>);

impl Partitions {
    /// Whether the set holds `topic`'s partition `partition` (no allocation).
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.0.get(topic).is_some_and(|ps| ps.contains(&partition))
    }

    pub fn insert(&mut self, topic: &str, partition: i32) {
        match self.0.get_mut(topic) {
            Some(ps) => {
                ps.insert(partition);
            }
            None => {
                self.0
                    .insert(topic.to_string(), BTreeSet::from([partition]));
            }
        }
    }

    pub fn remove(&mut self, topic: &str, partition: i32) {
        if let Some(ps) = self.0.get_mut(topic) {
            ps.remove(&partition);
            if ps.is_empty() {
                self.0.remove(topic);
            }
        }
    }

    /// Keeps the partitions `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, i32) -> bool) {
        for (topic, ps) in self.0.iter_mut() {
            ps.retain(|p| keep(topic, *p));
        }
        self.0.retain(|_, ps| !ps.is_empty());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    /// Each partition as (topic, number).
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32)> {
        self.0
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.as_str(), *p)))
    }

    /// Each partition, owned.
    pub fn to_vec(&self) -> Vec<Partition> {
        self.iter().map(|(t, p)| Partition::new(t, p)).collect()
    }
}

impl<'a> FromIterator<&'a Partition> for Partitions {
    fn from_iter<I: IntoIterator<Item = &'a Partition>>(iter: I) -> Self {
        let mut set = Self::default();
        set.extend(iter);
        set
    }
}

impl FromIterator<Partition> for Partitions {
    fn from_iter<I: IntoIterator<Item = Partition>>(iter: I) -> Self {
        let mut set = Self::default();
        set.extend(iter);
        set
    }
}

impl<'a> Extend<&'a Partition> for Partitions {
    fn extend<I: IntoIterator<Item = &'a Partition>>(&mut self, iter: I) {
        for p in iter {
            self.insert(&p.topic, p.partition);
        }
    }
}

impl Extend<Partition> for Partitions {
    fn extend<I: IntoIterator<Item = Partition>>(&mut self, iter: I) {
        for p in iter {
            self.insert(&p.topic, p.partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_answers_contains_and_keeps_order() {
        let mut set: Partitions = [Partition::new("b", 1), Partition::new("a", 2)]
            .into_iter()
            .collect();
        set.insert("a", 0);
        assert!(set.contains("a", 2) && set.contains("b", 1));
        assert!(!set.contains("a", 1) && !set.contains("c", 0));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [("a", 0), ("a", 2), ("b", 1)]
        );
        set.remove("b", 1);
        set.retain(|_, p| p > 0);
        assert_eq!(set.to_vec(), [Partition::new("a", 2)]);
        assert_eq!(set.len(), 1);
        assert_eq!(Partition::new("t", 3).to_string(), "t/3");
        assert_eq!(format!("{:?}", [Partition::new("t", 3)]), "[t/3]");
    }
}
