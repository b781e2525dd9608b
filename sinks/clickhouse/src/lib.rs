//! ClickHouse sink: Arrow batches inserted over HTTP as `Native` blocks.
//!
//! One format for every server: Native is columnar (a near copy of Arrow buffers) and
//! accepted from 18.16 to current releases, where ArrowStream would exclude old servers
//! and RowBinary would transpose every batch into rows.

pub mod connect;
mod coordinate_columns;
pub mod ddl;
pub mod engine;
pub mod gate;
pub mod native;
mod plugin;
pub mod progress;
pub mod ranges;
pub mod types;

use std::collections::BTreeMap;

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use serde::Deserialize;

pub use connect::ClickHouseTls;
use coordinate_columns::{fill_coordinates, with_coordinate_fields};
use gate::{Gates, Partition};
use ingest_sink_api::secret::{ExposeSecret, SecretString, redact_uri};
use ingest_sink_api::{
    BatchOverride, Coordinates, OffsetMap, Sink, SinkBatch, SinkError, WriteOutcome,
};
use native::{NativeColumn, encode_block};
pub use plugin::ClickHousePlugin;
pub use progress::CoordinateColumns;
use progress::{Entry, Ledger, LedgerReader};
use types::{ChType, ServerCaps, quote_ident};

/// How to reach the server (the `clickhouse:` section of the service config).
/// `Debug` shows neither the password nor one inside the URL.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConnection {
    /// HTTP(S) endpoint, e.g. `http://127.0.0.1:8123` or `https://ch:8443`.
    pub url: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub password: SecretString,
    /// Trust for `https://` URLs (default: the system's CA certificates).
    #[serde(default)]
    pub tls: Option<ClickHouseTls>,
    /// Create the database and missing tables from the route schema.
    #[serde(default = "yes")]
    pub create_tables: bool,
    /// Extra settings sent with every insert (e.g. `async_insert: 0`).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Request body compression: `lz4` saves network on remote servers, `none` saves
    /// CPU on both ends when ClickHouse is local.
    #[serde(default)]
    pub compression: BodyCompression,
}

impl std::fmt::Debug for ClickHouseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConnection")
            .field("url", &redact_uri(&self.url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("create_tables", &self.create_tables)
            .field(
                "settings",
                &ingest_sink_api::secret::redacted_map(&self.settings),
            )
            .field("compression", &self.compression)
            .finish()
    }
}

impl ClickHouseConnection {
    /// The URL for messages: without a password it may hold.
    pub fn display_url(&self) -> String {
        redact_uri(&self.url)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BodyCompression {
    #[default]
    Lz4,
    None,
}

fn default_database() -> String {
    "default".into()
}
fn default_user() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}

/// One route's table (the `clickhouse:` block of a route).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseTable {
    pub table: String,
    /// Sorting key of a created table; empty means `tuple()`.
    #[serde(default)]
    pub order_by: Vec<String>,
    /// Partition expression of a created table, e.g. `toYYYYMM(ts)`.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// Table engine of a created table.
    #[serde(default = "default_engine")]
    pub engine: String,
    /// This sink's batching, overriding the route's `batch` key by key.
    #[serde(default)]
    pub batch: BatchOverride,
}

fn default_engine() -> String {
    "MergeTree".into()
}

/// Opens an HTTP(S) client for the connection settings. Panics when the TLS trust
/// cannot be loaded (config validation checks `tls.ca_file` first): services use
/// [`try_client`].
pub fn client(conn: &ClickHouseConnection) -> clickhouse::Client {
    try_client(conn).unwrap_or_else(|e| panic!("clickhouse `{}`: {e}", conn.display_url()))
}

/// Opens an HTTP(S) client for the connection settings: `https://` URLs (or a `tls`
/// section) get a TLS connector trusting `tls.ca_file` or the system's roots.
pub fn try_client(conn: &ClickHouseConnection) -> Result<clickhouse::Client, String> {
    let base = if connect::is_https(&conn.url) || conn.tls.is_some() {
        connect::https_client(conn.tls.as_ref())?
    } else {
        clickhouse::Client::default()
    };
    Ok(base
        .with_url(&conn.url)
        .with_user(&conn.user)
        .with_password(conn.password.expose_secret())
        .with_validation(false)
        .with_compression(match conn.compression {
            BodyCompression::Lz4 => clickhouse::Compression::Lz4,
            BodyCompression::None => clickhouse::Compression::None,
        }))
}

/// Runs a query and returns its rows as JSON objects (works on every server version).
pub async fn query_json(
    client: &clickhouse::Client,
    sql: &str,
) -> Result<Vec<serde_json::Value>, clickhouse::error::Error> {
    let bytes = client
        .query_raw(sql)
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await?;
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// Asks the server its version.
pub async fn server_caps(
    client: &clickhouse::Client,
) -> Result<(String, ServerCaps), clickhouse::error::Error> {
    let rows = query_json(client, "SELECT version() AS v").await?;
    let version = rows
        .first()
        .and_then(|r| r["v"].as_str())
        .unwrap_or("0.0")
        .to_string();
    let caps = ServerCaps::from_version(&version);
    Ok((version, caps))
}

/// What would be sent to a server of `version` without one: the CREATE statements and
/// the Native payload of `batches` (a dry run, and a check against other versions).
/// With `coordinates`, the table gets its Kafka coordinate columns (filled here with
/// partition 0 and the row number as offset) and the position ledger.
pub fn offline_payload(
    database: &str,
    table: &ClickHouseTable,
    schema: &SchemaRef,
    version: &str,
    batches: &[RecordBatch],
    coordinates: Option<&CoordinateColumns>,
) -> Result<(String, Vec<u8>), String> {
    let caps = ServerCaps::from_version(version);
    let full = match coordinates {
        Some(c) => with_coordinate_fields(schema, c),
        None => schema.clone(),
    };
    let mut ddl = ddl::create_table(database, table, &full, caps)?;
    if coordinates.is_some() {
        let [ledger, _] = Ledger::new(database, &table.table).create_statements();
        ddl.push_str(";\n");
        ddl.push_str(&ledger);
    }
    let mut columns = Vec::with_capacity(full.fields().len());
    for field in full.fields() {
        let type_name = types::ddl_type(field, caps)?;
        let ty = ChType::parse(&type_name)?;
        columns.push(NativeColumn {
            name: field.name().clone(),
            type_name,
            ty,
            source: native::Source::Field,
        });
    }
    let mut body = Vec::new();
    let mut row = 0i64;
    for batch in batches {
        let batch = match coordinates {
            Some(_) if full.fields().len() > batch.num_columns() => {
                let positions: Vec<Coordinates> = (row..row + batch.num_rows() as i64)
                    .map(|offset| Coordinates {
                        topic: "dry-run",
                        partition: 0,
                        offset,
                    })
                    .collect();
                fill_coordinates(batch, &positions, &full, coordinates.expect("some"))?
            }
            _ => batch.clone(),
        };
        row += batch.num_rows() as i64;
        encode_block(&batch, &columns, &mut body).map_err(|e| e.to_string())?;
    }
    Ok((ddl, body))
}

/// How long sending an insert body, and then waiting for the server's answer, may take.
const INSERT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const INSERT_END_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Writes batches into one ClickHouse table, exactly once per Kafka record.
pub struct ClickHouseSink {
    name: String,
    client: clickhouse::Client,
    database: String,
    /// `(a, b, ...)`: the columns every insert names.
    column_list: String,
    columns: Vec<NativeColumn>,
    settings: BTreeMap<String, String>,
    caps: ServerCaps,
    /// The encoded schema: the route's fields plus the coordinate columns it lacks.
    schema: SchemaRef,
    positions: Arc<LedgerReader>,
    fence: Option<Arc<dyn ingest_sink_api::Fence>>,
    /// Inserts go through this writer's gate, which the server serializes against
    /// other writers of the same partitions (see [`gate`]).
    gates: Gates,
    /// The query id of an insert whose outcome is unknown (timed out, connection cut):
    /// the server may still be running it, so positions are read only once it is gone.
    uncertain: Option<String>,
}

impl ClickHouseSink {
    /// Connects, creates the table (with its coordinate columns and position ledger) if
    /// configured, and checks that every schema field can be written into the table.
    pub async fn open(
        conn: &ClickHouseConnection,
        table: &ClickHouseTable,
        schema: SchemaRef,
        coordinates: CoordinateColumns,
    ) -> Result<Self, SinkError> {
        let name = format!("clickhouse {}.{}", conn.database, table.table);
        let fail =
            |message: String, retryable: bool| SinkError::new(name.clone(), message, retryable);
        let client = try_client(conn)
            .map_err(|e| fail(format!("clickhouse `{}`: {e}", conn.display_url()), false))?;
        let (version, caps) = server_caps(&client).await.map_err(|e| {
            // Unreachable is worth waiting out; refused credentials or certificate are not.
            let retryable = is_retryable(&e) && !connect::is_certificate_error(&e);
            let message = format!(
                "cannot reach {}: {}",
                conn.display_url(),
                connect::describe(&e)
            );
            fail(message, retryable)
        })?;
        tracing::info!(sink = %name, %version, "connected to ClickHouse");
        let schema = with_coordinate_fields(&schema, &coordinates);
        let ledger = Ledger::new(&conn.database, &table.table);
        let run = |sql: String| {
            let client = client.clone();
            let fail = &fail;
            async move {
                client
                    .query_raw(&sql)
                    .execute()
                    .await
                    .map_err(|e| fail(format!("`{sql}` failed: {e}"), is_retryable(&e)))
            }
        };

        if conn.create_tables {
            run(ddl::create_database(&conn.database)).await?;
            run(ddl::create_table(&conn.database, table, &schema, caps)
                .map_err(|e| fail(e, false))?)
            .await?;
        }
        let read_columns = || async {
            table_columns(&client, &conn.database, &table.table)
                .await
                .map_err(|e| {
                    fail(
                        format!("cannot read the table's columns: {e}"),
                        is_retryable(&e),
                    )
                })
        };
        let mut columns = read_columns().await?;
        if columns.is_empty() {
            return Err(fail(
                "table does not exist (set clickhouse.create_tables: true or create it)".into(),
                false,
            ));
        }
        engine::check_table(&client, &conn.database, &table.table)
            .await
            .map_err(|(message, retryable)| fail(message, retryable))?;
        // A table made before positions were kept gets the coordinate columns (old rows
        // read offset -1: they count for no partition).
        let missing: Vec<String> = coordinates
            .columns()
            .iter()
            .filter(|(column, _)| !columns.iter().any(|c| c.name == *column))
            .map(|(column, ty)| {
                let default = if *ty == "String" { "''" } else { "-1" };
                format!("ADD COLUMN {} {ty} DEFAULT {default}", quote_ident(column))
            })
            .collect();
        let gates = Gates::new(&name, client.clone(), &conn.database, &table.table, caps);
        let [create_ledger, drop_old_view] = ledger.create_statements();
        let ledger_sql = vec![create_ledger, gates.create_statement()];
        // Without create_tables the ledger and the gate registry must exist.
        let companions_missing = !conn.create_tables && {
            let names = [
                ledger.name().to_string(),
                format!("{}__ingest_gates", table.table),
            ];
            let sql = format!(
                "SELECT count() AS n FROM system.tables WHERE database = '{}' AND name IN ('{}')",
                escape_literal(&conn.database),
                names
                    .iter()
                    .map(|n| escape_literal(n))
                    .collect::<Vec<_>>()
                    .join("', '")
            );
            let rows = query_json(&client, &sql)
                .await
                .map_err(|e| fail(format!("cannot read system.tables: {e}"), is_retryable(&e)))?;
            let found = rows
                .first()
                .and_then(|r| r["n"].as_u64().or_else(|| r["n"].as_str()?.parse().ok()));
            found != Some(names.len() as u64)
        };
        if !missing.is_empty() || companions_missing || conn.create_tables {
            let alter = (!missing.is_empty()).then(|| {
                format!(
                    "ALTER TABLE {}.{} {}",
                    quote_ident(&conn.database),
                    quote_ident(&table.table),
                    missing.join(", ")
                )
            });
            if !conn.create_tables {
                let statements: Vec<&str> = alter
                    .iter()
                    .map(String::as_str)
                    .chain(ledger_sql.iter().map(String::as_str))
                    .collect();
                return Err(fail(
                    format!(
                        "the table lacks the Kafka coordinate columns, position ledger or gate registry that make writes exactly-once; run: {}",
                        statements.join("; ")
                    ),
                    false,
                ));
            }
            if let Some(alter) = alter {
                run(alter).await?;
                columns = read_columns().await?;
            }
        }
        if conn.create_tables {
            for sql in ledger_sql {
                run(sql).await?;
            }
        }
        run(drop_old_view).await?;
        let columns = match_columns(&schema, columns).map_err(|e| fail(e, false))?;
        // Encoding an empty batch runs every cast check once, before any data arrives.
        encode_block(
            &RecordBatch::new_empty(schema.clone()),
            &columns,
            &mut Vec::new(),
        )
        .map_err(|e| fail(e.to_string(), false))?;

        let column_list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let column_list = format!("({})", column_list.join(", "));
        let positions = Arc::new(LedgerReader {
            sink: name.clone(),
            client: client.clone(),
            ledger,
            coordinates,
            scanned: Default::default(),
        });
        let sink = Self {
            name,
            client,
            database: conn.database.clone(),
            column_list,
            columns,
            settings: conn.settings.clone(),
            caps,
            schema,
            positions,
            fence: None,
            gates,
            uncertain: None,
        };
        // The ledger must answer before any write relies on it.
        sink.positions.progress(&OffsetMap::default()).await?;
        Ok(sink)
    }

    /// Checks ownership of the partitions right before each insert (see [`ingest_sink_api::Fence`]).
    pub fn with_fence(mut self, fence: Arc<dyn ingest_sink_api::Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The Native payload for a batch: one block per record batch piece, with the
    /// coordinate columns filled from the row positions.
    pub fn encode(&self, batch: &SinkBatch) -> Result<Vec<u8>, SinkError> {
        let mut body = Vec::with_capacity(batch.memory_size());
        for (i, piece) in batch.batches.iter().enumerate() {
            if piece.num_rows() == 0 {
                continue;
            }
            let positions = batch.coordinates.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let piece = self.with_coordinates(piece, positions)?;
            encode_block(&piece, &self.columns, &mut body)
                .map_err(|e| self.error(e.to_string(), false))?;
        }
        Ok(body)
    }

    /// The coordinate columns filled from the rows' positions (see [`coordinate_columns`]).
    fn with_coordinates(
        &self,
        piece: &RecordBatch,
        positions: &[Coordinates],
    ) -> Result<RecordBatch, SinkError> {
        fill_coordinates(piece, positions, &self.schema, &self.positions.coordinates)
            .map_err(|e| self.error(e, false))
    }

    /// Waits until the server no longer runs the insert with this query id.
    async fn wait_for_query(&self, query_id: &str) -> Result<(), SinkError> {
        let sql = format!(
            "SELECT count() AS n FROM system.processes WHERE query_id = '{}'",
            escape_literal(query_id)
        );
        for _ in 0..600 {
            let rows = query_json(&self.client, &sql).await.map_err(|e| {
                self.error(
                    format!("checking an interrupted insert: {e}"),
                    is_retryable(&e),
                )
            })?;
            let running = rows
                .first()
                .and_then(|r| r["n"].as_u64().or_else(|| r["n"].as_str()?.parse().ok()));
            if running == Some(0) {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Err(self.error(
            format!("the interrupted insert {query_id} is still running after 5 minutes"),
            true,
        ))
    }

    async fn insert(
        &self,
        gate: &str,
        body: Bytes,
        token: Option<String>,
        query_id: &str,
    ) -> Result<(), clickhouse::error::Error> {
        let sql = format!(
            "INSERT INTO {}.{} {} FORMAT Native",
            quote_ident(&self.database),
            quote_ident(gate),
            self.column_list
        );
        // Without timeouts a server that accepts the connection but never answers (one
        // that is shutting down, say) would hang the write forever.
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for (k, v) in &self.settings {
            insert = insert.with_setting(k, v);
        }
        if let Some(token) = token {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        insert = insert.with_setting("query_id", query_id);
        insert.send(body).await?;
        insert.end().await
    }

    /// Records ledger entries through the gate's entry table.
    async fn record(&self, gate: &str, entries: &[Entry]) -> Result<(), clickhouse::error::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let sql = self.positions.ledger.entry_statement(gate, entries);
        self.client.query(&sql).execute().await
    }

    fn error(&self, message: String, retryable: bool) -> SinkError {
        SinkError::new(self.name.clone(), message, retryable)
    }
}

/// A deterministic name for the rows of a batch (their partitions and offset ranges):
/// a server that knows `insert_deduplication_token` drops a second insert of them.
fn dedup_token(batch: &SinkBatch) -> String {
    let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
    for p in batch.coordinates.iter().flatten() {
        let range = ranges
            .entry((p.topic, p.partition))
            .or_insert((p.offset, p.offset));
        range.0 = range.0.min(p.offset);
        range.1 = range.1.max(p.offset);
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|((t, p), (lo, hi))| format!("{t}/{p}/{lo}-{hi}"))
        .collect();
    format!("ingest:{}:{}", parts.join(","), batch.num_rows())
}

#[async_trait::async_trait]
impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Checks this instance still owns the batch's partitions, passes its gate, reads
    /// what the table holds for them, drops those rows and inserts the rest.
    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        let mut written = WriteOutcome::default();
        if batch.num_rows() == 0 {
            return Ok(written);
        }
        // A previous attempt may still be committing on the server: reading positions
        // before it ends would miss its rows and write them again.
        if let Some(query_id) = self.uncertain.clone() {
            self.wait_for_query(&query_id).await?;
            self.uncertain = None;
        }
        let mut todo = batch.clone();
        let mut generation = 0;
        if let Some(fence) = &self.fence {
            generation = fence.generation();
            let gone = fence
                .check(&todo.positions, batch.epoch)
                .await
                .map_err(|e| {
                    let message = format!("not writing: {}", e.message);
                    if e.lost {
                        SinkError::fenced(&self.name, message)
                    } else {
                        SinkError::retryable(&self.name, message)
                    }
                })?;
            if !gone.is_empty() {
                tracing::warn!(sink = %self.name, partitions = ?gone,
                    "not writing rows of partitions given up since the batch started");
                todo = without(&todo, &gone);
                written.not_owned.extend(gone);
            }
        }
        // Another writer closing our gate means it took some of these partitions; the
        // next admission finds out which.
        for _ in 0..3 {
            if todo.num_rows() == 0 {
                return Ok(written);
            }
            let partitions: Vec<Partition> = todo
                .positions
                .iter()
                .map(|(t, p, _)| (t.to_string(), p))
                .collect();
            let admission = self.gates.admit(&partitions, generation).await?;
            if !admission.refused.is_empty() {
                todo = without(&todo, &admission.refused);
                written.not_owned.extend(admission.refused);
                continue;
            }
            let progress = self.positions.progress(&todo.positions).await?;
            let fresh = todo.retain(|p| !progress.holds(p));
            if fresh.num_rows() < todo.num_rows() {
                tracing::info!(sink = %self.name, skipped = todo.num_rows() - fresh.num_rows(),
                    "rows already in the table (a replay) are not written again");
            }
            let inserted = if fresh.num_rows() == 0 {
                Ok(())
            } else {
                let body = self.encode(&fresh)?;
                let token = self.caps.dedup_token().then(|| dedup_token(&fresh));
                let query_id = uuid::Uuid::new_v4().to_string();
                let inserted = self
                    .insert(&admission.table, Bytes::from(body), token, &query_id)
                    .await;
                // Sent, but no answer: the server may be inserting it still.
                if let Err(
                    clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut,
                ) = &inserted
                {
                    self.uncertain = Some(query_id);
                }
                inserted
            };
            if let Err(e) = inserted {
                if self.gates.closed_by(&e) {
                    tracing::warn!(sink = %self.name,
                        "another instance closed this writer's insert gate: checking which partitions it took");
                    continue;
                }
                return Err(self.error(format!("insert failed: {e}"), is_retryable(&e)));
            }
            // Only now that the server acknowledged every row may the ledger say so.
            let entries = progress.entries_after(&todo.positions);
            return match self.record(&admission.entries, &entries).await {
                Ok(()) => Ok(written),
                // The rows are in; whoever took the gate finds them past the ledger.
                Err(e) if self.gates.closed_by(&e) => Ok(written),
                Err(e) => Err(self.error(
                    format!("recording positions after the insert failed (the retry finds its rows): {e}"),
                    is_retryable(&e),
                )),
            };
        }
        Err(self.error(
            "other instances keep taking this writer's partitions".into(),
            true,
        ))
    }

    fn position_reader(&self) -> Arc<dyn ingest_sink_api::PositionReader> {
        self.positions.clone()
    }

    fn value_check(&self) -> Option<Arc<dyn ingest_sink_api::ValueCheck>> {
        let ranges = ranges::ColumnRanges::new(&self.name, self.columns.clone(), self.caps);
        Some(Arc::new(ranges))
    }
}

/// The batch without the rows of `partitions`.
fn without(batch: &SinkBatch, partitions: &[Partition]) -> SinkBatch {
    let mut rest = batch.clone();
    rest.drop_partitions(|t, n| partitions.iter().any(|(pt, pn)| pt == t && *pn == n));
    rest
}

/// A column as `system.columns` describes it.
struct TableColumn {
    name: String,
    type_name: String,
    has_default: bool,
}

async fn table_columns(
    client: &clickhouse::Client,
    database: &str,
    table: &str,
) -> Result<Vec<TableColumn>, clickhouse::error::Error> {
    let sql = format!(
        "SELECT name, type, default_kind FROM system.columns WHERE database = '{}' AND table = '{}'",
        escape_literal(database),
        escape_literal(table)
    );
    Ok(query_json(client, &sql)
        .await?
        .into_iter()
        .map(|row| TableColumn {
            name: row["name"].as_str().unwrap_or_default().to_string(),
            type_name: row["type"].as_str().unwrap_or_default().to_string(),
            has_default: !row["default_kind"].as_str().unwrap_or_default().is_empty(),
        })
        .collect())
}

/// Pairs schema fields with table columns; every field needs a column and every column
/// without a DEFAULT needs a field.
fn match_columns(
    schema: &SchemaRef,
    columns: Vec<TableColumn>,
) -> Result<Vec<NativeColumn>, String> {
    let mut out = Vec::new();
    for field in schema.fields() {
        let Some(column) = columns.iter().find(|c| &c.name == field.name()) else {
            let nested = nested_columns(field, &columns)?;
            if nested.is_empty() {
                return Err(format!(
                    "field `{}` has no column in the table",
                    field.name()
                ));
            }
            out.extend(nested);
            continue;
        };
        let ty = ChType::parse(&column.type_name)
            .map_err(|e| format!("column `{}`: {e}", column.name))?;
        let container = matches!(ty, ChType::Array(_) | ChType::Tuple(_));
        if field.is_nullable() && !ty.is_nullable() && !container {
            return Err(format!(
                "column `{}` is {} but the schema allows nulls; make it Nullable({}) or the field non-nullable",
                column.name, column.type_name, column.type_name
            ));
        }
        out.push(NativeColumn {
            name: column.name.clone(),
            type_name: column.type_name.clone(),
            ty,
            source: native::Source::Field,
        });
    }
    if let Some(missing) = columns
        .iter()
        .find(|c| !c.has_default && !out.iter().any(|n| n.name == c.name))
    {
        return Err(format!(
            "column `{}` ({}) has no field in the schema and no DEFAULT",
            missing.name, missing.type_name
        ));
    }
    Ok(out)
}

/// The flattened `field.element` columns an old server made of an `Array(Tuple(...))`
/// column (elements named by position, `field.1`, or by name, `field.sku`).
fn nested_columns(
    field: &arrow_schema::Field,
    columns: &[TableColumn],
) -> Result<Vec<NativeColumn>, String> {
    let arrow_schema::DataType::List(item) = field.data_type() else {
        return Ok(Vec::new());
    };
    let arrow_schema::DataType::Struct(members) = item.data_type() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (element, member) in members.iter().enumerate() {
        let by_position = format!("{}.{}", field.name(), element + 1);
        let by_name = format!("{}.{}", field.name(), member.name());
        let Some(column) = columns
            .iter()
            .find(|c| c.name == by_position || c.name == by_name)
        else {
            return Ok(Vec::new());
        };
        out.push(NativeColumn {
            name: column.name.clone(),
            type_name: column.type_name.clone(),
            ty: ChType::parse(&column.type_name)
                .map_err(|e| format!("column `{}`: {e}", column.name))?,
            source: native::Source::NestedElement {
                field: field.name().clone(),
                element,
            },
        });
    }
    Ok(out)
}

pub(crate) fn escape_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Network failures and server overload are worth retrying; anything the server rejects
/// for what we sent (unknown column, type mismatch, bad credentials) is not.
pub fn is_retryable(error: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match error {
        Error::Network(_) | Error::TimedOut => true,
        // TOO_MANY_PARTS also names an insert touching more table partitions than
        // `max_partitions_per_insert_block` allows (100 by default since 19.5; 18.16 has
        // no limit): sending the same rows again cannot succeed.
        Error::BadResponse(text)
            if text.contains("Too many partitions for single INSERT block") =>
        {
            false
        }
        Error::BadResponse(text) => match server_error_code(text) {
            // TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR,
            // MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, TOO_MANY_PARTS, ALL_CONNECTION_TRIES_FAILED,
            // KEEPER_EXCEPTION, UNEXPECTED_END_OF_FILE, CANNOT_READ_ALL_DATA (cut request)
            Some(159 | 202 | 209 | 210 | 241 | 242 | 252 | 279 | 999 | 3 | 33) => true,
            Some(_) => false,
            // No code: a proxy or a server going down answered.
            None => true,
        },
        _ => false,
    }
}

/// Extracts N from `Code: N. DB::Exception: ...`.
pub fn server_error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_errors() {
        use clickhouse::error::Error;
        let bad = |t: &str| Error::BadResponse(t.into());
        assert!(!is_retryable(&bad(
            "Code: 60. DB::Exception: Table x doesn't exist"
        )));
        assert!(is_retryable(&bad(
            "Code: 252. DB::Exception: Too many parts"
        )));
        assert!(!is_retryable(&bad(
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). \
             The limit is controlled by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS)"
        )));
        assert!(is_retryable(&bad("502 Bad Gateway")));
        assert_eq!(
            server_error_code("Code: 53, e.displayText() = DB::Exception"),
            Some(53)
        );
    }
}
