//! In-memory stand-ins for the two sinks, keeping positions the way ours do.
//!
//! - [`ClickHouse`]: positions live in the rows (a partition's position is the highest
//!   offset held, plus one, as the ledger folds it); a writer reads them back before it
//!   inserts and skips held rows; inserts go through the writer's gate and fail once a
//!   later writer closed it (see [`super::gate`]).
//! - [`Iceberg`]: positions are committed with the data, merged with the previous ones,
//!   as a compare-and-swap on the table's version.

use std::collections::HashMap;

use ingest_sink_api::OffsetMap;

use super::gate::Registry;
use super::{Row, TOPIC};

/// Rows held by a sink, counted (a count above one is a duplicate).
#[derive(Debug, Default, Clone)]
pub struct Held {
    count: HashMap<Row, u32>,
}

impl Held {
    pub fn add(&mut self, rows: &[Row]) -> Result<(), String> {
        for row in rows {
            let n = self.count.entry(*row).or_default();
            *n += 1;
            if *n > 1 {
                return Err(format!("row {row:?} written twice"));
            }
        }
        Ok(())
    }

    pub fn count(&self, row: &Row) -> u32 {
        self.count.get(row).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default, Clone)]
pub struct ClickHouse {
    pub held: Held,
    /// The ledger: per partition, the offset after the highest row held.
    ledger: HashMap<i32, i64>,
    pub gates: Registry,
}

impl ClickHouse {
    pub fn position(&self, partition: i32) -> Option<i64> {
        self.ledger.get(&partition).copied()
    }

    /// What the sink's positions reader answers for `partitions`.
    pub fn read(&self, partitions: &[i32]) -> OffsetMap {
        let mut out = OffsetMap::default();
        for p in partitions {
            if let Some(next) = self.position(*p) {
                out.advance(TOPIC, *p, next);
            }
        }
        out
    }

    /// An insert through gate `token`: nothing lands when a later writer closed it.
    pub fn insert(&mut self, rows: &[Row], token: u64) -> Result<bool, String> {
        if !self.gates.is_open(token) {
            return Ok(false);
        }
        self.held.add(rows)?;
        for (p, o) in rows {
            let next = self.ledger.entry(*p).or_insert(o + 1);
            *next = (*next).max(o + 1);
        }
        Ok(true)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Iceberg {
    pub version: u64,
    pub held: Held,
    pub positions: OffsetMap,
}

impl Iceberg {
    /// Appends `rows` with the positions `next` merged in, if the table is still at
    /// `version` (the catalog's compare-and-swap).
    pub fn commit(&mut self, version: u64, rows: &[Row], next: &OffsetMap) -> Result<bool, String> {
        if self.version != version {
            return Ok(false);
        }
        self.version += 1;
        self.held.add(rows)?;
        self.positions.merge(next);
        Ok(true)
    }

    pub fn read(&self, partitions: &[i32]) -> OffsetMap {
        let mut out = OffsetMap::default();
        for p in partitions {
            if let Some(next) = self.positions.get(TOPIC, *p) {
                out.advance(TOPIC, *p, next);
            }
        }
        out
    }
}
