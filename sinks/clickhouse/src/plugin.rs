//! ClickHouse as a plug-in of the service: its `clickhouse:` section and route blocks,
//! the checks on them, the connection check, opening a table, and the dry run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use ingest_sink_api::{
    ConfigProblem, DryRun, MetadataKind, OffsetMap, OpenContext, RouteBlock, RouteSpec, RouteTable,
    Sink, SinkError, SinkPlugin, SinkSection, SinkTable, TableState, parse_block,
};

use crate::{ClickHouseConnection, ClickHouseSink, ClickHouseTable, CoordinateColumns};

const KEY: &str = "clickhouse";

/// The registration of the ClickHouse sink.
pub const CLICKHOUSE: SinkPlugin = SinkPlugin {
    key: KEY,
    title: "ClickHouse",
    section: open_section,
    secret_env: &[],
};

/// The `clickhouse:` section: how to reach the server.
fn open_section(
    value: serde_json::Value,
    base: &Path,
) -> Result<Arc<dyn SinkSection>, ConfigProblem> {
    let mut conn: ClickHouseConnection = parse_block(value).map_err(|p| p.within(KEY))?;
    if let Some(ca_file) = conn.tls.as_mut().and_then(|t| t.ca_file.as_mut()) {
        *ca_file = base.join(&*ca_file);
    }
    check_tls(&conn)?;
    check_acknowledged_inserts(&conn)?;
    Ok(Arc::new(Section { conn }))
}

#[derive(Debug)]
struct Section {
    conn: ClickHouseConnection,
}

#[async_trait::async_trait]
impl SinkSection for Section {
    fn table(self: Arc<Self>, block: RouteBlock<'_>) -> Result<RouteTable, ConfigProblem> {
        let config: ClickHouseTable = block.parse()?;
        let route = block.route;
        if self.conn.create_tables {
            crate::engine::check_engine(&config.table, &config.engine)
                .map_err(|e| ConfigProblem::new("clickhouse.engine", e))?;
        }
        let coordinates = coordinate_columns(route);
        check_coordinate_names(route, &coordinates)?;
        let (name, batch) = (config.table.clone(), config.batch.clone());
        let table = Table {
            section: self,
            config,
            coordinates,
        };
        Ok(RouteTable::new(&name, &batch, table))
    }

    async fn check_connection(&self, timeout: Duration) -> anyhow::Result<String> {
        let url = self.conn.display_url();
        let client = crate::try_client(&self.conn)
            .map_err(|e| anyhow::anyhow!("clickhouse `{url}`: {e}"))?;
        let (version, _) = tokio::time::timeout(timeout, crate::server_caps(&client))
            .await
            .map_err(|_| anyhow::anyhow!("clickhouse `{url}` unreachable: timed out"))?
            .map_err(|e| {
                anyhow::anyhow!(
                    "clickhouse `{url}` unreachable: {}",
                    crate::connect::describe(&e)
                )
            })?;
        Ok(format!("server {version}"))
    }
}

#[derive(Debug)]
struct Table {
    section: Arc<Section>,
    config: ClickHouseTable,
    coordinates: CoordinateColumns,
}

#[async_trait::async_trait]
impl SinkTable for Table {
    async fn open(&self, context: OpenContext) -> Result<Box<dyn Sink>, SinkError> {
        let sink = ClickHouseSink::open(
            &self.section.conn,
            &self.config,
            context.schema,
            self.coordinates.clone(),
        )
        .await?
        .with_fence(context.fence);
        Ok(Box::new(sink))
    }

    async fn inspect(&self, _group: &str, partitions: &OffsetMap) -> Result<TableState, SinkError> {
        crate::inspect::table_state(
            &self.section.conn,
            &self.config,
            &self.coordinates,
            partitions,
        )
        .await
    }

    /// Writes `<table>.sql` (the CREATE statements) and `<table>.native` (the insert
    /// body) for a server of option `server_version` (default 26.9); option
    /// `positions=false` leaves out the coordinate columns and the ledger.
    fn dry_run(&self, run: &DryRun<'_>) -> Result<String, String> {
        let version = run
            .options
            .get("server_version")
            .map_or("26.9", String::as_str);
        let positions = match run.options.get("positions").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(format!("positions={other}: use true or false")),
        };
        let (ddl, payload) = crate::offline_payload(
            &self.section.conn.database,
            &self.config,
            &run.schema,
            version,
            run.batches,
            positions.then_some(&self.coordinates),
        )?;
        let write = |extension: &str, bytes: &[u8]| {
            let path = run.out.join(format!("{}.{extension}", self.config.table));
            std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok::<_, String>(path.display().to_string())
        };
        let ddl_path = write("sql", ddl.as_bytes())?;
        let payload_path = write("native", &payload)?;
        let rows: usize = run.batches.iter().map(RecordBatch::num_rows).sum();
        Ok(format!(
            "{rows} rows, {} payload bytes for ClickHouse {version}: {ddl_path}, {payload_path}",
            payload.len()
        ))
    }
}

/// `clickhouse.tls` goes with an `https://` URL, and its CA file must load.
fn check_tls(conn: &ClickHouseConnection) -> Result<(), ConfigProblem> {
    let Some(tls) = &conn.tls else {
        return Ok(());
    };
    if !crate::connect::is_https(&conn.url) {
        return Err(ConfigProblem::new(
            "clickhouse.tls",
            format!("TLS needs an https:// URL, not `{}`", conn.display_url()),
        ));
    }
    if let Some(ca_file) = &tls.ca_file {
        crate::connect::load_ca_file(ca_file)
            .map_err(|e| ConfigProblem::new("clickhouse.tls.ca_file", e))?;
    }
    Ok(())
}

/// Positions are recorded after the server acknowledged the rows: an acknowledgement
/// before they are durable would let the ledger run ahead of the table.
fn check_acknowledged_inserts(conn: &ClickHouseConnection) -> Result<(), ConfigProblem> {
    let setting = |name: &str| conn.settings.get(name).map(String::as_str);
    if setting("async_insert") == Some("1") && setting("wait_for_async_insert") == Some("0") {
        return Err(ConfigProblem::new(
            "clickhouse.settings",
            "async_insert=1 with wait_for_async_insert=0 acknowledges inserts before they are durable",
        ));
    }
    Ok(())
}

/// The columns holding each row's Kafka coordinates: the route's own metadata columns
/// where it names them, `_topic`/`_partition`/`_offset` otherwise.
fn coordinate_columns(route: &RouteSpec) -> CoordinateColumns {
    let default = CoordinateColumns::default();
    let own = |kind, default: String| route.metadata_column(kind).map_or(default, String::from);
    CoordinateColumns {
        topic: own(MetadataKind::Topic, default.topic),
        partition: own(MetadataKind::Partition, default.partition),
        offset: own(MetadataKind::Offset, default.offset),
    }
}

/// The coordinate columns hold Kafka coordinates only. The sink reads its positions
/// back from them: a payload field, or another metadata column, under one of their
/// names would be written into the same column, and its data lost (or, before that was
/// so, its values became the table's positions).
fn check_coordinate_names(
    route: &RouteSpec,
    columns: &CoordinateColumns,
) -> Result<(), ConfigProblem> {
    for (kind, what, column) in [
        (MetadataKind::Topic, "topic", &columns.topic),
        (MetadataKind::Partition, "partition", &columns.partition),
        (MetadataKind::Offset, "offset", &columns.offset),
    ] {
        let own = route.metadata_column(kind).is_some();
        let taken_by_metadata = route
            .metadata
            .iter()
            .any(|(n, k)| n == column && *k != kind);
        let taken_by_payload = !own && route.payload.field_with_name(column).is_ok();
        if taken_by_metadata || taken_by_payload {
            let key = if taken_by_payload {
                "schema"
            } else {
                "metadata"
            };
            return Err(ConfigProblem::new(
                key,
                format!(
                    "route `{}`: field `{column}` has the name of the ClickHouse column \
                     holding each row's Kafka {what}, from which the sink reads its position; \
                     rename the field, or give that column another name with \
                     `metadata: {{ {what}: kafka_{what} }}`",
                    route.name
                ),
            ));
        }
    }
    Ok(())
}
