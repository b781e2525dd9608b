//! Protobuf through prost-reflect: each payload decoded as the route's message (by field
//! number, so writer versions that only add or remove fields read as the reader's
//! message, the way Protobuf itself resolves them), then appended to Arrow columns
//! (`table.rs`). Two framings: Confluent's (magic byte 0, a 4-byte schema id, the
//! message-index list, the message; the id's `.proto` comes from the registry and names
//! which message the payload is), or bare messages of the route's schema file.

mod table;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::format::{
    Format, Learned, Payload, ProtoSchema, Reference, Refusal, WriterSchema, usable, widens,
};
use super::{ErrorClass, Reason};
use table::Columns;

/// The name a registry schema's `.proto` text is compiled under.
const REGISTRY_FILE: &str = "registry.proto";

/// The route's message and its table schema.
struct Reader {
    message: MessageDescriptor,
    table: SchemaRef,
}

/// What is known of one writer schema id.
#[derive(Clone)]
enum Writer {
    /// The registry's file (its pool and name), to find the message a payload's
    /// indexes name.
    Readable(Arc<(DescriptorPool, String)>),
    Refused(Reason),
}

pub struct Protobuf {
    reader: Arc<Reader>,
    registry: bool,
    known: BTreeMap<u32, Writer>,
    columns: Columns,
}

/// The route's message (`message`, or the file's first message) of `schema`, with its
/// table schema.
fn reader(schema: &ProtoSchema, message: Option<&str>) -> Result<Reader, String> {
    let (pool, file) = match schema {
        ProtoSchema::File(path) => (compile_file(path)?, file_name(path)),
        ProtoSchema::DescriptorSet(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("`{}`: {e}", path.display()))?;
            let pool = DescriptorPool::decode(bytes.as_slice())
                .map_err(|e| format!("`{}` is not a descriptor set: {e}", path.display()))?;
            (pool, None)
        }
        ProtoSchema::Source { text, imports } => {
            let (pool, name) = compile_source(text, imports)?;
            (pool, Some(name))
        }
    };
    let message = match message {
        Some(name) => pool
            .get_message_by_name(name)
            .ok_or_else(|| format!("no message `{name}` in the schema"))?,
        None => file
            .and_then(|f| pool.get_file_by_name(&f))
            .and_then(|f| f.messages().next())
            .ok_or("name the route's `message` (the schema's first message is not known)")?,
    };
    let table = Arc::new(Schema::new(table::table_fields(&message)?));
    Ok(Reader { message, table })
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn compile_file(path: &Path) -> Result<DescriptorPool, String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let compiler = protox::Compiler::new([dir])
        .and_then(|mut c| {
            c.open_file(path.file_name().unwrap_or_default())?;
            Ok(c)
        })
        .map_err(|e| format!("`{}`: {e}", path.display()))?;
    Ok(compiler.descriptor_pool())
}

/// A registry's schema, with the files it imports that the registry holds (its
/// references, by import name) and the well-known types: each `.proto` text or (as
/// Apicurio keeps what confluent-kafka's Python serializer registers) a base64
/// `FileDescriptorProto`. Returns the pool and the name of the schema's own file.
fn compile_source(text: &str, imports: &[Reference]) -> Result<(DescriptorPool, String), String> {
    /// Files by the names they are imported with.
    struct Files(Vec<(String, protox::file::File)>);
    impl protox::file::FileResolver for Files {
        fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.clone())
                .ok_or_else(|| protox::Error::file_not_found(name))
        }
    }
    let main = parse_file(REGISTRY_FILE, text)?;
    let name = main.name().to_string();
    let mut files = vec![(name.clone(), main)];
    for import in imports {
        let file = parse_file(&import.name, &import.text)
            .map_err(|e| format!("imported `{}`: {e}", import.name))?;
        files.push((import.name.clone(), file));
    }
    let mut resolver = protox::file::ChainFileResolver::new();
    resolver.add(Files(files));
    resolver.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    Ok((compiler.descriptor_pool(), name))
}

/// One registry schema as a file: a base64 `FileDescriptorProto` (named as it says),
/// or `.proto` text named `name`.
fn parse_file(name: &str, text: &str) -> Result<protox::file::File, String> {
    use base64::Engine as _;
    let trimmed = text.trim();
    let descriptor = (!trimmed.contains(char::is_whitespace))
        .then(|| {
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .ok()
        })
        .flatten()
        .and_then(|bytes| protox::file::File::decode_file_descriptor_proto(bytes.as_slice()).ok())
        .filter(|f| !f.name().is_empty());
    match descriptor {
        Some(file) => Ok(file),
        None => protox::file::File::from_source(name, text).map_err(|e| e.to_string()),
    }
}

/// The table schema of a route's Protobuf message.
pub fn table_schema(schema: &ProtoSchema, message: Option<&str>) -> Result<SchemaRef, String> {
    Ok(reader(schema, message)?.table)
}

impl Protobuf {
    pub fn new(
        schema: &ProtoSchema,
        message: Option<&str>,
        registry: bool,
    ) -> Result<Self, String> {
        let reader = Arc::new(reader(schema, message)?);
        Ok(Self {
            columns: Columns::new(&reader.message, reader.table.fields()),
            reader,
            registry,
            known: BTreeMap::new(),
        })
    }

    /// The message bytes of a payload, after its framing is checked.
    fn message_bytes<'p>(&self, payload: &'p [u8]) -> Result<&'p [u8], Reason> {
        if !self.registry {
            return Ok(payload);
        }
        let (id, indexes, body) =
            framing(payload).map_err(|e| Reason::new(ErrorClass::Undecodable, e))?;
        let writer = match self.known.get(&id) {
            Some(Writer::Readable(writer)) => writer,
            Some(Writer::Refused(why)) => return Err(why.clone()),
            None => {
                return Err(Reason::new(
                    ErrorClass::UnknownSchema,
                    format!("schema id {id} was not looked up in the registry"),
                ));
            }
        };
        let mismatch = |text: String| Reason::new(ErrorClass::SchemaMismatch, text);
        let named = message_at(&writer.0, &writer.1, &indexes).ok_or_else(|| {
            mismatch(format!(
                "schema id {id} has no message at indexes {indexes:?}"
            ))
        })?;
        if named.full_name() != self.reader.message.full_name() {
            return Err(mismatch(format!(
                "schema id {id} names message `{}`, not the route's `{}`",
                named.full_name(),
                self.reader.message.full_name()
            )));
        }
        Ok(body)
    }
}

impl Format for Protobuf {
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        let body = self.message_bytes(payload).map_err(Refusal::Record)?;
        let message = DynamicMessage::decode(self.reader.message.clone(), body).map_err(|e| {
            Refusal::Record(Reason::new(
                ErrorClass::Undecodable,
                format!("invalid Protobuf: {e}"),
            ))
        })?;
        self.columns.append(Some(&message)).map_err(|e| {
            // Some columns took the row, others not: the open rows are lost.
            self.columns = Columns::new(&self.reader.message, self.reader.table.fields());
            Refusal::RowsLost(Reason::new(ErrorClass::SchemaMismatch, e))
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        let columns = self.columns.finish();
        if columns.first().is_none_or(|c| c.is_empty()) {
            return Ok(None);
        }
        RecordBatch::try_new(self.reader.table.clone(), columns)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn fresh(&self, _rows: usize) -> Box<dyn Format> {
        Box::new(Self {
            reader: self.reader.clone(),
            registry: self.registry,
            known: self.known.clone(),
            columns: Columns::new(&self.reader.message, self.reader.table.fields()),
        })
    }

    fn schema_wanted(&self, payload: &[u8]) -> Option<u32> {
        if !self.registry {
            return None;
        }
        framing(payload)
            .ok()
            .map(|(id, _, _)| id)
            .filter(|id| !self.known.contains_key(id))
    }

    fn schema_id(&self, payload: &[u8]) -> Option<u32> {
        self.registry
            .then(|| framing(payload).ok().map(|(id, _, _)| id))
            .flatten()
    }

    fn refuse(&mut self, id: u32, why: &str) {
        let why = Reason::new(ErrorClass::IncompatibleSchema, why);
        self.known.insert(id, Writer::Refused(why));
    }

    fn learn(&mut self, id: u32, schema: Option<&WriterSchema>) -> Learned {
        let (writer, learned) = match usable(id, schema, "PROTOBUF") {
            Err(why) => (Writer::Refused(why), Learned::Same),
            Ok(s) => match compile_source(&s.text, s.references.as_deref().unwrap_or_default()) {
                Ok(compiled) => self.resolve(id, s, compiled),
                Err(e) => (
                    Writer::Refused(Reason::new(
                        ErrorClass::UnreadableSchema,
                        format!("schema id {id} does not compile: {e}"),
                    )),
                    Learned::Same,
                ),
            },
        };
        self.known.insert(id, writer);
        learned
    }
}

impl Protobuf {
    /// How payloads of writer schema `text` are read: as the route's message (fields
    /// matched by number, as Protobuf resolves versions), through the writer's wider
    /// version of it (new fields, `int32` → `int64`), or not at all.
    fn resolve(
        &self,
        id: u32,
        writer_schema: &WriterSchema,
        compiled: (DescriptorPool, String),
    ) -> (Writer, Learned) {
        let reader = &self.reader.message;
        let Some(writer) = compiled.0.get_message_by_name(reader.full_name()) else {
            // Its payloads name another message: each is refused with that reason.
            return (Writer::Readable(Arc::new(compiled)), Learned::Same);
        };
        let incompatible = |why: String| {
            let why = format!("writer schema id {id} cannot be read as the route's schema: {why}");
            let refused = Reason::new(ErrorClass::IncompatibleSchema, why.clone());
            (Writer::Refused(refused), Learned::Incompatible(why))
        };
        let promoted = match changes(reader, &writer, &mut Vec::new()) {
            Ok(promoted) => promoted,
            Err(why) => return incompatible(why),
        };
        let keeps = reader.fields().all(|f| {
            writer
                .get_field(f.number())
                .is_some_and(|w| w.name() == f.name())
        });
        let adds = writer
            .fields()
            .any(|w| reader.get_field(w.number()).is_none());
        let wider = Payload::Protobuf {
            schema: ProtoSchema::Source {
                text: writer_schema.text.as_str().into(),
                imports: writer_schema
                    .references
                    .as_deref()
                    .unwrap_or_default()
                    .into(),
            },
            message: Some(reader.full_name().into()),
            registry: self.registry,
        };
        let widens = table::table_fields(&writer)
            .map(Schema::new)
            .and_then(|table| widens(&self.reader.table, &table));
        match (keeps && (adds || promoted), widens, promoted) {
            (true, Ok(()), false) => (Writer::Readable(Arc::new(compiled)), Learned::Wider(wider)),
            (true, Ok(()), true) => (
                Writer::Refused(Reason::new(
                    ErrorClass::IncompatibleSchema,
                    format!(
                        "writer schema id {id} has wider types than the route; the route was not widened to them"
                    ),
                )),
                Learned::Wider(wider),
            ),
            (_, Err(why), true) => incompatible(why),
            (false, _, true) => incompatible(
                "it widens a field's type but drops or renames another, so no one table reads every version".into(),
            ),
            (_, _, false) => {
                if adds {
                    tracing::warn!(id, "a writer version has fields the route lacks, but they cannot be added as columns; they are skipped");
                }
                (Writer::Readable(Arc::new(compiled)), Learned::Same)
            }
        }
    }
}

/// Whether `writer`'s version of the route's message `reader` has promoted types
/// (`Ok(true)`: `int32` → `int64`, `sint32` → `sint64`, read the same from the wire by
/// the wider kind), none (`Ok(false)`), or a change that reads another value from the
/// same bytes (`Err`). Fields are matched by number; nested messages are compared too.
fn changes(
    reader: &MessageDescriptor,
    writer: &MessageDescriptor,
    seen: &mut Vec<String>,
) -> Result<bool, String> {
    use prost_reflect::Kind;
    if seen.iter().any(|s| s == reader.full_name()) {
        return Ok(false);
    }
    seen.push(reader.full_name().to_string());
    let mut promoted = false;
    for f in reader.fields() {
        let Some(w) = writer.get_field(f.number()) else {
            continue;
        };
        let what = |w: &prost_reflect::FieldDescriptor| {
            let shape = if w.is_map() {
                "map"
            } else if w.is_list() {
                "repeated"
            } else {
                "single"
            };
            format!("{shape} {}", kind_name(&w.kind()))
        };
        let differ = || {
            format!(
                "field `{}` (number {}) is {} in the writer, {} in the route",
                f.name(),
                f.number(),
                what(&w),
                what(&f)
            )
        };
        if w.is_list() != f.is_list() || w.is_map() != f.is_map() {
            return Err(differ());
        }
        match (f.kind(), w.kind()) {
            (Kind::Message(r), Kind::Message(m)) if r.full_name() == m.full_name() => {
                promoted |= changes(&r, &m, seen)?;
            }
            (r, m) if kind_name(&r) == kind_name(&m) => {}
            (Kind::Int32, Kind::Int64) | (Kind::Sint32, Kind::Sint64) => promoted = true,
            // An older, narrower writer: its values read the same as the wider kind.
            (Kind::Int64, Kind::Int32) | (Kind::Sint64, Kind::Sint32) => {}
            _ => return Err(differ()),
        }
    }
    Ok(promoted)
}

/// A field kind by name (messages and enums by their full names: descriptors of two
/// pools never compare equal).
fn kind_name(kind: &prost_reflect::Kind) -> String {
    match kind {
        prost_reflect::Kind::Message(m) => m.full_name().to_string(),
        prost_reflect::Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}"),
    }
}

/// The schema id, message indexes and message bytes of a Confluent-framed payload.
fn framing(payload: &[u8]) -> Result<(u32, Vec<i32>, &[u8]), String> {
    let rest = match payload {
        [0, a, b, c, d, rest @ ..] => (u32::from_be_bytes([*a, *b, *c, *d]), rest),
        [0, ..] => return Err("shorter than the 5-byte schema registry header".into()),
        [first, ..] => {
            return Err(format!(
                "not schema-registry framed: first byte {first:#04x}, expected the magic byte 0"
            ));
        }
        [] => return Err("empty payload".into()),
    };
    let (id, mut rest) = rest;
    let count = zigzag(&mut rest)?;
    // A count of 0 stands for the list [0] (the file's first message).
    if count == 0 {
        return Ok((id, vec![0], rest));
    }
    if !(1..=64).contains(&count) {
        return Err(format!("a message-index list of {count} entries"));
    }
    let indexes = (0..count)
        .map(|_| zigzag(&mut rest))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((id, indexes, rest))
}

/// Reads one zig-zag varint (an int32) off the front of `bytes`.
fn zigzag(bytes: &mut &[u8]) -> Result<i32, String> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(5) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            let n = value as u32;
            return Ok(((n >> 1) as i32) ^ -((n & 1) as i32));
        }
    }
    Err("a truncated or overlong message index".into())
}

/// The message a list of indexes names: top-level, then nested.
fn message_at(pool: &DescriptorPool, file: &str, indexes: &[i32]) -> Option<MessageDescriptor> {
    let file = pool.get_file_by_name(file)?;
    let (first, nested) = indexes.split_first()?;
    let mut message = file.messages().nth(usize::try_from(*first).ok()?)?;
    for index in nested {
        let child = message
            .child_messages()
            .nth(usize::try_from(*index).ok()?)?;
        message = child;
    }
    Some(message)
}

#[cfg(test)]
mod tests;
