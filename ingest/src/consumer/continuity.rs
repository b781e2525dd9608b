//! Where each partition's next record should come from, to notice librdkafka moving the
//! fetch position on its own: back (an out-of-range reset to the start of a recreated
//! log, a truncation found through the leader epoch) or forward past records (a reset
//! to the log start after retention deleted what the consumer was about to read).
//!
//! librdkafka tells the application of neither except in a log line, whose level the
//! user controls; the offsets of the records themselves are facts. Pure bookkeeping:
//! the pipeline says where it starts or seeks each partition, and asks about every
//! record.

use std::collections::HashMap;

/// A record's offset against where its partition stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next record, or the first one of a partition whose start is not known.
    InOrder,
    /// Past the offset expected: a gap in the log (compaction, transaction markers,
    /// aborted records) or records deleted before they were read; the log start tells.
    Forward { expected: i64 },
    /// Below the offset expected, with no seek of ours: the log was replaced under
    /// the consumer.
    Back { expected: i64 },
}

#[derive(Debug, Default)]
pub struct Continuity {
    /// Per topic, per partition: the offset the next record should have; `None` until
    /// the first record when the start is the group offset (not known here).
    next: HashMap<String, HashMap<i32, Option<i64>>>,
}

impl Continuity {
    /// The partition starts, or was sought, at `offset` (`None`: where the group offset
    /// or `auto.offset.reset` says).
    pub fn start(&mut self, topic: &str, partition: i32, offset: Option<i64>) {
        self.next
            .entry(topic.to_string())
            .or_default()
            .insert(partition, offset);
    }

    /// The partition is no longer read here.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        if let Some(partitions) = self.next.get_mut(topic) {
            partitions.remove(&partition);
        }
    }

    /// Whether the partition's next record is expected at `offset` (not sought elsewhere
    /// or forgotten since).
    pub fn expects(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.next
            .get(topic)
            .and_then(|p| p.get(&partition))
            .is_some_and(|next| *next == Some(offset))
    }

    /// A record at `offset` was read from the partition.
    pub fn step(&mut self, topic: &str, partition: i32, offset: i64) -> Step {
        let slot = match self.next.get_mut(topic) {
            Some(partitions) => partitions.entry(partition).or_insert(None),
            None => self
                .next
                .entry(topic.to_string())
                .or_default()
                .entry(partition)
                .or_insert(None),
        };
        let step = match *slot {
            Some(expected) if offset < expected => Step::Back { expected },
            Some(expected) if offset > expected => Step::Forward { expected },
            _ => Step::InOrder,
        };
        *slot = Some(offset + 1);
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expects_says_whether_a_partition_was_sought_or_forgotten_since() {
        let mut c = Continuity::default();
        c.start("t", 0, Some(10));
        c.step("t", 0, 10);
        assert!(c.expects("t", 0, 11));
        c.start("t", 0, Some(4));
        assert!(!c.expects("t", 0, 11), "sought back");
        c.forget("t", 0);
        assert!(!c.expects("t", 0, 4), "revoked");
    }

    #[test]
    fn records_in_order_and_an_unknown_start_pass() {
        let mut c = Continuity::default();
        c.start("t", 0, None);
        assert_eq!(c.step("t", 0, 500), Step::InOrder);
        assert_eq!(c.step("t", 0, 501), Step::InOrder);
        // A partition never started here (assigned before the check could say).
        assert_eq!(c.step("t", 1, 7), Step::InOrder);
        assert_eq!(c.step("t", 1, 8), Step::InOrder);
    }

    #[test]
    fn a_record_below_the_position_is_a_move_back() {
        let mut c = Continuity::default();
        c.start("t", 0, Some(1000));
        assert_eq!(c.step("t", 0, 1000), Step::InOrder);
        assert_eq!(c.step("t", 0, 0), Step::Back { expected: 1001 });
    }

    #[test]
    fn a_record_past_the_position_is_a_move_forward() {
        let mut c = Continuity::default();
        c.start("t", 0, Some(1000));
        assert_eq!(c.step("t", 0, 4000), Step::Forward { expected: 1000 });
        assert_eq!(c.step("t", 0, 4001), Step::InOrder);
    }

    #[test]
    fn a_seek_of_ours_sets_the_next_offset() {
        let mut c = Continuity::default();
        c.start("t", 0, Some(10));
        assert_eq!(c.step("t", 0, 10), Step::InOrder);
        c.start("t", 0, Some(3));
        assert_eq!(c.step("t", 0, 3), Step::InOrder);
        c.forget("t", 0);
        assert_eq!(c.step("t", 0, 0), Step::InOrder);
    }
}
