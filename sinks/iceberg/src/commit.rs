//! One commit of the sink: its data files appended and the positions they bring the
//! table to recorded (snapshot summary and table properties, see `positions`), in one
//! catalog commit that is a compare-and-swap on the table the sink last loaded (see
//! `pinned`): a lost race comes back as a conflict error, never silently rebased.

use std::collections::HashMap;

use iceberg::Catalog;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::pinned::PinnedCatalog;
use crate::positions::property_updates;
use ingest_sink_api::OffsetMap;

/// Appends `files` to `table` and records `positions` under the group's `key`; returns
/// the table as committed. The properties (which survive compaction and snapshot
/// expiry) change only where a topic's recorded value differs.
pub async fn commit(
    catalog: &dyn Catalog,
    table: &Table,
    key: &str,
    files: Vec<DataFile>,
    positions: &OffsetMap,
) -> iceberg::Result<Table> {
    let summary = HashMap::from([(
        key.to_string(),
        serde_json::to_string(positions).expect("positions serialize"),
    )]);
    let properties = property_updates(table, key, positions);
    let tx = Transaction::new(table);
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
    let pinned = PinnedCatalog::new(catalog, table.clone());
    tx.commit(&pinned).await
}
