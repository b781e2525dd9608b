//! Where the Iceberg sink's Kafka positions live, on a real SQLite catalog: in the table
//! properties, committed with the data, so they outlive snapshots written by other
//! engines and `expire_snapshots`; an unreadable position stops the sink (never "no
//! positions"); a table written by a version that kept them only in snapshot summaries
//! keeps them; and another writer changing properties meanwhile loses nothing.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::Schema;
use common::{ROWS, batch, catalog_config, events_table, one_row_per_partition};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, TableIdent};
use ingest_sink_api::Sink;
use ingest_sink_iceberg::property_key;
use ingest_sink_iceberg::{
    IcebergSink, IcebergTable, open_catalog, positions_key, recorded_positions,
};

struct Fixture {
    catalog: Arc<dyn Catalog>,
    schema: Arc<Schema>,
    table: IcebergTable,
    ident: TableIdent,
}

impl Fixture {
    async fn new(name: &str) -> Self {
        let (schema, table) = events_table();
        Self {
            catalog: open_catalog(&catalog_config(name)).await.unwrap(),
            schema,
            table,
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

    /// A sink that has written the first `rounds` batches of partition 0.
    async fn sink_that_wrote(&self, rounds: i64) -> IcebergSink {
        let mut sink = self.sink().await.unwrap();
        for round in 0..rounds {
            sink.write(&batch(&self.schema, 0, round)).await.unwrap();
        }
        sink
    }

    async fn load(&self) -> Table {
        self.catalog.load_table(&self.ident).await.unwrap()
    }

    /// Another writer's commit of one action built on the current table.
    async fn commit<A: ApplyTransactionAction>(
        &self,
        action: impl FnOnce(&Transaction) -> A,
    ) -> Table {
        let table = self.load().await;
        let tx = Transaction::new(&table);
        let tx = action(&tx).apply(tx).unwrap();
        tx.commit(&*self.catalog).await.unwrap()
    }

    /// Another engine's commit: a snapshot with the given summary, no files of ours.
    async fn foreign_snapshot(&self, summary: &[(&str, &str)]) -> Table {
        let properties: HashMap<String, String> = summary
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.commit(|tx| tx.fast_append().set_snapshot_properties(properties))
            .await
    }

    async fn set_property(&self, name: &str, value: &str) -> Table {
        self.commit(|tx| {
            tx.update_table_properties()
                .set(name.to_string(), value.to_string())
        })
        .await
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
        self.commit(|tx| tx.expire_snapshots().expire_snapshot_ids(older))
            .await
    }
}

fn position(table: &Table) -> Option<i64> {
    recorded_positions(table, &positions_key("group"))
        .unwrap()
        .get("events", 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_outlive_foreign_snapshots_and_expiry() {
    let f = Fixture::new("expiry").await;
    let mut sink = f.sink_that_wrote(2).await;
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
    let mut sink = f.sink_that_wrote(1).await;
    let key = positions_key("group");
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
    let mut sink = f.sink_that_wrote(1).await;
    let name = property_key(&positions_key("group"), "events");
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

/// Bytes of the group's key in the summary of each snapshot, oldest first (0: no key).
fn summary_bytes(table: &Table) -> Vec<usize> {
    let key = positions_key("group");
    let mut snapshots: Vec<_> = table.metadata().snapshots().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    snapshots
        .iter()
        .map(|s| {
            s.summary()
                .additional_properties
                .get(&key)
                .map_or(0, String::len)
        })
        .collect()
}

/// Bytes of the table's current metadata file (it holds every snapshot's summary).
fn metadata_bytes(table: &Table) -> u64 {
    let location = table.metadata_location().unwrap();
    std::fs::metadata(location.trim_start_matches("file://"))
        .unwrap()
        .len()
}

/// Positions covering 1,000 partitions, then commits touching one partition each: a
/// commit's summary holds the partitions it wrote, not all 1,000 (before, every summary
/// held every partition, so the metadata grew by partitions × snapshots until expiry),
/// while the positions read back still cover every partition exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_holds_only_the_partitions_its_commit_wrote() {
    const PARTITIONS: i32 = 1_000;
    const OFFSET: i64 = 123_456_789; // a realistic width for the offsets
    let f = Fixture::new("summary-size").await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&one_row_per_partition(&f.schema, 1..PARTITIONS + 1, OFFSET))
        .await
        .unwrap();
    let mut metadata = vec![metadata_bytes(&f.load().await)];
    for round in 0..5 {
        sink.write(&batch(&f.schema, 0, round)).await.unwrap();
        metadata.push(metadata_bytes(&f.load().await));
    }
    let table = f.load().await;
    let sizes = summary_bytes(&table);
    let growth: Vec<u64> = metadata.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("summary bytes per snapshot: {sizes:?}; metadata file growth per commit: {growth:?}");
    assert!(
        sizes[0] > 10_000,
        "the first commit wrote 1,000 partitions: {sizes:?}"
    );
    assert!(
        sizes[1..].iter().all(|&n| n < 64),
        "a one-partition commit's summary holds that partition only: {sizes:?}"
    );
    let positions = recorded_positions(&table, &positions_key("group")).unwrap();
    assert_eq!(positions.get("events", 0), Some(5 * ROWS));
    for partition in 1..=PARTITIONS {
        assert_eq!(positions.get("events", partition), Some(OFFSET + 1));
    }
    // A replay of the wide batch writes nothing: every partition's position was read.
    sink.write(&one_row_per_partition(&f.schema, 1..PARTITIONS + 1, OFFSET))
        .await
        .unwrap();
    assert_eq!(f.load().await.metadata().snapshots().count(), 6);
}

/// A table written by a version that kept positions only in snapshot summaries: they
/// are read from there, and the first commit copies them into the properties, so a
/// later expiry keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_positions_of_older_versions_are_carried_over() {
    let f = Fixture::new("upgrade").await;
    f.sink().await.unwrap(); // creates the table
    let key = positions_key("group");
    f.foreign_snapshot(&[(key.as_str(), r#"{"events": {"0": 100}, "other": {"3": 7}}"#)])
        .await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap(); // a replay: nothing to write
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap();
    f.foreign_snapshot(&[("engine", "compaction")]).await;
    let table = f.expire_all_but_current().await;
    let positions = recorded_positions(&table, &key).unwrap();
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

/// An older version's full-map summary lies below newer summaries holding only what
/// their commit wrote, a compaction snapshot without the key in between, and an older
/// instance (rolling upgrade) commits a summary but no properties: per partition, the
/// higher of properties and newest summary is still exact, also after expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_full_summary_below_partial_ones_keeps_every_position() {
    let f = Fixture::new("full-below-partial").await;
    f.sink().await.unwrap(); // creates the table
    let key = positions_key("group");
    let expect = |table: &Table, want: [i64; 3]| {
        let positions = recorded_positions(table, &key).unwrap();
        let got: Vec<_> = (0..3).map(|p| positions.get("events", p)).collect();
        assert_eq!(got, want.map(Some), "partitions 0, 1, 2");
    };
    // An older version: all positions in the summary, none in the properties.
    f.foreign_snapshot(&[(
        key.as_str(),
        r#"{"events": {"0": 100, "1": 500, "2": 300}}"#,
    )])
    .await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap(); // offsets 100..200
    f.foreign_snapshot(&[("engine", "compaction")]).await;
    expect(&f.load().await, [200, 500, 300]);
    // An older instance still running: it read the newest summary with the key and
    // wrote partition 1 up to 600, in the summary only.
    f.foreign_snapshot(&[(key.as_str(), r#"{"events": {"0": 200, "1": 600}}"#)])
        .await;
    expect(&f.load().await, [200, 600, 300]);
    sink.write(&batch(&f.schema, 2, 3)).await.unwrap(); // offsets 300..400
    sink.write(&batch(&f.schema, 1, 5)).await.unwrap(); // 500..600: a replay
    sink.write(&batch(&f.schema, 0, 1)).await.unwrap(); // a replay
    let table = f.load().await;
    expect(&table, [200, 600, 400]);
    let summary = table.metadata().current_snapshot().unwrap().summary();
    assert_eq!(summary.additional_properties["total-records"], "200");
    let table = f.expire_all_but_current().await;
    expect(&table, [200, 600, 400]);
}

/// The repair of docs/exactly-once.md for a recreated topic (its property removed and,
/// in the same commit, an empty snapshot whose summary is the newest one minus the
/// topic) still forgets the topic when that summary holds only some partitions and an
/// older summary below holds others: only the newest summary is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recreated_topic_repair_forgets_the_topic() {
    let f = Fixture::new("recreated").await;
    f.sink().await.unwrap(); // creates the table
    let key = positions_key("group");
    f.foreign_snapshot(&[(key.as_str(), r#"{"events": {"1": 50}, "other": {"3": 7}}"#)])
        .await;
    let mut sink = f.sink().await.unwrap();
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap();
    let table = f.load().await;
    let newest = &table.metadata().current_snapshot().unwrap().summary();
    let mut kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&newest.additional_properties[&key]).unwrap();
    kept.remove("events");
    let tx = Transaction::new(&table);
    let tx = tx
        .fast_append()
        .set_snapshot_properties(HashMap::from([(
            key.clone(),
            serde_json::Value::Object(kept).to_string(),
        )]))
        .apply(tx)
        .unwrap();
    let tx = tx
        .update_table_properties()
        .remove(property_key(&key, "events"))
        .apply(tx)
        .unwrap();
    let table = tx.commit(&*f.catalog).await.unwrap();

    let positions = recorded_positions(&table, &key).unwrap();
    assert_eq!(positions.get("events", 0), None);
    assert_eq!(
        positions.get("events", 1),
        None,
        "read from an older summary"
    );
    assert_eq!(positions.get("other", 3), Some(7));
    sink.write(&batch(&f.schema, 0, 0)).await.unwrap(); // the new log's records
    let summary = f.load().await;
    let summary = summary.metadata().current_snapshot().unwrap().summary();
    assert_eq!(summary.additional_properties["total-records"], "200");
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
    f.sink_that_wrote(1).await;
    let theirs = positions_key("group/x");
    f.set_property(&property_key(&theirs, "events"), r#"{"0": 999999}"#)
        .await;
    f.set_property(&format!("{theirs}/"), "not ours at all")
        .await;
    let table = f.load().await;
    assert_eq!(position(&table), Some(ROWS));
    assert_eq!(
        recorded_positions(&table, &theirs)
            .unwrap()
            .get("events", 0),
        Some(999999)
    );
}
