//! A STAND-IN for an HTTP proxy in front of ClickHouse (nginx, a load balancer), with a
//! hook that decides per request what happens to it: no real part of the local stack
//! loses a reply on demand while still delivering the request, or lets a test act
//! between two queries of the sink. It reads each HTTP request whole and serves one
//! request per connection (`Connection: close` both ways).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ingest_sink_clickhouse::ClickHouseConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with a request, as its hook decides.
pub enum Action {
    /// Forwards it to the server and relays the answer.
    Forward,
    /// Answers this (a whole HTTP response) and forwards nothing.
    Answer(Vec<u8>),
    /// Answers nothing until the client hangs up, and forwards nothing.
    Hang,
}

/// The hook: given the server's address and the request, what to do with it (it may
/// act on the server first, or send the request itself later).
pub type Hook =
    Arc<dyn Fn(String, Arc<Request>) -> Pin<Box<dyn Future<Output = Action> + Send>> + Send + Sync>;

pub struct HttpProxy {
    pub url: String,
}

impl HttpProxy {
    /// A proxy on a free port in front of the stack's server ([`super::url`]).
    pub async fn start(hook: Hook) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = super::url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), hook.clone()));
            }
        });
        Self { url }
    }

    /// `conn` reached through this proxy.
    pub fn in_front_of(&self, conn: &ClickHouseConnection) -> ClickHouseConnection {
        ClickHouseConnection {
            url: self.url.clone(),
            ..conn.clone()
        }
    }
}

async fn serve(mut client: TcpStream, upstream: String, hook: Hook) {
    let Some(request) = read_request(&mut client).await else {
        return;
    };
    let request = Arc::new(request);
    match hook(upstream.clone(), request.clone()).await {
        Action::Forward => {
            let answer = forward(&upstream, &request).await;
            let _ = client.write_all(&answer).await;
        }
        Action::Answer(answer) => {
            let _ = client.write_all(&answer).await;
        }
        Action::Hang => {
            let _ = client.read_to_end(&mut Vec::new()).await;
        }
    }
}

impl Request {
    /// The request's SQL wherever it is (the `query` URL parameter, still encoded, and
    /// the body), for a hook to match on.
    pub fn text(&self) -> String {
        format!(
            "{} {}",
            String::from_utf8_lossy(&self.head),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// One HTTP request, as it is forwarded: its head with `Connection: close`, its body
/// as received (Content-Length or chunked).
pub struct Request {
    head: Vec<u8>,
    pub body: Vec<u8>,
    /// An `INSERT` in the `query` URL parameter: rows, as the sink sends them (ledger
    /// entries and registry rows are sent in the body).
    pub row_insert: bool,
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
pub async fn forward(upstream: &str, request: &Request) -> Vec<u8> {
    let mut answer = Vec::new();
    if let Ok(mut server) = TcpStream::connect(upstream).await
        && server.write_all(&request.head).await.is_ok()
        && server.write_all(&request.body).await.is_ok()
    {
        let _ = server.read_to_end(&mut answer).await;
    }
    answer
}
