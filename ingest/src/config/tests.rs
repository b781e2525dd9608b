use super::*;
use ingest_sink_api::secret::ExposeSecret;

pub(super) fn dir() -> PathBuf {
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
    let registered: Vec<&str> = loaded.secrets.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(registered, ["pw"]);
    let tables: Vec<(&str, &str)> = loaded.routes[0]
        .sinks
        .iter()
        .map(|s| (s.key, s.name.as_str()))
        .collect();
    assert_eq!(tables, [("clickhouse", "events"), ("iceberg", "events")]);
    assert_eq!(
        loaded.routes[0].config.batch.max_age,
        Duration::from_millis(500)
    );
    assert_eq!(loaded.route_for("events"), Some(0));
    assert_eq!(loaded.route_for("logs.app"), Some(1));
    assert_eq!(loaded.route_for("logs"), None);
    assert_eq!(loaded.subscriptions(), vec!["events", "^(logs\\..+)$"]);
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

/// Every secret a config can hold, each in the place a user would put it.
const SECRET_CONFIG: &str = r#"
kafka:
  brokers: "127.0.0.1:9094"
  group_id: analytics
  properties:
    security.protocol: SASL_SSL
    sasl.mechanism: SCRAM-SHA-512
    sasl.username: ingest
    sasl.password: "sasl-Secret-1"
    ssl.key.password: "sslkey-Secret-2"
    ssl.keystore.password: "keystore-Secret-3"
    sasl.oauthbearer.client.secret: "oauth-Secret-4"
clickhouse: { url: "https://ch:churl-Secret-5@127.0.0.1:8443", password: "chpass-Secret-6" }
iceberg:
  catalog:
    type: sql
    uri: "postgres://ingest:catalog-Secret-7@127.0.0.1:5432/db?sslpassword=sslpw-Secret-8"
    warehouse: "s3://bucket/w"
    properties:
      s3.access-key-id: AKIDEXAMPLE
      s3.secret-access-key: "s3key-Secret-9"
      s3.session-token: "s3token-Secret-10"
      token: "rest-Secret-11"
      credential: "client:cred-Secret-12"
      client.secret: "client-Secret-13"
  namespace: analytics
routes:
  - topics: [e]
    schema: events.yaml
    clickhouse: { table: e }
    iceberg: { table: e }
"#;

#[test]
fn debug_output_never_shows_secrets() {
    let loaded = load_text(SECRET_CONFIG).unwrap();
    let shown = format!("{loaded:?}\n{loaded:#?}");
    for n in 1..=13 {
        assert!(
            !shown.contains(&format!("-Secret-{n}")),
            "secret {n} shown by Debug: {shown}"
        );
    }
    // What is not secret stays readable.
    assert!(
        shown.contains("postgres://ingest:***@127.0.0.1:5432/db"),
        "{shown}"
    );
    assert!(shown.contains("AKIDEXAMPLE") && shown.contains("SCRAM-SHA-512"));
    assert_eq!(
        loaded.config.kafka.properties["sasl.password"],
        "sasl-Secret-1"
    );
}

/// A self-signed CA certificate (no key kept): enough to be loaded as a trust root.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUAQnFg6bwnKQI0mwKwKj4e3bnBn0wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOaW5nZXN0LXRlc3QtY2EwIBcNMjYxMTI3MDcwMzU5WhgPMjEy
NjExMDMwNzAzNTlaMBkxFzAVBgNVBAMMDmluZ2VzdC10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEGEiSOw1aFqxHtCg9w6bSZ4j40dKajAOJEkHTDys0
KjANTT0TppZueUKj0y3Vj03Ouy+Q6FGYucORRuMDqoLdQKNTMFEwHQYDVR0OBBYE
FAJemLJdxdvg+neagsvfHI7z+lgMMB8GA1UdIwQYMBaAFAJemLJdxdvg+neagsvf
HI7z+lgMMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgaqXZ9Eqp
/FWSKRtW87oEYH9aVGhZCBkBym/C8jdBUogCIQDQrY468WScWYb5pwNma07XY4rg
spite265/wJo/xXOZQ==
-----END CERTIFICATE-----
";

fn clickhouse_config(section: &str) -> String {
    BASE.replace(
        "clickhouse: { url: \"http://127.0.0.1:8123\", database: analytics, password: \"${CH_PASSWORD}\" }",
        section,
    ) + "  - topics: [e]\n    schema: events.yaml\n    clickhouse: { table: e }\n"
}

/// Loads `text` from a fresh directory holding `files` (name, contents).
fn load_with_files(text: &str, files: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let dir = dir();
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    load_str(text, &dir.join("config.yaml"), &|name| {
        (name == "CH_PASSWORD").then(|| "pw".to_string())
    })
}

/// The ClickHouse section as `Debug` shows it (passwords masked).
fn clickhouse_section(loaded: &Loaded) -> String {
    let (_, section) = loaded
        .sinks
        .iter()
        .find(|(k, _)| *k == "clickhouse")
        .unwrap();
    format!("{section:?}")
}

#[test]
fn clickhouse_tls_ca_file_is_resolved_and_checked() {
    let loaded = load_with_files(
        &clickhouse_config(
            "clickhouse: { url: \"https://localhost:8443\", tls: { ca_file: ca.pem } }",
        ),
        &[("ca.pem", TEST_CA)],
    )
    .unwrap();
    let section = clickhouse_section(&loaded);
    assert!(
        section.contains("ca_file: Some(\"/") && section.contains("/ca.pem\""),
        "{section}"
    );

    // https without a tls section trusts the system's roots.
    let loaded = load_with_files(
        &clickhouse_config("clickhouse: { url: \"https://localhost:8443\" }"),
        &[],
    )
    .unwrap();
    let section = clickhouse_section(&loaded);
    assert!(section.contains("tls: None"), "{section}");

    let cases = [
        (
            "clickhouse: { url: \"https://h:8443\", tls: { ca_file: missing.pem } }",
            vec!["clickhouse.tls.ca_file", "missing.pem", "cannot read"],
        ),
        (
            "clickhouse: { url: \"https://h:8443\", tls: { ca_file: events.yaml } }",
            vec!["clickhouse.tls.ca_file", "no PEM certificate"],
        ),
        (
            "clickhouse: { url: \"http://u:tls-Secret@h:8123\", tls: { ca_file: ca.pem } }",
            vec!["clickhouse.tls", "https://", "http://u:***@h:8123"],
        ),
        (
            "clickhouse: { url: \"https://h:8443\", tls: { ca_fil: ca.pem } }",
            vec!["clickhouse.tls", "ca_fil"],
        ),
    ];
    for (section, expected) in cases {
        let err = load_with_files(&clickhouse_config(section), &[("ca.pem", TEST_CA)])
            .unwrap_err()
            .to_string();
        for fragment in expected {
            assert!(err.contains(fragment), "`{fragment}` not in: {err}");
        }
        assert!(!err.contains("tls-Secret"), "{err}");
    }
}

#[test]
fn secrets_come_from_files() {
    let loaded = load_with_files(
        &(BASE.replace("${CH_PASSWORD}", "${file:ch.password}")
            + "  - topics: [e]\n    schema: events.yaml\n    clickhouse: { table: e }\n"),
        &[("ch.password", "file-Secret-1\n")],
    )
    .unwrap();
    let registered: Vec<&str> = loaded.secrets.iter().map(|s| s.expose_secret()).collect();
    assert!(registered.contains(&"file-Secret-1"), "{registered:?}");

    // A missing file names the key and the path.
    let err = load_with_files(
        &(BASE.replace("${CH_PASSWORD}", "${file:/nonexistent/ch.password}")
            + "  - topics: [e]\n    schema: events.yaml\n    clickhouse: { table: e }\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("clickhouse.password") && err.contains("/nonexistent/ch.password"),
        "{err}"
    );

    // A secret put where a value is refused is not quoted by the error.
    let err = load_with_files(
        &(BASE.replace(
            "password: \"${CH_PASSWORD}\"",
            "compression: \"${file:wrong}\"",
        ) + "  - topics: [e]\n    schema: events.yaml\n    clickhouse: { table: e }\n"),
        &[("wrong", "file-Secret-2")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("clickhouse.compression"), "{err}");
    assert!(!err.contains("file-Secret-2"), "{err}");
}

#[test]
fn every_secret_is_collected_for_masking() {
    let loaded = load_text(SECRET_CONFIG).unwrap();
    let secrets: Vec<&str> = loaded.secrets.iter().map(|s| s.expose_secret()).collect();
    for n in 1..=13 {
        assert!(
            secrets.iter().any(|s| s.contains(&format!("-Secret-{n}"))),
            "secret {n} not collected: {secrets:?}"
        );
    }
    assert!(!secrets.contains(&"ingest") && !secrets.contains(&"AKIDEXAMPLE"));
}

#[test]
fn tags_in_sink_sections_are_read_as_their_values() {
    // YAML tags (`!secret`, `!!str`) were dropped before the sinks' sections were
    // handed to their plug-ins as JSON; they still are.
    let text = BASE.replace(
        "password: \"${CH_PASSWORD}\"",
        "password: !secret tagged-pw",
    ) + "  - topics: [e]\n    schema: events.yaml\n    clickhouse: { table: !!str e }\n";
    let loaded = load_text(&text).unwrap();
    assert_eq!(loaded.routes[0].sinks[0].name, "e");
    let registered: Vec<&str> = loaded.secrets.iter().map(|s| s.expose_secret()).collect();
    assert!(registered.contains(&"tagged-pw"), "{registered:?}");
}

#[test]
fn an_unknown_key_error_names_the_sinks_too() {
    // The sinks' keys are taken out before the rest is read strictly: a misspelt sink
    // must still be told what it could have been.
    let err = load_text(&BASE.replace("clickhouse:", "clikhouse:"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`clikhouse`") && err.contains("`clickhouse`"),
        "{err}"
    );
    let text =
        format!("{BASE}  - topics: [e]\n    schema: events.yaml\n    icebrg: {{ table: e }}\n");
    let err = load_text(&text).unwrap_err().to_string();
    assert!(
        err.contains("routes[0]") && err.contains("`iceberg`"),
        "{err}"
    );
}

#[test]
fn a_route_names_its_payload_format() {
    let route = |format: &str| {
        with_routes(&format!(
            r#"
  - topics: [events]
    schema: events.yaml
    {format}
    clickhouse: {{ table: events, order_by: [id] }}
"#
        ))
    };
    let loaded = load_text(&route("")).unwrap();
    assert_eq!(
        loaded.routes[0].config.format,
        PayloadFormat::Json,
        "the default"
    );
    let loaded = load_text(&route("format: json")).unwrap();
    assert_eq!(loaded.routes[0].config.format, PayloadFormat::Json);
    let err = load_text(&route("format: xml")).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].format") && err.contains("xml"),
        "{err}"
    );
    let err = load_text(&route("format: protobuf"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes[0].schema") && err.contains(".proto"),
        "{err}"
    );
    let err = load_text(&route("format: avro")).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].schema") && err.contains(".avsc"),
        "{err}"
    );
}

const AVSC: &str = r#"{"type":"record","name":"E","fields":[
  {"name":"id","type":"long"},
  {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
  {"name":"note","type":["null","string"],"default":null}]}"#;

#[test]
fn an_avro_route_s_table_is_its_avro_schema() {
    let text = |extra: &str, schema: &str| {
        with_routes(&format!(
            "\n  - topics: [events]\n    format: avro\n{schema}{extra}    clickhouse: {{ table: events, order_by: [id] }}\n"
        ))
    };
    let loaded = load_with_files(
        &text("", "    schema: events.avsc\n"),
        &[("events.avsc", AVSC)],
    )
    .unwrap();
    let route = &loaded.routes[0];
    let fields: Vec<String> = route
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}:{}", f.name(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        ["id:Int64:false", "kind:Utf8:false", "note:Utf8:true"]
    );
    assert!(
        matches!(
            &route.payload,
            crate::decode::Payload::Avro {
                registry: false,
                ..
            }
        ),
        "no registry configured: bare bodies"
    );

    for (extra, schema, files, want) in [
        ("", "", vec![], "routes[0].schema"),
        (
            "",
            "    schema: events.avsc\n",
            vec![("events.avsc", "{\"type\":\"string\"}")],
            "cannot be a table",
        ),
        (
            "",
            "    schema: events.avsc\n",
            vec![("events.avsc", "not json")],
            "cannot be a table",
        ),
    ] {
        let err = load_with_files(&text(extra, schema), &files)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "want `{want}`: {err}");
    }
    let err = load_text(&with_routes(
        "\n  - topics: [events]\n    schema: events.yaml\n    subject: s\n    clickhouse: { table: events, order_by: [id] }\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("routes[0].subject"), "{err}");
}

const PROTO: &str = r#"syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Order { int64 id = 1; google.protobuf.Timestamp at = 2; repeated string tags = 3; }
message Refund { int64 id = 1; }
"#;

#[test]
fn a_protobuf_route_s_table_is_its_message() {
    let text = |extra: &str| {
        with_routes(&format!(
            "\n  - topics: [orders]\n    format: protobuf\n    schema: shop.proto\n{extra}    clickhouse: {{ table: orders, order_by: [id] }}\n"
        ))
    };
    let files = [("shop.proto", PROTO)];
    let fields = |loaded: &Loaded| -> Vec<String> {
        loaded.routes[0]
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect()
    };
    let first = load_with_files(&text(""), &files).unwrap();
    let got = fields(&first);
    assert_eq!(got.len(), 3, "the file's first message: {got:?}");
    assert_eq!(got[0], "id:Int64");
    assert!(
        got[1].starts_with("at:Timestamp(µs") && got[1].contains("UTC"),
        "{got:?}"
    );
    assert!(got[2].starts_with("tags:List("), "{got:?}");
    let refund = load_with_files(&text("    message: shop.Refund\n"), &files).unwrap();
    assert_eq!(fields(&refund), ["id:Int64"]);
    for (extra, want) in [
        ("    message: shop.Nope\n", "no message `shop.Nope`"),
        ("    coerce: [string_to_number]\n", "routes[0].coerce"),
    ] {
        let err = load_with_files(&text(extra), &files)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "want `{want}`: {err}");
    }
    let err = load_with_files(&text(""), &[("shop.proto", "message {")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("routes[0].schema"), "{err}");
}

#[test]
fn registry_secrets_are_masked_and_one_way_to_log_in_is_given() {
    let text = |section: &str| {
        format!(
            "{}schema_registry: {section}\n",
            with_routes(
                "\n  - topics: [events]\n    schema: events.yaml\n    clickhouse: { table: events, order_by: [id] }\n"
            )
        )
    };
    let loaded = load_with_files(
        &text("{ url: \"https://reader:url-Secret-2@registry:8081\", username: reader, password: reg-Secret-1 }"),
        &[("events.yaml", "fields:\n  - {name: id, type: int64}\n")],
    )
    .unwrap();
    let secrets: Vec<&str> = loaded.secrets.iter().map(|s| s.expose_secret()).collect();
    assert!(secrets.contains(&"reg-Secret-1"), "{secrets:?}");
    assert!(secrets.contains(&"url-Secret-2"), "{secrets:?}");
    let shown = format!("{:?}", loaded.config.schema_registry);
    assert!(
        !shown.contains("Secret") && shown.contains("reader"),
        "{shown}"
    );
    let loaded = load_with_files(
        &text("{ url: \"http://registry:8081\", token: tok-Secret-3 }"),
        &[("events.yaml", "fields:\n  - {name: id, type: int64}\n")],
    )
    .unwrap();
    assert!(
        loaded
            .secrets
            .iter()
            .any(|s| s.expose_secret() == "tok-Secret-3")
    );
    for (section, want) in [
        (
            "{ url: \"http://r\", username: u, password: p, token: t }",
            "not both",
        ),
        (
            "{ url: \"http://r\", password: p }",
            "give the `username` too",
        ),
        ("{ url: \"registry:8081\" }", "schema_registry.url"),
    ] {
        let err = load_with_files(
            &text(section),
            &[("events.yaml", "fields:\n  - {name: id, type: int64}\n")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(want), "want `{want}`: {err}");
        assert!(!err.contains("Secret"), "{err}");
    }
}

#[test]
fn a_drain_timeout_of_zero_is_refused() {
    let text =
        with_routes("  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n")
            + "server: { drain_timeout: 0s }\n";
    let err = load_text(&text).unwrap_err().to_string();
    assert!(err.contains("server.drain_timeout"), "{err}");
    let text =
        with_routes("  - topics: [events]\n    schema: events.yaml\n    iceberg: { table: e }\n")
            + "server: { drain_timeout: 2m }\n";
    let loaded = load_text(&text).unwrap();
    assert_eq!(
        loaded.config.server.drain_timeout,
        std::time::Duration::from_secs(120)
    );
}

#[test]
fn a_watermark_time_field_must_be_a_timestamp_or_date_of_the_schema() {
    let schema = dir().join("timed.yaml");
    std::fs::write(
        &schema,
        "fields:\n  - {name: id, type: int64}\n  - {name: at, type: \"timestamp(ms, UTC)\"}\n",
    )
    .unwrap();
    let route = |field: &str| {
        with_routes(&format!(
            "  - {{ topics: [t], schema: \"{}\", clickhouse: {{ table: e }}, watermark: {{ time_field: {field} }} }}\n",
            schema.display()
        ))
    };
    let loaded = load_text(&route("at")).unwrap();
    assert_eq!(
        loaded.routes[0].config.watermark.time_field.as_deref(),
        Some("at")
    );
    let err = load_text(&route("id")).unwrap_err().to_string();
    assert!(
        err.contains("routes[0].watermark.time_field") && err.contains("not a timestamp or a date"),
        "{err}"
    );
    let err = load_text(&route("nope")).unwrap_err().to_string();
    assert!(err.contains("`nope` is not a field"), "{err}");
}
