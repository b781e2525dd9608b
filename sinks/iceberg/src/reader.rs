//! The Iceberg sink's position reader: the positions a table records, read from the
//! catalog's current table each time, so it serves while the sink itself is writing
//! (to resume newly assigned partitions).

use std::sync::Arc;

use iceberg::{Catalog, TableIdent};

use crate::positions::recorded_positions;
use crate::rest_auth::is_permanent_refusal;
use ingest_sink_api::{OffsetMap, PositionReader, SinkError};

/// Reads the positions one group recorded in one table.
pub struct TablePositionReader {
    pub sink: String,
    pub catalog: Arc<dyn Catalog>,
    pub ident: TableIdent,
    /// The group's key (`positions::positions_key`).
    pub key: String,
}

#[async_trait::async_trait]
impl PositionReader for TablePositionReader {
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
        recorded_positions(&table, &self.key)
            .map_err(|message| SinkError::permanent(self.sink.clone(), message))
    }
}
