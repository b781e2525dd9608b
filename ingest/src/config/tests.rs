use super::*;

fn dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ingest-config-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("events.yaml"),
        "fields:\n  - {name: id, type: int64}\n",
    )
    .unwrap();
    dir
}

fn load_text(text: &str) -> Result<Loaded, ConfigError> {
    let path = dir().join("config.yaml");
    load_str(text, &path, &|name| {
        (name == "CH_PASSWORD").then(|| "pw".to_string())
    })
}

const BASE: &str = r#"
kafka: { brokers: "127.0.0.1:9092", group_id: analytics }
clickhouse: { url: "http://127.0.0.1:8123", database: analytics, password: "${CH_PASSWORD}" }
iceberg:
  catalog: { type: sql, uri: "sqlite:///tmp/c.db", warehouse: "file:///tmp/w" }
  namespace: analytics
routes:
"#;

fn with_routes(routes: &str) -> String {
    format!("{BASE}{routes}")
}

#[test]
fn loads_a_full_config() {
    let loaded = load_text(&with_routes(
        r#"
  - topics: [events]
    schema: events.yaml
    metadata: { partition: _partition, offset: _offset }
    clickhouse: { table: events, order_by: [id] }
    iceberg: { table: events, partition_by: ["bucket(4, id)"], target_file_size: 64MiB }
    batch: { max_rows: 1000, max_bytes: 1MiB, max_age: 500ms }
  - topic_pattern: "logs\\..+"
    schema: events.yaml
    iceberg: { table: logs }
"#,
    ))
    .unwrap();
    assert_eq!(loaded.config.clickhouse.as_ref().unwrap().password, "pw");
    assert_eq!(
        loaded.routes[0].config.batch.max_age,
        Duration::from_millis(500)
    );
    assert_eq!(loaded.route_for("events"), Some(0));
    assert_eq!(loaded.route_for("logs.app"), Some(1));
    assert_eq!(loaded.route_for("logs"), None);
    assert_eq!(loaded.subscriptions(), vec!["events", "^logs\\..+"]);
    assert_eq!(loaded.routes[0].on_error, OnError::Fail);
}

#[test]
fn unknown_key_names_its_path() {
    let err = load_text(&with_routes(
        "  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n    batch: { max_rowz: 5 }\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("routes[0].batch") && err.contains("max_rowz"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            "  - topic_pattern: \"([a\"\n    schema: events.yaml\n    iceberg: { table: e }\n",
            "bad regular expression",
        ),
        (
            "  - topics: [events]\n    schema: missing.yaml\n    iceberg: { table: e }\n",
            "missing.yaml",
        ),
        ("  - topics: [events]\n    schema: events.yaml\n", "no sink"),
        (
            "  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n    batch: { max_age: soon }\n",
            "routes[0].batch.max_age",
        ),
        (
            "  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n    on_error: dead_letter\n",
            "dead-letter topic",
        ),
        (
            "  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: f }\n",
            "already routed",
        ),
    ];
    for (routes, expected) in cases {
        let err = load_text(&with_routes(routes)).unwrap_err().to_string();
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        assert!(!err.contains('\n'), "multi-line error: {err}");
    }
}

#[test]
fn missing_env_var_is_named() {
    let text = BASE.replace("${CH_PASSWORD}", "${NOT_SET_ANYWHERE}")
        + "  - topics: [e]\n    schema: events.yaml\n    iceberg: { table: e }\n";
    let err = load_text(&text).unwrap_err().to_string();
    assert!(
        err.contains("clickhouse.password") && err.contains("NOT_SET_ANYWHERE"),
        "{err}"
    );
}

#[test]
fn settings_that_would_commit_early_are_refused() {
    let text = BASE.replace(
        "group_id: analytics }",
        "group_id: analytics, properties: { enable.auto.commit: \"true\" } }",
    ) + "  - topics: [e]\n    schema: events.yaml\n    iceberg: { table: e }\n";
    let err = load_text(&text).unwrap_err().to_string();
    assert!(err.contains("kafka.properties.enable.auto.commit"), "{err}");
}
