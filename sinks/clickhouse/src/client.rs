//! Talking to the server: the HTTP(S) client, queries and statements, and what their
//! errors mean (worth a retry or not).
//!
//! Values go into queries with the `clickhouse` crate's `?` placeholders and `.bind()`:
//! the crate escapes and inlines them on the client, so the server sees plain literals
//! (every version from 18.16 on reads them). Identifiers cannot be bound as values; they
//! are quoted with [`quote_ident`](crate::types::quote_ident).

use std::time::Duration;

use clickhouse::query::Query;
use clickhouse::sql::Bind;
use ingest_sink_api::SinkError;
use ingest_sink_api::secret::ExposeSecret;

use crate::config::{BodyCompression, ClickHouseConnection};
use crate::connect;
use crate::types::ServerCaps;

/// Opens an HTTP(S) client for the connection settings. Panics when the TLS trust
/// cannot be loaded (config validation checks `tls.ca_file` first): services use
/// [`try_client`].
pub fn client(conn: &ClickHouseConnection) -> clickhouse::Client {
    try_client(conn).unwrap_or_else(|e| panic!("clickhouse `{}`: {e}", conn.display_url()))
}

/// Opens an HTTP(S) client for the connection settings: `https://` URLs (or a `tls`
/// section) get a TLS connector trusting `tls.ca_file` or the system's roots.
pub fn try_client(conn: &ClickHouseConnection) -> Result<clickhouse::Client, String> {
    let base = if connect::is_https(&conn.url) || conn.tls.is_some() {
        connect::https_client(conn.tls.as_ref())?
    } else {
        clickhouse::Client::default()
    };
    Ok(base
        .with_url(&conn.url)
        .with_user(&conn.user)
        .with_password(conn.password.expose_secret())
        .with_validation(false)
        .with_compression(match conn.compression {
            BodyCompression::Lz4 => clickhouse::Compression::Lz4,
            BodyCompression::None => clickhouse::Compression::None,
        }))
}

/// Runs a query and returns its rows as JSON objects (works on every server version).
pub async fn query_json(
    client: &clickhouse::Client,
    sql: &str,
) -> Result<Vec<serde_json::Value>, clickhouse::error::Error> {
    fetch_json(client.query_raw(sql)).await
}

/// Runs a query (its values bound) and returns its rows as JSON objects.
pub(crate) async fn fetch_json(
    query: Query,
) -> Result<Vec<serde_json::Value>, clickhouse::error::Error> {
    fetch_json_within(query, QUERY_TIMEOUT).await
}

/// How long a query or statement of the sink may take: each reads or writes a few
/// rows (the ledger, recent parts, the gate registry, system tables) or is DDL, and
/// answers in milliseconds; no answer within a minute means the server or the path to
/// it is stuck (a server that stops answering without refusing would otherwise hang the
/// write forever).
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// As [`fetch_json`], given up after `deadline` with [`Error::TimedOut`](clickhouse::error::Error::TimedOut).
pub(crate) async fn fetch_json_within(
    query: Query,
    deadline: Duration,
) -> Result<Vec<serde_json::Value>, clickhouse::error::Error> {
    let reply = async { query.fetch_bytes("JSONEachRow")?.collect().await };
    let bytes = tokio::time::timeout(deadline, reply)
        .await
        .map_err(|_| clickhouse::error::Error::TimedOut)??;
    json_rows(&bytes)
}

/// Runs a statement, given up after `deadline` with [`Error::TimedOut`](clickhouse::error::Error::TimedOut):
/// a statement that writes may then still take effect.
pub(crate) async fn run_within(
    statement: Query,
    deadline: Duration,
) -> Result<(), clickhouse::error::Error> {
    tokio::time::timeout(deadline, statement.execute())
        .await
        .map_err(|_| clickhouse::error::Error::TimedOut)?
}

/// The rows of a `JSONEachRow` reply. A line that is not JSON is an error, never
/// skipped: 18.16 sends an exception raised after the first blocks went out (a memory
/// limit, a timeout, a failing function) as the reply's last line, with status 200, so
/// skipping it would read a short result as a whole one. The error is the server's
/// (`Code: N, e.displayText() = ...`, classified by its code) when the line is one.
fn json_rows(reply: &[u8]) -> Result<Vec<serde_json::Value>, clickhouse::error::Error> {
    let mut rows = Vec::new();
    for line in reply.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(row) => rows.push(row),
            Err(e) => {
                let text = String::from_utf8_lossy(line);
                let text = text.trim();
                let message = if text.starts_with("Code: ") && server_error_code(text).is_some() {
                    format!("{text} (after {} rows of the reply)", rows.len())
                } else {
                    let shown: String = text.chars().take(200).collect();
                    format!("a line of the reply is not JSON ({e}): {shown}")
                };
                return Err(clickhouse::error::Error::BadResponse(message));
            }
        }
    }
    Ok(rows)
}

/// Runs a query for `sink`; a failure names the query and says whether to retry.
pub(crate) async fn select(sink: &str, query: Query) -> Result<Vec<serde_json::Value>, SinkError> {
    let sql = query.sql_display().to_string();
    fetch_json(query).await.map_err(|e| failed(sink, &sql, &e))
}

/// Runs a statement for `sink` (within [`QUERY_TIMEOUT`]); a failure names it and
/// says whether to retry.
pub(crate) async fn execute(sink: &str, statement: Query) -> Result<(), SinkError> {
    execute_within(sink, statement, QUERY_TIMEOUT).await
}

/// As [`execute`], within `deadline`.
pub(crate) async fn execute_within(
    sink: &str,
    statement: Query,
    deadline: Duration,
) -> Result<(), SinkError> {
    let sql = statement.sql_display().to_string();
    run_within(statement, deadline)
        .await
        .map_err(|e| failed(sink, &sql, &e))
}

fn failed(sink: &str, sql: &str, error: &clickhouse::error::Error) -> SinkError {
    let message = match error {
        // Retryable; a statement that writes (a registry row) may still take effect.
        clickhouse::error::Error::TimedOut => {
            format!("`{sql}` got no answer in time (its outcome is unknown)")
        }
        _ => format!("`{sql}` failed: {error}"),
    };
    SinkError::new(sink, message, is_retryable(error))
}

/// `?, ?, ?`: one placeholder per value of an `IN (...)` list (see [`bind_all`]).
/// A quoted identifier for a statement whose values are bound with `?`: a `?` in the
/// name is doubled, which the `clickhouse` crate reads as a `?` and not a placeholder.
pub(crate) fn bound_ident(name: &str) -> String {
    crate::types::quote_ident(name).replace('?', "??")
}

/// `database.name`, quoted for a statement whose values are bound (see [`bound_ident`]).
pub(crate) fn bound_qualified(database: &str, name: &str) -> String {
    format!("{}.{}", bound_ident(database), bound_ident(name))
}

pub(crate) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

/// Binds `values` to the next placeholders, in order.
pub(crate) fn bind_all<T: Bind>(query: Query, values: impl IntoIterator<Item = T>) -> Query {
    values
        .into_iter()
        .fold(query, |query, value| query.bind(value))
}

/// Settings that pin what the server's acknowledgement of an insert means: the rows
/// are in the table (or the entries in the ledger, or the registration in the gate
/// registry, visible to the next read). A server or user profile may change each of
/// them, and the ledger would then claim rows the table does not hold:
/// - `async_insert=1` queues the insert; with `wait_for_async_insert=0` the server
///   answers before the rows are written (and a registration is not yet visible);
/// - `materialized_views_ignore_errors=1` acknowledges an insert whose push through a
///   view failed: every row reaches the table through the gate's view;
/// - `ignore_materialized_views_with_dropped_target_table=1` skips a view whose
///   target is gone instead of failing;
/// - `input_format_allow_errors_*` skip rows that do not parse (ledger entries and
///   registrations are sent as VALUES) and acknowledge the rest.
///
/// `insert_deduplicate` and `deduplicate_blocks_in_dependent_materialized_views` only
/// act on replicated tables, which the sink refuses.
const PINNED_SETTINGS: [(&str, &str); 6] = [
    ("async_insert", "0"),
    ("wait_for_async_insert", "1"),
    ("materialized_views_ignore_errors", "0"),
    ("ignore_materialized_views_with_dropped_target_table", "0"),
    ("input_format_allow_errors_num", "0"),
    ("input_format_allow_errors_ratio", "0"),
];

/// The settings pinning acknowledgements (see [`PINNED_SETTINGS`]) that a server
/// knowing the settings `known` accepts: 18.16 refuses a setting it does not know.
pub(crate) fn pinned_settings(
    known: &std::collections::BTreeSet<String>,
) -> Vec<(&'static str, &'static str)> {
    PINNED_SETTINGS
        .into_iter()
        .filter(|(name, _)| known.contains(*name))
        .collect()
}

/// The settings pinning acknowledgements that this server knows.
pub async fn server_pinned_settings(
    client: &clickhouse::Client,
) -> Result<Vec<(&'static str, &'static str)>, clickhouse::error::Error> {
    let names = PINNED_SETTINGS.map(|(name, _)| name);
    let query = client.query(&format!(
        "SELECT name FROM system.settings WHERE name IN ({})",
        placeholders(names.len())
    ));
    let known = fetch_json(bind_all(query, names))
        .await?
        .iter()
        .filter_map(|row| row["name"].as_str().map(str::to_string))
        .collect();
    Ok(pinned_settings(&known))
}

/// `statement` with the `pinned` settings (see [`PINNED_SETTINGS`]).
pub(crate) fn pin(statement: Query, pinned: &[(&'static str, &'static str)]) -> Query {
    pinned.iter().fold(statement, |statement, (name, value)| {
        statement.with_setting(*name, *value)
    })
}

/// Asks the server its version.
pub async fn server_caps(
    client: &clickhouse::Client,
) -> Result<(String, ServerCaps), clickhouse::error::Error> {
    let rows = query_json(client, "SELECT version() AS v").await?;
    let version = rows
        .first()
        .and_then(|r| r["v"].as_str())
        .unwrap_or("0.0")
        .to_string();
    let caps = ServerCaps::from_version(&version);
    Ok((version, caps))
}

/// A number from a JSON output row. ClickHouse quotes 64-bit integers in JSON formats
/// (a JSON number could not hold them exactly), so both forms are read.
pub(crate) fn json_number<T: std::str::FromStr>(value: &serde_json::Value) -> Option<T> {
    match value {
        serde_json::Value::Number(number) => number.to_string().parse().ok(),
        serde_json::Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// Network failures and server overload are worth retrying; anything the server rejects
/// for what we sent (unknown column, type mismatch, bad credentials) is not.
pub fn is_retryable(error: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match error {
        Error::Network(_) | Error::TimedOut => true,
        // TOO_MANY_PARTS also names an insert touching more table partitions than
        // `max_partitions_per_insert_block` allows (100 by default since 19.5; 18.16 has
        // no limit): sending the same rows again cannot succeed.
        Error::BadResponse(text)
            if text.contains("Too many partitions for single INSERT block") =>
        {
            false
        }
        Error::BadResponse(text) => match server_error_code(text) {
            // TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR,
            // MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, TOO_MANY_PARTS, ALL_CONNECTION_TRIES_FAILED,
            // KEEPER_EXCEPTION, UNEXPECTED_END_OF_FILE, CANNOT_READ_ALL_DATA (cut request)
            Some(159 | 202 | 209 | 210 | 241 | 242 | 252 | 279 | 999 | 3 | 33) => true,
            // UNKNOWN_TABLE for a bookkeeping table of ours, which the sink made or found
            // when it opened: a server shutting down detaches its tables while it still
            // answers (18.16). Dropped by hand, it fails every retry, with its name.
            Some(60) => text.contains("__ingest_positions") || text.contains("__ingest_gates"),
            Some(_) => false,
            // No code: a proxy or a server going down answered.
            None => true,
        },
        _ => false,
    }
}

/// Whether the outcome of a request that writes is known: the server acknowledged it,
/// or refused it with an exception of its own (`Code: N` in the reply). Anything else
/// (a cut connection, a timeout, a proxy's `502 Bad Gateway`) may have reached the
/// server, or may still reach it later.
pub(crate) fn outcome_known<T>(result: &Result<T, clickhouse::error::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(clickhouse::error::Error::BadResponse(text)) => server_error_code(text).is_some(),
        Err(_) => false,
    }
}

/// Extracts N from `Code: N. DB::Exception: ...`.
pub fn server_error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_errors() {
        use clickhouse::error::Error;
        let bad = |t: &str| Error::BadResponse(t.into());
        assert!(!is_retryable(&bad(
            "Code: 60. DB::Exception: Table x doesn't exist"
        )));
        // The sink's own bookkeeping tables exist from its start: a server shutting down
        // (18.16 detaches tables while it still answers) says they do not.
        for table in ["db.t__ingest_gates", "db.t__ingest_positions"] {
            assert!(is_retryable(&bad(&format!(
                "Code: 60, e.displayText() = DB::Exception: Table {table} doesn't exist., e.what() = DB::Exception"
            ))));
        }
        assert!(is_retryable(&bad(
            "Code: 252. DB::Exception: Too many parts"
        )));
        assert!(!is_retryable(&bad(
            "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). \
             The limit is controlled by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS)"
        )));
        assert!(is_retryable(&bad("502 Bad Gateway")));
        // A proxy's answer says nothing about the insert behind it; the server's does.
        assert!(!outcome_known::<()>(&Err(bad("502 Bad Gateway"))));
        assert!(!outcome_known::<()>(&Err(Error::TimedOut)));
        assert!(outcome_known::<()>(&Err(bad(
            "Code: 252. DB::Exception: Too many parts"
        ))));
        assert_eq!(
            server_error_code("Code: 53, e.displayText() = DB::Exception"),
            Some(53)
        );
    }

    /// 18.16 sends an exception raised after the first blocks of a reply went out as
    /// the reply's last line, with status 200 (issue 16, item 10).
    #[test]
    fn an_exception_at_the_end_of_a_reply_is_an_error() {
        let reply = b"{\"n\":\"1\"}\n{\"n\":\"2\"}\nCode: 241, e.displayText() = DB::Exception: \
            Memory limit (for query) exceeded, e.what() = DB::Exception\n";
        let error = json_rows(reply).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("Memory limit (for query) exceeded"), "{text}");
        let clickhouse::error::Error::BadResponse(message) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(server_error_code(message), Some(241), "{message}");
        assert!(is_retryable(&error));
        // Any line that is not JSON (a cut or garbled reply) is an error too.
        assert!(json_rows(b"{\"n\":1}\n{\"n\":").is_err());
        assert!(json_rows(b"<html>502</html>\n").is_err());
        assert_eq!(json_rows(b"{\"n\":1}\n\n{\"n\":2}\n").unwrap().len(), 2);
    }

    /// A STAND-IN for a server that stops answering without refusing (hung, or paused
    /// by SIGSTOP): it accepts connections and never answers. Stopping the stack's real
    /// server would stop every other test using it.
    async fn silent_server() -> clickhouse::Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        clickhouse::Client::default().with_url(url)
    }

    /// Issue 16, item 2: queries and statements had no deadline.
    #[tokio::test]
    async fn queries_and_statements_to_a_silent_server_time_out() {
        use clickhouse::error::Error;
        let client = silent_server().await;
        let deadline = Duration::from_millis(300);
        let guard = deadline + Duration::from_secs(3);
        let query = fetch_json_within(client.query("SELECT 1"), deadline);
        let answer = tokio::time::timeout(guard, query).await;
        assert!(
            matches!(answer, Ok(Err(Error::TimedOut))),
            "no deadline on a query: {answer:?}"
        );
        let statement = run_within(client.query("DROP TABLE IF EXISTS t"), deadline);
        let answer = tokio::time::timeout(guard, statement).await;
        assert!(
            matches!(answer, Ok(Err(Error::TimedOut))),
            "no deadline on a statement: {answer:?}"
        );
    }

    #[test]
    fn acknowledgements_are_pinned_with_the_settings_the_server_knows() {
        let known = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        // 18.16: neither async inserts nor the view settings exist.
        let old = pinned_settings(&known(&[
            "input_format_allow_errors_num",
            "input_format_allow_errors_ratio",
            "insert_deduplicate",
        ]));
        assert_eq!(
            old,
            [
                ("input_format_allow_errors_num", "0"),
                ("input_format_allow_errors_ratio", "0")
            ]
        );
        // A current server knows them all.
        let all: Vec<&str> = PINNED_SETTINGS.iter().map(|(n, _)| *n).collect();
        let current = pinned_settings(&known(&all));
        for pinned in [
            ("async_insert", "0"),
            ("wait_for_async_insert", "1"),
            ("materialized_views_ignore_errors", "0"),
        ] {
            assert!(current.contains(&pinned), "{pinned:?} not in {current:?}");
        }
        let sql = pin(clickhouse::Client::default().query("SELECT 1"), &current)
            .sql_display()
            .to_string();
        assert_eq!(sql, "SELECT 1", "settings go in the URL, not the statement");
    }

    #[test]
    fn numbers_are_read_quoted_or_not() {
        use serde_json::json;
        assert_eq!(json_number::<u64>(&json!(7)), Some(7));
        assert_eq!(
            json_number::<i64>(&json!("-9007199254740993")),
            Some(-9007199254740993)
        );
        assert_eq!(json_number::<u64>(&json!(-1)), None);
        assert_eq!(json_number::<i64>(&json!(null)), None);
    }

    #[test]
    fn bound_values_are_escaped_on_the_client() {
        let query = clickhouse::Client::default()
            .query(&format!(
                "SELECT 1 WHERE a = ? AND b IN ({})",
                placeholders(2)
            ))
            .bind("it's");
        let sql = bind_all(query, ["x\\y", "z"]).sql_display().to_string();
        assert_eq!(sql, r"SELECT 1 WHERE a = 'it\'s' AND b IN ('x\\y', 'z')");
    }
}
