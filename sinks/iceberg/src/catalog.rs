//! Opening the configured Iceberg catalog (SQL or REST) with its storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalogBuilder};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use serde::Deserialize;

use super::rest_auth::{RenewingRestCatalog, RestAuth};
use ingest_sink_api::secret::{redact_uri, redacted_map};

/// The `iceberg.catalog` section of the service config. `Debug` shows the URI without
/// its password and sensitive properties (`token`, `credential`, `s3.secret-access-key`,
/// ...) as `***`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(rename = "type")]
    pub kind: CatalogKind,
    /// SQL: `sqlite:///path/catalog.db` or `postgres://user:pw@host/db`; REST: the base
    /// URL. Name it in messages with [`CatalogConfig::display_uri`].
    pub uri: String,
    /// Where table data goes: `file:///path` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Catalog name; Spark and pyiceberg must use the same name to see the tables.
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// Passed to the catalog and its storage as is (`s3.endpoint`, `s3.region`,
    /// `s3.path-style-access`, `token`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("kind", &self.kind)
            .field("uri", &self.display_uri())
            .field("warehouse", &redact_uri(&self.warehouse))
            .field("name", &self.name)
            .field("properties", &redacted_map(&self.properties))
            .finish()
    }
}

impl CatalogConfig {
    /// The URI for messages: its password (user info or `?password=`) masked.
    pub fn display_uri(&self) -> String {
        redact_uri(&self.uri)
    }
}

fn default_catalog_name() -> String {
    "ingest".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    Sql,
    Rest,
}

/// Standard AWS environment variables fill S3 settings the config leaves out, so
/// credentials can come from a Kubernetes Secret rather than the ConfigMap.
const S3_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
    ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
    ("AWS_SESSION_TOKEN", "s3.session-token"),
    ("AWS_REGION", "s3.region"),
    ("AWS_ENDPOINT_URL", "s3.endpoint"),
];

fn properties(config: &CatalogConfig) -> HashMap<String, String> {
    let mut props: HashMap<String, String> = config.properties.clone().into_iter().collect();
    for (var, key) in S3_ENV {
        if let Ok(value) = std::env::var(var)
            && !props.contains_key(key)
        {
            props.insert(key.to_string(), value);
        }
    }
    props.insert("uri".into(), config.uri.clone());
    props.insert("warehouse".into(), config.warehouse.clone());
    props
}

/// SQLite needs `mode=rwc` to create the catalog file on first use, and its directory.
fn sql_uri(uri: &str) -> std::io::Result<String> {
    let Some(path) = uri.strip_prefix("sqlite://") else {
        return Ok(uri.to_string());
    };
    let file = path.split('?').next().unwrap_or(path);
    if let Some(dir) = std::path::Path::new(file).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    Ok(if uri.contains("mode=") {
        uri.to_string()
    } else if uri.contains('?') {
        format!("{uri}&mode=rwc")
    } else {
        format!("{uri}?mode=rwc")
    })
}

/// A local warehouse directory is created up front so the first write cannot fail on it.
fn prepare_warehouse(warehouse: &str) -> std::io::Result<()> {
    if let Some(path) = warehouse.strip_prefix("file://") {
        std::fs::create_dir_all(path)?;
    }
    Ok(())
}

pub async fn open_catalog(config: &CatalogConfig) -> iceberg::Result<Arc<dyn Catalog>> {
    let io_error = |e: std::io::Error| {
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, format!("local path: {e}"))
    };
    prepare_warehouse(&config.warehouse).map_err(io_error)?;
    let storage = Arc::new(OpenDalResolvingStorageFactory::new());
    let mut props = properties(config);
    Ok(match config.kind {
        CatalogKind::Sql => {
            props.insert("uri".into(), sql_uri(&config.uri).map_err(io_error)?);
            let bind_style = if config.uri.starts_with("postgres") {
                SqlBindStyle::DollarNumeric
            } else {
                SqlBindStyle::QMark
            };
            let catalog = SqlCatalogBuilder::default()
                .sql_bind_style(bind_style)
                .with_storage_factory(storage)
                .load(&config.name, props)
                .await?;
            Arc::new(catalog)
        }
        CatalogKind::Rest => {
            let auth = RestAuth::of(&props);
            let catalog = RestCatalogBuilder::default()
                .with_storage_factory(storage)
                .load(&config.name, props)
                .await?;
            Arc::new(RenewingRestCatalog::new(
                catalog,
                auth,
                config.display_uri(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_uri_gets_create_mode() {
        let dir = std::env::temp_dir().join(format!("ingest-sql-uri-{}", std::process::id()));
        let uri = format!("sqlite://{}/c.db", dir.display());
        assert_eq!(sql_uri(&uri).unwrap(), format!("{uri}?mode=rwc"));
        assert!(dir.is_dir());
        assert_eq!(sql_uri("postgres://h/db").unwrap(), "postgres://h/db");
    }
}
