//! Iceberg as a plug-in of the service: its `iceberg:` section (the catalog and the
//! namespace) and route blocks, the connection check, and opening a table. The
//! catalog is opened once, by the first table that needs it, and shared.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;
use ingest_sink_api::{
    ConfigProblem, OffsetMap, OpenContext, RouteBlock, RouteTable, Sink, SinkError, SinkPlugin,
    SinkSection, SinkTable, TableState, parse_block, secret,
};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::{CatalogConfig, IcebergSink, IcebergTable, open_catalog};

const KEY: &str = "iceberg";

/// The registration of the Iceberg sink. The secrets are read by the catalog's object
/// store client when the config leaves them out.
pub const ICEBERG: SinkPlugin = SinkPlugin {
    key: KEY,
    title: "Iceberg",
    section: open_section,
    secret_env: &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"],
};

/// The `iceberg:` section: the catalog and the namespace; the catalog itself is
/// opened by the first table that needs it.
fn open_section(
    value: serde_json::Value,
    _base: &Path,
) -> Result<Arc<dyn SinkSection>, ConfigProblem> {
    let config: IcebergConfig = parse_block(value).map_err(|p| p.within(KEY))?;
    Ok(Arc::new(Section {
        config,
        catalog: OnceCell::new(),
    }))
}

/// The `iceberg:` section of the service config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IcebergConfig {
    catalog: CatalogConfig,
    /// Namespace of the tables; dots separate levels (`analytics.raw`).
    namespace: String,
}

#[derive(Debug)]
struct Section {
    config: IcebergConfig,
    catalog: OnceCell<Arc<dyn Catalog>>,
}

impl Section {
    /// The catalog, opened on first use; a failure is described without the
    /// password the catalog's URI may hold.
    async fn catalog(&self) -> Result<&Arc<dyn Catalog>, String> {
        self.catalog
            .get_or_try_init(|| open_catalog(&self.config.catalog))
            .await
            .map_err(|e| self.catalog_error(&e))
    }

    fn catalog_error(&self, error: &dyn std::fmt::Display) -> String {
        let uri = self.config.catalog.display_uri();
        secret::redact_uris(&format!("iceberg catalog `{uri}`: {error}")).into_owned()
    }
}

#[async_trait::async_trait]
impl SinkSection for Section {
    fn table(self: Arc<Self>, block: RouteBlock<'_>) -> Result<RouteTable, ConfigProblem> {
        let config: IcebergTable = block.parse()?;
        let name = config.table.clone();
        let batch = config.batch.clone();
        Ok(RouteTable::new(
            &name,
            &batch,
            Table {
                section: self,
                config,
            },
        ))
    }

    async fn check_connection(&self, timeout: Duration) -> anyhow::Result<String> {
        let uri = self.config.catalog.display_uri();
        let catalog = tokio::time::timeout(timeout, self.catalog())
            .await
            .map_err(|_| anyhow::anyhow!("iceberg catalog `{uri}` unreachable: timed out"))?
            .map_err(|e| anyhow::anyhow!(e))?;
        let namespaces = catalog
            .list_namespaces(None)
            .await
            .map_err(|e| anyhow::anyhow!(self.catalog_error(&e)))?;
        Ok(format!(
            "catalog reachable, {} namespace(s)",
            namespaces.len()
        ))
    }
}

#[derive(Debug)]
struct Table {
    section: Arc<Section>,
    config: IcebergTable,
}

#[async_trait::async_trait]
impl SinkTable for Table {
    async fn open(&self, context: OpenContext) -> Result<Box<dyn Sink>, SinkError> {
        let namespace = &self.section.config.namespace;
        let sink = IcebergSink::open(
            self.catalog().await?,
            namespace,
            &self.config,
            context.schema,
            &context.group,
        )
        .await?;
        Ok(Box::new(sink))
    }

    async fn inspect(&self, group: &str, _: &OffsetMap) -> Result<TableState, SinkError> {
        let namespace = &self.section.config.namespace;
        crate::inspect::table_state(self.catalog().await?, namespace, &self.config.table, group)
            .await
    }
}

impl Table {
    /// The section's catalog, opened once; a failure names this table's sink.
    async fn catalog(&self) -> Result<Arc<dyn Catalog>, SinkError> {
        let catalog = self.section.catalog().await.map_err(|message| {
            SinkError::permanent(
                format!(
                    "iceberg {}.{}",
                    self.section.config.namespace, self.config.table
                ),
                message,
            )
        })?;
        Ok(Arc::clone(catalog))
    }
}
