//! Avro schemas that use named types registered under other subjects (Confluent's
//! schema references): each such type is defined where the schema first uses it, so
//! the schema stands alone for arrow-avro, which reads one self-contained schema.
//! Written by hand: no Avro crate here resolves registry references.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::decode::Reference;

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// `text` with the named types it takes from `references` defined in place.
pub fn with_references(text: &str, references: &[Reference]) -> Result<String, String> {
    if references.is_empty() {
        return Ok(text.to_string());
    }
    let mut known = HashMap::new();
    for reference in references {
        let schema: Value = serde_json::from_str(&reference.text)
            .map_err(|e| format!("referenced schema `{}` is not JSON: {e}", reference.name))?;
        let name = full_name(&schema, "").ok_or_else(|| {
            format!(
                "referenced schema `{}` is not a named type (record, enum or fixed)",
                reference.name
            )
        })?;
        known.insert(name, schema);
    }
    let mut schema: Value =
        serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
    let mut inliner = Inliner {
        known,
        defined: HashSet::new(),
        depth: 0,
    };
    inliner.walk(&mut schema, "")?;
    Ok(schema.to_string())
}

struct Inliner {
    /// Referenced named types by full name.
    known: HashMap<String, Value>,
    /// Full names defined so far, in the order Avro reads them.
    defined: HashSet<String>,
    depth: usize,
}

impl Inliner {
    /// Walks a type in `namespace`, defining each referenced name at its first use.
    fn walk(&mut self, ty: &mut Value, namespace: &str) -> Result<(), String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("the schema nests more than 64 levels".into());
        }
        match ty {
            Value::String(name) if !PRIMITIVES.contains(&name.as_str()) => {
                let full = qualify(name, namespace);
                if !self.defined.contains(&full)
                    && let Some(definition) = self.known.get(&full).cloned()
                {
                    *ty = definition;
                    self.walk(ty, namespace)?;
                }
            }
            Value::Array(branches) => {
                for branch in branches {
                    self.walk(branch, namespace)?;
                }
            }
            Value::Object(_) => {
                let own = full_name(ty, namespace);
                if let Some(own) = &own {
                    self.defined.insert(own.clone());
                }
                let inner = own
                    .as_deref()
                    .and_then(|n| n.rsplit_once('.'))
                    .map_or(namespace.to_string(), |(ns, _)| ns.to_string());
                match ty["type"].as_str() {
                    Some("record" | "error") => {
                        if let Some(fields) = ty["fields"].as_array_mut() {
                            for field in fields {
                                self.walk(&mut field["type"], &inner)?;
                            }
                        }
                    }
                    Some("array") => self.walk(&mut ty["items"], &inner)?,
                    Some("map") => self.walk(&mut ty["values"], &inner)?,
                    _ => {}
                }
            }
            _ => {}
        }
        self.depth -= 1;
        Ok(())
    }
}

/// The full name of a named type (record, enum, fixed) in `namespace`.
fn full_name(ty: &Value, namespace: &str) -> Option<String> {
    if !matches!(
        ty["type"].as_str(),
        Some("record" | "error" | "enum" | "fixed")
    ) {
        return None;
    }
    let name = ty["name"].as_str()?;
    if name.contains('.') {
        return Some(name.to_string());
    }
    let namespace = ty["namespace"].as_str().unwrap_or(namespace);
    Some(qualify(name, namespace))
}

fn qualify(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, text: &str) -> Reference {
        Reference {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn referenced_types_are_defined_at_their_first_use_only() {
        let money = r#"{"type":"record","name":"Money","namespace":"acme","fields":[
            {"name":"cents","type":"long"},{"name":"currency","type":"acme.Currency"}]}"#;
        let currency =
            r#"{"type":"enum","name":"Currency","namespace":"acme","symbols":["EUR","USD"]}"#;
        let order = r#"{"type":"record","name":"Order","namespace":"acme","fields":[
            {"name":"id","type":"long"},
            {"name":"price","type":"Money"},
            {"name":"refunds","type":{"type":"array","items":"acme.Money"}},
            {"name":"tip","type":["null","Money"],"default":null}]}"#;
        let refs = [
            reference("acme.Money", money),
            reference("acme.Currency", currency),
        ];
        let inlined: Value = serde_json::from_str(&with_references(order, &refs).unwrap()).unwrap();
        let fields = inlined["fields"].as_array().unwrap();
        assert_eq!(fields[1]["type"]["name"], "Money");
        assert_eq!(fields[1]["type"]["fields"][1]["type"]["name"], "Currency");
        // Later uses stay names: Avro reads a name once defined.
        assert_eq!(fields[2]["type"]["items"], "acme.Money");
        assert_eq!(fields[3]["type"][1], "Money");
        // arrow-avro reads the result as one schema.
        assert!(crate::decode::avro::table_schema(&inlined.to_string()).is_ok());
    }

    #[test]
    fn a_reference_that_is_not_a_named_type_is_refused() {
        let err = with_references(r#""long""#, &[reference("x", r#""string""#)]).unwrap_err();
        assert!(err.contains("not a named type"), "{err}");
    }
}
