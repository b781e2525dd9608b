//! Avro through arrow-avro's push decoder, resolved against the route's reader schema
//! (so every writer version lands in the same columns). Two framings: Confluent's
//! (magic byte 0, a 4-byte schema id, the body; the id's writer schema comes from the
//! registry), or bare bodies written with the route's schema file.
//!
//! arrow-avro's decoder knows only the writer schemas it was built with: a record of a
//! newly learned id ends the open batch and the decoder is built again with it. Payloads
//! come from the network: each must decode to exactly one row using all of its bytes,
//! and a decoder that fails (or panics) on one is thrown away with its open rows.

mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use arrow_schema::{Schema, SchemaRef};
use arrow_select::concat::concat_batches;

use super::format::{Format, Payload, Refusal, WriterSchema, usable};

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
    Refused(String),
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
            Framing::Registry => registry_id(payload).map_err(Refusal::Record)?,
            Framing::Bare => BARE_ID,
        };
        match self.known.get(&id) {
            Some(Writer::Readable(_)) => {}
            Some(Writer::Refused(why)) => return Err(Refusal::Record(why.clone())),
            None => {
                return Err(Refusal::Record(format!(
                    "schema id {id} was not looked up in the registry"
                )));
            }
        }
        if !self.built.contains(&id)
            && let Err(e) = self.rebuild()
        {
            self.lose_rows();
            return Err(Refusal::RowsLost(format!("invalid Avro: {e}")));
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
            Refusal::RowsLost(format!("invalid Avro: {problem}"))
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

    fn learn(&mut self, id: u32, schema: Option<&WriterSchema>) -> Option<Payload> {
        let mut wider = None;
        let writer = match usable(id, schema, "AVRO") {
            Err(why) => Writer::Refused(why),
            Ok(s) => {
                let writer = AvroSchema::new(s.text.clone());
                match build(&self.reader, [(id, &writer)], 1) {
                    Ok(_) => {
                        wider = self.wider_reader(&s.text);
                        Writer::Readable(writer)
                    }
                    Err(e) => Writer::Refused(format!(
                        "writer schema id {id} cannot be read as the route's schema: {e}"
                    )),
                }
            }
        };
        self.known.insert(id, writer);
        wider.map(|reader| Payload::Avro {
            reader: reader.into(),
            registry: self.framing == Framing::Registry,
        })
    }
}

impl Avro {
    /// The reader schema with the top-level fields of `writer` it lacks, each made
    /// nullable (default null: records of older versions read null), when there are any
    /// and every writer learned so far can still be read with it.
    fn wider_reader(&self, writer: &str) -> Option<String> {
        let wider = widened(&self.reader.json_string, writer)?;
        let candidate = AvroSchema::new(wider.clone());
        let readable = table_schema(&wider).is_ok()
            && self.known.iter().all(|(id, w)| match w {
                Writer::Readable(s) => build(&candidate, [(*id, s)], 1).is_ok(),
                Writer::Refused(_) => true,
            });
        if !readable {
            tracing::warn!(
                "a writer schema has fields the route lacks, but no wider schema reads every version; the new fields are skipped"
            );
            return None;
        }
        Some(wider)
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

/// `reader` plus the top-level fields of `writer` it does not name (by name or alias),
/// each as a union with null first and a null default; `None` when there are none.
fn widened(reader: &str, writer: &str) -> Option<String> {
    use serde_json::{Value, json};
    let mut reader: Value = serde_json::from_str(reader).ok()?;
    let writer: Value = serde_json::from_str(writer).ok()?;
    let names = |fields: &Value| -> Vec<String> {
        fields
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| {
                let aliases = f["aliases"].as_array().cloned().unwrap_or_default();
                std::iter::once(f["name"].clone()).chain(aliases)
            })
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    let known = names(&reader["fields"]);
    let added: Vec<Value> = writer["fields"]
        .as_array()?
        .iter()
        .filter(|f| {
            !names(&Value::Array(vec![(*f).clone()]))
                .iter()
                .any(|n| known.contains(n))
        })
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
    if added.is_empty() {
        return None;
    }
    reader["fields"].as_array_mut()?.extend(added);
    Some(reader.to_string())
}
