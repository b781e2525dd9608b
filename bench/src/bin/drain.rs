//! The physical ceiling for anything that reads this broker here: an rdkafka consumer
//! that reads a topic from the beginning to `--count` records and does nothing else.

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    count: u64,
    /// librdkafka consumer setting, repeatable: -X key=value (e.g. fetch.min.bytes=1).
    #[arg(short = 'X')]
    property: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "ingest-bench-drain")
        .set("enable.auto.commit", "false");
    for kv in &args.property {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("-X needs key=value"))?;
        config.set(k, v);
    }
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            assignment.add_partition_offset(&args.topic, partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.count {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("drained only {records} of {} records in 600 s", args.count);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(e)) => eprintln!("kafka: {e}"),
            None => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"records": records, "bytes": bytes, "seconds": seconds})
    );
    Ok(())
}
