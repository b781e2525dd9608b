//! One commit of the sink: its data files appended, the watermark (`watermark`) and the
//! positions they bring the table to recorded (all of them in the table properties, those of the partitions it
//! wrote in the snapshot summary, see `positions`), in one catalog commit that is a
//! compare-and-swap on the table the sink last loaded (see `pinned`): a lost race comes
//! back as a conflict error, never silently rebased.

use std::collections::HashMap;

use iceberg::Catalog;
use iceberg::spec::DataFile;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::pinned::PinnedCatalog;
use crate::positions::property_updates;
use crate::watermark;
use ingest_sink_api::{OffsetMap, Watermark};

/// The group's property and summary keys.
pub struct Keys<'a> {
    pub positions: &'a str,
    /// The consumer group, for the watermark's properties.
    pub group: &'a str,
}

/// Appends `files` to `table` and records `positions` (the table's, and those `written`
/// by this batch) and the batch's `watermark` under the group's keys; returns the
/// table as committed. The properties (which survive compaction and snapshot expiry)
/// hold every position and change only where a topic's recorded value differs; the
/// summary holds only the partitions in `written`, so it does not grow with the
/// partitions of the table times its snapshots.
pub async fn commit(
    catalog: &dyn Catalog,
    table: &Table,
    keys: Keys<'_>,
    files: Vec<DataFile>,
    (positions, written): (&OffsetMap, &OffsetMap),
    watermark: Option<&Watermark>,
) -> iceberg::Result<Table> {
    let key = keys.positions;
    let summary = HashMap::from([(key.to_string(), summary_value(positions, written))]);
    let mut properties = property_updates(table, key, positions);
    if let Some(watermark) = watermark {
        properties.extend(watermark::property_updates(table, keys.group, watermark));
    }
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

/// The summary's value: `positions` of the partitions in `written` only.
fn summary_value(positions: &OffsetMap, written: &OffsetMap) -> String {
    let mut these = positions.clone();
    these.retain(|topic, partition| written.contains(topic, partition));
    serde_json::to_string(&these).expect("positions serialize")
}
