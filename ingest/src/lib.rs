//! The ingestion service: Kafka topics decoded once into Arrow and written to every
//! sink the configured routes name (see `pipeline` for the path of one record).
//!
//! Modules are private but `protocol`, which the simulation in `tests/protocol_sim`
//! drives: what the binary, the benchmarks and the tests use is re-exported below, so
//! the compiler reports anything else nobody uses.

mod batch;
mod config;
mod consumer;
mod dead_letter;
mod decode;
mod health;
mod inspect;
mod logging;
mod pipeline;
mod plugins;
mod produce;
pub mod protocol;
mod registry;
mod watermark;

pub use config::{Loaded, PayloadFormat, load, load_str, metadata_fields};
pub use dead_letter::replay::{
    Filter as ReplayFilter, PER_TRANSACTION as REPLAY_PER_TRANSACTION, Report as ReplayReport,
    replay,
};
pub use dead_letter::show::show as show_dead_letters;
pub use decode::ErrorClass;
pub use decode::{Message, Payload, ProtoSchema, RouteDecoder, Workers, WriterSchema, own_schema};
pub use health::{Health, serve as serve_health};
pub use inspect::{Report as StatusReport, render as render_status, report as status_report};
pub use logging::init as init_logging;
pub use pipeline::{check_connections, run};
pub use produce::{EventGenerator, ProduceOptions, produce};
