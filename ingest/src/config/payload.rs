//! A route's payload: its format and where its table schema comes from (the YAML
//! grammar for JSON; an `.avsc` file or the registry subject's latest schema for Avro).

use std::path::Path;
use std::time::Duration;

use arrow_schema::SchemaRef;

use super::{Coercion, Config, PayloadFormat, RouteConfig};
use crate::decode::{Coercions, Payload, own_schema};

/// How long start-up waits for a registry that does not answer.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(60);

/// The route's payload and table schema; an error is `(key, message)`.
pub(super) fn resolve(
    route: &RouteConfig,
    config: &Config,
    base: &Path,
) -> Result<(Payload, SchemaRef), (String, String)> {
    let problem = |key: &str, message: String| (key.to_string(), message);
    match route.format {
        PayloadFormat::Json => {
            if route.subject.is_some() {
                return Err(problem(
                    "subject",
                    "only Avro routes read a registry subject".into(),
                ));
            }
            let path = route.schema.as_ref().ok_or_else(|| {
                problem(
                    "schema",
                    "give the schema file (YAML) of the route's JSON records".into(),
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
        PayloadFormat::Avro => {
            if !route.coerce.is_empty() {
                return Err(problem(
                    "coerce",
                    "Avro values have their types: nothing to coerce".into(),
                ));
            }
            let registry = config.schema_registry.as_ref();
            let reader = match (&route.schema, registry) {
                (Some(path), _) => {
                    if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                        return Err(problem(
                            "schema",
                            "an Avro route reads an Avro schema file (.avsc), not the YAML grammar"
                                .into(),
                        ));
                    }
                    std::fs::read_to_string(base.join(path)).map_err(|e| {
                        problem("schema", format!("cannot read `{}`: {e}", path.display()))
                    })?
                }
                (None, Some(registry)) => {
                    let subject = subject(route).map_err(|e| problem("subject", e))?;
                    let found =
                        crate::registry::latest_at_start(registry, &subject, REGISTRY_PATIENCE)
                            .map_err(|e| problem("subject", e))?;
                    if !found.kind.eq_ignore_ascii_case("AVRO") {
                        return Err(problem(
                            "subject",
                            format!(
                                "subject `{subject}` holds a {} schema, not Avro",
                                found.kind
                            ),
                        ));
                    }
                    found.text
                }
                (None, None) => {
                    return Err(problem(
                        "schema",
                        "give an Avro schema file (.avsc), or a top-level `schema_registry` to read the subject's latest schema"
                            .into(),
                    ));
                }
            };
            let payload = Payload::Avro {
                reader: reader.into(),
                registry: registry.is_some(),
            };
            let schema = own_schema(&payload)
                .map_err(|e| problem("schema", format!("the Avro schema cannot be a table: {e}")))?
                .expect("Avro defines its schema");
            Ok((payload, schema))
        }
    }
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
