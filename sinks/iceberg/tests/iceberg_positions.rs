//! Where the Iceberg sink's Kafka positions live, on a real SQLite catalog: in the table
//! properties, committed with the data, so they outlive snapshots written by other
//! engines and `expire_snapshots`; an unreadable position stops the sink (never "no
//! positions"); a table written by a version that kept them only in snapshot summaries
//! keeps them; and another writer changing properties meanwhile loses nothing.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use ingest_sink_api::{Coordinates, OffsetMap, Sink, SinkBatch};
use ingest_sink_iceberg::positions::property_key;
use ingest_sink_iceberg::{
    CatalogConfig, CatalogKind, IcebergSink, IcebergTable, offsets_key, open_catalog,
    recorded_offsets,
};

const ROWS: i64 = 100;

fn batch(schema: &Arc<Schema>, partition: i32, round: i64) -> SinkBatch {
    let first = round * ROWS;
    let ids = Int64Array::from_iter_values(first..first + ROWS);
    let mut positions = OffsetMap::default();
    positions.advance("events", partition, first + ROWS);
    let coordinates = (first..first + ROWS)
        .map(|offset| Coordinates {
            topic: "events",
            partition,
            offset,
        })
        .collect();
    SinkBatch {
        batches: vec![RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()],
        coordinates: vec![coordinates],
        positions,
        epoch: 0,
    }
}

/// A fresh SQLite catalog with a local warehouse under the temp directory.
fn catalog_config(name: &str) -> CatalogConfig {
    let dir = std::env::temp_dir().join(format!(
        "ingest-iceberg-positions-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    CatalogConfig {
        kind: CatalogKind::Sql,
        uri: format!("sqlite://{}/catalog.db", dir.display()),
        warehouse: format!("file://{}/warehouse", dir.display()),
        name: "ingest".into(),
        properties: Default::default(),
    }
}

struct Fixture {
    catalog: Arc<dyn Catalog>,
    schema: Arc<Schema>,
    table: IcebergTable,
    ident: TableIdent,
}

impl Fixture {
    async fn new(name: &str) -> Self {
        Self {
            catalog: open_catalog(&catalog_config(name)).await.unwrap(),
            schema: Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            table: serde_json::from_str(r#"{"table": "events"}"#).unwrap(),
            ident: TableIdent::from_strs(["ns", "events"]).unwrap(),
        }
    }

    async fn sink(&self) -> Result<IcebergSink, ingest_sink_api::SinkError> {
        IcebergSink::open(
            Arc::clone(&self.catalog),
            "ns",
            &self.table,
            self.schema.clone(),
            "group",
        )
        .await
    }

    async fn load(&self) -> Table {
        self.catalog.load_table(&self.ident).await.unwrap()
    }

    /// Another engine's commit: a snapshot with the given summary, no files of ours.
    async fn foreign_snapshot(&self, summary: &[(&str, &str)]) -> Table {
        let table = self.load().await;
        let properties: HashMap<String, String> = summary
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let tx = Transaction::new(&table);
        let tx = tx
            .fast_append()
            .set_snapshot_properties(properties)
            .apply(tx)
            .unwrap();
        tx.commit(&*self.catalog).await.unwrap()
    }

    async fn set_property(&self, name: &str, value: &str) -> Table {
        let table = self.load().await;
        let tx = Transaction::new(&table);
        let tx = tx
            .update_table_properties()
            .set(name.to_string(), value.to_string())
            .apply(tx)
            .unwrap();
        tx.commit(&*self.catalog).await.unwrap()
    }

    async fn expire_all_but_current(&self) -> Table {
        let table = self.load().await;
        let current = table.metadata().current_snapshot_id().unwrap();
        let older: Vec<i64> = table
            .metadata()
            .snapshots()
            .map(|s| s.snapshot_id())
            .filter(|id| *id != current)
            .collect();
        let tx = Transaction::new(&table);
        let tx = tx
            .expire_snapshots()
            .expire_snapshot_ids(older)
            .apply(tx)
            .unwrap();
        tx.commit(&*self.catalog).await.unwrap()
    }
}

fn position(table: &Table) -> Option<i64> {
    recorded_offsets(table, &offsets_key("group"))
        .unwrap()
        .get("events", 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_outlive_foreign_snapshots_and_expiry() {
    let f = Fixture::new("expiry").await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap();
    f.foreign_snapshot(&[("engine", "compaction")]).await;
    let table = f.expire_all_but_current().await;
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert_eq!(position(&table), Some(2 * ROWS));

    // A replay of both batches writes nothing; the next one is written.
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap();
    sink.write(&batch(&f.schema, 0, 2)).await.unwrap();
    let table = f.load().await;
    let summary = table.metadata().current_snapshot().unwrap().summary();
    assert_eq!(summary.additional_properties["total-records"], "300");
    assert_eq!(position(&table), Some(3 * ROWS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_summary_stops_the_sink() {
    let f = Fixture::new("bad-summary").await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    let key = offsets_key("group");
    let table = f.foreign_snapshot(&[(key.as_str(), "{not json")]).await;
    let snapshot = table.metadata().current_snapshot_id().unwrap().to_string();

    let refused = sink.write(&batch(&f.schema, 0, 1)).await.unwrap_err();
    assert!(!refused.is_retryable(), "{refused}");
    let opened = f.sink().await.err().expect("open refuses the table");
    assert!(!opened.is_retryable(), "{opened}");
    for error in [refused.to_string(), opened.to_string()] {
        for part in [
            "ns.events",
            snapshot.as_str(),
            key.as_str(),
            "cannot be read",
        ] {
            assert!(error.contains(part), "no {part:?} in: {error}");
        }
    }
    assert_eq!(
        f.load().await.metadata().snapshots().count(),
        2,
        "nothing was committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_property_stops_the_sink() {
    let f = Fixture::new("bad-property").await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    let name = property_key(&offsets_key("group"), "events");
    for value in [r#"{"0": "many"}"#, r#"{"0": -5}"#, "[]"] {
        f.set_property(&name, value).await;
        let error = sink.write(&batch(&f.schema, 0, 1)).await.unwrap_err();
        assert!(!error.is_retryable(), "{error}");
        let error = error.to_string();
        for part in ["ns.events", name.as_str(), "cannot be read"] {
            assert!(error.contains(part), "{value}: no {part:?} in: {error}");
        }
    }
}

/// A table written by a version that kept positions only in snapshot summaries: they
/// are read from there, and the first commit copies them into the properties, so a
/// later expiry keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_positions_of_older_versions_are_carried_over() {
    let f = Fixture::new("upgrade").await;
    f.sink().await.unwrap(); // creates the table
    let key = offsets_key("group");
    f.foreign_snapshot(&[(key.as_str(), r#"{"events": {"0": 100}, "other": {"3": 7}}"#)])
        .await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap(); // a replay: nothing to write
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap();
    f.foreign_snapshot(&[("engine", "compaction")]).await;
    let table = f.expire_all_but_current().await;
    let positions = recorded_offsets(&table, &key).unwrap();
    assert_eq!(positions.get("events", 0), Some(2 * ROWS));
    assert_eq!(positions.get("other", 3), Some(7));
    assert_eq!(
        table
            .metadata()
            .properties()
            .get(&property_key(&key, "other")),
        Some(&r#"{"3":7}"#.to_string())
    );
}

/// Another writer changing table properties while the sink commits: the catalog applies
/// each commit's property changes key by key, so both its properties and every position
/// are kept (the sink's compare-and-swap is on the snapshot, which properties do not move).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_property_writer_loses_nothing() {
    let f = Fixture::new("properties").await;
    let mut sink = f.sink().await.unwrap();
    let catalog = Arc::clone(&f.catalog);
    let ident = f.ident.clone();
    let tweaker = tokio::spawn(async move {
        for i in 0..20 {
            // A lost race with the sink is tried again, as any writer would.
            loop {
                let table = catalog.load_table(&ident).await.unwrap();
                let tx = Transaction::new(&table);
                let tx = tx
                    .update_table_properties()
                    .set(format!("owner.note.{i}"), i.to_string())
                    .apply(tx)
                    .unwrap();
                if tx.commit(&*catalog).await.is_ok() {
                    break;
                }
            }
        }
    });
    for round in 0..10 {
        sink.write(&batch(&f.schema, 0, round)).await.unwrap();
    }
    tweaker.await.unwrap();
    let table = f.load().await;
    assert_eq!(position(&table), Some(10 * ROWS));
    for i in 0..20 {
        assert_eq!(
            table
                .metadata()
                .properties()
                .get(&format!("owner.note.{i}")),
            Some(&i.to_string())
        );
    }
    let summary = table.metadata().current_snapshot().unwrap().summary();
    assert_eq!(summary.additional_properties["total-records"], "1000");
}

/// A group whose name goes on with `/` (`group/x`) has keys starting with ours; they are
/// neither read as ours nor checked as ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_groups_properties_are_not_ours() {
    let f = Fixture::new("groups").await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    let theirs = offsets_key("group/x");
    f.set_property(&property_key(&theirs, "events"), r#"{"0": 999999}"#)
        .await;
    f.set_property(&format!("{theirs}/"), "not ours at all")
        .await;
    let table = f.load().await;
    assert_eq!(position(&table), Some(ROWS));
    assert_eq!(
        recorded_offsets(&table, &theirs).unwrap().get("events", 0),
        Some(999999)
    );
}
