//! ClickHouse sink: Arrow batches inserted over HTTP as `Native` blocks.
//!
//! One format for every server: Native is columnar (a near copy of Arrow buffers) and
//! accepted from 18.16 to current releases, where ArrowStream would exclude old servers
//! and RowBinary would transpose every batch into rows.

pub mod ddl;
pub mod native;
pub mod types;

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use serde::Deserialize;

use crate::{OffsetMap, Sink, SinkBatch, SinkError};
use native::{NativeColumn, encode_block};
use types::{ChType, ServerCaps, quote_ident};

/// How to reach the server (the `clickhouse:` section of the service config).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConnection {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub password: String,
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
}

fn default_engine() -> String {
    "MergeTree".into()
}

/// Opens an HTTP client for the connection settings.
pub fn client(conn: &ClickHouseConnection) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&conn.url)
        .with_user(&conn.user)
        .with_password(&conn.password)
        .with_validation(false)
        .with_compression(match conn.compression {
            BodyCompression::Lz4 => clickhouse::Compression::Lz4,
            BodyCompression::None => clickhouse::Compression::None,
        })
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

/// What would be sent to a server of `version` without one: the CREATE TABLE statement
/// and the Native payload of `batches` (a dry run, and a check against other versions).
pub fn offline_payload(
    database: &str,
    table: &ClickHouseTable,
    schema: &SchemaRef,
    version: &str,
    batches: &[RecordBatch],
) -> Result<(String, Vec<u8>), String> {
    let caps = ServerCaps::from_version(version);
    let ddl = ddl::create_table(database, table, schema, caps)?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
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
    for batch in batches {
        encode_block(batch, &columns, &mut body).map_err(|e| e.to_string())?;
    }
    Ok((ddl, body))
}

/// How long sending an insert body, and then waiting for the server's answer, may take.
const INSERT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
const INSERT_END_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Writes batches into one ClickHouse table.
pub struct ClickHouseSink {
    name: String,
    client: clickhouse::Client,
    insert_sql: String,
    columns: Vec<NativeColumn>,
    settings: BTreeMap<String, String>,
}

impl ClickHouseSink {
    /// Connects, creates the table if configured, and checks that every schema field
    /// can be written into the table's columns.
    pub async fn open(
        conn: &ClickHouseConnection,
        table: &ClickHouseTable,
        schema: SchemaRef,
    ) -> Result<Self, SinkError> {
        let name = format!("clickhouse {}.{}", conn.database, table.table);
        let fail = |message: String, retryable: bool| SinkError {
            sink: name.clone(),
            message,
            retryable,
        };
        let client = client(conn);
        let (version, caps) = server_caps(&client)
            .await
            .map_err(|e| fail(format!("cannot reach {}: {e}", conn.url), true))?;
        tracing::info!(sink = %name, %version, "connected to ClickHouse");

        if conn.create_tables {
            for sql in [
                ddl::create_database(&conn.database),
                ddl::create_table(&conn.database, table, &schema, caps)
                    .map_err(|e| fail(e, false))?,
            ] {
                client
                    .query_raw(&sql)
                    .execute()
                    .await
                    .map_err(|e| fail(format!("`{sql}` failed: {e}"), is_retryable(&e)))?;
            }
        }

        let columns = table_columns(&client, &conn.database, &table.table)
            .await
            .map_err(|e| {
                fail(
                    format!("cannot read the table's columns: {e}"),
                    is_retryable(&e),
                )
            })?;
        if columns.is_empty() {
            return Err(fail(
                "table does not exist (set clickhouse.create_tables: true or create it)".into(),
                false,
            ));
        }
        let columns = match_columns(&schema, columns).map_err(|e| fail(e, false))?;
        // Encoding an empty batch runs every cast check once, before any data arrives.
        encode_block(&RecordBatch::new_empty(schema), &columns, &mut Vec::new())
            .map_err(|e| fail(e.to_string(), false))?;

        let column_list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let insert_sql = format!(
            "INSERT INTO {}.{} ({}) FORMAT Native",
            quote_ident(&conn.database),
            quote_ident(&table.table),
            column_list.join(", ")
        );
        Ok(Self {
            name,
            client,
            insert_sql,
            columns,
            settings: conn.settings.clone(),
        })
    }

    /// The Native payload for a batch: one block per record batch piece.
    pub fn encode(&self, batches: &[RecordBatch]) -> Result<Vec<u8>, SinkError> {
        let mut body = Vec::with_capacity(batches.iter().map(|b| b.get_array_memory_size()).sum());
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            encode_block(batch, &self.columns, &mut body).map_err(|e| SinkError {
                sink: self.name.clone(),
                message: e.to_string(),
                retryable: false,
            })?;
        }
        Ok(body)
    }

    async fn insert(&self, body: Bytes) -> Result<(), clickhouse::error::Error> {
        // Without timeouts a server that accepts the connection but never answers (one
        // that is shutting down, say) would hang the write forever.
        let mut insert = self
            .client
            .insert_formatted_with(self.insert_sql.clone())
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for (k, v) in &self.settings {
            insert = insert.with_setting(k, v);
        }
        insert.send(body).await?;
        insert.end().await
    }
}

#[async_trait::async_trait]
impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &SinkBatch) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let body = self.encode(&batch.batches)?;
        self.insert(Bytes::from(body)).await.map_err(|e| SinkError {
            sink: self.name.clone(),
            retryable: is_retryable(&e),
            message: format!("insert failed: {e}"),
        })
    }

    async fn durable_offsets(&self) -> Result<OffsetMap, SinkError> {
        // Recovering positions from ClickHouse itself is the exactly-once work (issue 3);
        // until then the Kafka group offset, committed after every sink wrote, is used.
        Ok(OffsetMap::default())
    }
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
        assert!(is_retryable(&bad("502 Bad Gateway")));
        assert_eq!(
            server_error_code("Code: 53, e.displayText() = DB::Exception"),
            Some(53)
        );
    }
}
