//! The service configuration: YAML with `${ENV}` references, checked strictly.
//!
//! Every problem is reported as one line naming the file and the key path, e.g.
//! `config.yaml: at routes[0].batch: unknown field `max_rowz``.

mod env;
mod payload;
mod registry;
mod route;
mod sinks;
mod topics;

pub use registry::SchemaRegistryConfig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::SchemaRef;
pub use ingest_sink_api::MetadataKind;
use ingest_sink_api::secret::{self, SecretString};
use ingest_sink_api::{SinkSection, SinkTable};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// Where records that cannot be decoded go, unless a route says otherwise.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    /// Where Avro routes find writer schemas by id (and their subject's latest schema).
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Threads that decode full chunks of records while reading goes on. Default: the
    /// machine's cores less two (at most 8; none below 4 cores); 0 decodes where
    /// records are read.
    #[serde(default)]
    pub decode_workers: Option<usize>,
    pub routes: Vec<RouteConfig>,
}

/// `Debug` shows sensitive properties (`sasl.password`, `ssl.key.password`, ...) as `***`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    /// librdkafka settings passed through as is (security.protocol, sasl.*, fetch.*).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// How often the topic list is refreshed: a new topic matching a route's
    /// `topic_pattern` (or a listed topic created late) is read within this time.
    /// Each refresh is one metadata request per instance (all topics when a pattern is
    /// subscribed), so clusters with very many topics may want it longer.
    #[serde(default = "default_topic_discovery_interval", with = "humantime_serde")]
    pub topic_discovery_interval: Duration,
}

fn default_topic_discovery_interval() -> Duration {
    Duration::from_secs(5)
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &secret::redact_uri(&self.brokers))
            .field("group_id", &self.group_id)
            .field("properties", &secret::redacted_map(&self.properties))
            .field("topic_discovery_interval", &self.topic_discovery_interval)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    pub topic: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Health (`/health`, `/ready`) and Prometheus (`/metrics`) endpoint.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// After SIGTERM, how long writing the open batches and committing may take. Past
    /// it the service exits without committing what it has not written (a sink hanging,
    /// say): the partitions' next owner reads it again, as after a crash. Keep it below
    /// the pod's `terminationGracePeriodSeconds` (the chart checks), so the drain is
    /// never cut by a SIGKILL it did not expect.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(45)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Label in logs and metrics; defaults to the first topic or the pattern.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression matched against whole topic names (librdkafka subscribes to
    /// it and picks up new matching topics).
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// Schema file, relative to the config file's directory: the YAML grammar for
    /// JSON, an Avro schema (`.avsc`) for Avro. An Avro route without one reads its
    /// registry subject's latest schema at start.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// The registry subject an Avro route's table schema comes from (default
    /// `<topic>-value`).
    #[serde(default)]
    pub subject: Option<String>,
    /// A Protobuf route's message, by full name (default: the schema's first message).
    #[serde(default)]
    pub message: Option<String>,
    /// How the records' payloads are encoded.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Lenient readings of JSON numbers this route allows (none by default: a value
    /// of the wrong kind is a bad record).
    #[serde(default)]
    pub coerce: Vec<Coercion>,
    /// Kafka coordinates stored as extra columns, by the column name to use.
    #[serde(default)]
    pub metadata: MetadataColumns,
    #[serde(default)]
    pub batch: BatchConfig,
    /// What happens to a record that does not match the schema.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// Overrides the global dead-letter topic for this route.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterConfig>,
    /// What happens to records of a writer schema the route's table cannot take (a
    /// registry version that changes a type against the promotion rules, drops a
    /// required field, renames one without an alias).
    #[serde(default)]
    pub on_incompatible: OnIncompatible,
    /// What happens when Kafka deleted records a sink still needs (retention overtook
    /// a sink that was down).
    #[serde(default)]
    pub on_lost_records: OnLostRecords,
    /// Records whose key and value together are larger are bad records (`too_large`):
    /// they go where `on_error` says instead of into the decoder and the sinks.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// What time the route's completeness watermark is in (`watermark/`).
    #[serde(default)]
    pub watermark: WatermarkConfig,
}

/// The time a route's completeness watermark is kept in.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// A payload field holding each record's event time (a timestamp or date column);
    /// the records' Kafka timestamps when absent.
    #[serde(default)]
    pub time_field: Option<String>,
}

/// 1 MiB: Kafka's own default limit for a record batch, so a record over it was let in
/// by a topic configured for larger ones.
fn default_max_message_bytes() -> usize {
    1 << 20
}

/// How a route's payloads are encoded (`decode/format.rs`; one module per format).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// One JSON object per record.
    #[default]
    Json,
    /// Avro: schema-registry framed when `schema_registry` is configured, else bare
    /// bodies written with the route's `.avsc` schema.
    Avro,
    /// Protobuf: schema-registry framed when `schema_registry` is configured, else bare
    /// messages of the route's `.proto` or descriptor set.
    Protobuf,
}

/// The policy for records whose writer schema the route's table cannot take.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnIncompatible {
    /// The route stops reading (its records stay in Kafka, nothing passes them),
    /// `/ready` and `ingest_route_paused` say why, other routes go on; SIGHUP or a
    /// restart tries again (`pipeline/pause.rs`).
    #[default]
    Pause,
    /// Each such record is a bad record (`on_error`: the dead-letter topic, with the
    /// reason), and the route goes on.
    DeadLetter,
}

/// A lenient reading of JSON a route may allow.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Coercion {
    /// `"7"` for a number field.
    StringToNumber,
    /// `2.0` for an integer field (`2.5` is always refused).
    IntegralFloatToInt,
}

/// The policy for records Kafka deleted before every sink of the route held them.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnLostRecords {
    /// Stop the service (non-zero exit) before any position passes the gap: an operator
    /// decides (docs/exactly-once.md, "Records Kafka deleted").
    #[default]
    Fail,
    /// Report the gap (an ERROR and `ingest_records_lost_total`) and write on from the
    /// partition's log start.
    Skip,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Send the record with its error to the dead-letter topic and go on.
    DeadLetter,
    /// Stop the service without committing past the record.
    Fail,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataColumns {
    pub topic: Option<String>,
    pub partition: Option<String>,
    pub offset: Option<String>,
    pub timestamp: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: bytesize::ByteSize,
    /// Upper bound on how long a record waits in memory, even on a quiet partition.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl BatchConfig {
    /// These limits with a sink's own overrides applied.
    pub fn overridden(&self, with: &ingest_sink_api::BatchOverride) -> BatchConfig {
        BatchConfig {
            max_rows: with.max_rows.unwrap_or(self.max_rows),
            max_bytes: with.max_bytes.unwrap_or(self.max_bytes),
            max_age: with.max_age.unwrap_or(self.max_age),
        }
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.max_rows == 0 || self.max_bytes.as_u64() == 0 || self.max_age.is_zero() {
            return Err("max_rows, max_bytes and max_age must be above zero");
        }
        Ok(())
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
        }
    }
}

fn default_max_rows() -> usize {
    200_000
}
fn default_max_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}
fn default_max_age() -> Duration {
    Duration::from_secs(2)
}

/// A route with everything resolved: its schema loaded and its topic matcher built.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub config: RouteConfig,
    /// What its payloads are, for its decoder.
    pub payload: crate::decode::Payload,
    pub schema: SchemaRef,
    pub pattern: Option<Regex>,
    pub on_error: OnError,
    pub dead_letter_topic: Option<String>,
    /// The tables the route writes, one per sink, in registration order.
    pub sinks: Vec<RouteSink>,
}

/// The configured sinks' top-level sections, by key.
pub type Sections = Vec<(&'static str, Arc<dyn SinkSection>)>;

/// One table a route writes to.
#[derive(Debug, Clone)]
pub struct RouteSink {
    /// The sink's config key (`clickhouse`).
    pub key: &'static str,
    /// The table's name, as the config gives it.
    pub name: String,
    /// The sink's batching, overriding the route's key by key.
    pub batch: ingest_sink_api::BatchOverride,
    pub table: Arc<dyn SinkTable>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Each configured sink's top-level section, by its key, in registration order.
    pub sinks: Sections,
    pub routes: Vec<Route>,
    /// Every secret the config holds (values of sensitive keys, URI passwords, values
    /// read from `${file:...}`, S3 keys from the environment), for
    /// [`secret::register`] to mask them in logs and errors.
    pub secrets: Vec<SecretString>,
    /// The config file's directory, where schema paths start (read again on SIGHUP).
    pub base: PathBuf,
}

/// A one-line configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// Reads, interpolates, parses and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?;
    load_str(&text, path, &|name| std::env::var(name).ok())
}

fn error(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: path.display().to_string(),
        message: message.into(),
    }
}

/// Parses config text; `path` locates the file (for messages and relative schema paths).
pub fn load_str(
    text: &str,
    path: &Path,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let mut value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| error(path, format!("invalid YAML: {e}")))?;
    let mut sources = env::Sources {
        env: env_lookup,
        base,
        from_files: Vec::new(),
    };
    env::interpolate(&mut value, "", &mut sources).map_err(|e| error(path, e))?;
    let mut secrets = sources.from_files;
    collect_secrets(&value, None, &mut secrets);
    secrets.extend(sinks::environment_secrets(&value, env_lookup));
    secrets.retain(|s| !s.is_empty());
    secrets.sort();
    secrets.dedup();
    // A secret in the wrong place may be quoted by an error ("unknown variant `...`").
    let fail = |message: String| error(path, secret::mask(&message, &secrets).into_owned());
    let blocks = sinks::take_blocks(&mut value).map_err(&fail)?;
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let inner = sinks::name_sinks_in(&at, e.into_inner().to_string());
        if at == "." {
            fail(inner)
        } else {
            fail(format!("at `{at}`: {inner}"))
        }
    })?;
    let mut config = config;
    if let Some(registry) = config.schema_registry.as_mut() {
        registry.tls.ca_file = registry.tls.ca_file.take().map(|f| base.join(f));
    }
    let sections = sinks::open_sections(blocks.sections, base).map_err(&fail)?;
    let routes = validate(&config, base, &sections, blocks.routes).map_err(fail)?;
    Ok(Loaded {
        base: base.to_path_buf(),
        config,
        sinks: sections,
        routes,
        secrets: secrets.into_iter().map(SecretString::from).collect(),
    })
}

/// Strings under sensitive keys, and passwords inside URIs anywhere.
fn collect_secrets(value: &serde_norway::Value, key: Option<&str>, out: &mut Vec<String>) {
    use serde_norway::Value;
    match value {
        Value::String(text) => {
            if key.is_some_and(secret::is_sensitive_key) {
                out.push(text.clone());
            }
            out.extend(secret::uri_secrets(text));
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_secrets(v, key, out)),
        Value::Mapping(map) => {
            for (k, v) in map {
                collect_secrets(v, k.as_str(), out);
            }
        }
        Value::Tagged(tagged) => collect_secrets(&tagged.value, key, out),
        _ => {}
    }
}

/// Checks the whole config and resolves its routes.
fn validate(
    config: &Config,
    base: &Path,
    sections: &Sections,
    route_blocks: Vec<sinks::Blocks>,
) -> Result<Vec<Route>, String> {
    if config.routes.is_empty() {
        return Err("at `routes`: at least one route is needed".into());
    }
    check_kafka(&config.kafka)?;
    if config.server.drain_timeout.is_zero() {
        return Err("at `server.drain_timeout`: must be above zero (the drain after SIGTERM writes the open batches)".into());
    }
    if let Some(registry) = &config.schema_registry {
        registry.check()?;
    }
    let mut seen = route::Seen::default();
    let routes = config
        .routes
        .iter()
        .zip(route_blocks)
        .enumerate()
        .map(|(i, (route, blocks))| {
            route::resolve(i, route, blocks, config, base, sections, &mut seen)
        })
        .collect::<Result<Vec<_>, _>>()?;
    topics::check_dead_letter_topics(
        config.dead_letter.as_ref().map(|d| d.topic.as_str()),
        &routes,
    )?;
    Ok(routes)
}

/// The group is named, offsets are ours to commit, and new topics are picked up on
/// our schedule.
fn check_kafka(kafka: &KafkaConfig) -> Result<(), String> {
    if kafka.group_id.trim().is_empty() {
        return Err("at `kafka.group_id`: must not be empty".into());
    }
    // Offsets are committed only after every sink wrote; these would commit earlier.
    for key in ["enable.auto.commit", "enable.auto.offset.store"] {
        if kafka.properties.get(key).is_some_and(|v| v != "false") {
            return Err(format!(
                "at `kafka.properties.{key}`: must stay false (ingest commits offsets after the sinks wrote)"
            ));
        }
    }
    check_topic_discovery(kafka)
}

/// The pick-up time of new topics is ours to set (librdkafka's default is 5 minutes).
fn check_topic_discovery(kafka: &KafkaConfig) -> Result<(), String> {
    if kafka
        .properties
        .contains_key("topic.metadata.refresh.interval.ms")
    {
        return Err("at `kafka.properties.topic.metadata.refresh.interval.ms`: set `kafka.topic_discovery_interval` instead (e.g. `10s`)".into());
    }
    let interval = kafka.topic_discovery_interval;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(3600) {
        return Err(format!(
            "at `kafka.topic_discovery_interval`: {} is outside 100ms..1h",
            humantime::format_duration(interval)
        ));
    }
    Ok(())
}

/// The metadata columns a route asked for: (column name, which coordinate).
pub fn metadata_fields(m: &MetadataColumns) -> Vec<(String, MetadataKind)> {
    [
        (&m.topic, MetadataKind::Topic),
        (&m.partition, MetadataKind::Partition),
        (&m.offset, MetadataKind::Offset),
        (&m.timestamp, MetadataKind::Timestamp),
        (&m.key, MetadataKind::Key),
    ]
    .into_iter()
    .filter_map(|(name, kind)| name.clone().map(|n| (n, kind)))
    .collect()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Loaded {
    /// Route `index`'s payload and table schema read again from its schema file (a
    /// SIGHUP); `None` for a route whose schema comes from the registry.
    pub fn reread_schema(
        &self,
        index: usize,
    ) -> Result<Option<(crate::decode::Payload, SchemaRef)>, String> {
        let route = &self.routes[index].config;
        if route.schema.is_none() {
            return Ok(None);
        }
        payload::resolve(route, &self.config, &self.base)
            .map(Some)
            .map_err(|(key, message)| format!("at `routes[{index}].{key}`: {message}"))
    }

    /// The route for a topic: an explicit listing wins, then the first matching pattern.
    pub fn route_for(&self, topic: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.config.topics.iter().any(|t| t == topic))
            .or_else(|| {
                self.routes
                    .iter()
                    .position(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(topic)))
            })
    }

    /// What to subscribe to: topic names, and patterns anchored to whole names as the
    /// routes match them (`^` marks a pattern for librdkafka).
    pub fn subscriptions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for route in &self.routes {
            out.extend(route.config.topics.iter().cloned());
            if let Some(p) = &route.config.topic_pattern {
                out.push(topics::subscription(p));
            }
        }
        out
    }
}

#[cfg(test)]
mod routing_tests;
#[cfg(test)]
mod tests;
