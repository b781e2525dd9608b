//! Iceberg sink: Arrow batches written as zstd Parquet files and committed with a fast
//! append that records the Kafka positions the files cover in the same catalog commit
//! (table properties and snapshot summary, see `positions`).
//!
//! One job per module, in the order a write meets them: `config` (the route's `iceberg:`
//! block), `catalog` (opening the catalog; `rest_auth` renews its tokens), `table`
//! (finding or creating the table, with `schema` and `partition`), `sink` (open, and a
//! write as its steps), `conform` (a batch cast to the table's schema; `values` finds
//! the rows that would not fit first), `data_files` (the Parquet files, kept across a
//! lost race), `commit` (files and positions in one compare-and-swap, `pinned`),
//! `positions` (where they are kept), `reader` (reading them back) and `watermark` (the
//! completeness watermark for readers). `plugin`
//! registers the sink with the service.

mod catalog;
mod commit;
mod config;
mod conform;
mod data_files;
mod evolve;
mod inspect;
mod partition;
mod pinned;
mod plugin;
mod positions;
mod reader;
mod rest_auth;
mod schema;
mod sink;
mod table;
mod values;
mod watermark;

pub use catalog::{CatalogConfig, CatalogKind, open_catalog};
pub use config::IcebergTable;
pub use plugin::ICEBERG;
pub use positions::{positions_key, property_key, recorded_positions};
pub use rest_auth::is_permanent_refusal;
pub use sink::IcebergSink;
pub use watermark::watermark_key;
