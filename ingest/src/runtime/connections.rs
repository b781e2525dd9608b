//! `validate --connect`: reaches each configured service once and reports what it saw.

use std::time::Duration;

use rdkafka::consumer::Consumer as _;

use crate::config::Loaded;
use crate::consumer;

/// `validate --connect`: reaches the broker, ClickHouse and the Iceberg catalog.
pub async fn check_connections(loaded: &Loaded, timeout: Duration) -> anyhow::Result<()> {
    let (brokers, topics) = check_kafka(&loaded.config.kafka, timeout).await?;
    println!("kafka: {brokers} broker(s), {topics} topic(s)");
    if let Some(conn) = &loaded.config.clickhouse {
        let version = check_clickhouse(conn, timeout).await?;
        println!("clickhouse: server {version}");
    }
    if let Some(iceberg) = &loaded.config.iceberg {
        let namespaces = check_iceberg(iceberg, timeout).await?;
        println!("iceberg: catalog reachable, {namespaces} namespace(s)");
    }
    Ok(())
}

/// Fetches the cluster's metadata: how many brokers and topics it has.
pub(super) async fn check_kafka(
    kafka: &crate::config::KafkaConfig,
    timeout: Duration,
) -> anyhow::Result<(usize, usize)> {
    use rdkafka::consumer::BaseConsumer;
    let probe: BaseConsumer<consumer::ProbeContext> = consumer::client_config(kafka)
        .create_with_context(consumer::ProbeContext::default())
        .map_err(consumer::redact_config_error)?;
    let brokers = kafka.brokers.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        probe.fetch_metadata(None, timeout).map_err(|e| {
            // librdkafka's reasons (logs, error events) wait in its queue: serve them.
            let mut refused = None;
            for _ in 0..100 {
                match probe.poll(Duration::ZERO) {
                    Some(Err(e)) if consumer::is_authentication_failure(&e) => refused = Some(e),
                    Some(_) => {}
                    None => break,
                }
            }
            let why = probe
                .context()
                .first_failure()
                .or(refused.map(|e| e.to_string()));
            match why {
                Some(why) => anyhow::anyhow!("kafka brokers `{brokers}` unreachable: {e} ({why})"),
                None => anyhow::anyhow!("kafka brokers `{brokers}` unreachable: {e}"),
            }
        })
    })
    .await??;
    Ok((metadata.brokers().len(), metadata.topics().len()))
}

/// Asks ClickHouse its version.
pub(super) async fn check_clickhouse(
    conn: &ingest_sink_clickhouse::ClickHouseConnection,
    timeout: Duration,
) -> anyhow::Result<String> {
    use ingest_sink_clickhouse::{connect, server_caps, try_client};
    let url = conn.display_url();
    let client = try_client(conn).map_err(|e| anyhow::anyhow!("clickhouse `{url}`: {e}"))?;
    let (version, _) = tokio::time::timeout(timeout, server_caps(&client))
        .await
        .map_err(|_| anyhow::anyhow!("clickhouse `{url}` unreachable: timed out"))?
        .map_err(|e| {
            anyhow::anyhow!("clickhouse `{url}` unreachable: {}", connect::describe(&e))
        })?;
    Ok(version)
}

/// A catalog failure; whatever the catalog client quotes (a URL) loses its password.
pub(super) fn catalog_error(uri: &str, error: &dyn std::fmt::Display) -> anyhow::Error {
    let message = format!("iceberg catalog `{uri}`: {error}");
    anyhow::anyhow!("{}", ingest_sink_api::secret::redact_uris(&message))
}

/// Opens the Iceberg catalog and lists its namespaces: how many there are.
pub(super) async fn check_iceberg(
    iceberg: &crate::config::IcebergConfig,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let uri = iceberg.catalog.display_uri();
    let catalog =
        tokio::time::timeout(timeout, ingest_sink_iceberg::open_catalog(&iceberg.catalog))
            .await
            .map_err(|_| anyhow::anyhow!("iceberg catalog `{uri}` unreachable: timed out"))?
            .map_err(|e| catalog_error(&uri, &e))?;
    let namespaces = catalog
        .list_namespaces(None)
        .await
        .map_err(|e| catalog_error(&uri, &e))?;
    Ok(namespaces.len())
}
