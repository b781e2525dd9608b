//! Issue 16, item 12c: one URL in front of several independent ClickHouse servers (a
//! load balancer over replicas that do not replicate) would split the gates, the ledger
//! and `system.parts` across servers, and the sink's guarantees with them. Opening a
//! sink asks the server behind the URL who it is over several connections at once and
//! refuses to start when the answers differ.
//!
//! The "load balancer" is a TCP stand-in that hands connections in turn to the local
//! stack's ClickHouse 18.16 (`CLICKHOUSE_URL`) and to ClickHouse 26.9 in process (chDB
//! behind `tests/fixtures/clickhouse_chdb_http.py`): two different servers.

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::chdb::start_chdb;
use common::{drop_database, events_table, fresh_database, try_open, url};
use ingest_sink_clickhouse::ClickHouseConnection;
use tokio::net::{TcpListener, TcpStream};

/// Listens on a free port and hands each connection to the next of `backends` in turn
/// (`host:port`); returns its address.
async fn round_robin(backends: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()].clone();
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(&backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn behind(address: &str, database: &str) -> ClickHouseConnection {
    serde_json::from_value(serde_json::json!({
        "url": format!("http://{address}"), "database": database
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_over_two_independent_servers_is_refused() {
    let chdb = start_chdb();
    let old = fresh_database("one_server_two").await;
    // Set up alike on both, as replicas without replication would be: opening a sink
    // through either alone works.
    let current = chdb.connection(&old.database);
    for direct in [&old, &current] {
        try_open(direct, &events_table(), common::schema())
            .await
            .unwrap();
    }
    let address = round_robin(vec![host_port(&url()), host_port(&chdb.url)]).await;
    let conn = behind(&address, &old.database);
    let opened = try_open(&conn, &events_table(), common::schema()).await;
    let error = opened
        .err()
        .expect("two servers behind one URL are refused");
    eprintln!("{}", error.message);
    assert!(!error.is_retryable(), "{error:?}");
    assert!(
        error.message.contains("more than one ClickHouse server"),
        "{error:?}"
    );
    drop_database(&old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_over_one_server_opens() {
    let conn = fresh_database("one_server_one").await;
    // The same server through the stand-in, over several connections.
    let address = round_robin(vec![host_port(&url())]).await;
    let through = behind(&address, &conn.database);
    try_open(&through, &events_table(), common::schema())
        .await
        .unwrap();
    drop_database(&conn).await;
}
