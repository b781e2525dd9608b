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
    /// zstd level of the Parquet pages (1 fastest, 22 smallest). 1 by measurement
    /// (`make bench`, `parquet_settings`): on the benchmark events level 3 wrote files
    /// 0.5 % smaller for 9 % more CPU, level 6 3 % smaller for 1.8x.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// Dictionary-encode the Parquet columns. Off by measurement: on the benchmark events
    /// (ids, URLs and tokens beside a few repeated strings) plain pages under zstd came
    /// out 18 % smaller and were written 1.4x as fast; a table of mostly repeated values
    /// may want it on.
    #[serde(default)]
    pub dictionary: bool,
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
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_settings_default_to_the_measured_ones() {
        let table: IcebergTable = serde_json::from_str(r#"{"table": "t"}"#).unwrap();
        assert_eq!((table.zstd_level, table.dictionary), (1, false));
        let table: IcebergTable =
            serde_json::from_str(r#"{"table": "t", "zstd_level": 6, "dictionary": true}"#).unwrap();
        assert_eq!((table.zstd_level, table.dictionary), (6, true));
    }
}
