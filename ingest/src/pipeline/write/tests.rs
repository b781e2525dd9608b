//! A revocation waits for a write actually under way, not for a failing sink's backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ingest_sink_api::{
    OffsetMap, Partition, PositionReader, Sink, SinkBatch, SinkError, WriteOutcome,
};

use super::write_with_retry;
use crate::consumer::Ownership;
use crate::health::Health;

/// A sink in an outage: every attempt fails at once with a retryable error. A stand-in
/// because the shared test services must not be stopped; what is tested is the retry
/// loop around any sink, not the sink.
struct Down {
    attempts: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Sink for Down {
    fn name(&self) -> &str {
        "down"
    }

    async fn write(&mut self, _: &SinkBatch) -> Result<WriteOutcome, SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Err(SinkError::retryable("down", "connection refused"))
    }

    fn position_reader(&self) -> Arc<dyn PositionReader> {
        unreachable!("not read here")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_does_not_wait_out_the_backoff_of_a_failing_sink() {
    let ownership = Arc::new(Ownership::default());
    let attempts = Arc::new(AtomicUsize::new(0));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut batch = SinkBatch::default();
    let mut next = OffsetMap::default();
    next.advance("t", 0, 10);
    batch.positions = next;
    let writer = {
        let ownership = Arc::clone(&ownership);
        let mut sink = Down {
            attempts: Arc::clone(&attempts),
        };
        tokio::spawn(async move {
            write_with_retry(&mut sink, &batch, &ownership, &Health::new(), shutdown).await
        })
    };
    // After the first failure the loop sleeps (200 ms, then 400 ms, ...).
    while attempts.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = Instant::now();
    let ownership2 = Arc::clone(&ownership);
    let done = tokio::task::spawn_blocking(move || {
        ownership2.wait_for_writes(&[Partition::new("t", 0)], Duration::from_secs(3))
    })
    .await
    .unwrap();
    let waited = asked.elapsed();
    writer.abort();
    assert!(
        done && waited < Duration::from_millis(300),
        "the revocation waited {waited:?} (gave up: {}) for a sink that was only backing off",
        !done
    );
}
