//! What a route may read and write: coordinate columns, topic patterns, dead-letter
//! topics, the pick-up time of new topics and the ClickHouse engine.

use super::*;

/// Loads `text` from a fresh directory holding the schema files `files` (name, yaml).
fn load_with(text: &str, files: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let dir = super::tests::dir();
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    load_str(text, &dir.join("config.yaml"), &|_| None)
}

/// Asserts the config (without files of its own) is refused with an error holding
/// every fragment (`case` names the variant in a failure).
fn assert_refused(text: &str, fragments: &[&str], case: &str) {
    let err = load_with(text, &[]).unwrap_err().to_string();
    for fragment in fragments {
        assert!(
            err.contains(fragment),
            "{case}: expected `{fragment}` in: {err}"
        );
    }
}

const HEAD: &str = r#"
kafka: { brokers: "127.0.0.1:9092", group_id: analytics }
clickhouse: { url: "http://127.0.0.1:8123", database: analytics }
iceberg:
  catalog: { type: sql, uri: "sqlite:///tmp/c.db", warehouse: "file:///tmp/w" }
  namespace: analytics
routes:
"#;

const WITH_OFFSET: &str =
    "fields:\n  - {name: id, type: int64}\n  - {name: _offset, type: int64}\n";

fn error(text: &str) -> String {
    let err = load_with(text, &[("payload.yaml", WITH_OFFSET)])
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "multi-line error: {err}");
    err
}

#[test]
fn a_payload_field_named_like_a_coordinate_column_is_refused() {
    let err = error(&format!(
        "{HEAD}  - name: files\n    topics: [files]\n    schema: payload.yaml\n    clickhouse: {{ table: files }}\n"
    ));
    for expected in [
        "routes[0].schema",
        "route `files`",
        "field `_offset`",
        "Kafka offset",
        "metadata: { offset:",
    ] {
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }

    // Another metadata column under a coordinate column's name is refused as well.
    let err = error(&format!(
        "{HEAD}  - topics: [files]\n    schema: events.yaml\n    metadata: {{ timestamp: _partition }}\n    clickhouse: {{ table: files }}\n"
    ));
    assert!(err.contains("field `_partition`"), "{err}");

    // Renaming the coordinate column, or an Iceberg-only route (positions in snapshot
    // summaries, not in columns), leaves the payload field alone.
    for route in [
        "    metadata: { offset: kafka_offset }\n    clickhouse: { table: files }\n",
        "    iceberg: { table: files }\n",
    ] {
        let text = format!("{HEAD}  - topics: [files]\n    schema: payload.yaml\n{route}");
        load_with(&text, &[("payload.yaml", WITH_OFFSET)]).unwrap();
    }
}

#[test]
fn topic_patterns_are_subscribed_whole_name_anchored() {
    let text = format!(
        "{HEAD}  - topic_pattern: \"logs\\\\..+|audit\"\n    schema: events.yaml\n    iceberg: {{ table: logs }}\n"
    );
    let loaded = load_with(&text, &[]).unwrap();
    // What librdkafka matches (POSIX extended) is what the route matches (whole name).
    assert_eq!(loaded.subscriptions(), vec!["^(logs\\..+|audit)$"]);
    assert_eq!(loaded.route_for("logs.app"), Some(0));
    assert_eq!(loaded.route_for("audit"), Some(0));
    assert_eq!(loaded.route_for("audit.old"), None);
    assert_eq!(loaded.route_for("xlogs.app"), None);
}

#[test]
fn patterns_whose_meaning_differs_between_dialects_are_refused() {
    for pattern in [
        "logs\\\\d+",      // \d: a digit class here, undefined in POSIX
        "(?i)logs",        // inline flags
        "logs(?:\\\\..+)", // non-capturing group
        "logs[[:digit:]]", // POSIX class, a nested class here
        "logs[\\\\d]",     // backslash in brackets: literal in POSIX
        "logs.*?",         // lazy repetition
        "logs\\\\b",       // word boundary
        "logs events",     // not a topic name character
        "",                // matches nothing
        "logs|",           // empty alternative: undefined in POSIX
        "(|logs)",
    ] {
        let text = format!(
            "{HEAD}  - topic_pattern: \"{pattern}\"\n    schema: events.yaml\n    iceberg: {{ table: logs }}\n"
        );
        assert_refused(&text, &["routes[0].topic_pattern", "librdkafka"], pattern);
    }
    for pattern in [
        "logs\\\\..+",
        "^(app|web)-[a-z0-9_]{2,8}\\\\.events$",
        "logs-[^.]+",
        "a.b*c?",
    ] {
        let text = format!(
            "{HEAD}  - topic_pattern: \"{pattern}\"\n    schema: events.yaml\n    iceberg: {{ table: logs }}\n"
        );
        load_with(&text, &[]).unwrap_or_else(|e| panic!("{pattern}: {e}"));
    }
}

#[test]
fn listed_topics_must_be_topic_names() {
    for topic in ["^events", "events$", "my events", ""] {
        let text = format!(
            "{HEAD}  - topics: [\"{topic}\"]\n    schema: events.yaml\n    iceberg: {{ table: e }}\n"
        );
        assert_refused(
            &text,
            &["routes[0].topics", "not a Kafka topic name"],
            topic,
        );
    }
}

#[test]
fn a_dead_letter_topic_read_by_a_route_is_refused() {
    // The global dead-letter topic matches a route's pattern.
    let text = HEAD.replace("routes:\n", "dead_letter: { topic: logs.dead }\nroutes:\n")
        + "  - name: logs\n    topic_pattern: \"logs\\\\..+\"\n    schema: events.yaml\n    iceberg: { table: logs }\n";
    let expected = ["dead_letter.topic", "`logs.dead`", "route `logs`", "loop"];
    assert_refused(&text, &expected, "a global dead-letter topic");
    // A route's own dead-letter topic is listed by another route.
    let text = format!(
        "{HEAD}  - topics: [events]\n    schema: events.yaml\n    iceberg: {{ table: events }}\n    dead_letter: {{ topic: rejects }}\n  - topics: [rejects]\n    schema: events.yaml\n    iceberg: {{ table: rejects }}\n"
    );
    let expected = ["routes[0].dead_letter.topic", "route `rejects`"];
    assert_refused(&text, &expected, "a route's dead-letter topic");
}

#[test]
fn new_topics_are_picked_up_within_the_discovery_interval() {
    let route = "  - topic_pattern: \"logs\\\\..+\"\n    schema: events.yaml\n    iceberg: { table: logs }\n";
    let refresh = |loaded: &Loaded| {
        crate::consumer::client_config(&loaded.config.kafka)
            .get("topic.metadata.refresh.interval.ms")
            .map(str::to_string)
    };
    let loaded = load_with(&format!("{HEAD}{route}"), &[]).unwrap();
    assert_eq!(refresh(&loaded).as_deref(), Some("5000"));

    let text = HEAD.replace(
        "group_id: analytics }",
        "group_id: analytics, topic_discovery_interval: 2s }",
    ) + route;
    let loaded = load_with(&text, &[]).unwrap();
    assert_eq!(refresh(&loaded).as_deref(), Some("2000"));

    for (setting, expected) in [
        (
            "topic_discovery_interval: 0s",
            "kafka.topic_discovery_interval",
        ),
        (
            "topic_discovery_interval: 2h",
            "kafka.topic_discovery_interval",
        ),
        (
            "properties: { topic.metadata.refresh.interval.ms: \"1000\" }",
            "kafka.topic_discovery_interval",
        ),
    ] {
        let text = HEAD.replace(
            "group_id: analytics }",
            &format!("group_id: analytics, {setting} }}"),
        ) + route;
        assert_refused(&text, &[expected], setting);
    }
}

#[test]
fn a_replicated_or_distributed_engine_for_created_tables_is_refused() {
    for engine in [
        "\"ReplicatedMergeTree('/clickhouse/tables/{shard}/events', '{replica}')\"",
        "\"Distributed(cluster, analytics, events_local)\"",
    ] {
        let text = format!(
            "{HEAD}  - topics: [events]\n    schema: events.yaml\n    clickhouse: {{ table: events, engine: {engine} }}\n"
        );
        assert_refused(
            &text,
            &["routes[0].clickhouse.engine", "does not support"],
            engine,
        );
    }
}
