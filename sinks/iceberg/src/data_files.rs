//! Writing rows as zstd Parquet data files in the table's location, split by the table's
//! partition spec, and keeping them for the next commit attempt while they still hold
//! what it must write. Nothing is visible in the table until `commit` adds the files.

use arrow_array::RecordBatch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::config::IcebergTable;
use ingest_sink_api::{Coordinates, SinkBatch};

/// How one table's data files are written: partitioned as the table was when the sink
/// opened, with the route's Parquet settings.
pub struct ParquetFiles {
    /// `None` for an unpartitioned table.
    splitter: Option<RecordBatchPartitionSplitter>,
    writer_properties: WriterProperties,
    target_file_size: usize,
}

impl ParquetFiles {
    pub fn new(table: &Table, config: &IcebergTable) -> Result<Self, String> {
        let metadata = table.metadata();
        let splitter = if metadata.default_partition_spec().is_unpartitioned() {
            None
        } else {
            Some(
                RecordBatchPartitionSplitter::try_new_with_computed_values(
                    metadata.current_schema().clone(),
                    metadata.default_partition_spec().clone(),
                )
                .map_err(|e| e.to_string())?,
            )
        };
        let level =
            ZstdLevel::try_new(config.zstd_level).map_err(|e| format!("zstd_level: {e}"))?;
        let writer_properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_dictionary_enabled(config.dictionary)
            .build();
        Ok(Self {
            splitter,
            writer_properties,
            target_file_size: config.target_file_size.as_u64() as usize,
        })
    }

    /// Writes `batches` (already in the table's Arrow schema) into new files of `table`.
    pub async fn write(
        &self,
        table: &Table,
        batches: Vec<RecordBatch>,
    ) -> iceberg::Result<Vec<DataFile>> {
        let metadata = table.metadata();
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
            table.file_io().clone(),
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
}

/// Data files written for some rows and not committed yet. A commit that lost a race
/// leaves them unreferenced; when the reloaded table leaves the same rows to write (the
/// other writer recorded none of them) and still has the schema and partition spec they
/// were written for, the next attempt commits them instead of writing the rows again.
pub struct WrittenFiles {
    pub files: Vec<DataFile>,
    /// The rows' coordinates (empty when unknown: then no row is ever skipped).
    rows: Vec<Vec<Coordinates>>,
    num_rows: usize,
    schema_id: i32,
    spec_id: i32,
}

impl WrittenFiles {
    /// `files` holding the rows of `todo`, written for `table` as it is now.
    pub fn new(files: Vec<DataFile>, table: &Table, todo: &SinkBatch) -> Self {
        let metadata = table.metadata();
        Self {
            files,
            rows: todo.coordinates.clone(),
            num_rows: todo.num_rows(),
            schema_id: metadata.current_schema_id(),
            spec_id: metadata.default_partition_spec_id(),
        }
    }

    /// Whether these files are what writing `todo` into `table` would give. `todo` is
    /// always a subset of the same batch, so the same coordinates are the same rows.
    pub fn hold(&self, table: &Table, todo: &SinkBatch) -> bool {
        let metadata = table.metadata();
        self.num_rows == todo.num_rows()
            && self.schema_id == metadata.current_schema_id()
            && self.spec_id == metadata.default_partition_spec_id()
            && self.rows == todo.coordinates
    }
}
