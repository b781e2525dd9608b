//! Start-up errors name the service at fault without printing its credentials.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ingest_sink_api::{Fence, Fenced, OffsetMap, Partition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connections::check_kafka;
use super::open::open_routes;
use super::*;
use crate::config::{Loaded, load_str};

const SECRET: &str = "pw-Secret-42";

fn dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ingest-runtime-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("e.yaml"), "fields:\n  - {name: id, type: int64}\n").unwrap();
    dir
}

/// A config whose `kafka.properties`, `clickhouse` and `iceberg` sections are given.
fn loaded(kafka_properties: &str, sinks: &str, route_sinks: &str) -> Loaded {
    let text = format!(
        "kafka: {{ brokers: \"127.0.0.1:1\", group_id: g, properties: {{ {kafka_properties} }} }}\n{sinks}\nroutes:\n  - topics: [e]\n    schema: e.yaml\n    {route_sinks}\n"
    );
    load_str(&text, &dir().join("c.yaml"), &|_| None).unwrap()
}

fn catalog(uri: &str) -> Loaded {
    let warehouse = dir().join("w");
    loaded(
        "",
        &format!(
            "iceberg:\n  catalog: {{ type: sql, uri: \"{uri}\", warehouse: \"file://{}\" }}\n  namespace: ns",
            warehouse.display()
        ),
        "iceberg: { table: e }",
    )
}

struct NoFence;

#[async_trait::async_trait]
impl Fence for NoFence {
    async fn check(&self, _: &OffsetMap, _: u64) -> Result<Vec<Partition>, Fenced> {
        Ok(Vec::new())
    }
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
}

/// A PostgreSQL server that refuses every login, as after a password change.
async fn refusing_postgres() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 4];
                    if socket.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if body == 80877103u32.to_be_bytes() {
                        // SSLRequest: no TLS here.
                        let _ = socket.write_all(b"N").await;
                        continue;
                    }
                    let mut fields = Vec::new();
                    for (code, text) in [
                        (b'S', "FATAL"),
                        (b'V', "FATAL"),
                        (b'C', "28P01"),
                        (b'M', "password authentication failed for user \"ingest\""),
                    ] {
                        fields.push(code);
                        fields.extend_from_slice(text.as_bytes());
                        fields.push(0);
                    }
                    fields.push(0);
                    let mut message = vec![b'E'];
                    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                    message.extend(fields);
                    let _ = socket.write_all(&message).await;
                    return;
                }
            });
        }
    });
    port
}

/// Accepts connections and never answers.
async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// What `validate --connect` says of the sink configured under `key`, checked to
/// hold no secret.
async fn connection_error(loaded: &Loaded, key: &str, timeout: Duration) -> String {
    let (_, section) = loaded.sinks.iter().find(|(k, _)| *k == key).unwrap();
    let err = format!("{:#}", section.check_connection(timeout).await.unwrap_err());
    assert_hidden("validate --connect", &err);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_refusing_the_login_is_reported_without_the_password() {
    let port = refusing_postgres().await;
    let loaded = catalog(&format!("postgres://ingest:{SECRET}@127.0.0.1:{port}/db"));
    let err = connection_error(&loaded, "iceberg", Duration::from_secs(20)).await;
    assert!(
        err.contains(&format!("postgres://ingest:***@127.0.0.1:{port}/db")),
        "{err}"
    );
    assert!(err.contains("password authentication failed"), "{err}");

    let err = format!(
        "{:#}",
        open_routes(&loaded, Arc::new(NoFence)).await.err().unwrap()
    );
    assert_hidden("run", &err);
    assert!(err.contains("password authentication failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_timeout_is_reported_without_the_password() {
    let port = silent_server().await;
    let loaded = catalog(&format!("postgres://ingest:{SECRET}@127.0.0.1:{port}/db"));
    let err = connection_error(&loaded, "iceberg", Duration::from_millis(300)).await;
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_url_credentials_are_not_shown() {
    let port = silent_server().await;
    let loaded = loaded(
        "",
        &format!("clickhouse: {{ url: \"http://ingest:{SECRET}@127.0.0.1:{port}\" }}"),
        "clickhouse: { table: e }",
    );
    let err = connection_error(&loaded, "clickhouse", Duration::from_millis(300)).await;
    assert!(err.contains("http://ingest:***@127.0.0.1"), "{err}");

    // Nothing listens on a port just released: the sink cannot connect.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let loaded = self::loaded(
        "",
        &format!("clickhouse: {{ url: \"http://ingest:{SECRET}@127.0.0.1:{closed}\" }}"),
        "clickhouse: { table: e }",
    );
    let err = format!(
        "{:#}",
        open_routes(&loaded, Arc::new(NoFence)).await.err().unwrap()
    );
    assert_hidden("run", &err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_property_errors_do_not_show_values() {
    // A misspelt key: librdkafka does not know it, so nothing says it is a secret.
    for (properties, producer_refuses) in [
        (format!("sasl.pasword: \"{SECRET}\""), true),
        // The producer only takes security.*, sasl.* and ssl.* settings.
        (
            format!("sasl.username: ingest, sasl_password: \"{SECRET}\""),
            false,
        ),
    ] {
        let loaded = loaded(
            &properties,
            "clickhouse: { url: \"http://127.0.0.1:1\" }",
            "clickhouse: { table: e }",
        );
        let kafka = &loaded.config.kafka;
        let err = format!(
            "{:#}",
            check_kafka(kafka, Duration::from_millis(300))
                .await
                .unwrap_err()
        );
        assert_hidden("validate --connect", &err);
        let err = consumer::create(kafka).err().expect("consumer refused");
        assert_hidden("the consumer", &format!("{err} {err:?}"));
        if producer_refuses {
            let err = DeadLetters::new(kafka).err().expect("producer refused");
            assert_hidden("the dead-letter producer", &format!("{err} {err:?}"));
        }
    }
}

#[test]
fn refused_logins_are_told_apart_from_outages() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    assert!(consumer::is_authentication_failure(
        &KafkaError::MessageConsumption(RDKafkaErrorCode::Authentication)
    ));
    assert!(consumer::is_authentication_failure(
        &KafkaError::MessageConsumption(RDKafkaErrorCode::SaslAuthenticationFailed)
    ));
    assert!(!consumer::is_authentication_failure(
        &KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown)
    ));
}
