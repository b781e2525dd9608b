//! Opening every route's sinks before consuming starts.

use std::sync::Arc;

use ingest_sink_api::Fence;
use ingest_sink_clickhouse::ClickHouseSink;
use ingest_sink_iceberg::{IcebergSink, open_catalog};

use crate::config::Loaded;
use crate::route::RouteState;

/// Builds the run-time state of every route, creating tables where configured.
/// ClickHouse writes check ownership with `fence` (Iceberg commits are a
/// compare-and-swap on the table's own positions and need none).
pub async fn open_routes(
    loaded: &Loaded,
    fence: Arc<dyn Fence>,
) -> anyhow::Result<Vec<RouteState>> {
    let catalog = match &loaded.config.iceberg {
        Some(iceberg) => Some(
            open_catalog(&iceberg.catalog)
                .await
                .map_err(|e| super::catalog_error(&iceberg.catalog.display_uri(), &e))?,
        ),
        None => None,
    };
    let group = &loaded.config.kafka.group_id;
    let mut states = Vec::with_capacity(loaded.routes.len());
    for (index, route) in loaded.routes.iter().enumerate() {
        let mut state = RouteState::new(route.clone(), index)?;
        let schema = state.output_schema();
        if let (Some(table), Some(conn)) = (&route.config.clickhouse, &loaded.config.clickhouse) {
            let sink =
                ClickHouseSink::open(conn, table, schema.clone(), route.clickhouse_coordinates())
                    .await?
                    .with_fence(Arc::clone(&fence));
            state.add_sink(Box::new(sink), &table.batch);
        }
        if let (Some(table), Some(iceberg), Some(catalog)) =
            (&route.config.iceberg, &loaded.config.iceberg, &catalog)
        {
            let sink = IcebergSink::open(
                Arc::clone(catalog),
                &iceberg.namespace,
                table,
                schema.clone(),
                group,
            )
            .await?;
            state.add_sink(Box::new(sink), &table.batch);
        }
        states.push(state);
    }
    Ok(states)
}
