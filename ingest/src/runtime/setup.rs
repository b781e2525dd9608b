//! Opening every route's sinks before consuming starts.

use std::sync::Arc;

use ingest_sink_api::{Fence, OpenContext};

use crate::config::Loaded;
use crate::route::RouteState;

/// Builds the run-time state of every route, opening each of its tables (and creating
/// them where their sink is configured to). Sinks that must confirm ownership before
/// making rows durable do so with `fence`.
pub async fn open_routes(
    loaded: &Loaded,
    fence: Arc<dyn Fence>,
) -> anyhow::Result<Vec<RouteState>> {
    let mut states = Vec::with_capacity(loaded.routes.len());
    for (index, route) in loaded.routes.iter().enumerate() {
        let mut state = RouteState::new(route.clone(), index)?;
        let context = OpenContext {
            schema: state.output_schema(),
            group: loaded.config.kafka.group_id.clone(),
            fence: Arc::clone(&fence),
        };
        for sink in &route.sinks {
            let opened = sink.table.open(context.clone()).await?;
            state.add_sink(opened, sink.table.batch());
        }
        states.push(state);
    }
    Ok(states)
}
