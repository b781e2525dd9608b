//! Diagnostic: the bare drain through rdkafka's async StreamConsumer with a consumer
//! group (what the service uses), to compare with `drain` (BaseConsumer, assign).

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    count: u64,
    #[arg(short = 'X')]
    property: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("stream-drain-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    for kv in &args.property {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("-X needs key=value"))?;
        config.set(k, v);
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&args.topic])?;
    let mut started = None;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < args.count {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
        started.get_or_insert_with(Instant::now);
        records += 1;
        bytes += message.payload_len() as u64;
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({"records": records, "bytes": bytes, "seconds": seconds})
    );
    Ok(())
}
