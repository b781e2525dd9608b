//! Opening every route's sinks before consuming starts.

use std::sync::Arc;

use ingest_sinks::Sink;
use ingest_sinks::clickhouse::ClickHouseSink;
use ingest_sinks::iceberg::{IcebergSink, open_catalog};

use crate::config::Loaded;
use crate::route::RouteState;

/// Builds the run-time state of every route, creating tables where configured.
pub async fn open_routes(loaded: &Loaded) -> anyhow::Result<Vec<RouteState>> {
    let catalog = match &loaded.config.iceberg {
        Some(iceberg) => Some(
            open_catalog(&iceberg.catalog)
                .await
                .map_err(|e| anyhow::anyhow!("iceberg catalog `{}`: {e}", iceberg.catalog.uri))?,
        ),
        None => None,
    };
    let group = &loaded.config.kafka.group_id;
    let mut states = Vec::with_capacity(loaded.routes.len());
    for route in &loaded.routes {
        let mut state = RouteState::new(route.clone(), Vec::new())?;
        let schema = state.output_schema();
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let (Some(table), Some(conn)) = (&route.config.clickhouse, &loaded.config.clickhouse) {
            sinks.push(Box::new(
                ClickHouseSink::open(conn, table, schema.clone()).await?,
            ));
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
            sinks.push(Box::new(sink));
        }
        state.sinks = sinks;
        states.push(state);
    }
    Ok(states)
}
