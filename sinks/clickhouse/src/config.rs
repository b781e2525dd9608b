//! What the service config says about ClickHouse: the server (the `clickhouse:` section)
//! and each route's table (the `clickhouse:` block of a route), with their defaults.

use std::collections::BTreeMap;

use ingest_sink_api::BatchOverride;
use ingest_sink_api::secret::{SecretString, redact_uri, redacted_map};
use serde::Deserialize;

use crate::connect::ClickHouseTls;

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
    #[serde(default = "default_create_tables")]
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
            .field("settings", &redacted_map(&self.settings))
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

fn default_create_tables() -> bool {
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
