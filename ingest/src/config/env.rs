//! `${VAR}`, `${VAR:-default}` and `${file:PATH}` in config values, so secrets come
//! from the environment or a mounted file (a Kubernetes Secret) while the YAML lives in
//! a ConfigMap.

use std::path::Path;

use serde_norway::Value;

/// Where references are resolved, and what they brought in.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The directory relative `${file:...}` paths start from (the config file's).
    pub base: &'a Path,
    /// Every value read from a file: secrets, masked wherever they could be printed.
    pub from_files: Vec<String>,
}

/// Replaces references in every string of the tree; `$${` writes a literal `${`.
pub fn interpolate(value: &mut Value, path: &str, sources: &mut Sources<'_>) -> Result<(), String> {
    match value {
        Value::String(text) => {
            *text = expand(text, sources).map_err(|e| format!("at `{path}`: {e}"))?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), sources)?;
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
                interpolate(item, &child, sources)?;
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, sources)?,
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, sources: &mut Sources<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            // The text may hold secrets: errors quote the reference, never the text.
            let end = tail.find('}').ok_or("unclosed `${`")?;
            let inner = &tail[..end];
            if let Some(file) = inner.strip_prefix("file:") {
                let value = read_secret_file(file, sources.base)?;
                out.push_str(&value);
                sources.from_files.push(value);
                rest = &tail[end + 1..];
                continue;
            }
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{inner}}}` is not a valid variable reference"));
            }
            match ((sources.env)(name), default) {
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

/// The file's text without one trailing newline (as `echo` and editors leave it).
/// Errors name the file, never its contents.
fn read_secret_file(file: &str, base: &Path) -> Result<String, String> {
    if file.trim().is_empty() {
        return Err("`${file:}` needs a path".into());
    }
    let path = base.join(file);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| format!("secret file `{}` is not UTF-8 text", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    fn sources(base: &Path) -> Sources<'_> {
        Sources {
            env: &env,
            base,
            from_files: Vec::new(),
        }
    }

    fn expand_env(text: &str) -> Result<String, String> {
        expand(text, &mut sources(Path::new("/")))
    }

    #[test]
    fn expands_references_defaults_and_escapes() {
        assert_eq!(expand_env("a-${PW}-b").unwrap(), "a-s3cret-b");
        assert_eq!(expand_env("${NOPE:-x}").unwrap(), "x");
        assert_eq!(expand_env("$${PW} costs $5").unwrap(), "${PW} costs $5");
        assert!(
            expand_env("${NOPE}")
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert!(expand_env("${PW").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn error_names_the_key() {
        let mut v: Value = serde_norway::from_str("clickhouse:\n  password: ${MISSING}\n").unwrap();
        let err = interpolate(&mut v, "", &mut sources(Path::new("/"))).unwrap_err();
        assert!(err.starts_with("at `clickhouse.password`"), "{err}");
    }

    /// A folder of its own per call: tests run in parallel, and rewriting a shared
    /// file (truncate, then write) let another test read it empty (`make test` failed
    /// once with `postgres://u:@h/db`).
    fn secret_dir() -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ingest-env-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("pw"), "from-file\n").unwrap();
        std::fs::write(dir.join("crlf"), "windows\r\n").unwrap();
        std::fs::write(dir.join("two"), "kept\n\n").unwrap();
        std::fs::write(dir.join("none"), "exact").unwrap();
        std::fs::write(dir.join("sub/rel"), "relative\n").unwrap();
        dir
    }

    #[test]
    fn file_references_read_the_file_without_its_last_newline() {
        let dir = secret_dir();
        let mut s = sources(&dir);
        let pw = dir.join("pw");
        let text = format!("postgres://u:${{file:{}}}@h/db", pw.display());
        assert_eq!(
            expand(&text, &mut s).unwrap(),
            "postgres://u:from-file@h/db"
        );
        let crlf = format!("${{file:{}}}", dir.join("crlf").display());
        assert_eq!(expand(&crlf, &mut s).unwrap(), "windows");
        let two = format!("${{file:{}}}", dir.join("two").display());
        assert_eq!(expand(&two, &mut s).unwrap(), "kept\n");
        let none = format!("${{file:{}}}-${{PW}}", dir.join("none").display());
        assert_eq!(expand(&none, &mut s).unwrap(), "exact-s3cret");
        // Relative paths start from the config file's directory.
        assert_eq!(expand("${file:sub/rel}", &mut s).unwrap(), "relative");
        assert_eq!(
            s.from_files,
            ["from-file", "windows", "kept\n", "exact", "relative"]
        );
        assert_eq!(expand("$${file:x}", &mut s).unwrap(), "${file:x}");
    }

    #[test]
    fn missing_secret_file_names_key_and_path_only() {
        let dir = secret_dir();
        let mut v: Value = serde_norway::from_str(
            "kafka:\n  properties:\n    sasl.password: \"${file:nope/pw}\"\n",
        )
        .unwrap();
        let err = interpolate(&mut v, "", &mut sources(&dir)).unwrap_err();
        assert!(
            err.starts_with("at `kafka.properties.sasl.password`"),
            "{err}"
        );
        assert!(
            err.contains("cannot read secret file") && err.contains("nope/pw"),
            "{err}"
        );
        assert!(
            expand("${file:}", &mut sources(&dir))
                .unwrap_err()
                .contains("needs a path")
        );
        // An unclosed reference does not quote the text around it (it may be a secret).
        let err = expand("hunter2-${file:pw", &mut sources(&dir)).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
