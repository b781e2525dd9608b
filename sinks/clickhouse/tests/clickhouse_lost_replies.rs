//! An insert whose outcome the writer never learned (a reply lost after ClickHouse did
//! the work, or a write dropped in the middle of its insert) lands at most once, against
//! the real ClickHouse server of the local stack (`CLICKHOUSE_URL`, default
//! http://127.0.0.1:8123), reached through a lossy HTTP proxy.
//!
//! Issue 16, item 3: a proxy in front of ClickHouse (nginx, a load balancer) answered
//! 502 for an insert and forwarded it to ClickHouse 2 s later; the sink retried through
//! the same gate and the late insert landed too (22,000 rows for 20,000 events).

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::http_proxy::{Action, Hook, HttpProxy, forward};
use common::{batch, counts, drop_database, events_table, fresh_database, open};
use ingest_sink_api::Sink;
use ingest_sink_clickhouse::ClickHouseConnection;

/// What the proxy does with the reply of an insert it loses.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answers `502 Bad Gateway` at once (nginx after an upstream reset or timeout).
    BadGateway,
    /// Answers nothing (the writer gives up first: a deadline around its write).
    NoAnswer,
}

/// A STAND-IN for an HTTP proxy in front of ClickHouse (nginx, a load balancer) that
/// loses replies (see [`HttpProxy`]): the first `failing` row inserts get the `fault`,
/// and each is forwarded to the real server `delay` later, its answer discarded. Every
/// other request is forwarded at once and its answer relayed.
async fn lossy_proxy(fault: Fault, failing: usize, delay: Duration) -> HttpProxy {
    let failing = Arc::new(AtomicUsize::new(failing));
    let hook: Hook = Arc::new(move |upstream, request| {
        let failing = failing.clone();
        Box::pin(async move {
            let lost = request.row_insert
                && failing
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if !lost {
                return Action::Forward;
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                forward(&upstream, &request).await;
            });
            match fault {
                Fault::BadGateway => {
                    let body = "<html><body><h1>502 Bad Gateway</h1></body></html>";
                    Action::Answer(
                        format!(
                            "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .into_bytes(),
                    )
                }
                // Until the writer hangs up.
                Fault::NoAnswer => Action::Hang,
            }
        })
    });
    HttpProxy::start(hook).await
}

/// Rows, distinct offsets: every event once.
async fn assert_every_event_once(conn: &ClickHouseConnection, events: u64) {
    let (rows, distinct) = counts(conn).await;
    assert_eq!(
        (rows, distinct),
        (events, events),
        "{rows} rows for {distinct} distinct offsets of {events} events"
    );
}

#[tokio::test]
async fn an_insert_whose_reply_was_lost_lands_once() {
    let conn = fresh_database("lost_reply").await;
    // The proxy loses the replies of the first two inserts; each lands 2 s later.
    let proxy = lossy_proxy(Fault::BadGateway, 2, Duration::from_secs(2)).await;
    let mut sink = open(&proxy.in_front_of(&conn), &events_table()).await;
    for start in (0..20_000).step_by(2_000) {
        let rows = batch(start..start + 2_000);
        // As the pipeline does: the same batch again until it is written.
        let mut failures = 0;
        while let Err(e) = sink.write(&rows).await {
            assert!(e.is_retryable(), "a lost reply is worth a retry: {e:?}");
            failures += 1;
            assert!(failures < 10, "the write keeps failing: {e:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The late inserts arrive meanwhile, or now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_every_event_once(&conn, 20_000).await;
    drop_database(&conn).await;
}

#[tokio::test]
async fn a_write_dropped_in_the_middle_of_its_insert_lands_once() {
    let conn = fresh_database("dropped_write").await;
    // The first insert reaches the server 2 s after it was sent; its reply is lost.
    let proxy = lossy_proxy(Fault::NoAnswer, 1, Duration::from_secs(2)).await;
    let mut sink = open(&proxy.in_front_of(&conn), &events_table()).await;
    let rows = batch(0..2_000);
    // The pipeline's deadline around a write attempt drops its future.
    let attempt = tokio::time::timeout(Duration::from_millis(500), sink.write(&rows)).await;
    assert!(
        attempt.is_err(),
        "the first attempt should hang: {attempt:?}"
    );
    sink.write(&rows).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_every_event_once(&conn, 2_000).await;
    drop_database(&conn).await;
}
