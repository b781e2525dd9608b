//! ClickHouse sink: Arrow batches inserted over HTTP as `Native` blocks.
//!
//! One format for every server: Native is columnar (a near copy of Arrow buffers) and
//! accepted from 18.16 to current releases, where ArrowStream would exclude old servers
//! and RowBinary would transpose every batch into rows.
//!
//! One job per module: `config` (what the service config says), `client` (queries
//! and what their errors mean), `setup` (opening a sink: the table and its
//! companions), `columns` (the table's columns matched to the schema), `write` (a
//! batch through the gate into the table, then the ledger, then the completeness
//! watermark in `watermarks`), `dry_run` (the payload
//! without a server), `plugin` (the sink registered with the service). Exactly-once rests on [`gate`] (one writer per partition) and
//! [`ledger`] (where the table stands); [`native`] encodes, [`ranges`] finds the values
//! a column cannot hold.

mod client;
mod columns;
mod config;
mod connect;
mod coordinate_columns;
mod ddl;
mod dry_run;
mod engine;
mod gate;
mod inspect;
mod ledger;
mod native;
mod one_server;
mod plugin;
mod ranges;
mod setup;
mod types;
mod watermarks;
mod write;

pub use client::{
    client, is_retryable, query_json, server_caps, server_error_code, server_pinned_settings,
    try_client,
};
pub use config::{BodyCompression, ClickHouseConnection, ClickHouseTable};
pub use connect::ClickHouseTls;
pub use dry_run::offline_payload;
pub use ledger::CoordinateColumns;
pub use plugin::CLICKHOUSE;
pub use write::ClickHouseSink;
