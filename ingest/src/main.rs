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
    /// Per route and sink: positions, records behind, the completeness watermark, the
    /// last write and the last error, read from the broker, the sinks and (when it
    /// answers) the running service. Changes nothing; runs from anywhere that reaches
    /// them.
    Status {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
        /// The report as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// The service's admin address (default: http://127.0.0.1:<port of
        /// `server.listen`>).
        #[arg(long)]
        service: Option<String>,
    },
    /// The dead-letter topics: what they hold, and replaying them after a fix.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Sends dead letters back through their route (decode, checks, both sinks),
    /// exactly once: each letter is replayed once however often this runs; what still
    /// fails goes back to the dead-letter topic with its new reason.
    Replay {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
        /// Only letters of this error class (e.g. `schema_mismatch`, `unknown_schema`).
        #[arg(long, value_parser = parse_class)]
        reason: Option<ingest::ErrorClass>,
        /// Only letters dead-lettered at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Only letters dead-lettered before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        /// Only letters from this source topic (repeatable).
        #[arg(long = "source-topic")]
        source_topics: Vec<String>,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Letters per Kafka transaction (each commits its records and receipts).
        #[arg(long, default_value_t = ingest::REPLAY_PER_TRANSACTION as u64, value_parser = clap::value_parser!(u64).range(1..))]
        per_transaction: u64,
    },
    /// Counts per route and reason, waiting and replayed, with a few examples.
    Show {
        #[arg(long, short, env = "INGEST_CONFIG")]
        config: PathBuf,
        /// Examples per route and reason.
        #[arg(long, default_value_t = 3)]
        examples: usize,
    },
}

fn parse_class(text: &str) -> Result<ingest::ErrorClass, String> {
    ingest::ErrorClass::parse(text).ok_or_else(|| {
        let all: Vec<&str> = ingest::ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown reason `{text}`; one of {}", all.join(", "))
    })
}

fn parse_time(text: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{e} (RFC 3339, e.g. 2026-12-07T10:00:00Z)"))?;
    let since = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    Ok(since.as_millis() as i64)
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
        Command::Status {
            config,
            json,
            service,
        } => {
            let loaded = load_config(&config)?;
            let report = ingest::status_report(&loaded, service).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs_f64();
                print!("{}", ingest::render_status(&report, now));
            }
            Ok(())
        }
        Command::Dlq { command } => dlq(command).await,
    }
}

async fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Replay {
            config,
            reason,
            from,
            to,
            source_topics,
            dry_run,
            per_transaction,
        } => {
            let loaded = load_config(&config)?;
            let filter = ingest::ReplayFilter {
                reason,
                from,
                to,
                source_topics,
            };
            let per_transaction = if dry_run { 0 } else { per_transaction as usize };
            let report = ingest::replay(&loaded, &filter, per_transaction).await?;
            let mode = if dry_run { "dry run: " } else { "" };
            println!("{mode}{report}");
            Ok(())
        }
        DlqCommand::Show { config, examples } => {
            let loaded = load_config(&config)?;
            print!("{}", ingest::show_dead_letters(&loaded, examples).await?);
            Ok(())
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
    let drain_timeout = loaded.config.server.drain_timeout;
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            ?drain_timeout,
            "signal received: writing open batches and committing"
        );
        let _ = stop.send(true);
        tokio::time::sleep(drain_timeout).await;
        // Like a crash: nothing unwritten was committed, so the next owner replays it.
        tracing::error!(
            ?drain_timeout,
            "the drain took longer than server.drain_timeout: \
            exiting without committing what is not written (the partitions' next owner reads it again)"
        );
        std::process::exit(DRAIN_TIMED_OUT);
    });
    ingest::run(loaded, health, stopped).await
}

/// The exit code when the drain after SIGTERM outlasted `server.drain_timeout`.
const DRAIN_TIMED_OUT: i32 = 3;

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
