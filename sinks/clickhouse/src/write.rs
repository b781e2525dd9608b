//! Writing a batch: check ownership, pass this writer's insert gate, drop the rows the
//! table holds already, insert the rest as Native blocks, then record the ledger entry.
//!
//! An insert (rows or ledger entries) is marked as possibly in flight before its request
//! is sent, and the mark is cleared only once its outcome is known: acknowledged, or a
//! ClickHouse exception in the reply. Anything else (a cut connection, a timeout, a
//! proxy's 502, a write future dropped by the caller's deadline) leaves the insert free
//! to land later, so the next write first retires the gate it went through (see
//! [`Gates::retire`]), waits until the server no longer runs its query id, and only
//! then reads the table's positions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use ingest_sink_api::{
    Coordinates, Fence, Partitions, Sink, SinkBatch, SinkError, WriteOutcome, retry,
};

use crate::client::{
    QUERY_TIMEOUT, fetch_json, is_retryable, json_number, outcome_known, pin, run_within,
};
use crate::config::{ClickHouseConnection, ClickHouseTable};
use crate::coordinate_columns::fill_coordinates;
use crate::gate::{Admission, Gates, Partition};
use crate::ledger::{EntryToRecord, HeldRows, LedgerReader};
use crate::native::{NativeColumn, encode_block};
use crate::ranges::ColumnRanges;
use crate::types::{ServerCaps, quote_ident};
use crate::watermarks::Watermarks;

/// How long sending an insert body, and then waiting for the server's answer, may take.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an interrupted insert may keep running on the server before the write
/// gives up (and is retried).
const INTERRUPTED_INSERT_WAIT: Duration = Duration::from_secs(300);

/// How long recording the watermark may take (it follows a write that succeeded).
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes batches into one ClickHouse table, exactly once per Kafka record.
pub struct ClickHouseSink {
    pub(crate) name: String,
    pub(crate) client: clickhouse::Client,
    pub(crate) database: String,
    /// `(a, b, ...)`: the columns every insert names.
    pub(crate) column_list: String,
    pub(crate) columns: Vec<NativeColumn>,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) caps: ServerCaps,
    /// Settings pinning what an acknowledged insert means, sent with every insert
    /// after the configured `settings` (see [`crate::client::pin`]).
    pub(crate) pinned: Vec<(&'static str, &'static str)>,
    /// The encoded schema: the route's fields plus the coordinate columns it lacks.
    pub(crate) schema: SchemaRef,
    pub(crate) ledger: Arc<LedgerReader>,
    pub(crate) fence: Option<Arc<dyn Fence>>,
    /// Inserts go through this writer's gate, which the server serializes against
    /// other writers of the same partitions (see [`crate::gate`]).
    pub(crate) gates: Gates,
    /// An insert sent whose outcome is not known (yet): set before its request is sent,
    /// cleared once acknowledged or refused by the server. Until then it may still land.
    pub(crate) in_flight: Option<InFlight>,
    /// Where the table is, to change it while running ([`ClickHouseSink::evolve_table`]).
    pub(crate) conn: ClickHouseConnection,
    pub(crate) table: ClickHouseTable,
    /// Where the completeness watermark is kept for readers ([`crate::watermarks`]);
    /// `None` when the table lacks it and may not create it (`create_tables: false`).
    pub(crate) watermarks: Option<Watermarks>,
    /// A watermark write failed and was logged (once: it is a reader's aid).
    pub(crate) watermark_failed: bool,
}

/// An insert that may still land: its query id and the gate it was sent through.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    query_id: String,
    gate: String,
}

impl ClickHouseSink {
    /// What follows `DROP TABLE … ` of this writer's gates (see [`crate::gate`]):
    /// `" SYNC"`, `" NO DELAY"` or nothing, by the database's engine.
    #[doc(hidden)]
    pub fn gate_drop_clause(&self) -> &'static str {
        self.gates.drop_clause()
    }

    /// Checks ownership of the partitions right before each insert (see [`Fence`]).
    pub fn with_fence(mut self, fence: Arc<dyn Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The Native payload for a batch: one block per record batch piece, with the
    /// coordinate columns filled from the row positions.
    pub fn encode(&self, batch: &SinkBatch) -> Result<Vec<u8>, SinkError> {
        let mut body = Vec::with_capacity(batch.memory_size());
        for (i, piece) in batch.batches.iter().enumerate() {
            if piece.num_rows() == 0 {
                continue;
            }
            let coordinates = batch.coordinates.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let piece = self.with_coordinates(piece, coordinates)?;
            encode_block(&piece, &self.columns, &mut body)
                .map_err(|e| SinkError::permanent(&self.name, e.to_string()))?;
        }
        Ok(body)
    }

    /// The coordinate columns filled from the rows' coordinates (see
    /// [`crate::coordinate_columns`]).
    fn with_coordinates(
        &self,
        piece: &RecordBatch,
        coordinates: &[Coordinates],
    ) -> Result<RecordBatch, SinkError> {
        fill_coordinates(piece, coordinates, &self.schema, &self.ledger.coordinates)
            .map_err(|e| SinkError::permanent(&self.name, e))
    }

    /// Waits until the server no longer runs the insert with this query id, polling
    /// with backoff for at most [`INTERRUPTED_INSERT_WAIT`].
    async fn wait_for_query(&self, query_id: &str) -> Result<(), SinkError> {
        let deadline = Instant::now() + INTERRUPTED_INSERT_WAIT;
        let mut delays = retry::backoff(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            let query = self
                .client
                .query("SELECT count() AS n FROM system.processes WHERE query_id = ?")
                .bind(query_id);
            let rows = fetch_json(query).await.map_err(|e| {
                SinkError::new(
                    &self.name,
                    format!("checking an interrupted insert: {e}"),
                    is_retryable(&e),
                )
            })?;
            let running = rows.first().and_then(|r| json_number::<u64>(&r["n"]));
            if running == Some(0) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SinkError::retryable(
                    &self.name,
                    format!("the interrupted insert {query_id} is still running after 5 minutes"),
                ));
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(2));
            tokio::time::sleep(delay.min(left)).await;
        }
    }

    /// A previous attempt's insert may still land (a proxy holding it, say) or be
    /// committing on the server: reading positions before it can no longer land would
    /// miss its rows and write them again. Its gate is retired first (an insert running
    /// through it is waited for, a later one fails), then its query id is waited out.
    async fn settle_in_flight(&mut self) -> Result<(), SinkError> {
        if let Some(in_flight) = self.in_flight.clone() {
            tracing::warn!(sink = %self.name, query_id = %in_flight.query_id,
                "an earlier insert's outcome is unknown: retiring its gate before reading positions");
            self.gates
                .retire(&in_flight.gate, "after an insert with unknown outcome")
                .await?;
            self.wait_for_query(&in_flight.query_id).await?;
            self.in_flight = None;
        }
        Ok(())
    }

    /// Marks an insert through gate `gate` as possibly in flight, before its request is
    /// sent; returns its query id.
    fn sending(&mut self, gate: &str) -> String {
        let query_id = uuid::Uuid::new_v4().to_string();
        self.in_flight = Some(InFlight {
            query_id: query_id.clone(),
            gate: gate.to_string(),
        });
        query_id
    }

    /// Clears the mark when `result` says what became of the insert.
    fn answered<T>(&mut self, result: &Result<T, clickhouse::error::Error>) {
        if outcome_known(result) {
            self.in_flight = None;
        }
    }

    /// The batch without the partitions this instance gave up since the batch started
    /// (named in `outcome`), once the fence confirmed it owns the rest.
    async fn still_owned(
        &self,
        batch: &SinkBatch,
        outcome: &mut WriteOutcome,
    ) -> Result<SinkBatch, SinkError> {
        let Some(fence) = &self.fence else {
            return Ok(batch.clone());
        };
        let gone = fence
            .check(&batch.positions, batch.epoch)
            .await
            .map_err(|e| {
                let message = format!("not writing: {}", e.message);
                if e.lost {
                    SinkError::fenced(&self.name, message)
                } else {
                    SinkError::retryable(&self.name, message)
                }
            })?;
        if gone.is_empty() {
            return Ok(batch.clone());
        }
        tracing::warn!(sink = %self.name, partitions = ?gone,
            "not writing rows of partitions given up since the batch started");
        let owned = without(batch, &gone);
        outcome.not_owned.extend(gone);
        Ok(owned)
    }

    /// The rows of `todo` the table does not hold yet.
    fn not_held(&self, todo: &SinkBatch, held: &HeldRows) -> SinkBatch {
        let fresh = todo.retain(|c| !held.holds(c));
        if fresh.num_rows() < todo.num_rows() {
            tracing::info!(sink = %self.name, skipped = todo.num_rows() - fresh.num_rows(),
                "rows already in the table (a replay) are not written again");
        }
        fresh
    }

    /// Inserts the encoded `rows` through the gate `admission`. The insert stays marked
    /// as in flight unless the server acknowledged or refused it.
    async fn send(
        &mut self,
        rows: &SinkBatch,
        body: Vec<u8>,
        admission: &Admission,
    ) -> Result<(), clickhouse::error::Error> {
        let token = self.caps.dedup_token().then(|| dedup_token(rows));
        let query_id = self.sending(&admission.token);
        let inserted = self
            .insert(&admission.table, Bytes::from(body), token, &query_id)
            .await;
        self.answered(&inserted);
        inserted
    }

    async fn insert(
        &self,
        gate: &str,
        body: Bytes,
        token: Option<String>,
        query_id: &str,
    ) -> Result<(), clickhouse::error::Error> {
        let sql = format!(
            "INSERT INTO {}.{} {} FORMAT Native",
            quote_ident(&self.database),
            quote_ident(gate),
            self.column_list
        );
        // Without timeouts a server that accepts the connection but never answers (one
        // that is shutting down, say) would hang the write forever.
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for (k, v) in &self.settings {
            insert = insert.with_setting(k, v);
        }
        for (k, v) in &self.pinned {
            insert = insert.with_setting(*k, *v);
        }
        if let Some(token) = token {
            insert = insert.with_setting("insert_deduplication_token", token);
        }
        insert = insert.with_setting("query_id", query_id);
        insert.send(body).await?;
        insert.end().await
    }

    /// Records the batch's watermark for readers, now that its rows and their ledger
    /// entries are in. A failure is logged (once), not returned: the rows are durable,
    /// and later writes record it again (readers take the highest per partition). Its
    /// deadline is short, so a slow watermark table never makes the sink look hung.
    async fn record_watermark(&mut self, batch: &SinkBatch, not_owned: &[Partition]) {
        let (Some(watermark), Some(watermarks)) = (&batch.watermark, &self.watermarks) else {
            return;
        };
        let Some(statement) = watermarks.record_statement(&self.client, watermark, not_owned)
        else {
            return;
        };
        let statement = pin(statement, &self.pinned);
        match run_within(statement, WATERMARK_TIMEOUT).await {
            Ok(()) => self.watermark_failed = false,
            Err(e) if !self.watermark_failed => {
                self.watermark_failed = true;
                tracing::warn!(sink = %self.name, table = watermarks.name(), error = %e,
                    "recording the completeness watermark failed (the rows are written; \
                     the next write tries again)");
            }
            Err(_) => {}
        }
    }

    /// Records ledger entries through the gate's entry table; marked as in flight like
    /// the rows (an entry landing late could move a partition's `from_block` past rows
    /// recovery must still find).
    async fn record(
        &mut self,
        admission: &Admission,
        entries: &[EntryToRecord],
    ) -> Result<(), clickhouse::error::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let query_id = self.sending(&admission.token);
        let statement = self
            .ledger
            .ledger
            .entry_statement(&self.client, &admission.entries, entries)
            .with_setting("query_id", query_id);
        let statement = pin(statement, &self.pinned);
        let recorded = run_within(statement, QUERY_TIMEOUT).await;
        self.answered(&recorded);
        recorded
    }
}

/// A deterministic name for the rows of a batch (their partitions and offset ranges):
/// a server that knows `insert_deduplication_token` drops a second insert of them.
fn dedup_token(batch: &SinkBatch) -> String {
    let mut ranges: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
    for p in batch.coordinates.iter().flatten() {
        let range = ranges
            .entry((&*p.topic, p.partition))
            .or_insert((p.offset, p.offset));
        range.0 = range.0.min(p.offset);
        range.1 = range.1.max(p.offset);
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|((t, p), (lo, hi))| format!("{t}/{p}/{lo}-{hi}"))
        .collect();
    format!("ingest:{}:{}", parts.join(","), batch.num_rows())
}

#[async_trait::async_trait]
impl Sink for ClickHouseSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn evolve(&mut self, schema: SchemaRef) -> Result<(), SinkError> {
        self.evolve_table(schema).await
    }

    /// Checks this instance still owns the batch's partitions, passes its gate, reads
    /// what the table holds for them, drops those rows and inserts the rest.
    async fn write(&mut self, batch: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome::default();
        if batch.num_rows() == 0 {
            return Ok(outcome);
        }
        self.settle_in_flight().await?;
        let generation = self.fence.as_ref().map_or(0, |fence| fence.generation());
        let mut todo = self.still_owned(batch, &mut outcome).await?;
        // Another writer closing our gate means it took some of these partitions; the
        // next admission finds out which.
        for _ in 0..3 {
            if todo.num_rows() == 0 {
                return Ok(outcome);
            }
            let partitions: Vec<Partition> = todo.positions.partitions().collect();
            let admission = self.gates.admit(&partitions, generation).await?;
            if !admission.refused.is_empty() {
                todo = without(&todo, &admission.refused);
                outcome.not_owned.extend(admission.refused);
                continue;
            }
            let held = self.ledger.held(&todo.positions).await?;
            let fresh = self.not_held(&todo, &held);
            let inserted = if fresh.num_rows() == 0 {
                Ok(())
            } else {
                let body = self.encode(&fresh)?;
                self.send(&fresh, body, &admission).await
            };
            if let Err(e) = inserted {
                if self.gates.closed_by(&e).await? {
                    tracing::warn!(sink = %self.name,
                        "another instance closed this writer's insert gate: checking which partitions it took");
                    continue;
                }
                return Err(SinkError::new(
                    &self.name,
                    format!("insert failed: {e}"),
                    is_retryable(&e),
                ));
            }
            // Only now that the server acknowledged every row may the ledger say so.
            let entries = held.entries_after(&todo.positions);
            let Err(e) = self.record(&admission, &entries).await else {
                self.record_watermark(batch, &outcome.not_owned).await;
                return Ok(outcome);
            };
            // The rows are in; whoever took the gate finds them past the ledger.
            if self.gates.closed_by(&e).await? {
                return Ok(outcome);
            }
            return Err(SinkError::new(
                &self.name,
                format!(
                    "recording positions after the insert failed (the retry finds its rows): {e}"
                ),
                is_retryable(&e),
            ));
        }
        Err(SinkError::retryable(
            &self.name,
            "other instances keep taking this writer's partitions",
        ))
    }

    fn position_reader(&self) -> Arc<dyn ingest_sink_api::PositionReader> {
        self.ledger.clone()
    }

    fn value_check(&self) -> Option<Arc<dyn ingest_sink_api::ValueCheck>> {
        let ranges = ColumnRanges::new(&self.name, self.columns.clone(), self.caps);
        Some(Arc::new(ranges))
    }
}

/// The batch without the rows of `partitions`.
fn without(batch: &SinkBatch, partitions: &[Partition]) -> SinkBatch {
    let mut rest = batch.clone();
    let gone: Partitions = partitions.iter().collect();
    rest.drop_partitions(|t, n| gone.contains(t, n));
    rest
}
