//! The pipeline: how one record goes from Kafka into every sink of its route, and its
//! offset back to Kafka once they all hold it, one file per step:
//!
//! 1. consume: `pipeline/consume.rs` polls a record and hands it to its route;
//! 2. decode: `decode/mod.rs` turns it into Arrow rows; bad records go to the
//!    dead-letter topic, exactly once per source position (`pipeline/dead_letter.rs`);
//! 3. batch: `batch/mod.rs` gives the rows to one lane per sink, each with its limits;
//! 4. sink write: `pipeline/write.rs` hands a due lane's batch to its sink (the sink's
//!    `write.rs`), retrying while it fails;
//! 5. sink commit: the sink makes the rows durable and records the positions they
//!    reach where it can read them back after a crash (Iceberg: in the same commit,
//!    `commit.rs`; ClickHouse: a ledger entry once the insert is acknowledged,
//!    `ledger/`);
//! 6. Kafka commit: `pipeline/commit.rs` commits what every sink of the route holds
//!    (which offsets may be committed is `protocol/`'s rule).
//!
//! Around them: `open.rs` opens the sinks, `reread.rs` reads partitions again from the
//! sinks' positions (a dropped or shed batch), `evolve.rs` widens a route and its
//! tables to a new schema, `pause.rs` holds a route on one it cannot take,
//! `connections.rs` checks the services, `progress.rs` reports where each sink stands.

mod commit;
mod connections;
mod consume;
mod dead_letter;
mod evolve;
mod log_check;
mod open;
mod pause;
mod progress;
mod reread;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ingest_sink_api::Fence;
use tokio::sync::watch;

use crate::config::Loaded;
use crate::consumer::{self, Consumer, Continuity, GroupFence, PositionReaders, SharedCommitted};
use crate::dead_letter::DeadLetters;
use crate::health::Health;
use crate::protocol::Offsets;

pub use connections::check_connections;

/// Runs until `shutdown` turns true, then flushes, commits and leaves the group.
pub async fn run(
    loaded: Loaded,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer = Arc::new(consumer::create(&loaded.config.kafka)?);
    let committed: SharedCommitted = Default::default();
    let fence: Arc<dyn Fence> = Arc::new(GroupFence::new(
        Arc::clone(&consumer),
        Arc::clone(&committed),
    ));
    let Some(routes) = open::open_with_retry(&loaded, fence, shutdown.clone()).await? else {
        return Ok(());
    };
    consume::consume(loaded, health, shutdown, consumer, committed, routes).await
}

struct Pipeline<'a> {
    loaded: &'a Loaded,
    consumer: &'a Arc<Consumer>,
    dead_letters: Option<&'a DeadLetters>,
    /// Writer schemas by id, for routes whose payloads name one.
    registry: Option<&'a crate::registry::Registry>,
    /// SIGHUP, to read the routes' schema files again (`evolve.rs`).
    hangup: Option<tokio::signal::unix::Signal>,
    route_of: HashMap<String, Option<usize>>,
    last_route: Option<(String, Option<usize>)>,
    health: &'a Health,
    /// What each sink made durable, what is owned and committed: the protocol.
    offsets: Offsets,
    /// A copy of what `offsets` committed and the notes that go with it, for the fence
    /// (it commits them again to prove ownership without moving the group offset).
    committed: SharedCommitted,
    /// Turns true on SIGTERM/SIGINT; write retries give up on it.
    shutdown: watch::Receiver<bool>,
    /// Per route (by index), its sinks' position readers.
    positions: PositionReaders,
    /// Where each partition's next record should come from (see `log_check.rs`).
    continuity: Continuity,
    /// Per (route, lane, topic, partition): the offset up to which a gap was reported.
    lost_reported: HashMap<(usize, usize, String, i32), i64>,
    /// Gaps found on routes with `on_lost_records: fail`, told before the service stops.
    lost_fail: Vec<String>,
    last_log_check: Instant,
    /// When the lag and age gauges were last brought up to date (`progress.rs`).
    last_progress: Instant,
    /// When each partition was assigned, with librdkafka's cached log bounds then: they
    /// may be those of an earlier ownership until its first fetch (`progress.rs`).
    assigned_at: HashMap<crate::protocol::Partition, (Instant, Option<consumer::Bounds>)>,
    /// Routes paused on a writer schema their table cannot take (`pause.rs`).
    paused: pause::PausedRoutes,
    /// What the dead-letter topics hold (`dead_letter.rs`).
    dead: dead_letter::DeadLetterBook,
    /// Ownership checks before dead letters are sent.
    fence: GroupFence,
}

#[cfg(test)]
mod shed_tests;
#[cfg(test)]
mod tests;
