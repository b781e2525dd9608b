//! Sinks take Arrow record batches and make them durable in one destination.
//!
//! Each sink reports the Kafka positions it has made durable (see [`OffsetMap`]), so
//! the service can resume every sink from its own progress.

pub mod clickhouse;
pub mod iceberg;
mod offsets;

pub use offsets::OffsetMap;

use arrow_array::{BooleanArray, RecordBatch};

/// Where one row came from in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPosition {
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
}

/// Rows bound for one table, with the Kafka positions they cover.
#[derive(Debug, Default, Clone)]
pub struct SinkBatch {
    /// The rows, in pieces sharing one schema (decoding produces them in chunks).
    pub batches: Vec<RecordBatch>,
    /// The Kafka position of every row, piece by piece (empty when unknown).
    pub positions: Vec<Vec<RowPosition>>,
    /// Per topic and partition, the offset after the last record in this batch.
    pub next_offsets: OffsetMap,
}

impl SinkBatch {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The rows a sink does not hold yet: those at or past its durable position for
    /// their partition. A replay after a crash thus writes nothing twice to a sink that
    /// records its positions with its data.
    pub fn skip_durable(&self, durable: &OffsetMap) -> SinkBatch {
        let held = |p: &RowPosition| {
            durable
                .get(p.topic, p.partition)
                .is_some_and(|d| p.offset < d)
        };
        if self.positions.len() != self.batches.len() || !self.positions.iter().flatten().any(held)
        {
            return self.clone();
        }
        let mut out = SinkBatch {
            next_offsets: self.next_offsets.clone(),
            ..SinkBatch::default()
        };
        for (batch, positions) in self.batches.iter().zip(&self.positions) {
            let keep: BooleanArray = positions.iter().map(|p| Some(!held(p))).collect();
            let kept = arrow_select::filter::filter_record_batch(batch, &keep)
                .expect("mask matches the batch");
            if kept.num_rows() > 0 {
                out.positions
                    .push(positions.iter().copied().filter(|p| !held(p)).collect());
                out.batches.push(kept);
            }
        }
        out
    }
}

/// A sink failure, with whether trying the same write again may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    /// Which sink and table, e.g. `clickhouse analytics.events`.
    pub sink: String,
    pub message: String,
    /// Network trouble, overload, a server restarting: worth a retry with backoff.
    /// False for errors that will not go away (schema mismatch, permissions).
    pub retryable: bool,
}

/// A destination table fed by the pipeline.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// `clickhouse db.table` or `iceberg ns.table`, for logs and errors.
    fn name(&self) -> &str;

    /// Makes the batch durable; on success its `next_offsets` are durable too.
    async fn write(&mut self, batch: &SinkBatch) -> Result<(), SinkError>;

    /// The positions this sink has made durable for the consumer group, as far as the
    /// sink can tell from its own storage (empty if it keeps none).
    async fn durable_offsets(&self) -> Result<OffsetMap, SinkError>;
}
