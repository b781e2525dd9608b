//! A route's payload: its format and where its table schema comes from (the YAML
//! grammar for JSON; for Avro and Protobuf a schema file, or the registry subject's
//! latest schema at start).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::SchemaRef;

use super::{Coercion, Config, PayloadFormat, RouteConfig};
use crate::decode::{Coercions, Payload, ProtoSchema, WriterSchema, own_schema};

/// How long start-up waits for a registry that does not answer.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(60);

/// A problem: the key under the route and what is wrong.
type Problem = (String, String);

fn problem(key: &str, message: impl Into<String>) -> Problem {
    (key.to_string(), message.into())
}

/// The route's payload and table schema.
pub(super) fn resolve(
    route: &RouteConfig,
    config: &Config,
    base: &Path,
) -> Result<(Payload, SchemaRef), Problem> {
    if route.format != PayloadFormat::Json && !route.coerce.is_empty() {
        return Err(problem("coerce", "only JSON values are coerced"));
    }
    if route.format != PayloadFormat::Protobuf && route.message.is_some() {
        return Err(problem("message", "only Protobuf routes name a message"));
    }
    let payload = match route.format {
        PayloadFormat::Json => return json(route, base),
        PayloadFormat::Avro => {
            let reader = match &route.schema {
                Some(path) if is_yaml(path) => {
                    return Err(problem(
                        "schema",
                        "an Avro route reads an Avro schema file (.avsc), not the YAML grammar",
                    ));
                }
                Some(path) => std::fs::read_to_string(base.join(path)).map_err(|e| {
                    problem("schema", format!("cannot read `{}`: {e}", path.display()))
                })?,
                None => {
                    let found =
                        from_registry(route, config, "AVRO", "an Avro schema file (.avsc)")?;
                    crate::decode::avro::with_references(
                        &found.text,
                        found.references.as_deref().unwrap_or_default(),
                    )
                    .map_err(|e| problem("subject", e))?
                }
            };
            Payload::Avro {
                reader: reader.into(),
                registry: config.schema_registry.is_some(),
            }
        }
        PayloadFormat::Protobuf => {
            let schema = match &route.schema {
                Some(path) if is_yaml(path) => {
                    return Err(problem(
                        "schema",
                        "a Protobuf route reads a .proto file or a descriptor set, not the YAML grammar",
                    ));
                }
                Some(path) if path.extension().is_some_and(|e| e == "proto") => {
                    ProtoSchema::File(base.join(path))
                }
                Some(path) => ProtoSchema::DescriptorSet(base.join(path)),
                None => {
                    let found = from_registry(
                        route,
                        config,
                        "PROTOBUF",
                        "a .proto file or a descriptor set",
                    )?;
                    ProtoSchema::Source {
                        text: found.text.into(),
                        imports: found.references.unwrap_or_default().into(),
                    }
                }
            };
            Payload::Protobuf {
                schema,
                message: route.message.as_deref().map(Arc::from),
                registry: config.schema_registry.is_some(),
            }
        }
    };
    let schema = own_schema(&payload)
        .map_err(|e| problem("schema", format!("the schema cannot be a table: {e}")))?
        .expect("Avro and Protobuf define their schema");
    Ok((payload, schema))
}

fn json(route: &RouteConfig, base: &Path) -> Result<(Payload, SchemaRef), Problem> {
    if route.subject.is_some() {
        return Err(problem(
            "subject",
            "only Avro and Protobuf routes read a registry subject",
        ));
    }
    let path = route.schema.as_ref().ok_or_else(|| {
        problem(
            "schema",
            "give the schema file (YAML) of the route's JSON records",
        )
    })?;
    let schema = ingest_schemas::load_schema(&base.join(path))
        .map_err(|e| problem("schema", e.to_string()))?;
    let mut coerce = Coercions::default();
    for c in &route.coerce {
        match c {
            Coercion::StringToNumber => coerce.string_to_number = true,
            Coercion::IntegralFloatToInt => coerce.integral_float_to_int = true,
        }
    }
    Ok((Payload::Json(coerce), schema))
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// The latest schema of the route's subject, which must be of `kind`.
fn from_registry(
    route: &RouteConfig,
    config: &Config,
    kind: &str,
    file: &str,
) -> Result<WriterSchema, Problem> {
    let Some(registry) = &config.schema_registry else {
        return Err(problem(
            "schema",
            format!(
                "give {file}, or a top-level `schema_registry` to read the subject's latest schema"
            ),
        ));
    };
    let subject = subject(route).map_err(|e| problem("subject", e))?;
    let found = crate::registry::latest_at_start(registry, &subject, REGISTRY_PATIENCE)
        .map_err(|e| problem("subject", e))?;
    if !found.kind.eq_ignore_ascii_case(kind) {
        return Err(problem(
            "subject",
            format!(
                "subject `{subject}` holds a {} schema, not {kind}",
                found.kind
            ),
        ));
    }
    if let Err(why) = &found.references {
        return Err(problem(
            "subject",
            format!("subject `{subject}` refers to a schema the registry cannot give: {why}"),
        ));
    }
    Ok(found)
}

/// The subject named, or `<topic>-value` of the route's one listed topic.
fn subject(route: &RouteConfig) -> Result<String, String> {
    if let Some(subject) = &route.subject {
        return Ok(subject.clone());
    }
    match route.topics.as_slice() {
        [topic] => Ok(format!("{topic}-value")),
        _ => Err("name the registry subject of this route's table schema (the default `<topic>-value` needs exactly one listed topic)".into()),
    }
}
