//! What a table holds past its ledger, read the way no merge or clock can hide: the
//! logic of recovery, over a [`TableLook`] (the ClickHouse queries in
//! [`super::LedgerReader`], an in-memory MergeTree in the simulation).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ingest_sink_api::{OffsetMap, Partition, SinkError};

use super::held::{HeldRows, RecordedEntry};

/// How often recovery reads the recent parts again when merges keep retiring the ones
/// it listed.
const LIST_ATTEMPTS: usize = 5;

/// The three looks recovery takes at a table.
#[async_trait::async_trait]
pub trait TableLook: Send + Sync {
    /// The sink's name, for errors and logs.
    fn sink(&self) -> &str;

    /// The ledger's entries for the partitions of `topics` (of every topic when empty).
    async fn entries(&self, topics: &[&str]) -> Result<Vec<RecordedEntry>, SinkError>;

    /// One look at the table's active parts (see [`Listed`]).
    async fn list(&self, window: &Window) -> Result<Listed, SinkError>;

    /// The coordinates of the rows past `from` in the named parts only.
    async fn beyond(
        &self,
        parts: &[String],
        from: &OffsetMap,
    ) -> Result<Vec<(String, i32, i64)>, SinkError>;
}

/// The parts recovery reads: those holding a block numbered `from_block` or later, and,
/// for entries of an earlier release (which recorded only times), those written or
/// merged `since` (unix s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from_block: i64,
    pub since: Option<u32>,
}

/// What one look at the table's parts found, all at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// The active parts in the window.
    pub names: Vec<String>,
    /// The lowest highest-block of the listed parts: every row they hold stays in parts
    /// at or past it, whatever merges them.
    pub floor: Option<i64>,
    /// The highest block number of any active part: every later insert numbers past it.
    pub top: i64,
}

impl Listed {
    /// Whether every part of `self` is still active in `later`: if one has gone (merged,
    /// mutated), its rows may have been read from nowhere.
    fn still_in(&self, later: &Listed) -> bool {
        let later: HashSet<&str> = later.names.iter().map(String::as_str).collect();
        self.names.iter().all(|n| later.contains(n.as_str()))
    }
}

/// Partitions without a ledger entry, and the first block past their last full look
/// (so an unwritten partition costs one full look per process).
pub type Scanned = Mutex<HashMap<Partition, i64>>;

/// What the table holds already for the partitions in `from` (all partitions the
/// ledger knows when empty): the ledger, then the coordinates in the parts that may
/// hold rows past each partition's entry.
pub async fn held(
    look: &dyn TableLook,
    scanned: &Scanned,
    from: &OffsetMap,
) -> Result<HeldRows, SinkError> {
    let topics: Vec<&str> = from.topics().collect();
    let entries = look.entries(&topics).await?;
    let mut held = HeldRows::default();
    if from.is_empty() {
        for e in &entries {
            held.ledger.advance(&e.topic, e.partition, e.next);
        }
        return Ok(held);
    }
    // From each partition's ledger position (0 without one) and the blocks past it.
    let mut beyond_from = OffsetMap::default();
    let mut window = Window {
        from_block: i64::MAX,
        since: None,
    };
    let mut unseen = Vec::new();
    let mut by_time = Vec::new();
    let looked = scanned.lock().expect("scans poisoned").clone();
    for (topic, partition, _) in from.iter() {
        let entry = entries
            .iter()
            .find(|e| e.topic == topic && e.partition == partition);
        let key = Partition::new(topic, partition);
        match entry {
            Some(e) if e.from_block > 0 => {
                window.from_block = window.from_block.min(e.from_block);
                held.since.insert(key.clone(), e.from_block);
            }
            // Recorded by an earlier release: the parts since its time (one second
            // early: part times and `now()` are whole seconds), until an entry of this
            // release records a block.
            Some(e) => {
                let since = e.at.saturating_sub(1);
                window.since = Some(window.since.map_or(since, |s| s.min(since)));
                by_time.push(key.clone());
            }
            // No entry: every part, the first time; after that, the parts past that
            // look (an interrupted first insert comes later).
            None => {
                let first = looked.get(&key).copied().unwrap_or(0);
                window.from_block = window.from_block.min(first);
                held.since.insert(key.clone(), first);
                unseen.push(key.clone());
            }
        }
        if let Some(e) = entry {
            held.ledger.advance(topic, partition, e.next);
        }
        beyond_from.advance(topic, partition, entry.map_or(0, |e| e.next));
    }
    let (listed, beyond) = read_recent(look, &window, &beyond_from).await?;
    // A partition whose first block lies past every part's: the parts holding the
    // table's highest blocks are gone (dropped, expired, emptied), and after a server
    // restart the counter numbers from the highest part left, below the ledger. Every
    // part is read for all of them (checked per partition: one partition's low block
    // must not hide another's high one).
    let went_back: Vec<Partition> = held
        .since
        .iter()
        .filter(|(_, first)| **first > listed.top + 1)
        .map(|(key, _)| key.clone())
        .collect();
    if !went_back.is_empty() {
        tracing::warn!(sink = %look.sink(), top = listed.top, partitions = ?went_back,
            "the parts holding the table's highest block numbers are gone, below where the position ledger looks: reading every part to find rows past the ledger");
        let every_part = Window {
            from_block: 0,
            since: None,
        };
        let (listed, beyond) = read_recent(look, &every_part, &beyond_from).await?;
        held.top = listed.top;
        for key in went_back {
            held.since.insert(key, 0);
        }
        held.beyond.extend(beyond);
        return Ok(held);
    }
    held.top = listed.top;
    // Rows found by time stay where a block window finds them: in parts at or past the
    // lowest block of the parts listed.
    let floor = listed.floor.unwrap_or(listed.top + 1);
    for key in by_time {
        held.since.insert(key, floor);
    }
    held.beyond.extend(beyond);
    // A partition without an entry whose look found nothing need not look at older
    // parts again. One whose look found rows must, until an entry covers them: a write
    // failing now would otherwise forget them and write them twice.
    let mut scanned = scanned.lock().expect("scans poisoned");
    for key in unseen {
        let found = held.beyond.iter().any(|(t, p, _)| key.is(t, *p));
        if !found {
            scanned.insert(key, listed.top + 1);
        }
    }
    Ok(held)
}

/// The parts in `window` and the coordinates of their rows past `beyond_from`. The
/// parts are listed again after each read: a part read and gone meanwhile (merged,
/// mutated) may have been read from nowhere, and its rows are now in a part numbered
/// at least as high, so the parts of the new list not read yet are read, until no part
/// read in a round has gone. (Parts read in an earlier round and still active then were
/// read whole: a part never comes back.)
async fn read_recent(
    look: &dyn TableLook,
    window: &Window,
    beyond_from: &OffsetMap,
) -> Result<(Listed, Vec<(String, i32, i64)>), SinkError> {
    let mut listed = look.list(window).await?;
    let mut read: HashSet<String> = HashSet::new();
    let mut found = Vec::new();
    for _ in 0..LIST_ATTEMPTS {
        let unread = Listed {
            names: (listed.names.iter())
                .filter(|n| !read.contains(*n))
                .cloned()
                .collect(),
            ..listed.clone()
        };
        if unread.names.is_empty() {
            return Ok((listed, found));
        }
        found.extend(look.beyond(&unread.names, beyond_from).await?);
        read.extend(unread.names.iter().cloned());
        let again = look.list(window).await?;
        if unread.still_in(&again) {
            return Ok((again, found));
        }
        listed = again;
    }
    Err(SinkError::retryable(
        look.sink(),
        format!(
            "reading positions: the table's recent parts were merged away {LIST_ATTEMPTS} times while they were read"
        ),
    ))
}
