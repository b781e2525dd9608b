//! `ingest status` for an Iceberg table: the group's positions, watermarks and last
//! commit, read from the catalog without changing anything (no namespace or table is
//! created, as opening the sink would).

use std::sync::Arc;

use iceberg::{Catalog, NamespaceIdent, TableIdent};
use ingest_sink_api::{SinkError, TableState};

use crate::positions::{positions_key, recorded_positions};
use crate::rest_auth::is_permanent_refusal;
use crate::watermark::recorded_watermarks;

/// Where `namespace.table` stands for `group`.
pub async fn table_state(
    catalog: Arc<dyn Catalog>,
    namespace: &str,
    table: &str,
    group: &str,
) -> Result<TableState, SinkError> {
    let sink = format!("iceberg {namespace}.{table}");
    let failed = |context: &str, e: iceberg::Error| {
        SinkError::new(&sink, format!("{context}: {e}"), !is_permanent_refusal(&e))
    };
    let namespace_ident = NamespaceIdent::from_strs(namespace.split('.'))
        .map_err(|e| SinkError::permanent(&sink, e.to_string()))?;
    let ident = TableIdent::new(namespace_ident, table.to_string());
    if !catalog
        .table_exists(&ident)
        .await
        .map_err(|e| failed("looking for the table", e))?
    {
        return Ok(TableState {
            sink,
            missing: true,
            ..TableState::default()
        });
    }
    let loaded = catalog
        .load_table(&ident)
        .await
        .map_err(|e| failed("loading the table", e))?;
    let key = positions_key(group);
    let positions =
        recorded_positions(&loaded, &key).map_err(|m| SinkError::permanent(&sink, m))?;
    let metadata = loaded.metadata_ref();
    // The newest commit of this group: the newest snapshot carrying its positions.
    let last_write_unix = metadata.current_snapshot().and_then(|current| {
        iceberg::util::snapshot::ancestors_of(&metadata, current.snapshot_id())
            .find(|s| s.summary().additional_properties.contains_key(&key))
            .map(|s| s.timestamp_ms() as f64 / 1000.0)
    });
    Ok(TableState {
        sink,
        missing: false,
        positions,
        watermarks: recorded_watermarks(&loaded, group),
        last_write_unix,
    })
}
