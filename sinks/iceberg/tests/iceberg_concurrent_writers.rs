//! Two sinks (as two service instances would) append to one Iceberg table at the same
//! time through a real SQLite catalog on the local filesystem. Every file must land
//! once, and the table's positions must end with both writers' Kafka positions: a
//! writer that lost a commit race rebuilds its positions on the winner's snapshot
//! instead of overwriting them. A catalog that lets a rival commit just before the
//! sink's (`Racing`) makes races on demand: the files already written are committed
//! when the rows to write did not change, new ones only when they did.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use common::{ROWS, batch, catalog_config, events_table, scan_all};
use futures::future::BoxFuture;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent};
use ingest_sink_api::Sink;
use ingest_sink_iceberg::{
    CatalogConfig, IcebergSink, open_catalog, positions_key, recorded_positions,
};

const COMMITS: i64 = 12;

/// The table as a reader sees it, and how many rows its current snapshot holds.
async fn read_back(config: &CatalogConfig) -> (iceberg::table::Table, i64) {
    let catalog = open_catalog(config).await.unwrap();
    let ident = iceberg::TableIdent::from_strs(["ns", "events"]).unwrap();
    let loaded = catalog.load_table(&ident).await.unwrap();
    let rows: usize = scan_all(&loaded)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    (loaded, rows as i64)
}

/// The ids the table holds, in no order.
async fn ids(config: &CatalogConfig) -> Vec<i64> {
    let catalog = open_catalog(config).await.unwrap();
    let ident = TableIdent::from_strs(["ns", "events"]).unwrap();
    let batches = scan_all(&catalog.load_table(&ident).await.unwrap()).await;
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            ids.values().to_vec()
        })
        .collect()
}

/// Parquet files under the warehouse: every data file written, committed or not.
fn parquet_files(config: &CatalogConfig) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| match p.extension() {
                    _ if p.is_dir() => count(&p),
                    Some(ext) if ext == "parquet" => 1,
                    _ => 0,
                })
                .sum()
        })
    }
    count(Path::new(config.warehouse.trim_start_matches("file://")))
}

/// Another writer's commit, made while the sink's commit is on its way.
type Rival = Box<dyn FnOnce(Arc<dyn Catalog>) -> BoxFuture<'static, ()> + Send>;

/// A catalog on which the sink's next commits each lose a race: before passing one on,
/// it lets a rival commit on the real catalog, so the branch has moved and the catalog
/// refuses the sink's commit.
struct Racing {
    inner: Arc<dyn Catalog>,
    rivals: tokio::sync::Mutex<Vec<Rival>>,
}

impl std::fmt::Debug for Racing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Racing")
    }
}

/// A rival that commits a snapshot of another engine (no rows, no key of ours).
fn foreign_snapshot() -> Rival {
    Box::new(|catalog| {
        Box::pin(async move {
            let ident = TableIdent::from_strs(["ns", "events"]).unwrap();
            let table = catalog.load_table(&ident).await.unwrap();
            let tx = Transaction::new(&table);
            let tx = tx
                .fast_append()
                .set_snapshot_properties(HashMap::from([("engine".into(), "other".into())]))
                .apply(tx)
                .unwrap();
            tx.commit(&*catalog).await.unwrap();
        })
    })
}

/// A rival that is another instance writing `rows`.
fn instance_writing(rows: ingest_sink_api::SinkBatch) -> Rival {
    Box::new(|catalog| {
        Box::pin(async move {
            let (schema, table) = events_table();
            let mut sink = IcebergSink::open(catalog, "ns", &table, schema, "group")
                .await
                .unwrap();
            sink.write(&rows).await.unwrap();
        })
    })
}

#[async_trait::async_trait]
impl Catalog for Racing {
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        let rival = self.rivals.lock().await.pop();
        if let Some(rival) = rival {
            rival(Arc::clone(&self.inner)).await;
        }
        self.inner.update_table(commit).await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.inner.load_table(table).await
    }
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}

/// A sink on `config`'s catalog whose next commits lose a race to `rivals` (the last
/// one first); the table exists before it opens.
async fn racing_sink(config: &CatalogConfig, rivals: Vec<Rival>) -> IcebergSink {
    let inner = open_catalog(config).await.unwrap();
    let (schema, table) = events_table();
    IcebergSink::open(Arc::clone(&inner), "ns", &table, schema.clone(), "group")
        .await
        .unwrap();
    let racing = Racing {
        inner,
        rivals: tokio::sync::Mutex::new(rivals),
    };
    IcebergSink::open(Arc::new(racing), "ns", &table, schema, "group")
        .await
        .unwrap()
}

/// Commits lost to writers that recorded nothing of the batch (here another engine's
/// snapshots) leave the rows to write as they were: the files written for the first
/// attempt are committed, not written again (before, every lost race wrote the batch's
/// files anew: 4 files for 3 lost races, 3 of them orphans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_commits_the_files_already_written() {
    let config = catalog_config("reuse");
    let (schema, _) = events_table();
    let rivals = vec![foreign_snapshot(), foreign_snapshot(), foreign_snapshot()];
    let mut sink = racing_sink(&config, rivals).await;
    sink.write(&batch(&schema, 0, 0)).await.unwrap();

    let (loaded, rows) = read_back(&config).await;
    assert_eq!(rows, ROWS);
    assert_eq!(
        loaded.metadata().snapshots().count(),
        4,
        "3 rivals, then ours"
    );
    assert_eq!(
        parquet_files(&config),
        1,
        "files written for one batch through 3 lost races"
    );
}

/// A commit lost to another instance that wrote part of the batch: the rows left to
/// write changed, so new files hold only those (the first ones stay orphans), and the
/// table holds every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_race_to_a_writer_of_some_rows_writes_only_the_rest() {
    let config = catalog_config("rewrite");
    let (schema, _) = events_table();
    let mut both = batch(&schema, 0, 0);
    both.append(&batch(&schema, 1, 0));
    let rivals = vec![instance_writing(batch(&schema, 1, 0))];
    let mut sink = racing_sink(&config, rivals).await;
    sink.write(&both).await.unwrap();

    let ids = ids(&config).await;
    assert_eq!(ids.len() as i64, 2 * ROWS);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no row twice"
    );
    let (loaded, _) = read_back(&config).await;
    let positions = recorded_positions(&loaded, &positions_key("group")).unwrap();
    assert_eq!(positions.get("events", 0), Some(ROWS));
    assert_eq!(positions.get("events", 1), Some(ROWS));
    assert_eq!(
        parquet_files(&config),
        3,
        "ours (orphaned), the rival's, ours again with partition 0 only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_keep_every_file_and_every_position() {
    let config = catalog_config("cas");
    let (schema, table) = events_table();
    let mut writers = Vec::new();
    for _ in 0..2 {
        // Each writer has its own catalog connection, like a separate process.
        let catalog = open_catalog(&config).await.unwrap();
        writers.push(
            IcebergSink::open(catalog, "ns", &table, schema.clone(), "group")
                .await
                .unwrap(),
        );
    }
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(partition, mut sink)| {
            let schema = schema.clone();
            tokio::spawn(async move {
                for round in 0..COMMITS {
                    sink.write(&batch(&schema, partition as i32, round))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let (loaded, rows) = read_back(&config).await;
    assert_eq!(
        rows,
        2 * COMMITS * ROWS,
        "every appended file is in the table once"
    );
    let positions = recorded_positions(&loaded, &positions_key("group")).unwrap();
    assert_eq!(positions.get("events", 0), Some(COMMITS * ROWS));
    assert_eq!(positions.get("events", 1), Some(COMMITS * ROWS));
    assert_eq!(
        loaded.metadata().snapshots().count() as i64,
        2 * COMMITS,
        "one snapshot per write"
    );
}

/// A batch replayed after a crash (the table already records its positions) adds
/// nothing; the next batch adds its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_is_not_written_twice() {
    let config = catalog_config("replay");
    let (schema, table) = events_table();
    let catalog = open_catalog(&config).await.unwrap();
    let mut sink = IcebergSink::open(catalog, "ns", &table, schema.clone(), "group")
        .await
        .unwrap();
    sink.write(&batch(&schema, 0, 0)).await.unwrap();
    sink.write(&batch(&schema, 0, 0)).await.unwrap(); // the same batch again: a replay
    sink.write(&batch(&schema, 0, 1)).await.unwrap();
    let (loaded, rows) = read_back(&config).await;
    assert_eq!(rows, 2 * ROWS);
    assert_eq!(
        recorded_positions(&loaded, &positions_key("group"))
            .unwrap()
            .get("events", 0),
        Some(2 * ROWS)
    );
}
