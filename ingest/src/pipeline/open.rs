//! Opening every route's sinks before consuming starts, waiting out sinks that are
//! unreachable for now.

use std::sync::Arc;
use std::time::Duration;

use ingest_sink_api::{Fence, OpenContext, SinkError, retry};
use tokio::sync::watch;

use crate::batch::RouteBatch;
use crate::config::Loaded;
use crate::decode::Workers;

/// Builds the run-time state of every route, opening each of its tables (and creating
/// them where their sink is configured to). Sinks that must confirm ownership before
/// making rows durable do so with `fence`.
pub(super) async fn open_routes(
    loaded: &Loaded,
    fence: Arc<dyn Fence>,
) -> anyhow::Result<Vec<RouteBatch>> {
    let mut states = Vec::with_capacity(loaded.routes.len());
    let workers = match loaded.config.decode_workers {
        Some(threads) => Workers::new(threads),
        None => Workers::for_this_machine(),
    }
    .map(Arc::new);
    tracing::info!(
        threads = workers.as_ref().map_or(0, |w| w.threads()),
        "decode workers"
    );
    for (index, route) in loaded.routes.iter().enumerate() {
        let mut state = RouteBatch::new(route.clone(), index)?;
        if let Some(workers) = &workers {
            state.decode_on(Arc::clone(workers));
        }
        let context = OpenContext {
            schema: state.output_schema(),
            group: loaded.config.kafka.group_id.clone(),
            fence: Arc::clone(&fence),
        };
        for sink in &route.sinks {
            let opened = sink.table.open(context.clone()).await?;
            state.add_sink(opened, &sink.batch);
        }
        states.push(state);
    }
    Ok(states)
}

/// Opens the sinks, waiting out sinks that are unreachable for now (a ClickHouse or
/// catalog restarting) with backoff; `None` when asked to stop meanwhile.
pub(super) async fn open_with_retry(
    loaded: &Loaded,
    fence: Arc<dyn Fence>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Vec<RouteBatch>>> {
    let mut delays = retry::backoff(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match open_routes(loaded, Arc::clone(&fence)).await {
            Ok(routes) => return Ok(Some(routes)),
            Err(e)
                if e.downcast_ref::<SinkError>()
                    .is_some_and(|e| e.is_retryable()) =>
            {
                let delay = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "a sink is unreachable at start-up");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
