//! `validate --connect`: reaches each configured service once and reports what it saw.

use std::time::Duration;

use rdkafka::consumer::Consumer as _;

use crate::config::Loaded;
use crate::consumer;

/// `validate --connect`: reaches the broker and each configured sink's server.
pub async fn check_connections(loaded: &Loaded, timeout: Duration) -> anyhow::Result<()> {
    let (brokers, topics) = check_kafka(&loaded.config.kafka, timeout).await?;
    println!("kafka: {brokers} broker(s), {topics} topic(s)");
    for (key, section) in &loaded.sinks {
        let seen = section.check_connection(timeout).await?;
        println!("{key}: {seen}");
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
