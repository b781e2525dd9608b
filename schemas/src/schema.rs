//! Schema files: the declared shape of a topic's events, loaded into an Arrow schema.
//!
//! ```yaml
//! fields:
//!   - { name: id, type: int64 }
//!   - { name: ts, type: "timestamp(ms, UTC)" }
//!   - { name: user, type: "struct<id: int64, country: string?>", nullable: true }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use serde::Deserialize;

use crate::types::parse_type;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema file `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema file `{path}`: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    fields: Vec<FieldSpec>,
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans, kept so the key is accepted
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSpec {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    /// Same as a trailing `?` on the type.
    #[serde(default)]
    nullable: bool,
    #[serde(default)]
    #[allow(dead_code)]
    doc: Option<String>,
}

/// Reads and validates a schema file.
pub fn load_schema(path: &Path) -> Result<SchemaRef, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_schema(&text).map_err(|message| SchemaError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses schema YAML text into an Arrow schema.
pub fn parse_schema(text: &str) -> Result<SchemaRef, String> {
    let de = serde_norway::Deserializer::from_str(text);
    let file: SchemaFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("at `{path}`: {}", e.into_inner())
        }
    })?;
    if file.fields.is_empty() {
        return Err("`fields` is empty".into());
    }
    let mut fields = Vec::with_capacity(file.fields.len());
    for (i, spec) in file.fields.iter().enumerate() {
        if spec.name.is_empty() {
            return Err(format!("at `fields[{i}].name`: empty field name"));
        }
        if fields.iter().any(|f: &Field| f.name() == &spec.name) {
            return Err(format!("at `fields[{i}]`: duplicate field `{}`", spec.name));
        }
        let ty = parse_type(&spec.ty)
            .map_err(|e| format!("at `fields[{i}].type` (field `{}`): {e}", spec.name))?;
        fields.push(Field::new(
            &spec.name,
            ty.data_type,
            ty.nullable || spec.nullable,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_fields_in_order() {
        let schema = parse_schema(
            "fields:\n  - {name: id, type: int64}\n  - {name: note, type: string, nullable: true}\n",
        )
        .unwrap();
        assert_eq!(schema.fields().len(), 2);
        assert!(!schema.field(0).is_nullable());
        assert!(schema.field(1).is_nullable());
    }

    #[test]
    fn names_the_bad_key() {
        let err = parse_schema("fields:\n  - {name: id, typ: int64}\n").unwrap_err();
        assert!(err.contains("fields[0]") && err.contains("typ"), "{err}");
        let err = parse_schema("fields:\n  - {name: id, type: int99}\n").unwrap_err();
        assert!(
            err.contains("fields[0].type") && err.contains("int99"),
            "{err}"
        );
        let err = parse_schema("fields:\n  - {name: a, type: int64}\n  - {name: a, type: int64}\n")
            .unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
    }
}
