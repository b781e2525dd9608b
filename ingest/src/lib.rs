//! The ingestion service: Kafka topics decoded once into Arrow and written to
//! ClickHouse and Iceberg as the configured routes say.

pub mod batch;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod health;
pub mod logging;
pub mod pipeline;
pub mod plugins;
pub mod produce;
pub mod protocol;
