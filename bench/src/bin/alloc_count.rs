//! Heap allocations per record in the steady-state decode path, counted by a wrapping
//! global allocator: JSON messages pushed into the route decoder and flushed in chunks,
//! as the service does. Prints one JSON object.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use ingest::{Message, Payload, RouteDecoder};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHUNK: usize = 16 * 1024;

fn main() {
    let events = ingest_bench::sample_events(CHUNK * 4);
    let mut decoder = RouteDecoder::new(
        &Payload::json(),
        ingest_bench::events_schema(),
        vec![],
        CHUNK,
    )
    .unwrap();
    let mut rejected = Vec::new();
    let mut run = |decoder: &mut RouteDecoder, count_pushes: bool| -> (u64, u64) {
        let (mut push_allocs, mut total_allocs) = (0, 0);
        for (offset, payload) in events.iter().enumerate() {
            let message = Message {
                topic: "bench",
                partition: 0,
                offset: offset as i64,
                timestamp: Some(0),
                key: None,
                payload: Some(payload),
                headers: None,
            };
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            decoder.push(&message, &mut rejected);
            let after_push = ALLOCATIONS.load(Ordering::Relaxed);
            if decoder.chunk_full() {
                decoder.flush_chunk(&mut rejected);
            }
            if count_pushes {
                push_allocs += after_push - before;
                total_allocs += ALLOCATIONS.load(Ordering::Relaxed) - before;
            }
        }
        drop(decoder.take(&mut rejected));
        (push_allocs, total_allocs)
    };
    // Warm-up: buffers reach their steady-state capacity.
    run(&mut decoder, false);
    let (push_allocs, total_allocs) = run(&mut decoder, true);
    let records = events.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "records": events.len(),
            "allocations_in_push": push_allocs,
            "allocations_per_record_push": push_allocs as f64 / records,
            "allocations_including_chunk_flushes": total_allocs,
            "allocations_per_record_including_flushes": total_allocs as f64 / records,
        })
    );
}
