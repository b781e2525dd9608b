//! How a sink plugs into the service.
//!
//! The service knows sinks only through these traits and one registration list
//! (`ingest/src/plugins.rs`): adding a sink is a crate of its own and one entry there.
//! A sink's config has two parts, both under its [`SinkPlugin::key`]: a top-level
//! section (how to reach the server or catalog) and, in each route writing to it, a
//! block naming the table.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use serde::de::DeserializeOwned;

use crate::{BatchOverride, Fence, OffsetMap, Partition, Sink, SinkError};

/// A kind of sink (ClickHouse, Iceberg), registered once: a value, so that a sink's
/// registration is a few fields, not a trait implementation.
pub struct SinkPlugin {
    /// The config key of its section and route blocks (`clickhouse`); also the first
    /// word of each of its sinks' names in logs.
    pub key: &'static str,
    /// The name people know it by, for messages (`ClickHouse`).
    pub title: &'static str,
    /// Parses and checks the top-level section (its problems are at keys relative to
    /// the section). Relative file paths in it are resolved against the second
    /// argument, the config file's folder.
    pub section: SectionParser,
    /// Environment variables it reads secrets from when the config leaves them out, to
    /// be masked in logs like the config's own secrets.
    pub secret_env: &'static [&'static str],
}

/// Parses a sink's top-level section; the path is the config file's folder.
pub type SectionParser =
    fn(serde_json::Value, &Path) -> Result<Arc<dyn SinkSection>, ConfigProblem>;

/// A sink's top-level section, parsed and checked.
#[async_trait::async_trait]
pub trait SinkSection: Send + Sync + std::fmt::Debug {
    /// Parses and checks a route's block (`routes[i].<key>`) against the route.
    fn table(self: Arc<Self>, block: RouteBlock<'_>) -> Result<RouteTable, ConfigProblem>;

    /// `validate --connect`: reaches the server or catalog once and says what it saw
    /// (`server 26.9.1`).
    async fn check_connection(&self, timeout: Duration) -> anyhow::Result<String>;
}

/// One route's table in one sink, as the sink's section parsed it.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The table as the config names it; two routes may not write the same one.
    pub name: String,
    /// This sink's batching, overriding the route's key by key.
    pub batch: BatchOverride,
    pub table: Arc<dyn SinkTable>,
}

impl RouteTable {
    pub fn new(name: &str, batch: &BatchOverride, table: impl SinkTable + 'static) -> Self {
        Self {
            name: name.to_string(),
            batch: batch.clone(),
            table: Arc::new(table),
        }
    }
}

/// Opening one route's table (and writing what it would send, without a server).
#[async_trait::async_trait]
pub trait SinkTable: Send + Sync + std::fmt::Debug {
    /// Connects and prepares the table. Errors that may go away (a server still
    /// starting) are retryable: the service waits them out.
    async fn open(&self, context: OpenContext) -> Result<Box<dyn Sink>, SinkError>;

    /// Writes what the sink would send for the run's rows into its folder, without
    /// reaching any server; returns one line saying what.
    fn dry_run(&self, run: &DryRun<'_>) -> Result<String, String> {
        let _ = run;
        Err("this sink has no dry run".into())
    }

    /// `ingest status`: where the table stands for consumer group `group` in
    /// `partitions` (each at offset 0: the shape `PositionReader::read` asks with), read
    /// from the sink's own storage without changing anything (no table, ledger or gate
    /// is created), so it can run beside the service, from anywhere that reaches the
    /// sink.
    async fn inspect(&self, group: &str, partitions: &OffsetMap) -> Result<TableState, SinkError> {
        let _ = (group, partitions);
        Err(SinkError::permanent(
            "a sink",
            "this sink cannot be inspected",
        ))
    }
}

/// What a table holds of the group's progress, as `ingest status` shows it.
#[derive(Debug, Clone, Default)]
pub struct TableState {
    /// `clickhouse db.table`, as the service names the sink.
    pub sink: String,
    /// The table does not exist (yet): nothing was written.
    pub missing: bool,
    /// The positions the sink has made durable, per partition.
    pub positions: OffsetMap,
    /// Per partition, the highest completeness watermark recorded (ms since the epoch).
    pub watermarks: BTreeMap<Partition, i64>,
    /// When the sink last recorded a write (Unix seconds).
    pub last_write_unix: Option<f64>,
}

/// What a sink is told about the route it serves, when the config is checked.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    /// The payload's fields, as the route's schema file gives them.
    pub payload: SchemaRef,
    /// The columns the route fills with Kafka metadata, and with which.
    pub metadata: Vec<(String, MetadataKind)>,
}

impl RouteSpec {
    /// The column the route gives `kind`, if it asks for one.
    pub fn metadata_column(&self, kind: MetadataKind) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(_, k)| *k == kind)
            .map(|(name, _)| name.as_str())
    }
}

/// A piece of Kafka metadata a route can store in a column of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKind {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
}

/// What opening a table needs beyond its config.
#[derive(Clone)]
pub struct OpenContext {
    /// The schema of the rows the sink will be given (payload and metadata columns).
    pub schema: SchemaRef,
    /// The consumer group, for sinks that keep positions per group.
    pub group: String,
    /// Ownership checks for sinks that need them before making rows durable.
    pub fence: Arc<dyn Fence>,
}

/// A dry run: the rows, where to write, and the sink's own options
/// (`server_version=18.16`).
#[derive(Debug, Clone)]
pub struct DryRun<'a> {
    /// The route's output schema (payload and metadata columns).
    pub schema: SchemaRef,
    pub batches: &'a [RecordBatch],
    /// The folder the sink writes its files into.
    pub out: std::path::PathBuf,
    pub options: BTreeMap<String, String>,
}

/// A route's block of one sink, as the config gives it.
#[derive(Debug, Clone)]
pub struct RouteBlock<'a> {
    /// The sink's key: problems are reported under it.
    pub key: &'static str,
    pub value: serde_json::Value,
    pub route: &'a RouteSpec,
}

impl RouteBlock<'_> {
    /// The block, deserialized strictly; a problem names the key path from the route.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigProblem> {
        parse_block(self.value.clone()).map_err(|p| p.within(self.key))
    }
}

/// A config problem: where it is, relative to the block being parsed (`tls.ca_file`;
/// empty for the block itself), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub at: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(at: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            at: at.into(),
            message: message.to_string(),
        }
    }

    /// The same problem seen from the block holding this one under `key`.
    pub fn within(self, key: &str) -> Self {
        let at = if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{}", self.at)
        };
        Self { at, ..self }
    }
}

/// Deserializes a config block strictly; a problem names the key path inside it.
pub fn parse_block<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ConfigProblem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        ConfigProblem::new(at, e.into_inner())
    })
}
