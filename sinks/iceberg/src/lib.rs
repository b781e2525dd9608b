//! Iceberg sink: Arrow batches written as zstd Parquet files and committed with a fast
//! append that records the Kafka positions the files cover in the same catalog commit
//! (table properties and snapshot summary, see `positions`).

pub mod catalog;
mod pinned;
mod plugin;
pub mod positions;
mod rest_auth;
pub mod schema;
pub mod values;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_schema::SchemaRef;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

pub use catalog::{CatalogConfig, CatalogKind, open_catalog};
use ingest_sink_api::{OffsetMap, Sink, SinkBatch, SinkError, WriteOutcome};
use pinned::{PinnedCatalog, is_conflict};
pub use plugin::IcebergPlugin;
pub use positions::{offsets_key, recorded_offsets};
pub use rest_auth::is_permanent_refusal;

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

/// Lost compare-and-swap races tolerated in a row before the write fails (and is retried
/// by the service with backoff).
const MAX_COMMIT_ATTEMPTS: u32 = 20;

/// Writes batches into one Iceberg table.
pub struct IcebergSink {
    name: String,
    catalog: Arc<dyn Catalog>,
    table: Table,
    /// The table's schema as Arrow, with the field ids the Parquet writer needs.
    target_schema: SchemaRef,
    splitter: Option<RecordBatchPartitionSplitter>,
    writer_properties: WriterProperties,
    target_file_size: usize,
    offsets_key: String,
}

impl IcebergSink {
    /// Loads (creating if missing) `namespace.table` and checks the schema fits it.
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        namespace: &str,
        config: &IcebergTable,
        schema: SchemaRef,
        group: &str,
    ) -> Result<Self, SinkError> {
        let name = format!("iceberg {namespace}.{}", config.table);
        let fail =
            |message: String, retryable: bool| SinkError::new(name.clone(), message, retryable);
        let table = ensure_table(&*catalog, namespace, config, &schema)
            .await
            .map_err(|(e, retryable)| fail(e, retryable))?;
        let target_schema = Arc::new(
            schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| fail(e.to_string(), false))?,
        );
        let splitter = if table.metadata().default_partition_spec().is_unpartitioned() {
            None
        } else {
            Some(
                RecordBatchPartitionSplitter::try_new_with_computed_values(
                    table.metadata().current_schema().clone(),
                    table.metadata().default_partition_spec().clone(),
                )
                .map_err(|e| fail(e.to_string(), false))?,
            )
        };
        // An unreadable position stops here, before anything is read from Kafka.
        recorded_offsets(&table, &offsets_key(group)).map_err(|e| fail(e, false))?;
        let level = ZstdLevel::try_new(config.zstd_level)
            .map_err(|e| fail(format!("zstd_level: {e}"), false))?;
        let writer_properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .build();
        let sink = Self {
            name: name.clone(),
            catalog,
            table,
            target_schema,
            splitter,
            writer_properties,
            target_file_size: config.target_file_size.as_u64() as usize,
            offsets_key: offsets_key(group),
        };
        // Converting an empty batch checks every column once, before data arrives.
        sink.conform(&RecordBatch::new_empty(schema))
            .map_err(|e| fail(e, false))?;
        Ok(sink)
    }

    /// Reorders and casts a batch into the table's Arrow schema.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.target_schema.fields().len());
        for field in self.target_schema.fields() {
            let column = match batch.column_by_name(field.name()) {
                Some(source) if source.data_type() == field.data_type() => source.clone(),
                // Strict: a value that does not fit is an error, never a silent null.
                Some(source) => cast_with_options(
                    source,
                    field.data_type(),
                    &CastOptions {
                        safe: false,
                        ..Default::default()
                    },
                )
                .map_err(|e| {
                    format!(
                        "column `{}`: cannot convert {} to the table's {}: {e}",
                        field.name(),
                        source.data_type(),
                        field.data_type()
                    )
                })?,
                None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
                None => {
                    return Err(format!(
                        "table column `{}` is required but the schema has no such field",
                        field.name()
                    ));
                }
            };
            columns.push(column);
        }
        for field in batch.schema().fields() {
            if self.target_schema.field_with_name(field.name()).is_err() {
                return Err(format!(
                    "field `{}` has no column in the table",
                    field.name()
                ));
            }
        }
        RecordBatch::try_new(self.target_schema.clone(), columns).map_err(|e| e.to_string())
    }

    async fn write_files(&self, batches: Vec<RecordBatch>) -> iceberg::Result<Vec<DataFile>> {
        let metadata = self.table.metadata();
        let parquet = ParquetWriterBuilder::new(
            self.writer_properties.clone(),
            metadata.current_schema().clone(),
        );
        // A UUID prefix: the default generator restarts its counter with every writer.
        let names = DefaultFileNameGenerator::new(
            uuid::Uuid::new_v4().to_string(),
            None,
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            self.target_file_size,
            self.table.file_io().clone(),
            DefaultLocationGenerator::new(metadata)?,
            names,
        );
        let data_files = DataFileWriterBuilder::new(rolling);
        match &self.splitter {
            None => {
                let mut writer = data_files.build(None).await?;
                for batch in batches {
                    writer.write(batch).await?;
                }
                writer.close().await
            }
            Some(splitter) => {
                let mut writer = FanoutWriter::new(data_files);
                for batch in batches {
                    for (key, part) in splitter.split(&batch)? {
                        writer.write(key, part).await?;
                    }
                }
                writer.close().await
            }
        }
    }

    /// The positions the table this sink last loaded records; unreadable ones are a
    /// permanent error (never "no positions": that would write everything again).
    fn recorded(&self) -> Result<OffsetMap, SinkError> {
        recorded_offsets(&self.table, &self.offsets_key)
            .map_err(|message| SinkError::permanent(self.name.clone(), message))
    }

    /// Appends the files and records `positions` (the table's merged with the batch's)
    /// in one catalog commit: the snapshot summary and the table properties (which
    /// survive compaction and snapshot expiry). The commit is a compare-and-swap on the
    /// table this sink last loaded; a lost race comes back as a conflict error.
    async fn commit_once(
        &mut self,
        files: Vec<DataFile>,
        positions: &OffsetMap,
    ) -> iceberg::Result<()> {
        let summary = HashMap::from([(
            self.offsets_key.clone(),
            serde_json::to_string(positions).expect("offsets serialize"),
        )]);
        let properties = positions::property_updates(&self.table, &self.offsets_key, positions);
        let tx = Transaction::new(&self.table);
        let tx = tx
            .fast_append()
            .with_check_duplicate(false)
            .add_data_files(files)
            .set_snapshot_properties(summary)
            .apply(tx)?;
        let tx = properties
            .into_iter()
            .fold(tx.update_table_properties(), |update, (name, value)| {
                update.set(name, value)
            })
            .apply(tx)?;
        let pinned = PinnedCatalog::new(&*self.catalog, self.table.clone());
        self.table = tx.commit(&pinned).await?;
        Ok(())
    }

    fn error(&self, context: &str, e: iceberg::Error) -> SinkError {
        // Storage and catalog I/O surface as Unexpected; conflicts are retryable too.
        let retryable = e.retryable()
            || matches!(
                e.kind(),
                iceberg::ErrorKind::Unexpected | iceberg::ErrorKind::CatalogCommitConflicts
            );
        SinkError::new(&self.name, format!("{context}: {e}"), retryable)
    }
}

#[async_trait::async_trait]
impl Sink for IcebergSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Each attempt starts from the table as it is now: rows whose positions the table
    /// already records (written before a crash, or by another instance) are skipped,
    /// the rest is written and committed as a compare-and-swap. A lost race starts over.
    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        if batch.num_rows() == 0 {
            return Ok(WriteOutcome::default());
        }
        let mut attempt = 0;
        loop {
            self.table = self
                .catalog
                .load_table(self.table.identifier())
                .await
                .map_err(|e| self.error("loading the table", e))?;
            let durable = self.recorded()?;
            let todo = batch.skip_held(&durable);
            if todo.num_rows() < batch.num_rows() {
                tracing::info!(sink = %self.name, skipped = batch.num_rows() - todo.num_rows(),
                    "rows already in the table (a replay) are not written again");
            }
            if todo.num_rows() == 0 {
                return Ok(WriteOutcome::default());
            }
            let pieces = todo
                .batches
                .iter()
                .map(|b| self.conform(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| SinkError::permanent(self.name.clone(), message))?;
            let files = self
                .write_files(pieces)
                .await
                .map_err(|e| self.error("writing data files", e))?;
            let mut positions = durable;
            positions.merge(&batch.positions);
            match self.commit_once(files, &positions).await {
                Ok(()) => return Ok(WriteOutcome::default()),
                Err(e) if is_conflict(&e) && attempt < MAX_COMMIT_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(sink = %self.name, attempt, "commit raced another writer; starting over on the new snapshot");
                }
                Err(e) => return Err(self.error("committing the snapshot", e)),
            }
        }
    }

    fn value_check(&self) -> Option<Arc<dyn ingest_sink_api::ValueCheck>> {
        let check = values::TableValues::new(&self.name, self.target_schema.clone())
            .with_type_names(self.table.metadata().current_schema());
        Some(Arc::new(check))
    }

    fn position_reader(&self) -> Arc<dyn ingest_sink_api::PositionReader> {
        Arc::new(MetadataReader {
            sink: self.name.clone(),
            catalog: Arc::clone(&self.catalog),
            ident: self.table.identifier().clone(),
            key: self.offsets_key.clone(),
        })
    }
}

/// Reads the positions recorded in a table's snapshots (the current table, each time).
struct MetadataReader {
    sink: String,
    catalog: Arc<dyn Catalog>,
    ident: TableIdent,
    key: String,
}

#[async_trait::async_trait]
impl ingest_sink_api::PositionReader for MetadataReader {
    fn sink(&self) -> &str {
        &self.sink
    }

    async fn read(&self, _partitions: &OffsetMap) -> Result<OffsetMap, SinkError> {
        let table = self.catalog.load_table(&self.ident).await.map_err(|e| {
            SinkError::new(
                self.sink.clone(),
                format!("loading the table: {e}"),
                !is_permanent_refusal(&e),
            )
        })?;
        recorded_offsets(&table, &self.key)
            .map_err(|message| SinkError::permanent(self.sink.clone(), message))
    }
}

async fn ensure_table(
    catalog: &dyn Catalog,
    namespace: &str,
    config: &IcebergTable,
    schema: &SchemaRef,
) -> Result<Table, (String, bool)> {
    // Catalog calls are retried, unless the catalog refused the credentials for good.
    let io = |what: &str, e: iceberg::Error| (format!("{what}: {e}"), !is_permanent_refusal(&e));
    let namespace_ident =
        NamespaceIdent::from_strs(namespace.split('.')).map_err(|e| (e.to_string(), false))?;
    if !catalog
        .namespace_exists(&namespace_ident)
        .await
        .map_err(|e| io("checking the namespace", e))?
    {
        catalog
            .create_namespace(&namespace_ident, HashMap::new())
            .await
            .map_err(|e| io("creating the namespace", e))?;
    }
    let ident = TableIdent::new(namespace_ident.clone(), config.table.clone());
    if catalog
        .table_exists(&ident)
        .await
        .map_err(|e| io("checking the table", e))?
    {
        return catalog
            .load_table(&ident)
            .await
            .map_err(|e| io("loading the table", e));
    }
    let compatible = schema::iceberg_compatible(schema).map_err(|e| (e, false))?;
    let iceberg_schema = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&compatible)
        .map_err(|e| (e.to_string(), false))?;
    let spec =
        schema::partition_spec(&iceberg_schema, &config.partition_by).map_err(|e| (e, false))?;
    let creation = TableCreation::builder()
        .name(config.table.clone())
        .schema(iceberg_schema)
        .partition_spec(spec)
        .properties([
            ("write.format.default".to_string(), "parquet".to_string()),
            (
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            ),
        ])
        .build();
    match catalog.create_table(&namespace_ident, creation).await {
        Ok(table) => Ok(table),
        // Another instance created it first.
        Err(_) if catalog.table_exists(&ident).await.unwrap_or(false) => catalog
            .load_table(&ident)
            .await
            .map_err(|e| io("loading the table", e)),
        Err(e) => Err((format!("creating the table: {e}"), false)),
    }
}
