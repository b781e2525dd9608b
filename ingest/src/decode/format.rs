//! The seam between a payload format and the rest of decoding. A [`Format`] turns
//! payloads into rows of the route's payload schema; everything around it (metadata
//! columns, the sinks' value checks, coordinates, bad records, revoked partitions) is
//! format-free, in `decode/mod.rs`. One module per format (`json.rs`, `avro/`); the
//! route names its format in config (`format:`), and [`for_route`] builds it.
//! `tests/boundaries.rs` keeps each format's crate inside its module.

use arrow_array::RecordBatch;
use std::sync::Arc;

use arrow_schema::SchemaRef;

pub use super::json::Coercions;
use super::{ErrorClass, Reason};

/// The writer schema of `id` when a format reading `kind` (`AVRO`, `PROTOBUF`) can use
/// it, else why its records are refused.
pub fn usable<'s>(
    id: u32,
    schema: Option<&'s WriterSchema>,
    kind: &str,
) -> Result<&'s WriterSchema, Reason> {
    let unreadable = |text: String| Reason::new(ErrorClass::UnreadableSchema, text);
    match schema {
        None => Err(Reason::new(
            ErrorClass::UnknownSchema,
            format!("schema id {id} is not in the registry"),
        )),
        Some(s) if !s.kind.eq_ignore_ascii_case(kind) => Err(unreadable(format!(
            "schema id {id} is a {} schema; the route reads {kind}",
            s.kind
        ))),
        Some(WriterSchema {
            references: Err(why),
            ..
        }) => Err(unreadable(format!(
            "schema id {id} refers to a schema the registry cannot give: {why}"
        ))),
        Some(s) => Ok(s),
    }
}

/// Whether a table of `old`'s columns can become one of `new`'s while running: every
/// column kept (same name and nullability, the same type or a promotion of it), the
/// others only added. Else which column is not.
pub fn widens(old: &arrow_schema::Schema, new: &arrow_schema::Schema) -> Result<(), String> {
    for field in old.fields() {
        let Ok(wider) = new.field_with_name(field.name()) else {
            return Err(format!("column `{}` is dropped", field.name()));
        };
        if !ingest_sink_api::evolution::keeps(field.data_type(), wider.data_type()) {
            return Err(format!(
                "column `{}` would change from {} to {}, which is not a promotion (int → long, float → double, decimal precision up)",
                field.name(),
                field.data_type(),
                wider.data_type()
            ));
        }
        if wider.is_nullable() && !field.is_nullable() {
            return Err(format!("column `{}` would become nullable", field.name()));
        }
    }
    Ok(())
}

/// What a route's payloads are, as its config resolved them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// JSON objects; numbers strict unless the route allows these coercions.
    Json(Coercions),
    /// Avro read as `reader` (an Avro schema); `registry`: payloads carry a registry
    /// schema id, else they are bare bodies written with `reader`.
    Avro { reader: Arc<str>, registry: bool },
    /// Protobuf read as `message` (default: the schema's first) of `schema`;
    /// `registry`: payloads carry a registry schema id and message indexes.
    Protobuf {
        schema: ProtoSchema,
        message: Option<Arc<str>>,
        registry: bool,
    },
}

/// Where a Protobuf route's messages are described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoSchema {
    /// A `.proto` file (its imports from its directory, and the well-known types).
    File(std::path::PathBuf),
    /// A compiled descriptor set (`protoc --descriptor_set_out`, `buf build`).
    DescriptorSet(std::path::PathBuf),
    /// A registry's schema: `.proto` text (or a base64 `FileDescriptorProto`), and the
    /// files it imports that the registry holds (its references, by import name).
    Source {
        text: Arc<str>,
        imports: Arc<[Reference]>,
    },
}

impl Payload {
    /// Strict JSON (no coercion).
    pub fn json() -> Self {
        Self::Json(Coercions::default())
    }
}

/// A writer schema as the registry gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterSchema {
    /// `AVRO`, `PROTOBUF`, `JSON`.
    pub kind: String,
    pub text: String,
    /// The registered schemas it refers to (Protobuf imports, Avro named types), and
    /// theirs, each once; `Err` names one the registry does not hold.
    pub references: Result<Vec<Reference>, String>,
}

impl WriterSchema {
    /// A schema that refers to no other.
    pub fn standalone(kind: &str, text: &str) -> Self {
        Self {
            kind: kind.into(),
            text: text.into(),
            references: Ok(Vec::new()),
        }
    }
}

/// A registered schema another refers to, by the name it is referred to with (a
/// Protobuf import path, an Avro type's full name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub text: String,
}

/// Why a payload was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a record; the format's open rows are as before.
    Record(Reason),
    /// Not a record, and the format lost its open rows: they are fed to a
    /// [`Format::fresh`] one again.
    RowsLost(Reason),
}

/// Decodes payloads of one format into batches of one payload schema.
pub trait Format: Send {
    /// Takes one payload into the open rows.
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal>;

    /// The open rows as one batch (`None` when there are none). An error means some
    /// row does not fit the schema: the open rows are dropped, and the caller finds
    /// the culprits by decoding parts of them with [`Format::fresh`] decoders.
    fn flush(&mut self) -> Result<Option<RecordBatch>, String>;

    /// A decoder of the same format and schema, with no open rows, for up to `rows`
    /// payloads at a time.
    fn fresh(&self, rows: usize) -> Box<dyn Format>;

    /// The registry schema id this payload names that the format has not learned yet.
    /// The caller fetches it (the network is not the format's business) and calls
    /// [`Format::learn`] before [`Format::push`].
    fn schema_wanted(&self, _payload: &[u8]) -> Option<u32> {
        None
    }

    /// The registry schema id this payload names, if its framing has one (for its
    /// dead letter).
    fn schema_id(&self, _payload: &[u8]) -> Option<u32> {
        None
    }

    /// The writer schema of `id` (`None`: the registry has no such id). Records of an
    /// id that cannot be read are refused with the reason. When the writer has fields
    /// or wider types the route's schema lacks, returns the wider payload that keeps
    /// them (the caller widens the sinks' tables and builds a new decoder from it).
    fn learn(&mut self, _id: u32, _schema: Option<&WriterSchema>) -> Learned {
        Learned::Same
    }

    /// Refuses the records of writer schema `id` from now on, with `why` (the route
    /// could not widen to it).
    fn refuse(&mut self, _id: u32, _why: &str) {}
}

/// What a format made of a writer schema it learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Its records are read into the route's schema as it is (or refused one by one
    /// with their reason: an id the registry lacks, a schema of another kind).
    Same,
    /// The writer has fields or wider types the route's schema lacks: this payload
    /// keeps them. Until the route is widened, its records are refused.
    Wider(Payload),
    /// Its records cannot be read into the route's schema, and no widening would read
    /// them: why. The route's `on_incompatible` decides what happens to them; the
    /// format refuses them with this reason.
    Incompatible(String),
}

/// The decoder of `payload` for payloads of `schema`, `rows` payloads at a time.
pub fn for_route(
    payload: &Payload,
    schema: &SchemaRef,
    rows: usize,
) -> Result<Box<dyn Format>, String> {
    use super::avro::{Avro, Framing};
    Ok(match payload {
        Payload::Json(coerce) => Box::new(super::json::Json::new(schema.clone(), *coerce)?),
        Payload::Avro { reader, registry } => {
            let framing = if *registry {
                Framing::Registry
            } else {
                Framing::Bare
            };
            Box::new(Avro::new(reader, framing, rows)?)
        }
        Payload::Protobuf {
            schema,
            message,
            registry,
        } => Box::new(super::protobuf::Protobuf::new(
            schema,
            message.as_deref(),
            *registry,
        )?),
    })
}

/// The table schema a payload defines itself (Avro, Protobuf), or `None` (JSON: the
/// schema file).
pub fn own_schema(payload: &Payload) -> Result<Option<SchemaRef>, String> {
    match payload {
        Payload::Json(_) => Ok(None),
        Payload::Avro { reader, .. } => super::avro::table_schema(reader).map(Some),
        Payload::Protobuf {
            schema, message, ..
        } => super::protobuf::table_schema(schema, message.as_deref()).map(Some),
    }
}
