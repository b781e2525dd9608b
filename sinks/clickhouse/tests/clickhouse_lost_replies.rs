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

use common::{batch, counts, drop_database, events_table, fresh_database, open};
use ingest_sink_api::Sink;
use ingest_sink_clickhouse::ClickHouseConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the reply of an insert it loses.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answers `502 Bad Gateway` at once (nginx after an upstream reset or timeout).
    BadGateway,
    /// Answers nothing (the writer gives up first: a deadline around its write).
    NoAnswer,
}

/// A STAND-IN for an HTTP proxy in front of ClickHouse (nginx, a load balancer) that
/// loses replies: no real part of the local stack loses the reply of an insert on demand
/// while still delivering the insert. It reads each HTTP request whole; the first
/// `failing` row inserts (an `INSERT` in the `query` URL parameter, as the sink sends
/// rows; ledger entries and registry rows are sent in the body and pass) get the
/// `fault`, and each is forwarded to the real server `delay` later, its answer
/// discarded. Every other request is forwarded at once and its answer relayed. Each
/// connection serves one request (`Connection: close` both ways).
struct LossyProxy {
    url: String,
}

impl LossyProxy {
    async fn start(fault: Fault, failing: usize, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = common::url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let failing = Arc::new(AtomicUsize::new(failing));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let lossy = Lossy {
                    upstream: upstream.clone(),
                    fault,
                    failing: failing.clone(),
                    delay,
                };
                tokio::spawn(lossy.serve(client));
            }
        });
        Self { url }
    }

    /// `conn` reached through this proxy.
    fn in_front_of(&self, conn: &ClickHouseConnection) -> ClickHouseConnection {
        ClickHouseConnection {
            url: self.url.clone(),
            ..conn.clone()
        }
    }
}

struct Lossy {
    upstream: String,
    fault: Fault,
    failing: Arc<AtomicUsize>,
    delay: Duration,
}

impl Lossy {
    async fn serve(self, mut client: TcpStream) {
        let Some(request) = read_request(&mut client).await else {
            return;
        };
        let lost = request.row_insert
            && self
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !lost {
            let answer = forward(&self.upstream, &request).await;
            let _ = client.write_all(&answer).await;
            return;
        }
        let (upstream, delay) = (self.upstream.clone(), self.delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            forward(&upstream, &request).await;
        });
        match self.fault {
            Fault::BadGateway => {
                let body = "<html><body><h1>502 Bad Gateway</h1></body></html>";
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = client.write_all(answer.as_bytes()).await;
            }
            Fault::NoAnswer => {
                // Until the writer hangs up.
                let _ = client.read_to_end(&mut Vec::new()).await;
            }
        }
    }
}

/// One HTTP request, as it is forwarded: its head with `Connection: close`, its body
/// as received (Content-Length or chunked).
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    row_insert: bool,
}

fn find(data: &[u8], what: &[u8]) -> Option<usize> {
    data.windows(what.len()).position(|w| w == what)
}

/// Reads more of `stream` into `buffer`; false at its end.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_request(client: &mut TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buffer, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(client, &mut buffer).await {
            return None;
        }
    };
    let text = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next()?.to_string();
    let (mut length, mut chunked) = (0, false);
    let mut head = format!("{request_line}\r\n");
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => continue,
            _ => {}
        }
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    buffer.drain(..head_end);
    let body_length = loop {
        let complete = if chunked {
            chunked_length(&buffer)
        } else {
            (buffer.len() >= length).then_some(length)
        };
        if let Some(n) = complete {
            break n;
        }
        if !fill(client, &mut buffer).await {
            return None;
        }
    };
    buffer.truncate(body_length);
    let row_insert = request_line.to_ascii_lowercase().contains("query=insert");
    Some(Request {
        head: head.into_bytes(),
        body: buffer,
        row_insert,
    })
}

/// The length of the complete chunked body at the start of `data`, `None` while it is
/// incomplete.
fn chunked_length(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&data[at..], b"\r\n")?;
        let size = std::str::from_utf8(&data[at..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let end = at + find(&data[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if data.len() < at {
            return None;
        }
    }
}

/// Sends `request` to the server and returns its whole answer.
async fn forward(upstream: &str, request: &Request) -> Vec<u8> {
    let mut answer = Vec::new();
    if let Ok(mut server) = TcpStream::connect(upstream).await
        && server.write_all(&request.head).await.is_ok()
        && server.write_all(&request.body).await.is_ok()
    {
        let _ = server.read_to_end(&mut answer).await;
    }
    answer
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
    let proxy = LossyProxy::start(Fault::BadGateway, 2, Duration::from_secs(2)).await;
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
    let proxy = LossyProxy::start(Fault::NoAnswer, 1, Duration::from_secs(2)).await;
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
