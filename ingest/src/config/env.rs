//! `${VAR}` and `${VAR:-default}` in config values, so secrets come from the
//! environment (a Kubernetes Secret) while the YAML lives in a ConfigMap.

use serde_yaml::Value;

/// Replaces references in every string of the tree; `$${` writes a literal `${`.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        Value::String(text) => {
            *text = expand(text, lookup).map_err(|e| format!("at `{path}`: {e}"))?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().unwrap_or("?");
                let child = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                interpolate(item, &child, lookup)?;
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{inner}}}` is not a valid variable reference"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        assert_eq!(expand("a-${PW}-b", &env).unwrap(), "a-s3cret-b");
        assert_eq!(expand("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(expand("$${PW} costs $5", &env).unwrap(), "${PW} costs $5");
        assert!(
            expand("${NOPE}", &env)
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert!(expand("${PW", &env).unwrap_err().contains("unclosed"));
    }

    #[test]
    fn error_names_the_key() {
        let mut v: Value = serde_yaml::from_str("clickhouse:\n  password: ${MISSING}\n").unwrap();
        let err = interpolate(&mut v, "", &env).unwrap_err();
        assert!(err.starts_with("at `clickhouse.password`"), "{err}");
    }
}
