//! Broker faults a real broker cannot produce on demand, injected with librdkafka's
//! in-process mock cluster (the only mock here): errors on fetch, offset commit, join
//! and heartbeat, and a broker going down. The sinks are real: the ClickHouse server of
//! the local stack and an Iceberg table in a SQLite catalog on the local filesystem.
//! However the broker misbehaves, each sink must end with every produced event once.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ingest::Health;
use ingest::{Loaded, load_str};
use ingest_sink_clickhouse::{ClickHouseConnection, client, query_json};
use rdkafka::ClientConfig;
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::watch;

const EVENTS: u64 = 20_000;
const PARTITIONS: i32 = 4;

fn clickhouse_url() -> String {
    std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn config(bootstrap: &str, dir: &Path, database: &str) -> Loaded {
    let schema = dir.join("events.yaml");
    std::fs::write(
        &schema,
        "fields:\n  - { name: event_id, type: int64 }\n  - { name: user, type: string }\n  - { name: amount, type: \"float64?\" }\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
kafka:
  brokers: "{bootstrap}"
  group_id: faults
  properties:
    session.timeout.ms: "6000"
    heartbeat.interval.ms: "500"
clickhouse:
  url: "{ch}"
  database: {database}
iceberg:
  catalog: {{ type: sql, uri: "sqlite://{dir}/catalog.db", warehouse: "file://{dir}/warehouse" }}
  namespace: faults
routes:
  - topics: [events]
    schema: events.yaml
    batch: {{ max_rows: 3000, max_age: 200ms }}
    clickhouse: {{ table: events, order_by: [event_id] }}
    iceberg: {{ table: events, batch: {{ max_rows: 7000, max_age: 700ms }} }}
"#,
        ch = clickhouse_url(),
        dir = dir.display(),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    load_str(&yaml, &path, &|_| None).unwrap()
}

async fn produce(bootstrap: &str, from: u64, to: u64) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (from..to).map(|id| {
        let payload = format!(
            r#"{{"event_id": {id}, "user": "u{}", "amount": 1.5}}"#,
            id % 97
        );
        let key = id.to_string();
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to("events")
                        .key(&key)
                        .payload(&payload)
                        .partition((id % PARTITIONS as u64) as i32),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
}

/// Event ids in the ClickHouse table (every row, duplicates kept).
async fn clickhouse_ids(database: &str) -> Vec<u64> {
    let conn: ClickHouseConnection =
        serde_json::from_value(serde_json::json!({ "url": clickhouse_url() })).unwrap();
    query_json(
        &client(&conn),
        &format!("SELECT event_id FROM {database}.events"),
    )
    .await
    .unwrap_or_default()
    .iter()
    .filter_map(|r| {
        r["event_id"]
            .as_u64()
            .or_else(|| r["event_id"].as_str()?.parse().ok())
    })
    .collect()
}

/// Event ids in the Iceberg table, read back through a scan of its current snapshot.
async fn iceberg_ids(dir: &Path) -> Vec<u64> {
    let dir = dir.display();
    let catalog: ingest_sink_iceberg::CatalogConfig = serde_json::from_value(serde_json::json!({
        "type": "sql",
        "uri": format!("sqlite://{dir}/catalog.db"),
        "warehouse": format!("file://{dir}/warehouse"),
    }))
    .unwrap();
    let catalog = ingest_sink_iceberg::open_catalog(&catalog).await.unwrap();
    let ident = iceberg::TableIdent::from_strs(["faults", "events"]).unwrap();
    let Ok(table) = catalog.load_table(&ident).await else {
        return Vec::new();
    };
    let batches: Vec<arrow_array::RecordBatch> = table
        .scan()
        .select(["event_id"])
        .build()
        .unwrap()
        .to_arrow()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap();
            ids.values().iter().map(|v| *v as u64).collect::<Vec<_>>()
        })
        .collect()
}

/// Missing and duplicated ids of a sink against 0..EVENTS.
fn compare(sink: &str, ids: &[u64]) -> Result<(), String> {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for id in ids {
        *seen.entry(*id).or_default() += 1;
    }
    let missing: Vec<u64> = (0..EVENTS)
        .filter(|i| !seen.contains_key(i))
        .take(10)
        .collect();
    let doubled: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .take(10)
        .collect();
    if ids.len() as u64 == EVENTS && missing.is_empty() && doubled.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{sink}: {} rows, missing e.g. {missing:?}, duplicated e.g. {doubled:?}",
            ids.len()
        ))
    }
}

/// The service on a runtime of its own, as `main` runs it.
fn start(
    loaded: Loaded,
    stopped: watch::Receiver<bool>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(ingest::run(loaded, Health::new(), stopped))
    })
}

/// The service's warnings go to the test's output.
fn log_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
}

/// Waits until both sinks hold every event, then stops the service, which must end
/// without error.
async fn stop_once_every_event_is_in(
    service: std::thread::JoinHandle<anyhow::Result<()>>,
    stop: watch::Sender<bool>,
    database: &str,
    dir: &Path,
) {
    wait_for_every_event(&service, database, dir).await;
    stop.send(true).unwrap();
    service
        .join()
        .unwrap()
        .expect("the service ends without error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_once_in_each_sink_despite_broker_faults() {
    log_warnings();
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("events", PARTITIONS, 3).unwrap();
    // Broker 2 leads two partitions and coordinates the group: taking it down later
    // stops fetches, heartbeats and commits at once.
    cluster.partition_leader("events", 0, Some(2)).unwrap();
    cluster.partition_leader("events", 1, Some(2)).unwrap();
    cluster
        .coordinator(MockCoordinator::Group("faults".into()), 2)
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (dir, database, loaded) = prepare("faults", &bootstrap);

    produce(&bootstrap, 0, EVENTS / 2).await;
    // Faults from the start: the group join and the first fetches fail a few times.
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::JoinGroup,
        &[RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 3],
    );
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );

    let (stop, stopped) = watch::channel(false);
    let service = start(loaded.clone(), stopped);

    // Mid-run: heartbeats fail while the second half is produced, then one broker goes
    // down for two seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.request_errors(
        RDKafkaApiKey::Heartbeat,
        &[
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        ],
    );
    produce(&bootstrap, EVENTS / 2, EVENTS).await;
    cluster.broker_down(2).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(2).unwrap();

    stop_once_every_event_is_in(service, stop, &database, &dir).await;

    // A second instance of the same group starts from the committed offsets (or the
    // sinks' own positions) and must add nothing.
    let (stop, stopped) = watch::channel(false);
    let again = start(loaded.clone(), stopped);
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.send(true).unwrap();
    again.join().unwrap().unwrap();

    verify_and_clean_up(&database, &dir).await;
}

/// Kafka answers a commit made while the group rebalances with ILLEGAL_GENERATION or
/// REBALANCE_IN_PROGRESS (seen on Kafka 4.4 whenever a member joins a cooperative
/// group). The member still owns its partitions: the rows must be written, not dropped
/// as if another member owned them (that left a gap: the consumer read on past them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_refused_during_a_rebalance_loses_nothing() {
    log_warnings();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let (dir, database, loaded) = prepare("faults_gen", &bootstrap);

    produce(&bootstrap, 0, EVENTS / 2).await;
    let (stop, stopped) = watch::channel(false);
    let service = start(loaded.clone(), stopped);
    tokio::time::sleep(Duration::from_secs(3)).await;
    use RDKafkaRespErr::*;
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
            RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        ],
    );
    produce(&bootstrap, EVENTS / 2, EVENTS).await;
    stop_once_every_event_is_in(service, stop, &database, &dir).await;
    verify_and_clean_up(&database, &dir).await;
}

/// A fresh directory and ClickHouse database for one test (`name` and the process id),
/// and the service config over them.
fn prepare(name: &str, bootstrap: &str) -> (std::path::PathBuf, String, Loaded) {
    let dir = std::env::temp_dir().join(format!("ingest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("{name}_{}", std::process::id());
    let loaded = config(bootstrap, &dir, &database);
    (dir, database, loaded)
}

/// Waits until both sinks hold at least EVENTS rows (fails if the service stops or
/// two minutes pass: rows that never come are the loss this file looks for).
async fn wait_for_every_event(
    service: &std::thread::JoinHandle<anyhow::Result<()>>,
    database: &str,
    dir: &Path,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ch = clickhouse_ids(database).await.len() as u64;
        let ice = iceberg_ids(dir).await.len() as u64;
        if ch >= EVENTS && ice >= EVENTS {
            return;
        }
        assert!(!service.is_finished(), "the service stopped early");
        assert!(
            Instant::now() < deadline,
            "timed out: {ch} rows in ClickHouse, {ice} in Iceberg of {EVENTS}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each sink holds every event once; drops the test's database and files either way.
async fn verify_and_clean_up(database: &str, dir: &Path) {
    let ch = compare("clickhouse", &clickhouse_ids(database).await);
    let ice = compare("iceberg", &iceberg_ids(dir).await);
    let conn: ClickHouseConnection =
        serde_json::from_value(serde_json::json!({ "url": clickhouse_url() })).unwrap();
    let _ = client(&conn)
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await;
    let _ = std::fs::remove_dir_all(dir);
    ch.and(ice).unwrap();
}
