//! The Iceberg sink: opening it on a route's table, and a write as its steps (skip what
//! the table already holds, write Parquet files, commit them with their positions,
//! start over when the commit raced another writer).

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use iceberg::Catalog;
use iceberg::arrow::schema_to_arrow_schema;
use iceberg::spec::DataFile;
use iceberg::table::Table;

use crate::commit::{Keys, commit};
use crate::config::IcebergTable;
use crate::conform::conform;
use crate::data_files::{ParquetFiles, WrittenFiles};
use crate::pinned::is_conflict;
use crate::positions::{positions_key, recorded_positions};
use crate::reader::TablePositionReader;
use crate::table::ensure_table;
use crate::values::TableValues;
use ingest_sink_api::{
    OffsetMap, PositionReader, Sink, SinkBatch, SinkError, ValueCheck, WriteOutcome, retry,
};

/// Lost compare-and-swap races tolerated in a row before the write fails (and is retried
/// by the service with backoff).
const MAX_COMMIT_ATTEMPTS: u32 = 20;

/// The wait after a lost race starts near this and doubles up to `RACE_DELAY_MAX`, with
/// jitter, so writers that collided do not start over in lockstep and collide again.
const RACE_DELAY_FIRST: Duration = Duration::from_millis(25);
const RACE_DELAY_MAX: Duration = Duration::from_secs(1);

/// Writes batches into one Iceberg table.
pub struct IcebergSink {
    name: String,
    catalog: Arc<dyn Catalog>,
    /// The table as this sink last loaded it (or made it, by its own commit).
    table: Table,
    /// The table's schema as Arrow, with the field ids the Parquet writer needs.
    target_schema: SchemaRef,
    /// The route's schema, as last opened or widened (which types it widens next).
    route_schema: SchemaRef,
    files: ParquetFiles,
    /// The group's key of the positions in the table (`positions::positions_key`).
    positions_key: String,
    /// The consumer group, whose watermark the table records (`watermark`).
    group: String,
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
        let permanent = |message: String| SinkError::permanent(&name, message);
        let table = ensure_table(&*catalog, namespace, config, &schema)
            .await
            .map_err(|(message, retryable)| SinkError::new(&name, message, retryable))?;
        // The route's schema may have gained nullable fields since the table was made.
        let table = crate::evolve::add_fields(&*catalog, table, &schema, None)
            .await
            .map_err(|(message, retryable)| SinkError::new(&name, message, retryable))?;
        let target_schema = Arc::new(
            schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| permanent(e.to_string()))?,
        );
        let files = ParquetFiles::new(&table, config).map_err(permanent)?;
        let positions_key = positions_key(group);
        // An unreadable position stops here, before anything is read from Kafka.
        recorded_positions(&table, &positions_key).map_err(permanent)?;
        // Converting an empty batch checks every column once, before data arrives.
        conform(&target_schema, &RecordBatch::new_empty(schema.clone())).map_err(permanent)?;
        Ok(Self {
            name,
            catalog,
            table,
            target_schema,
            route_schema: schema,
            files,
            positions_key,
            group: group.to_string(),
        })
    }

    /// Loads the table as it is now: another writer may have changed it since.
    async fn reload(&mut self) -> Result<(), SinkError> {
        self.table = self
            .catalog
            .load_table(self.table.identifier())
            .await
            .map_err(|e| self.error("loading the table", e))?;
        Ok(())
    }

    /// The positions the table this sink last loaded records; unreadable ones are a
    /// permanent error (never "no positions": that would write everything again).
    fn recorded(&self) -> Result<OffsetMap, SinkError> {
        recorded_positions(&self.table, &self.positions_key)
            .map_err(|message| SinkError::permanent(self.name.clone(), message))
    }

    /// The rows of `batch` the table does not hold yet (a replay after a crash, or rows
    /// another instance wrote, are skipped).
    fn not_yet_written(&self, batch: &SinkBatch, recorded: &OffsetMap) -> SinkBatch {
        let todo = batch.skip_held(recorded);
        if todo.num_rows() < batch.num_rows() {
            tracing::info!(sink = %self.name, skipped = batch.num_rows() - todo.num_rows(),
                "rows already in the table (a replay) are not written again");
        }
        todo
    }

    /// Writes the rows of `todo` as data files of the table (not in it until `commit`).
    async fn write_files(&self, todo: &SinkBatch) -> Result<Vec<DataFile>, SinkError> {
        let pieces = todo
            .batches
            .iter()
            .map(|b| conform(&self.target_schema, b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| SinkError::permanent(self.name.clone(), message))?;
        self.files
            .write(&self.table, pieces)
            .await
            .map_err(|e| self.error("writing data files", e))
    }

    /// The data files for `todo`: those an attempt that lost its race wrote, when they
    /// hold exactly these rows (nothing of them was recorded meanwhile), else new ones
    /// (the earlier ones stay orphans, never referenced by a snapshot).
    async fn files_for(
        &self,
        todo: &SinkBatch,
        earlier: Option<WrittenFiles>,
    ) -> Result<WrittenFiles, SinkError> {
        match earlier {
            Some(earlier) if earlier.hold(&self.table, todo) => Ok(earlier),
            earlier => {
                if let Some(orphans) = earlier {
                    tracing::info!(sink = %self.name, files = orphans.files.len(),
                        "the rows to write changed after a lost race; writing new files");
                }
                let files = self.write_files(todo).await?;
                Ok(WrittenFiles::new(files, &self.table, todo))
            }
        }
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

    async fn evolve(&mut self, schema: SchemaRef) -> Result<(), SinkError> {
        self.reload().await?;
        self.table = crate::evolve::add_fields(
            &*self.catalog,
            self.table.clone(),
            &schema,
            Some(&self.route_schema),
        )
        .await
        .map_err(|(message, retryable)| SinkError::new(&self.name, message, retryable))?;
        let permanent = |message: String| SinkError::permanent(&self.name, message);
        let target = Arc::new(
            schema_to_arrow_schema(self.table.metadata().current_schema())
                .map_err(|e| permanent(e.to_string()))?,
        );
        conform(&target, &RecordBatch::new_empty(schema.clone())).map_err(permanent)?;
        self.target_schema = target;
        self.route_schema = schema;
        Ok(())
    }

    /// Each attempt starts from the table as it is now: rows whose positions the table
    /// already records (written before a crash, or by another instance) are skipped,
    /// the rest is written and committed as a compare-and-swap. A lost race waits a
    /// jittered backoff and starts over, with the files already written if the rows to
    /// write are still the same.
    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        if batch.num_rows() == 0 {
            return Ok(WriteOutcome::default());
        }
        let mut attempt = 0;
        let mut delays = retry::backoff(RACE_DELAY_FIRST, RACE_DELAY_MAX);
        let mut written = None;
        loop {
            self.reload().await?;
            let recorded = self.recorded()?;
            let todo = self.not_yet_written(batch, &recorded);
            if todo.num_rows() == 0 {
                return Ok(WriteOutcome::default());
            }
            let files = self.files_for(&todo, written.take()).await?;
            let mut positions = recorded;
            positions.merge(&batch.positions);
            let outcome = commit(
                &*self.catalog,
                &self.table,
                Keys {
                    positions: &self.positions_key,
                    group: &self.group,
                },
                files.files.clone(),
                (&positions, &batch.positions),
                batch.watermark.as_ref(),
            )
            .await;
            match outcome {
                Ok(table) => {
                    self.table = table;
                    return Ok(WriteOutcome {
                        files: files.files.len() as u64,
                        commits: 1,
                        ..WriteOutcome::default()
                    });
                }
                Err(e) if is_conflict(&e) && attempt < MAX_COMMIT_ATTEMPTS => {
                    written = Some(files);
                    attempt += 1;
                    let delay = delays.next().expect("the backoff never ends");
                    tracing::info!(sink = %self.name, attempt, ?delay,
                        "commit raced another writer; starting over on the new snapshot");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(self.error("committing the snapshot", e)),
            }
        }
    }

    fn value_check(&self) -> Option<Arc<dyn ValueCheck>> {
        let check = TableValues::new(&self.name, self.target_schema.clone())
            .with_type_names(self.table.metadata().current_schema());
        Some(Arc::new(check))
    }

    fn position_reader(&self) -> Arc<dyn PositionReader> {
        Arc::new(TablePositionReader {
            sink: self.name.clone(),
            catalog: Arc::clone(&self.catalog),
            ident: self.table.identifier().clone(),
            key: self.positions_key.clone(),
        })
    }
}
