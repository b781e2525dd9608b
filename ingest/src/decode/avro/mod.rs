//! Avro through arrow-avro's push decoder, resolved against the route's reader schema
//! (so every writer version lands in the same columns). Two framings: Confluent's
//! (magic byte 0, a 4-byte schema id, the body; the id's writer schema comes from the
//! registry), or bare bodies written with the route's schema file.
//!
//! arrow-avro's decoder knows only the writer schemas it was built with: a record of a
//! newly learned id ends the open batch and the decoder is built again with it. Payloads
//! come from the network: each must decode to exactly one row using all of its bytes,
//! and a decoder that fails (or panics) on one is thrown away with its open rows.

mod references;
mod table;

pub use references::with_references;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::{Schema, SchemaRef};
use arrow_select::concat::concat_batches;

use super::format::{Format, Learned, Payload, Refusal, WriterSchema, usable};
use super::{ErrorClass, Reason};

/// How payloads carry their writer schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Magic byte 0 and a 4-byte big-endian schema id (Confluent's wire format).
    Registry,
    /// Bare bodies, written with the reader schema itself.
    Bare,
}

/// The id bare bodies are filed under (they carry none).
const BARE_ID: u32 = 0;

/// What is known of one writer schema id.
#[derive(Debug, Clone)]
enum Writer {
    Readable(AvroSchema),
    /// Records of this id are refused with this reason.
    Refused(Reason),
}

/// The table schema of an Avro reader schema (its top level must be a record).
pub fn table_schema(reader: &str) -> Result<SchemaRef, String> {
    let reader = AvroSchema::new(reader.to_string());
    let decoder = build(&reader, [(BARE_ID, &reader)], 1)?;
    let fields = decoder
        .schema()
        .fields()
        .iter()
        .map(|f| table::table_field(f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

pub struct Avro {
    reader: AvroSchema,
    table: SchemaRef,
    framing: Framing,
    known: BTreeMap<u32, Writer>,
    /// The writer ids `decoder` was built with.
    built: BTreeSet<u32>,
    decoder: Option<Decoder>,
    /// Rows decoded before a change of writer schema ended a batch.
    done: Vec<RecordBatch>,
    /// A bare body behind a made-up prefix (arrow-avro's decoder wants one).
    scratch: Vec<u8>,
    rows: usize,
}

impl Avro {
    pub fn new(reader: &str, framing: Framing, rows: usize) -> Result<Self, String> {
        let table = table_schema(reader)?;
        let reader = AvroSchema::new(reader.to_string());
        let mut known = BTreeMap::new();
        if framing == Framing::Bare {
            known.insert(BARE_ID, Writer::Readable(reader.clone()));
        }
        Ok(Self {
            reader,
            table,
            framing,
            known,
            built: BTreeSet::new(),
            decoder: None,
            done: Vec::new(),
            scratch: Vec::new(),
            rows: rows.max(1),
        })
    }

    /// A decoder with every readable writer schema, the open rows first kept in `done`.
    fn rebuild(&mut self) -> Result<(), String> {
        if let Some(decoder) = self.decoder.as_mut() {
            self.done
                .extend(decoder.flush().map_err(|e| e.to_string())?);
        }
        let readable = self.known.iter().filter_map(|(id, w)| match w {
            Writer::Readable(schema) => Some((*id, schema)),
            Writer::Refused(_) => None,
        });
        self.decoder = Some(build(&self.reader, readable, self.rows + 1)?);
        self.built = self
            .known
            .iter()
            .filter(|(_, w)| matches!(w, Writer::Readable(_)))
            .map(|(id, _)| *id)
            .collect();
        Ok(())
    }

    /// Forgets the open rows and the decoder holding them.
    fn lose_rows(&mut self) {
        self.decoder = None;
        self.built.clear();
        self.done.clear();
    }

    /// Decodes one framed record into exactly one row, or says why not.
    fn decode_one(&mut self, framed: &[u8]) -> Result<(), String> {
        let decoder = self.decoder.as_mut().expect("built before decoding");
        let done = &mut self.done;
        let open = |d: &Decoder| d.batch_size() - d.capacity();
        let open_before = open(decoder);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut used = decoder.decode(framed).map_err(|e| e.to_string())?;
            let mut switched = false;
            if used < framed.len() && decoder.batch_is_full() {
                // A change of writer schema ends the batch before the body.
                done.extend(decoder.flush().map_err(|e| e.to_string())?);
                used += decoder.decode(&framed[used..]).map_err(|e| e.to_string())?;
                switched = true;
            }
            Ok::<_, String>((used, switched))
        }));
        let (used, switched) = match outcome {
            Ok(Ok(read)) => read,
            // The record was read whole and more bytes followed (taken as a next one).
            Ok(Err(_)) if open(decoder) > open_before => {
                return Err("bytes after the Avro record".into());
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the Avro decoder failed on this record".into()),
        };
        let expected = if switched { 1 } else { open_before + 1 };
        match open(decoder) {
            rows if rows == expected && used == framed.len() => Ok(()),
            rows if rows < expected => Err("truncated Avro record".into()),
            _ => Err(format!(
                "{} bytes after the Avro record",
                framed.len().saturating_sub(used).max(1)
            )),
        }
    }
}

impl Format for Avro {
    fn push(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        let id = match self.framing {
            Framing::Registry => registry_id(payload)
                .map_err(|e| Refusal::Record(Reason::new(ErrorClass::Undecodable, e)))?,
            Framing::Bare => BARE_ID,
        };
        match self.known.get(&id) {
            Some(Writer::Readable(_)) => {}
            Some(Writer::Refused(why)) => return Err(Refusal::Record(why.clone())),
            None => {
                return Err(Refusal::Record(Reason::new(
                    ErrorClass::UnknownSchema,
                    format!("schema id {id} was not looked up in the registry"),
                )));
            }
        }
        if !self.built.contains(&id)
            && let Err(e) = self.rebuild()
        {
            self.lose_rows();
            return Err(Refusal::RowsLost(Reason::new(
                ErrorClass::Undecodable,
                format!("invalid Avro: {e}"),
            )));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let framed = match self.framing {
            Framing::Registry => payload,
            Framing::Bare => {
                scratch.clear();
                scratch.push(0);
                scratch.extend_from_slice(&BARE_ID.to_be_bytes());
                scratch.extend_from_slice(payload);
                &scratch[..]
            }
        };
        let result = self.decode_one(framed);
        self.scratch = scratch;
        result.map_err(|problem| {
            self.lose_rows();
            Refusal::RowsLost(Reason::new(
                ErrorClass::Undecodable,
                format!("invalid Avro: {problem}"),
            ))
        })
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        let mut read = std::mem::take(&mut self.done);
        if let Some(decoder) = self.decoder.as_mut() {
            match decoder.flush() {
                Ok(batch) => read.extend(batch),
                Err(e) => {
                    self.lose_rows();
                    return Err(e.to_string());
                }
            }
        }
        if read.is_empty() {
            return Ok(None);
        }
        let batches = read
            .iter()
            .map(|batch| self.conform(batch))
            .collect::<Result<Vec<_>, _>>()?;
        concat_batches(&self.table, &batches)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn fresh(&self, rows: usize) -> Box<dyn Format> {
        Box::new(Self {
            reader: self.reader.clone(),
            table: self.table.clone(),
            framing: self.framing,
            known: self.known.clone(),
            built: BTreeSet::new(),
            decoder: None,
            done: Vec::new(),
            scratch: Vec::new(),
            rows: rows.max(1),
        })
    }

    fn schema_wanted(&self, payload: &[u8]) -> Option<u32> {
        match self.framing {
            Framing::Registry => registry_id(payload)
                .ok()
                .filter(|id| !self.known.contains_key(id)),
            Framing::Bare => None,
        }
    }

    fn schema_id(&self, payload: &[u8]) -> Option<u32> {
        match self.framing {
            Framing::Registry => registry_id(payload).ok(),
            Framing::Bare => None,
        }
    }

    fn refuse(&mut self, id: u32, why: &str) {
        let why = Reason::new(ErrorClass::IncompatibleSchema, why);
        self.known.insert(id, Writer::Refused(why));
    }

    fn learn(&mut self, id: u32, schema: Option<&WriterSchema>) -> Learned {
        let (writer, learned) = match usable(id, schema, "AVRO") {
            Err(why) => (Writer::Refused(why), Learned::Same),
            Ok(s) => match with_references(&s.text, s.references.as_deref().unwrap_or_default()) {
                Ok(text) => self.resolve(id, &text),
                Err(e) => (
                    Writer::Refused(Reason::new(
                        ErrorClass::UnreadableSchema,
                        format!("schema id {id}: {e}"),
                    )),
                    Learned::Same,
                ),
            },
        };
        self.known.insert(id, writer);
        learned
    }
}

impl Avro {
    /// How records of writer schema `text` are read: as the route's schema, through a
    /// wider one (new fields, promoted types), or not at all.
    fn resolve(&self, id: u32, text: &str) -> (Writer, Learned) {
        let writer = AvroSchema::new(text.to_string());
        let readable = build(&self.reader, [(id, &writer)], 1).map(|_| ());
        let incompatible = |why: String| {
            let why = format!("writer schema id {id} cannot be read as the route's schema: {why}");
            let refused = Reason::new(ErrorClass::IncompatibleSchema, why.clone());
            (Writer::Refused(refused), Learned::Incompatible(why))
        };
        let Some(w) = widened(&self.reader.json_string, text) else {
            return match readable {
                Ok(()) => (Writer::Readable(writer), Learned::Same),
                Err(e) => incompatible(e),
            };
        };
        let wider = Learned::Wider(Payload::Avro {
            reader: w.reader.as_str().into(),
            registry: self.framing == Framing::Registry,
        });
        match (self.reads_every_version(&w.reader, id, &writer), readable) {
            // New fields only: the route's schema reads the records meanwhile.
            (true, Ok(())) if !w.promoted => (Writer::Readable(writer), wider),
            // Until the route has widened, none is read into a narrower column.
            (true, _) => (
                Writer::Refused(Reason::new(
                    ErrorClass::IncompatibleSchema,
                    format!(
                        "writer schema id {id} has wider types than the route; the route was not widened to them"
                    ),
                )),
                wider,
            ),
            // Never left to Avro resolution against the narrower column.
            (false, _) if w.promoted => incompatible(
                "it widens a type, and no wider schema also reads the earlier versions".into(),
            ),
            (false, Ok(())) => {
                tracing::warn!(
                    id,
                    "a writer schema has fields the route lacks, but no wider schema reads every version; the new fields are skipped"
                );
                (Writer::Readable(writer), Learned::Same)
            }
            (false, Err(e)) => incompatible(e),
        }
    }

    /// Whether `wider` reads the writer `id` and every writer learned before.
    fn reads_every_version(&self, wider: &str, id: u32, writer: &AvroSchema) -> bool {
        let candidate = AvroSchema::new(wider.to_string());
        table_schema(wider).is_ok()
            && build(&candidate, [(id, writer)], 1).is_ok()
            && self.known.iter().all(|(id, w)| match w {
                Writer::Readable(s) => build(&candidate, [(*id, s)], 1).is_ok(),
                Writer::Refused(_) => true,
            })
    }

    /// A batch as arrow-avro read it, in the table's types.
    fn conform(&self, batch: &RecordBatch) -> Result<RecordBatch, String> {
        let columns = batch
            .columns()
            .iter()
            .zip(batch.schema().fields().iter().zip(self.table.fields()))
            .map(|(column, (from, to))| table::conform(column, from, to))
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.table.clone(), columns).map_err(|e| e.to_string())
    }
}

/// The schema id of a Confluent-framed payload.
fn registry_id(payload: &[u8]) -> Result<u32, String> {
    match payload {
        [0, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [0, ..] => Err("shorter than the 5-byte schema registry header".into()),
        [first, ..] => Err(format!(
            "not schema-registry framed: first byte {first:#04x}, expected the magic byte 0"
        )),
        [] => Err("empty payload".into()),
    }
}

fn build<'a>(
    reader: &AvroSchema,
    writers: impl IntoIterator<Item = (u32, &'a AvroSchema)>,
    rows: usize,
) -> Result<Decoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, schema) in writers {
        store
            .set(Fingerprint::Id(id), schema.clone())
            .map_err(|e| e.to_string())?;
    }
    ReaderBuilder::new()
        .with_reader_schema(reader.clone())
        .with_writer_schema_store(store)
        .with_batch_size(rows)
        .build_decoder()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;

/// The route's reader schema made to keep a writer version: `reader` with the
/// top-level fields of `writer` it does not name (by name or alias) added, each as a
/// union with null first and a null default, and its fields the writer gives a wider
/// type (int → long, float → double, decimal precision up) promoted.
struct Widened {
    reader: String,
    /// Some field's type was promoted (not only fields added).
    promoted: bool,
}

/// See [`Widened`]; `None` when the writer has nothing the reader lacks.
fn widened(reader: &str, writer: &str) -> Option<Widened> {
    use serde_json::{Value, json};
    let mut reader: Value = serde_json::from_str(reader).ok()?;
    let writer: Value = serde_json::from_str(writer).ok()?;
    let names = |field: &Value| -> Vec<String> {
        let aliases = field["aliases"].as_array().cloned().unwrap_or_default();
        std::iter::once(field["name"].clone())
            .chain(aliases)
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    let writer_fields = writer["fields"].as_array()?;
    let mut promoted = false;
    for field in reader["fields"].as_array_mut()? {
        let own = names(field);
        let Some(theirs) = writer_fields
            .iter()
            .find(|w| names(w).iter().any(|n| own.contains(n)))
        else {
            continue;
        };
        if let Some(wider) = promoted_type(&field["type"], &theirs["type"]) {
            field["type"] = wider;
            promoted = true;
        }
    }
    let known: Vec<String> = reader["fields"]
        .as_array()?
        .iter()
        .flat_map(names)
        .collect();
    let added: Vec<Value> = writer_fields
        .iter()
        .filter(|f| !names(f).iter().any(|n| known.contains(n)))
        .map(|f| {
            let ty = match &f["type"] {
                Value::Array(branches) => {
                    let others = branches.iter().filter(|b| *b != &json!("null")).cloned();
                    Value::Array(std::iter::once(json!("null")).chain(others).collect())
                }
                other => json!(["null", other]),
            };
            let mut field = json!({"name": f["name"], "type": ty, "default": null});
            if let Some(doc) = f.get("doc") {
                field["doc"] = doc.clone();
            }
            field
        })
        .collect();
    if added.is_empty() && !promoted {
        return None;
    }
    reader["fields"].as_array_mut()?.extend(added);
    Some(Widened {
        reader: reader.to_string(),
        promoted,
    })
}

/// The writer's type for a reader field when it is a promotion of the reader's (the
/// null branch of a union kept where the reader has it), else `None`.
fn promoted_type(
    reader: &serde_json::Value,
    writer: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    let non_null = |ty: &Value| -> Option<Value> {
        match ty {
            Value::Array(branches) => {
                let mut others = branches.iter().filter(|b| b.as_str() != Some("null"));
                let one = others.next()?.clone();
                others.next().is_none().then_some(one)
            }
            other => Some(other.clone()),
        }
    };
    let (from, to) = (non_null(reader)?, non_null(writer)?);
    if !promotes(&from, &to) {
        return None;
    }
    Some(match reader {
        Value::Array(branches) => Value::Array(
            branches
                .iter()
                .map(|b| {
                    if b.as_str() == Some("null") {
                        b.clone()
                    } else {
                        to.clone()
                    }
                })
                .collect(),
        ),
        _ => to,
    })
}

/// Iceberg's promotions between two Avro types (without null).
fn promotes(from: &serde_json::Value, to: &serde_json::Value) -> bool {
    let name = |ty: &serde_json::Value| match ty {
        serde_json::Value::String(s) => s.clone(),
        other => other["type"].as_str().unwrap_or_default().to_string(),
    };
    let decimal = |ty: &serde_json::Value| {
        (ty["logicalType"] == "decimal").then(|| {
            (
                ty["precision"].as_u64().unwrap_or(0),
                ty["scale"].as_u64().unwrap_or(0),
                ty["type"].clone(),
            )
        })
    };
    match (decimal(from), decimal(to)) {
        (Some((p, s, _)), Some((q, t, base))) => {
            // A fixed holds as many digits as its size: a wider one is another type.
            s == t && q > p && base == "bytes" && from["type"] == "bytes"
        }
        (None, None) => {
            let plain = |ty: &serde_json::Value| ty.is_string() || ty.get("logicalType").is_none();
            plain(from)
                && plain(to)
                && matches!(
                    (name(from).as_str(), name(to).as_str()),
                    ("int", "long") | ("float", "double")
                )
        }
        _ => false,
    }
}
