//! What the sink makes of the server's replies to its queries, against the real
//! ClickHouse server of the local stack (`CLICKHOUSE_URL`, default
//! http://127.0.0.1:8123).

#[allow(dead_code)] // each test binary uses a part of the shared helpers
mod common;

use ingest_sink_clickhouse::{client, query_json, server_error_code};

/// An exception raised after the first blocks of a SELECT's output were sent arrives on
/// 18.16 as the last line of a reply with status 200; it was read as a short, successful
/// result (issue 16, item 10).
#[tokio::test]
async fn an_exception_in_the_middle_of_a_reply_is_an_error() {
    let client = client(&common::connection("default"));
    let rows = query_json(
        &client,
        "SELECT number, throwIf(number = 200000) AS x FROM system.numbers LIMIT 300000 \
         SETTINGS max_block_size = 1000",
    )
    .await;
    let error = match rows {
        Ok(rows) => panic!("{} rows read as a whole result", rows.len()),
        Err(error) => error,
    };
    let clickhouse::error::Error::BadResponse(message) = &error else {
        panic!("{error:?}");
    };
    // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    assert_eq!(server_error_code(message), Some(395), "{message}");
    assert!(message.contains("throwIf"), "{message}");
}
