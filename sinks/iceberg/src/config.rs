//! The `iceberg:` block of a route: which table, how it is partitioned when created, and
//! how its Parquet files are written.

use serde::Deserialize;

/// One route's table (the `iceberg:` block of a route).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergTable {
    pub table: String,
    /// Partition transforms of a created table: `day(ts)`, `bucket(16, id)`, `country`.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// A data file is closed and a new one started past this size.
    #[serde(default = "default_target_file_size")]
    pub target_file_size: bytesize::ByteSize,
    /// Rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// zstd level of the Parquet pages (1 fastest, 22 smallest).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// This sink's batching (commit cadence), overriding the route's `batch` key by key.
    #[serde(default)]
    pub batch: ingest_sink_api::BatchOverride,
}

fn default_target_file_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(128)
}
fn default_row_group_rows() -> usize {
    1 << 20
}
fn default_zstd_level() -> i32 {
    3
}
