//! One server behind the URL (issue 16, item 12c). Everything the sink's exactly-once
//! rests on is local to one server: the insert gates (a DROP waits for the inserts
//! through them on that server), the ledger, the recent parts in `system.parts`, the
//! running inserts in `system.processes`. A URL in front of several independent servers
//! (a load balancer over replicas that do not replicate) would split all of them, so
//! opening a sink asks who answers over several connections at once and refuses to
//! start when the answers differ.

use std::time::Duration;

use ingest_sink_api::SinkError;

use crate::client::{fetch_json, is_retryable, json_number, server_error_code};

/// Questions asked at once: the client opens a connection for each (none is idle while
/// the others run), so a balancer spreading connections or requests over two servers
/// answers from both with near certainty (1 in 2^7 for a random pick of two).
const PROBES: usize = 8;

/// Two answers of one server may name start times this far apart (whole seconds, read
/// as `now() - uptime()` at two moments).
const START_SLACK: u64 = 2;

/// Who answered: its host name, version, server UUID (where the server has one) and
/// start time (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    host: String,
    version: String,
    uuid: Option<String>,
    started: u64,
}

impl Identity {
    fn same_server(&self, other: &Identity) -> bool {
        self.host == other.host
            && self.version == other.version
            && self.uuid == other.uuid
            && self.started.abs_diff(other.started) <= START_SLACK
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} version {}", self.host, self.version)?;
        if let Some(uuid) = &self.uuid {
            write!(f, " uuid {uuid}")?;
        }
        write!(f, " up since {}", self.started)
    }
}

/// The question; `serverUUID()` only where the server has it (since 21.x; 18.16 lacks
/// it, and a server without it answering one of the probes is itself a second server).
fn probe_sql(with_uuid: bool) -> String {
    let uuid = if with_uuid {
        ", toString(serverUUID()) AS uuid"
    } else {
        ""
    };
    format!(
        "SELECT hostName() AS host, version() AS version, \
         toUInt64(toUInt32(now()) - uptime()) AS started{uuid}"
    )
}

/// Refuses (permanently) a URL that reaches more than one server; `url` names it in
/// the error. Answers that are not identities (a network error) are left to the calls
/// that follow, which retry.
pub(crate) async fn check(
    sink: &str,
    client: &clickhouse::Client,
    url: &str,
) -> Result<(), SinkError> {
    let with_uuid = has_server_uuid(sink, client).await?;
    let sql = probe_sql(with_uuid);
    let mut probes = tokio::task::JoinSet::new();
    for _ in 0..PROBES {
        let client = client.clone();
        let sql = sql.clone();
        probes.spawn(async move {
            let query = client.query_raw(&sql);
            tokio::time::timeout(Duration::from_secs(60), fetch_json(query)).await
        });
    }
    let mut seen: Vec<Identity> = Vec::new();
    let mut others = Vec::new();
    while let Some(answer) = probes.join_next().await {
        let rows = match answer {
            Ok(Ok(Ok(rows))) => rows,
            // No such function here: a different server from the one asked first.
            Ok(Ok(Err(clickhouse::error::Error::BadResponse(text))))
                if server_error_code(&text) == Some(46) =>
            {
                others.push("a server without serverUUID()".to_string());
                continue;
            }
            Ok(Ok(Err(e))) => {
                return Err(SinkError::new(
                    sink,
                    format!("cannot ask which server answers: {e}"),
                    is_retryable(&e),
                ));
            }
            Ok(Err(_)) | Err(_) => {
                return Err(SinkError::retryable(
                    sink,
                    "cannot ask which server answers: no answer",
                ));
            }
        };
        let Some(row) = rows.first() else { continue };
        let identity = Identity {
            host: row["host"].as_str().unwrap_or_default().to_string(),
            version: row["version"].as_str().unwrap_or_default().to_string(),
            uuid: row["uuid"].as_str().map(str::to_string),
            started: json_number(&row["started"]).unwrap_or(0),
        };
        if !seen.iter().any(|s| s.same_server(&identity)) {
            seen.push(identity);
        }
    }
    let mut servers: Vec<String> = seen.iter().map(ToString::to_string).collect();
    servers.extend(others);
    if servers.len() > 1 {
        return Err(SinkError::permanent(
            sink,
            format!(
                "`{url}` reaches more than one ClickHouse server ({}): the sink's insert gates, \
                 position ledger and recent parts are each on one server, so writes through \
                 several are not exactly once; point it at one server (not a load balancer over \
                 independent servers)",
                servers.join("; ")
            ),
        ));
    }
    Ok(())
}

/// Whether the server answering knows `serverUUID()`.
async fn has_server_uuid(sink: &str, client: &clickhouse::Client) -> Result<bool, SinkError> {
    let query =
        client.query_raw("SELECT count() AS n FROM system.functions WHERE name = 'serverUUID'");
    let rows = fetch_json(query).await.map_err(|e| {
        SinkError::new(
            sink,
            format!("cannot read system.functions: {e}"),
            is_retryable(&e),
        )
    })?;
    Ok(rows
        .first()
        .and_then(|r| json_number::<u64>(&r["n"]))
        .is_some_and(|n| n > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(host: &str, version: &str, started: u64) -> Identity {
        Identity {
            host: host.into(),
            version: version.into(),
            uuid: None,
            started,
        }
    }

    #[test]
    fn one_server_is_one_host_version_uuid_and_start() {
        let a = id("ch-0", "26.9.1", 1_000);
        assert!(a.same_server(&id("ch-0", "26.9.1", 1_001)), "clock slack");
        assert!(!a.same_server(&id("ch-1", "26.9.1", 1_000)));
        assert!(!a.same_server(&id("ch-0", "18.16.1", 1_000)));
        assert!(!a.same_server(&id("ch-0", "26.9.1", 1_100)), "restarted");
        let with_uuid = |uuid: &str| Identity {
            uuid: Some(uuid.into()),
            ..a.clone()
        };
        assert!(!with_uuid("1").same_server(&with_uuid("2")));
    }
}
