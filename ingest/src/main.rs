//! `ingest`: run the pipeline, check a config, generate load, or dry-run a payload.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ingest::{Health, serve_health};
use ingest::{Loaded, load, metadata_fields};
use ingest::{Message, RouteDecoder};
use ingest::{ProduceOptions, produce};
use ingest_sink_api::DryRun;
use ingest_sink_api::secret::ExposeSecret;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "ingest",
    version,
    about = "Kafka to ClickHouse and Iceberg, exactly as configured"
)]
struct Cli {
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, global = true, env = "INGEST_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the configured topics and write every route's sinks until SIGTERM/SIGINT.
    Run {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file; with --connect also reach the broker and every sink's server.
    Validate {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        connect: bool,
        /// How long each connection check may take.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Write synthetic events shaped by a schema file to a topic.
    Produce(ProduceArgs),
    /// Decode JSON lines with a route and write what one of its sinks would send for
    /// them (ClickHouse: the DDL and the Native insert body), reaching no server.
    DryRun {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
        /// The sink's config key, e.g. `clickhouse`.
        #[arg(long)]
        sink: String,
        /// Route name (default: the first route writing to the sink).
        #[arg(long)]
        route: Option<String>,
        /// One JSON event per line.
        #[arg(long)]
        input: PathBuf,
        /// Folder the sink writes its files into.
        #[arg(long)]
        out: PathBuf,
        /// The sink's own options, e.g. `server_version=18.16` or `positions=false`.
        #[arg(long = "option", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
    },
}

#[derive(clap::Args)]
struct ProduceArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    schema: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Events per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Field that gets sequential ids (others are random).
    #[arg(long)]
    id_field: Option<String>,
    #[arg(long, default_value_t = 0)]
    start_id: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Timestamp fields carry the moment each event is produced (latency runs).
    #[arg(long)]
    live_time: bool,
    /// librdkafka producer setting, repeatable: -X key=value.
    #[arg(short = 'X', value_parser = parse_key_value)]
    property: Vec<(String, String)>,
}

impl ProduceArgs {
    fn into_options(self) -> anyhow::Result<ProduceOptions> {
        Ok(ProduceOptions {
            schema: ingest_schemas::load_schema(&self.schema)?,
            brokers: self.brokers,
            topic: self.topic,
            count: self.count,
            rate: self.rate,
            id_field: self.id_field,
            start_id: self.start_id,
            seed: self.seed,
            live_time: self.live_time,
            properties: self.property,
        })
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got `{text}`"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    ingest::init_logging(cli.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = one_line(&format!("{e:#}"));
            eprintln!("error: {}", ingest_sink_api::secret::scrub(&message));
            std::process::ExitCode::FAILURE
        }
    }
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// Loads a config and has its secrets masked in every log line and error from now on.
fn load_config(path: &std::path::Path) -> anyhow::Result<Loaded> {
    let loaded = load(path)?;
    for secret in &loaded.secrets {
        ingest_sink_api::secret::register(secret.expose_secret());
    }
    Ok(loaded)
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(load_config(&config)?).await,
        Command::Validate {
            config,
            connect,
            timeout,
        } => {
            let loaded = load_config(&config)?;
            for route in &loaded.routes {
                let sinks: Vec<String> = route
                    .sinks
                    .iter()
                    .map(|s| format!("{}:{}", s.key, s.name))
                    .collect();
                println!(
                    "route {}: {} fields -> {}",
                    route.name,
                    route.schema.fields().len(),
                    sinks.join(", ")
                );
            }
            if connect {
                ingest::check_connections(&loaded, timeout).await?;
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Produce(args) => {
            let options = args.into_options()?;
            for (key, value) in &options.properties {
                if ingest_sink_api::secret::is_sensitive_key(key) {
                    ingest_sink_api::secret::register(value);
                }
            }
            let (count, topic) = (options.count, options.topic.clone());
            let elapsed = tokio::task::spawn_blocking(move || produce(&options)).await??;
            println!(
                "produced {count} events to {topic} in {:.2}s ({:.0}/s)",
                elapsed.as_secs_f64(),
                count as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            Ok(())
        }
        Command::DryRun {
            config,
            sink,
            route,
            input,
            out,
            options,
        } => {
            let loaded = load_config(&config)?;
            let options = options.into_iter().collect();
            dry_run(&loaded, &sink, route.as_deref(), &input, (out, options))
        }
    }
}

async fn run(loaded: Loaded) -> anyhow::Result<()> {
    let health = Health::new();
    let listen = loaded.config.server.listen.clone();
    let server_health = health.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_health(&listen, server_health).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        let _ = stop.send(true);
    });
    ingest::run(loaded, health, stopped).await
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Decodes `input` with the route and has its `sink` table write what it would send.
fn dry_run(
    loaded: &Loaded,
    sink: &str,
    route: Option<&str>,
    input: &std::path::Path,
    (out, options): (PathBuf, BTreeMap<String, String>),
) -> anyhow::Result<()> {
    let (route, table) = loaded
        .routes
        .iter()
        .filter(|r| route.is_none_or(|name| r.name == name))
        .find_map(|r| Some((r, r.sinks.iter().find(|s| s.key == sink)?)))
        .ok_or_else(|| anyhow::anyhow!("no route writing to `{sink}` matches"))?;
    let metadata = metadata_fields(&route.config.metadata);
    let mut decoder = RouteDecoder::new(&route.payload, route.schema.clone(), metadata, 1 << 20)?;
    let text = std::fs::read(input)?;
    let mut rejected = Vec::new();
    for (line_no, line) in text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let message = Message::payload_only("file", 0, line_no as i64, line);
        decoder.push(&message, &mut rejected);
    }
    let batches = decoder.take(&mut rejected);
    if let Some(bad) = rejected.first() {
        anyhow::bail!(
            "{}: line {}: {}",
            input.display(),
            bad.offset + 1,
            bad.error
        );
    }
    std::fs::create_dir_all(&out)?;
    let run = DryRun {
        schema: decoder.output_schema(),
        batches: &batches,
        out,
        options,
    };
    let done = table
        .table
        .dry_run(&run)
        .map_err(|e| anyhow::anyhow!("{sink}: {e}"))?;
    println!("{done}");
    Ok(())
}
