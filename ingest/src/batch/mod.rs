//! Step 3, batch: a route's records, decoded (`crate::decode`) and batched: one lane per
//! sink, each with its own batch and cadence.

mod lane;

use std::time::Instant;

use ingest_sink_api::{BatchOverride, OffsetMap, Partitions, Sink, SinkBatch};

pub use lane::{Lane, LaneOutcome};

use crate::config::{OnError, Route, metadata_fields};
use crate::decode::{Message, Rejected, RouteDecoder, Workers};
use crate::protocol::Partition;
use crate::watermark::ChunkTimes;

/// Rows are turned into record batches this many at a time (bounds the raw payloads
/// kept for isolating bad records, and the size of each Arrow piece).
const CHUNK_ROWS: usize = 16 * 1024;

/// The decoder of `route`'s records as `payload` of `payload_schema`, with the route's
/// limits (sinks' value checks and decode workers are added by the caller).
fn decoder(
    route: &Route,
    payload: &crate::decode::Payload,
    payload_schema: &arrow_schema::SchemaRef,
) -> anyhow::Result<RouteDecoder> {
    let metadata = metadata_fields(&route.config.metadata);
    let mut decoder = RouteDecoder::new(payload, payload_schema.clone(), metadata, CHUNK_ROWS)?;
    decoder.set_max_message_bytes(route.config.max_message_bytes);
    if route.on_error == OnError::DeadLetter {
        decoder.keep_headers();
    }
    Ok(decoder)
}

pub struct RouteBatch {
    pub route: Route,
    /// The route's place in the configuration (routes' names need not be unique).
    pub index: usize,
    decoder: RouteDecoder,
    /// Where full chunks are decoded, if not here (kept for a widened decoder).
    workers: Option<std::sync::Arc<Workers>>,
    /// One per sink, each with its own batch and cadence.
    pub lanes: Vec<Lane>,
    /// Positions of the messages in the decoder not yet handed to the lanes, rejected
    /// records included.
    positions: OffsetMap,
    rejected: Vec<Rejected>,
    bytes: u64,
    messages: u64,
    opened_at: Option<Instant>,
}

/// Rows decoded since the last hand-over, and the records that failed to decode.
pub struct Decoded {
    pub rows: SinkBatch,
    /// Per partition, the earliest and latest time of its rows (see `watermark`).
    pub times: ChunkTimes,
    pub rejected: Vec<Rejected>,
    messages: u64,
    bytes: u64,
    opened_at: Option<Instant>,
}

impl RouteBatch {
    pub fn new(route: Route, index: usize) -> anyhow::Result<Self> {
        let decoder = decoder(&route, &route.payload, &route.schema)?;
        Ok(Self {
            route,
            index,
            decoder,
            workers: None,
            lanes: Vec::new(),
            positions: OffsetMap::default(),
            rejected: Vec::new(),
            bytes: 0,
            messages: 0,
            opened_at: None,
        })
    }

    /// When the oldest record still in the decoder (not handed to the lanes) was read.
    pub fn pending_since(&self) -> Option<Instant> {
        self.opened_at
    }

    /// Adds a sink with the route's batch limits, overridden by the sink's own.
    pub fn add_sink(&mut self, sink: Box<dyn Sink>, limits: &BatchOverride) {
        let limits = self.route.config.batch.overridden(limits);
        if let Some(check) = sink.value_check() {
            self.decoder.add_check(check);
        }
        self.lanes.push(Lane::new(sink, limits));
    }

    /// The Arrow schema of what this route writes (payload then metadata columns).
    pub fn output_schema(&self) -> arrow_schema::SchemaRef {
        self.decoder.output_schema()
    }

    /// The registry schema id this message names that the route's decoder has not
    /// learned (see [`RouteBatch::learn`]).
    pub fn schema_wanted(&self, message: &Message<'_>) -> Option<u32> {
        self.decoder.schema_wanted(message)
    }

    /// See [`RouteDecoder::learn`]: a wider payload when the writer has new fields.
    pub fn learn(
        &mut self,
        id: u32,
        schema: Option<&crate::decode::WriterSchema>,
    ) -> crate::decode::Learned {
        self.decoder.learn(id, schema)
    }

    /// Refuses the records of writer schema `id` from now on, with `why` (the route
    /// could not widen to it).
    pub fn refuse(&mut self, id: u32, why: &str) {
        self.decoder.refuse(id, why);
    }

    /// Forgets the writer schemas the decoder learned (it asks for them again), after
    /// the route was paused on one it could not read.
    pub fn relearn(&mut self) -> anyhow::Result<()> {
        self.widen(self.route.payload.clone(), self.route.schema.clone())
    }

    /// Full chunks of records are decoded on `workers` while reading goes on.
    pub fn decode_on(&mut self, workers: std::sync::Arc<Workers>) {
        self.decoder.decode_on(std::sync::Arc::clone(&workers));
        self.workers = Some(workers);
    }

    /// The output schema (payload then metadata columns) `payload_schema` would give.
    pub fn output_schema_of(
        &self,
        payload_schema: &arrow_schema::SchemaRef,
    ) -> arrow_schema::SchemaRef {
        crate::decode::MetadataBuilder::new(
            payload_schema,
            metadata_fields(&self.route.config.metadata),
        )
        .schema()
    }

    /// Reads `payload` from now on, into `payload_schema` (wider than before). Called
    /// with nothing decoded waiting and after every sink widened its table; the new
    /// decoder takes the sinks' value checks again (their columns changed).
    pub fn widen(
        &mut self,
        payload: crate::decode::Payload,
        payload_schema: arrow_schema::SchemaRef,
    ) -> anyhow::Result<()> {
        let mut decoder = decoder(&self.route, &payload, &payload_schema)?;
        for lane in &self.lanes {
            if let Some(check) = lane.sink.as_ref().and_then(|s| s.value_check()) {
                decoder.add_check(check);
            }
        }
        if let Some(workers) = &self.workers {
            decoder.decode_on(std::sync::Arc::clone(workers));
        }
        self.decoder = decoder;
        self.route.payload = payload;
        self.route.schema = payload_schema;
        Ok(())
    }

    pub fn push(&mut self, message: &Message<'_>) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.decoder.push(message, &mut self.rejected);
        if self.decoder.chunk_full() {
            self.decoder.flush_chunk(&mut self.rejected);
        }
        self.bytes += message.payload.map_or(0, |p| p.len()) as u64;
        self.messages += 1;
        self.positions
            .advance(message.topic, message.partition, message.offset + 1);
    }

    /// True when a lane free to write reached its row or byte limit, or a busy lane
    /// holds twice its limit and reading must wait for it (checked per message, without
    /// reading the clock). A shed lane takes no rows and never makes reading wait.
    pub fn full(&self) -> bool {
        self.taking().any(|lane| {
            let factor = if lane.busy() { 2 } else { 1 };
            lane.over_limit(factor, self.messages, self.bytes)
        })
    }

    /// True when some lane free to write is full or its oldest message waited
    /// `max_age` (or a busy lane must be waited for, see [`RouteBatch::full`]).
    pub fn due(&self, now: Instant) -> bool {
        self.full()
            || self.taking().any(|lane| {
                !lane.busy() && lane.due(now, self.opened_at, (self.messages, self.bytes))
            })
    }

    /// The lanes that take rows (all but those shed while their sink is down).
    fn taking(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter().filter(|lane| !lane.book.is_shed())
    }

    /// Whether the lane is due, counting the messages still in the decoder.
    pub fn lane_due(&self, lane: usize, now: Instant) -> bool {
        self.lanes[lane].due(now, self.opened_at, (self.messages, self.bytes))
    }

    /// Takes what the decoder holds: rows with their coordinates, and rejected records.
    pub fn take_decoded(&mut self) -> Decoded {
        let field = self.route.config.watermark.time_field.as_deref();
        let (batches, coordinates, mut times) = self
            .decoder
            .take_with_times(&mut self.rejected, field.is_none());
        if let Some(field) = field {
            for (batch, at) in batches.iter().zip(&coordinates) {
                times.add_column(batch, field, at);
            }
        }
        let chunk = Decoded {
            times,
            rows: SinkBatch {
                batches,
                coordinates,
                positions: std::mem::take(&mut self.positions),
                epoch: 0,
                watermark: None,
            },
            rejected: std::mem::take(&mut self.rejected),
            messages: self.messages,
            bytes: self.bytes,
            opened_at: self.opened_at,
        };
        self.bytes = 0;
        self.messages = 0;
        self.opened_at = None;
        chunk
    }

    /// Hands a chunk's rows to every lane (once its rejected records are disposed of).
    pub fn distribute(&mut self, chunk: &Decoded) {
        let Some(opened_at) = chunk.opened_at else {
            return;
        };
        for lane in &mut self.lanes {
            lane.append(
                &chunk.rows,
                &chunk.times,
                chunk.messages,
                chunk.bytes,
                opened_at,
            );
        }
    }

    /// Drops buffered rows of partitions taken away by a rebalance (or rewound).
    pub fn revoke(&mut self, revoked: &[Partition]) {
        let revoked_set: Partitions = revoked.iter().collect();
        let gone = |topic: &str, partition: i32| revoked_set.contains(topic, partition);
        for lane in &mut self.lanes {
            lane.revoke(&gone);
        }
        if !self.positions.iter().any(|(t, p, _)| gone(t, p)) {
            return;
        }
        self.decoder.retain_partitions(&mut self.rejected, gone);
        for Partition { topic, partition } in revoked {
            self.positions.remove(topic, *partition);
        }
        if self.positions.is_empty() {
            self.opened_at = None;
            self.bytes = 0;
            self.messages = 0;
        }
    }
}

#[cfg(test)]
mod shed_tests;
#[cfg(test)]
mod tests;
