//! What the dead-letter topic holds, per source partition: pure bookkeeping, like
//! `protocol/`.
//!
//! Every dead letter of one source partition goes to one partition of the dead-letter
//! topic (see [`super::partition_for`]), in source order. A record is dead-lettered
//! again only if it is not there already: after a crash, a rebalance, a shed or a
//! rewind, the source offsets re-read are looked up here first. What is here comes from
//! the acknowledgements of this member's own sends and from reading the dead-letter
//! partition back (`scan.rs`), from the point the last committer left as a [`Hint`] in
//! the group offset's metadata: every dead letter a later re-read can meet lies at or
//! past the hint, so the read is short (what was sent since about that commit), not the
//! whole topic.
//!
//! A re-read starts at the sinks' own positions, which can lie below the committed
//! offset: a sink records the position of its last row, not of bad records after it
//! (ClickHouse), and a batch of bad records only is no write at all. So what is
//! forgotten, and where the hint points, follows the offset after the last good record
//! below the committed offset (the *floor*), which every sink holds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::protocol::Partition;

/// Where the dead letters of one source partition stand.
#[derive(Debug, Clone)]
struct Known {
    /// The dead-letter partition holding them.
    dead_letter_partition: i32,
    /// Source offset → offset in the dead-letter partition, for dead letters at or past
    /// the floor.
    sent: BTreeMap<i64, i64>,
    /// Every later dead letter lands at or past this offset of the dead-letter
    /// partition (its end when read, or past this member's last send).
    next_free: i64,
    /// Where the dead-letter partition ended before a send that has not wholly
    /// succeeded: some of it may have landed there without an answer.
    round_start: Option<i64>,
    /// The offset after the last good record seen, and per chunk (its end position)
    /// what that was once the chunk was decided, oldest first.
    last_good: Option<i64>,
    floors: VecDeque<(i64, i64)>,
    /// Every sink holds the records below this (see the module doc).
    floor: i64,
}

impl Known {
    /// Where a read back must start to see every dead letter still needed.
    fn lowest(&self) -> i64 {
        let sent = self.sent.values().copied().min().unwrap_or(self.next_free);
        sent.min(self.next_free)
            .min(self.round_start.unwrap_or(i64::MAX))
    }
}

/// A lower bound for reading a source partition's dead letters back, kept in the group
/// offset's metadata: the dead letters a re-read from the sinks' positions can meet are
/// at or past `from` in partition `partition` of `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
}

const HINT_PREFIX: &str = "ingest.dead-letters.v1:";

impl Hint {
    /// The group offset's metadata for it.
    pub fn encode(&self) -> String {
        format!(
            "{HINT_PREFIX}{}@{}/{}",
            self.from, self.partition, self.topic
        )
    }

    /// `None` for metadata that is not ours (empty, or another tool's).
    pub fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(HINT_PREFIX)?;
        let (from, rest) = rest.split_once('@')?;
        let (partition, topic) = rest.split_once('/')?;
        Some(Self {
            topic: topic.to_string(),
            partition: partition.parse().ok()?,
            from: from.parse().ok()?,
        })
    }
}

/// Per owned source partition of routes with a dead-letter topic: what it holds, or,
/// until read back, the hint the last committer left.
#[derive(Debug, Default)]
pub struct Ledger {
    known: HashMap<Partition, Known>,
    /// Hints read from the group on assignment, for partitions not read back yet.
    hints: HashMap<Partition, Hint>,
}

impl Ledger {
    /// The partition was assigned; `hint` is what the group offset's metadata says.
    pub fn assigned(&mut self, partition: Partition, hint: Option<Hint>) {
        self.known.remove(&partition);
        match hint {
            Some(hint) => self.hints.insert(partition, hint),
            None => self.hints.remove(&partition),
        };
    }

    /// Forgets partitions revoked (their new owner reads them back itself).
    pub fn revoke(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.known.remove(p);
            self.hints.remove(p);
        }
    }

    /// Whether the partition's dead letters were read back (or are being tracked).
    pub fn knows(&self, partition: &Partition) -> bool {
        self.known.contains_key(partition)
    }

    /// Where to read the partition's dead letters back from, in `topic` whose
    /// partition `dead_letter_partition` holds them: past what is known, else the hint
    /// (when it names the same place), else the start of the partition (`None`).
    pub fn read_from(
        &self,
        partition: &Partition,
        topic: &str,
        dead_letter_partition: i32,
    ) -> Option<i64> {
        if let Some(known) = self.known.get(partition) {
            return Some(known.lowest());
        }
        self.hints
            .get(partition)
            .filter(|h| h.topic == topic && h.partition == dead_letter_partition)
            .map(|h| h.from)
    }

    /// What a read of the dead-letter partition found for the source partition: its
    /// dead letters (source offset, offset in the dead-letter partition) and the end
    /// the read reached.
    pub fn learn(
        &mut self,
        partition: &Partition,
        dead_letter_partition: i32,
        found: impl IntoIterator<Item = (i64, i64)>,
        end: i64,
    ) {
        let known = self.known.entry(partition.clone()).or_insert(Known {
            dead_letter_partition,
            sent: BTreeMap::new(),
            next_free: end,
            round_start: None,
            last_good: None,
            floors: VecDeque::new(),
            floor: i64::MIN,
        });
        known.dead_letter_partition = dead_letter_partition;
        known.next_free = known.next_free.max(end);
        known.round_start = None;
        for (source, offset) in found {
            known.sent.entry(source).or_insert(offset);
        }
        self.hints.remove(partition);
    }

    /// Whether the record at `offset` of the source partition is in the dead-letter
    /// topic already.
    pub fn holds(&self, partition: &Partition, offset: i64) -> bool {
        self.known
            .get(partition)
            .is_some_and(|k| k.sent.contains_key(&offset))
    }

    /// A send of the partition's dead letters starts.
    pub fn sending(&mut self, partition: &Partition) {
        if let Some(known) = self.known.get_mut(partition) {
            known.round_start.get_or_insert(known.next_free);
        }
    }

    /// Every dead letter of the send was acknowledged.
    pub fn delivered(&mut self, partition: &Partition) {
        if let Some(known) = self.known.get_mut(partition) {
            known.round_start = None;
        }
    }

    /// The dead-letter topic acknowledged the record at source `offset` at
    /// `dead_letter_offset`.
    pub fn sent(&mut self, partition: &Partition, offset: i64, dead_letter_offset: i64) {
        if let Some(known) = self.known.get_mut(partition) {
            known.sent.insert(offset, dead_letter_offset);
            known.next_free = known.next_free.max(dead_letter_offset + 1);
        }
    }

    /// A chunk reaching `end` was decided (its good rows handed to the lanes, its bad
    /// records to the dead-letter topic); `last_good` is the offset of its last good
    /// record of the partition, if it had one.
    pub fn decided(&mut self, partition: &Partition, end: i64, last_good: Option<i64>) {
        if let Some(known) = self.known.get_mut(partition) {
            if let Some(good) = last_good {
                known.last_good = known.last_good.max(Some(good + 1));
            }
            if let Some(floor) = known.last_good {
                known.floors.push_back((end, floor));
            }
        }
    }

    /// The hint to commit with source offset `committed`. Dead letters below the
    /// floor it implies are never met again, and are forgotten here.
    pub fn hint(&mut self, partition: &Partition, topic: &str, committed: i64) -> Option<Hint> {
        let Some(known) = self.known.get_mut(partition) else {
            // Not read back yet: nothing was sent, the last committer's hint holds.
            return self.hints.get(partition).cloned();
        };
        while let Some((end, floor)) = known.floors.front().copied()
            && end <= committed
        {
            known.floor = known.floor.max(floor);
            known.floors.pop_front();
        }
        known.sent = known.sent.split_off(&known.floor);
        Some(Hint {
            topic: topic.to_string(),
            partition: known.dead_letter_partition,
            from: known.lowest(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Partition {
        Partition::new("events", 3)
    }

    #[test]
    fn a_hint_survives_its_encoding_and_foreign_metadata_is_ignored() {
        let hint = Hint {
            topic: "dead/letters@x".into(),
            partition: 2,
            from: 1234,
        };
        assert_eq!(Hint::decode(&hint.encode()), Some(hint));
        assert_eq!(Hint::decode(""), None);
        assert_eq!(Hint::decode("some other tool"), None);
    }

    #[test]
    fn records_read_back_or_acknowledged_are_held_and_the_hint_covers_what_a_reread_meets() {
        let mut ledger = Ledger::default();
        let hint = Hint {
            topic: "dl".into(),
            partition: 1,
            from: 40,
        };
        ledger.assigned(p(), Some(hint));
        assert!(!ledger.knows(&p()));
        assert_eq!(ledger.read_from(&p(), "dl", 1), Some(40));
        // A hint for another dead-letter topic or partition is no lower bound here.
        assert_eq!(ledger.read_from(&p(), "other", 1), None);
        assert_eq!(ledger.read_from(&p(), "dl", 0), None);
        // Before the read, a commit passes the last committer's hint on.
        assert_eq!(ledger.hint(&p(), "dl", 100).map(|h| h.from), Some(40));

        ledger.learn(&p(), 1, [(105, 41), (110, 44)], 50);
        assert!(ledger.holds(&p(), 105) && ledger.holds(&p(), 110));
        assert!(!ledger.holds(&p(), 107));
        ledger.sending(&p());
        ledger.sent(&p(), 120, 52);
        ledger.delivered(&p());
        assert!(ledger.holds(&p(), 120));

        // Good records up to 106 in a chunk ending at 108, committed there: the dead
        // letter of 105 is never met again.
        ledger.decided(&p(), 108, Some(106));
        let hint = ledger.hint(&p(), "dl", 108).unwrap();
        assert_eq!((hint.partition, hint.from), (1, 44));
        assert!(!ledger.holds(&p(), 105));
        // Committed past bad records only: the sinks still stand at 107, a re-read
        // meets 110 and 120 again, so they are kept.
        ledger.decided(&p(), 121, None);
        assert_eq!(ledger.hint(&p(), "dl", 121).unwrap().from, 44);
        assert!(ledger.holds(&p(), 110) && ledger.holds(&p(), 120));
        // A good record past them: forgotten, the next one lands past the last sent.
        ledger.decided(&p(), 130, Some(125));
        assert_eq!(ledger.hint(&p(), "dl", 130).unwrap().from, 53);
        assert_eq!(ledger.read_from(&p(), "dl", 1), Some(53));
    }

    #[test]
    fn a_send_without_every_answer_is_read_back_from_where_it_started() {
        let mut ledger = Ledger::default();
        ledger.assigned(p(), None);
        ledger.learn(&p(), 0, [], 10);
        ledger.sending(&p());
        // The first letter may have landed at 10 unanswered; the second was at 11.
        ledger.sent(&p(), 7, 11);
        assert_eq!(ledger.read_from(&p(), "dl", 0), Some(10));
        ledger.learn(&p(), 0, [(6, 10), (7, 11)], 12);
        assert!(ledger.holds(&p(), 6));
        assert_eq!(ledger.read_from(&p(), "dl", 0), Some(10));
    }

    #[test]
    fn a_revoked_partition_is_read_back_again_when_it_returns() {
        let mut ledger = Ledger::default();
        ledger.assigned(p(), None);
        ledger.learn(&p(), 0, [(7, 3)], 10);
        ledger.revoke(&[p()]);
        assert!(!ledger.knows(&p()) && !ledger.holds(&p(), 7));
        assert_eq!(ledger.hint(&p(), "dl", 8), None);
        ledger.assigned(p(), None);
        assert_eq!(ledger.read_from(&p(), "dl", 0), None);
    }
}
