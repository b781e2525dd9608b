//! The service names a sink in one place only, `src/plugins.rs`; everything else
//! reaches sinks through the plug-in registration of `ingest-sink-api`. Likewise a
//! payload format's crate is named in its own module of `src/decode/` only; everything
//! else reaches it through the `Format` seam (see docs/architecture.md). Checked by
//! reading the service's sources.

use std::path::Path;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The sink crates a text names (`ingest_sink_<name>`, the API crate aside).
fn sink_crates(text: &str) -> Vec<String> {
    text.match_indices("ingest_sink_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| name != "ingest_sink_api")
        .collect()
}

#[test]
fn only_the_registration_names_a_sink_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| !path.ends_with("plugins.rs"))
        .filter_map(|path| {
            let named = sink_crates(&std::fs::read_to_string(path).unwrap());
            (!named.is_empty()).then(|| format!("{}: {named:?}", path.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "sink crates named outside plugins.rs: {offenders:?}"
    );
    let registration = std::fs::read_to_string(src.join("plugins.rs")).unwrap();
    assert!(
        !sink_crates(&registration).is_empty(),
        "plugins.rs registers no sink"
    );
}

/// Each payload format's crate, and the one module (a file, or a folder ending in `/`)
/// that may name it.
const FORMATS: &[(&str, &str)] = &[
    ("arrow_json", "decode/json/"),
    ("arrow_avro", "decode/avro/"),
];

#[test]
fn only_its_module_names_a_format_s_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for (krate, module) in FORMATS {
        let naming: Vec<String> = files
            .iter()
            .filter(|path| std::fs::read_to_string(path).unwrap().contains(krate))
            .map(|path| path.strip_prefix(&src).unwrap().display().to_string())
            .collect();
        assert!(!naming.is_empty(), "no module names `{krate}`");
        let outside: Vec<&String> = naming.iter().filter(|p| !p.starts_with(module)).collect();
        assert!(
            outside.is_empty(),
            "`{krate}` is named outside {module}: {outside:?}"
        );
    }
}
