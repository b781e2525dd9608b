//! Sinks take Arrow record batches and make them durable in one destination.
//!
//! Each sink reports the Kafka positions it has made durable (see [`OffsetMap`]), so
//! the service can resume every sink from its own progress.

pub mod evolution;
mod offsets;
mod partition;
mod plugin;
pub mod retry;
pub mod secret;
pub mod values;

pub use offsets::OffsetMap;
pub use partition::{Partition, Partitions};
pub use plugin::{
    ConfigProblem, DryRun, MetadataKind, OpenContext, RouteBlock, RouteSpec, RouteTable,
    SinkPlugin, SinkSection, SinkTable, TableState, parse_block,
};
pub use values::{Refusal, ValueCheck};

use std::time::Duration;

use arrow_array::{BooleanArray, RecordBatch};
use serde::Deserialize;

/// Where one row came from in Kafka. The topic name is shared by the rows of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Rows bound for one table, with the Kafka positions they cover.
#[derive(Debug, Default, Clone)]
pub struct SinkBatch {
    /// The rows, in pieces sharing one schema (decoding produces them in chunks).
    pub batches: Vec<RecordBatch>,
    /// The Kafka coordinates of every row, piece by piece (empty when unknown).
    pub coordinates: Vec<Vec<Coordinates>>,
    /// The positions the sink reaches once this batch is durable: per topic and
    /// partition, the offset after the last record in it.
    pub positions: OffsetMap,
    /// The ownership epoch the batch was started in (see [`Fence`]).
    pub epoch: u64,
    /// The completeness watermark the sink reaches once this batch is durable, for
    /// sinks that record it where readers look (`None`: not known).
    pub watermark: Option<Watermark>,
}

/// A completeness watermark: every record of `partitions` whose time (Kafka timestamp
/// or the route's event-time field) is before `time_ms` is durable in the sink. A
/// claim that stays true once made, so a reader may take the highest recorded per
/// partition and the lowest of those over a table's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Every partition of the route this instance reads, batch or not.
    pub partitions: Vec<Partition>,
}

impl Watermark {
    /// `ms` since the epoch as RFC 3339 in UTC with milliseconds
    /// (`2026-12-07T10:00:00.000Z`), how the sinks write it for people.
    pub fn format(ms: i64) -> String {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }
}

impl SinkBatch {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows a sink does not hold yet: those at or past its position for their
    /// partition. A replay after a crash thus writes nothing twice to a sink that
    /// records its positions with its data.
    pub fn skip_held(&self, positions: &OffsetMap) -> SinkBatch {
        self.retain(|p| {
            positions
                .get(&p.topic, p.partition)
                .is_none_or(|d| p.offset >= d)
        })
    }

    /// The rows whose coordinates `keep` accepts (all rows when coordinates are
    /// unknown); `positions` are kept as they are.
    pub fn retain(&self, keep: impl Fn(&Coordinates) -> bool) -> SinkBatch {
        if self.coordinates.len() != self.batches.len()
            || self.coordinates.iter().flatten().all(&keep)
        {
            return self.clone();
        }
        let mut out = SinkBatch {
            positions: self.positions.clone(),
            epoch: self.epoch,
            watermark: self.watermark.clone(),
            ..SinkBatch::default()
        };
        for (batch, coordinates) in self.batches.iter().zip(&self.coordinates) {
            let mask: BooleanArray = coordinates.iter().map(|p| Some(keep(p))).collect();
            let kept = arrow_select::filter::filter_record_batch(batch, &mask)
                .expect("mask matches the batch");
            if kept.num_rows() > 0 {
                out.coordinates
                    .push(coordinates.iter().filter(|p| keep(p)).cloned().collect());
                out.batches.push(kept);
            }
        }
        out
    }

    /// Appends `other`'s rows and positions (record batches share their buffers).
    pub fn append(&mut self, other: &SinkBatch) {
        self.batches.extend(other.batches.iter().cloned());
        self.coordinates.extend(other.coordinates.iter().cloned());
        self.positions.merge(&other.positions);
    }

    /// Forgets everything about the partitions `gone` selects: their rows and positions.
    pub fn drop_partitions(&mut self, gone: impl Fn(&str, i32) -> bool) {
        let kept = self.retain(|p| !gone(&p.topic, p.partition));
        self.batches = kept.batches;
        self.coordinates = kept.coordinates;
        self.positions.retain(|topic, p| !gone(topic, p));
    }

    /// Heap bytes held by the record batches.
    pub fn memory_size(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }
}

/// A sink's own batching limits, overriding the route's `batch` key by key (e.g.
/// ClickHouse every few seconds, Iceberg every minute or by size).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOverride {
    #[serde(default)]
    pub max_rows: Option<usize>,
    #[serde(default)]
    pub max_bytes: Option<bytesize::ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// A sink failure, and what the service may do about it (see [`ErrorKind`]).
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    /// Which sink and table, e.g. `clickhouse analytics.events`.
    pub sink: String,
    pub message: String,
    kind: ErrorKind,
}

/// What a failed write means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, overload, a server restarting: worth a retry with backoff.
    Retryable,
    /// Will not go away by trying again (schema mismatch, permissions).
    Permanent,
    /// Refused because this instance no longer owns the partitions: the batch belongs
    /// to their new owner now.
    Fenced,
}

impl SinkError {
    /// A failure whose kind a classifier decided (`retryable` or permanent).
    pub fn new(sink: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        let kind = if retryable {
            ErrorKind::Retryable
        } else {
            ErrorKind::Permanent
        };
        Self::of_kind(sink, message, kind)
    }

    pub fn retryable(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of_kind(sink, message, ErrorKind::Retryable)
    }

    pub fn permanent(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of_kind(sink, message, ErrorKind::Permanent)
    }

    pub fn fenced(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of_kind(sink, message, ErrorKind::Fenced)
    }

    fn of_kind(sink: impl Into<String>, message: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            sink: sink.into(),
            message: message.into(),
            kind,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Trying the same write again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// The partitions are someone else's now.
    pub fn is_fenced(&self) -> bool {
        self.kind == ErrorKind::Fenced
    }
}

/// What a successful write did not make durable, and what it made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Partitions whose rows the sink did not write because another instance owns them
    /// (it writes them): their offsets are not durable in this sink.
    pub not_owned: Vec<Partition>,
    /// Data files the write committed (Iceberg's Parquet files; 0 where a sink has
    /// none), for the service's metrics.
    pub files: u64,
    /// Table commits the write made (Iceberg: snapshots; 0 where a sink has none).
    pub commits: u64,
}

/// A destination table fed by the pipeline.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// `clickhouse db.table` or `iceberg ns.table`, for logs and errors.
    fn name(&self) -> &str;

    /// Makes the batch durable; on success its `positions` are durable too, but for
    /// the partitions the outcome names as left to another instance.
    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError>;

    /// A reader of the positions this sink has made durable, usable while the sink
    /// itself is busy writing (e.g. to resume newly assigned partitions).
    fn position_reader(&self) -> std::sync::Arc<dyn PositionReader>;

    /// Finds the rows this sink cannot store (a value outside its column's range), so
    /// they go to the dead-letter topic before any sink of the route writes them.
    fn value_check(&self) -> Option<std::sync::Arc<dyn ValueCheck>> {
        None
    }

    /// Widens the table to `schema` while running: the route's schema gained nullable
    /// fields (a new registry version, an edited schema file). Called with no write in
    /// flight; rows written after it carry the new columns, rows before read null. Must
    /// be idempotent: another member may have made the same change already.
    async fn evolve(&mut self, schema: arrow_schema::SchemaRef) -> Result<(), SinkError> {
        let _ = schema;
        Err(SinkError::permanent(
            self.name(),
            "this sink cannot add columns while running",
        ))
    }

    /// The positions this sink has made durable for the partitions in `partitions`
    /// (every partition it knows when empty), read from its own storage.
    async fn read_positions(&self, partitions: &OffsetMap) -> Result<OffsetMap, SinkError> {
        self.position_reader().read(partitions).await
    }
}

/// Reads a sink's durable positions from its own storage.
#[async_trait::async_trait]
pub trait PositionReader: Send + Sync {
    async fn read(&self, partitions: &OffsetMap) -> Result<OffsetMap, SinkError>;

    /// The sink's name (`clickhouse db.table`), for errors that quote its positions.
    fn sink(&self) -> &str {
        "a sink"
    }
}

/// Proof of ownership asked for right before a sink makes rows durable: an instance
/// that lost its partitions (paused past its session, cut off) must not write them.
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    /// Confirms ownership of `partitions` for a batch started in ownership `epoch`.
    /// Returns the partitions this instance gave up since then (their rows must not be
    /// written); fails when ownership of the rest cannot be confirmed.
    async fn check(&self, partitions: &OffsetMap, epoch: u64) -> Result<Vec<Partition>, Fenced>;

    /// Counts the consumer's rebalances: a sink that lost a partition to another
    /// writer leaves it alone until this moves.
    fn generation(&self) -> u64 {
        0
    }
}

/// Why a fence check failed.
#[derive(Debug, Clone)]
pub struct Fenced {
    pub message: String,
    /// The partitions are certainly gone (not just unconfirmed, e.g. broker unreachable).
    pub lost: bool,
}

impl Fenced {
    /// The partitions are certainly someone else's now.
    pub fn lost(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            lost: true,
        }
    }

    /// Ownership could not be confirmed (yet): worth another try.
    pub fn unconfirmed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            lost: false,
        }
    }
}
