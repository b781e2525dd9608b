//! The pipeline: how one record goes from Kafka into every sink of its route, and its
//! offset back to Kafka once they all hold it. One file per step:
//!
//! 1. `consume.rs`: poll a record and hand it to its route (`crate::route`), where it
//!    is decoded (`crate::decode`) and batched, one lane per sink.
//! 2. `write.rs`: a lane's batch is written by its sink (`Sink::write`, which makes it
//!    durable and records the positions it reached, in the sink's own crate).
//! 3. `commit.rs`: what every sink of the route made durable is committed to Kafka
//!    (the rule is `crate::protocol`).
//!
//! Around them: `open.rs` opens the sinks, `reread.rs` reads partitions again from the
//! sinks' positions (a dropped or shed batch), `connections.rs` checks the services.

mod commit;
mod connections;
mod consume;
mod open;
mod reread;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ingest_sink_api::{Fence, OffsetMap, PositionReader};
use tokio::sync::watch;

use crate::config::Loaded;
use crate::consumer::{self, Consumer, GroupFence};
use crate::dead_letter::DeadLetters;
use crate::health::Health;
use crate::protocol::Offsets;

pub use connections::check_connections;
pub use open::open_routes;

/// Runs until `shutdown` turns true, then flushes, commits and leaves the group.
pub async fn run(
    loaded: Loaded,
    health: Health,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer = Arc::new(consumer::create(&loaded.config.kafka)?);
    let committed = Arc::new(Mutex::new(OffsetMap::default()));
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
    route_of: HashMap<String, Option<usize>>,
    last_route: Option<(String, Option<usize>)>,
    health: &'a Health,
    /// What each sink made durable, what is owned and committed: the protocol.
    offsets: Offsets,
    /// A copy of what `offsets` committed, for the fence (it commits it again to prove
    /// ownership without moving the group offset).
    committed: Arc<Mutex<OffsetMap>>,
    /// Turns true on SIGTERM/SIGINT; write retries give up on it.
    shutdown: watch::Receiver<bool>,
    /// Per route name, its sinks' position readers.
    positions: HashMap<String, Vec<Arc<dyn PositionReader>>>,
}

#[cfg(test)]
mod shed_tests;
#[cfg(test)]
mod tests;
