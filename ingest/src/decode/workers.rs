//! Decode workers: a route's chunks decoded on other cores while it reads on. Chunks
//! are independent (each has its own format decoder, see `chunk.rs`) and are taken
//! back in the order they were read, so each partition's rows keep their order and
//! every row its coordinates.

use std::sync::mpsc;

use super::chunk::{Decoded, RawRows, Recipe};
use super::format::Format;

/// The threads chunks are decoded on, shared by every route.
pub struct Workers {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl Workers {
    /// `threads` decode threads, or `None` for none (chunks are then decoded where
    /// they are read). One thread already lets decoding run beside reading.
    pub fn new(threads: usize) -> Option<Self> {
        if threads == 0 {
            return None;
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("decode-{i}"))
            .build()
            .ok()?;
        Some(Self { pool, threads })
    }

    /// The machine's cores less two (one reads, one serves the sinks' writes), at most
    /// 8; none below 4 cores (`decode_workers` unset). On 2 cores, with the servers
    /// beside, workers bought no throughput end to end and cost 90-130 MiB of RSS.
    pub fn for_this_machine() -> Option<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 4 {
            return None;
        }
        Self::new((cores - 2).min(8))
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Starts decoding a chunk.
    pub fn decode(&self, recipe: Recipe, format: Box<dyn Format>, rows: RawRows) -> Pending {
        let (done, result) = mpsc::sync_channel(1);
        self.pool.spawn(move || {
            // The receiver is gone only when the route was dropped mid-decode.
            let _ = done.send(recipe.decode(format, rows));
        });
        Pending::Running(result)
    }
}

/// A chunk being decoded, or decoded.
pub enum Pending {
    Done(Decoded),
    Running(mpsc::Receiver<Decoded>),
}

impl Pending {
    /// The decoded chunk, waiting for it if a worker still has it.
    pub fn wait(self) -> Decoded {
        match self {
            Pending::Done(decoded) => decoded,
            Pending::Running(result) => result
                .recv()
                .expect("a decode worker panicked (see the log above)"),
        }
    }
}
