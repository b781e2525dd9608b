//! Event schemas: the YAML files operators write, parsed into Arrow schemas.
//!
//! Arrow is the pipeline's internal currency; each sink maps Arrow types to its own
//! (see the crates under `sinks/`), so this crate knows nothing of ClickHouse or Iceberg.

pub mod schema;
pub mod types;

pub use schema::{SchemaError, load_schema, parse_schema};
pub use types::{TypeExpr, parse_type};
