//! Protobuf payloads through the route decoder: every kind of field, the message-index
//! framing, a newer writer version, refusals, and mutated payloads.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MapKey, Value};
use rand::{Rng, SeedableRng};

use super::*;
use crate::decode::registry_tests::{ids, run, schema};
use crate::decode::{Learned, Message, Payload, RouteDecoder};

const PROTO: &str = r#"
syntax = "proto3";
package t;
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/wrappers.proto";

message Other { string x = 1; }

message Event {
  int64 id = 1;
  string name = 2;
  optional string note = 3;
  Kind kind = 4;
  repeated string tags = 5;
  map<string, int64> attrs = 6;
  Inner inner = 7;
  google.protobuf.Timestamp at = 8;
  google.protobuf.Duration took = 9;
  google.protobuf.Int32Value maybe = 10;
  oneof choice { string a = 11; int32 b = 12; }
  bytes blob = 13;
  double score = 14;
  uint64 big = 15;
  bool flag = 16;
  repeated Inner items = 17;

  message Inner { int32 x = 1; }
  enum Kind { K_UNKNOWN = 0; K_A = 1; K_B = 2; }
}
"#;

/// Event as a later writer has it: one more field.
fn proto_v2() -> String {
    PROTO.replace(
        "repeated Inner items = 17;",
        "repeated Inner items = 17;\n  string added = 20;",
    )
}

/// A registry schema that imports nothing but the well-known types.
fn source(text: &str) -> ProtoSchema {
    ProtoSchema::Source {
        text: text.into(),
        imports: Arc::from([]),
    }
}

fn pool(text: &str) -> DescriptorPool {
    compile_source(text, &[]).unwrap().0
}

/// Confluent framing: magic, id, the index list [1] (Event), the message.
fn framed(id: u32, message: &DynamicMessage) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend([2, 2]); // one index (zig-zag 1 = 2), index 1 (zig-zag 2)
    out.extend(message.encode_to_vec());
    out
}

fn event(pool: &DescriptorPool, id: i64) -> DynamicMessage {
    let desc = pool.get_message_by_name("t.Event").unwrap();
    let mut m = DynamicMessage::new(desc.clone());
    m.set_field_by_name("id", Value::I64(id));
    m.set_field_by_name("name", Value::String(format!("n{id}")));
    m
}

fn full_event(pool: &DescriptorPool) -> DynamicMessage {
    let mut m = event(pool, 1);
    let inner_desc = pool.get_message_by_name("t.Event.Inner").unwrap();
    let inner = |x: i32| {
        let mut i = DynamicMessage::new(inner_desc.clone());
        i.set_field_by_name("x", Value::I32(x));
        Value::Message(i)
    };
    let at_desc = pool
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let mut at = DynamicMessage::new(at_desc);
    at.set_field_by_name("seconds", Value::I64(1_700_000_000));
    at.set_field_by_name("nanos", Value::I32(123_456_789));
    let took_desc = pool
        .get_message_by_name("google.protobuf.Duration")
        .unwrap();
    let mut took = DynamicMessage::new(took_desc);
    took.set_field_by_name("seconds", Value::I64(3));
    took.set_field_by_name("nanos", Value::I32(5));
    let maybe_desc = pool
        .get_message_by_name("google.protobuf.Int32Value")
        .unwrap();
    let mut maybe = DynamicMessage::new(maybe_desc);
    maybe.set_field_by_name("value", Value::I32(-4));
    m.set_field_by_name("note", Value::String("hi".into()));
    m.set_field_by_name("kind", Value::EnumNumber(2));
    m.set_field_by_name(
        "tags",
        Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    m.set_field_by_name(
        "attrs",
        Value::Map(HashMap::from([
            (MapKey::String("z".into()), Value::I64(26)),
            (MapKey::String("a".into()), Value::I64(1)),
        ])),
    );
    m.set_field_by_name("inner", inner(7));
    m.set_field_by_name("at", Value::Message(at));
    m.set_field_by_name("took", Value::Message(took));
    m.set_field_by_name("maybe", Value::Message(maybe));
    m.set_field_by_name("b", Value::I32(9));
    m.set_field_by_name("blob", Value::Bytes(vec![0, 255].into()));
    m.set_field_by_name("score", Value::F64(2.5));
    m.set_field_by_name("big", Value::U64(u64::MAX));
    m.set_field_by_name("flag", Value::Bool(true));
    m.set_field_by_name("items", Value::List(vec![inner(1), inner(2)]));
    m
}

fn decoder() -> RouteDecoder {
    let payload = Payload::Protobuf {
        schema: source(PROTO),
        message: Some("t.Event".into()),
        registry: true,
    };
    let table = crate::decode::own_schema(&payload).unwrap().unwrap();
    RouteDecoder::new(&payload, table, vec![], 16).unwrap()
}

#[test]
fn every_kind_of_field_has_its_column_and_exact_value() {
    let pool = pool(PROTO);
    let registry = HashMap::from([(5, schema("PROTOBUF", PROTO))]);
    let plain = event(&pool, 2);
    let (batches, rejected) = run(
        &mut decoder(),
        &registry,
        &[framed(5, &full_event(&pool)), framed(5, &plain)],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let batch = &batches[0];
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    assert_eq!(column("name").as_string::<i32>().value(0), "n1");
    assert_eq!(column("note").as_string::<i32>().value(0), "hi");
    assert!(column("note").is_null(1), "optional and unset: null");
    assert_eq!(column("kind").as_string::<i32>().value(0), "K_B");
    assert_eq!(column("kind").as_string::<i32>().value(1), "K_UNKNOWN");
    let tags = column("tags");
    assert_eq!(tags.as_list::<i32>().value(0).len(), 2);
    assert_eq!(tags.as_list::<i32>().value(1).len(), 0);
    let attrs = column("attrs");
    let pairs = attrs.as_list::<i32>().value(0);
    let pairs = pairs.as_struct();
    let keys: Vec<_> = pairs.column(0).as_string::<i32>().iter().collect();
    assert_eq!(keys, [Some("a"), Some("z")], "sorted by key");
    assert_eq!(pairs.column(1).as_primitive::<Int64Type>().value(1), 26);
    let inner = column("inner");
    assert_eq!(
        inner
            .as_struct()
            .column(0)
            .as_primitive::<Int32Type>()
            .value(0),
        7
    );
    assert!(inner.is_null(1), "an unset message is a null struct");
    assert_eq!(
        column("at")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_700_000_000_123_456
    );
    assert!(column("at").is_null(1));
    assert_eq!(
        column("took").as_primitive::<Int64Type>().value(0),
        3_000_000_005
    );
    assert_eq!(column("maybe").as_primitive::<Int32Type>().value(0), -4);
    assert!(column("maybe").is_null(1), "an unset wrapper is null");
    assert!(column("a").is_null(0), "the oneof member not chosen");
    assert_eq!(column("b").as_primitive::<Int32Type>().value(0), 9);
    assert_eq!(column("blob").as_binary::<i32>().value(0), &[0, 255]);
    assert_eq!(column("score").as_primitive::<Float64Type>().value(0), 2.5);
    assert_eq!(
        column("big").as_primitive::<UInt64Type>().value(0),
        u64::MAX
    );
    assert!(column("flag").as_boolean().value(0));
    assert!(!column("flag").as_boolean().value(1), "proto3 default");
    let items = column("items");
    let items = items.as_list::<i32>().value(0);
    let xs: Vec<_> = items
        .as_struct()
        .column(0)
        .as_primitive::<Int32Type>()
        .values()
        .to_vec();
    assert_eq!(xs, [1, 2]);
}

/// A schema as Apicurio keeps what confluent-kafka's Python serializer registers: a
/// base64 `FileDescriptorProto`.
fn as_base64_descriptor(text: &str) -> String {
    use base64::Engine as _;
    let file = pool(text).get_file_by_name(REGISTRY_FILE).unwrap();
    base64::engine::general_purpose::STANDARD.encode(file.file_descriptor_proto().encode_to_vec())
}

#[test]
fn a_newer_writer_version_reads_as_the_route_s_message() {
    let v2 = proto_v2();
    let registry = HashMap::from([
        (5, schema("PROTOBUF", PROTO)),
        (6, schema("PROTOBUF", &as_base64_descriptor(&v2))),
    ]);
    let (p1, p2) = (pool(PROTO), pool(&v2));
    let mut newer = event(&p2, 1);
    newer.set_field_by_name("added", Value::String("new".into()));
    let payloads = vec![
        framed(5, &event(&p1, 0)),
        framed(6, &newer),
        framed(5, &event(&p1, 2)),
    ];
    let (batches, rejected) = run(&mut decoder(), &registry, &payloads);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ids(&batches), [0, 1, 2]);
}

#[test]
fn records_that_cannot_be_read_are_refused_with_their_reason() {
    let p = pool(PROTO);
    let registry = HashMap::from([
        (5, schema("PROTOBUF", PROTO)),
        (7, schema("AVRO", "{}")),
        (8, schema("PROTOBUF", "syntax = \"proto3\"; message {")),
    ]);
    let good = framed(5, &event(&p, 1));
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with(&|b| b[0] = b'{'), "not schema-registry framed"),
        (with(&|b| b[4] = 99), "schema id 99 is not in the registry"),
        (with(&|b| b[4] = 7), "is a AVRO schema"),
        (with(&|b| b[4] = 8), "does not compile"),
        (
            with(&|b| b[5] = 0),
            "names message `t.Other`, not the route's `t.Event`",
        ),
        (with(&|b| b[6] = 8), "has no message at indexes"),
        (
            with(&|b| b.truncate(6)),
            "truncated or overlong message index",
        ),
        (with(&|b| b.push(0xff)), "invalid Protobuf"),
    ];
    for (bad, reason) in cases {
        let payloads = vec![framed(5, &event(&p, 0)), bad, framed(5, &event(&p, 2))];
        let (batches, rejected) = run(&mut decoder(), &registry, &payloads);
        assert_eq!(ids(&batches), [0, 2], "{reason}");
        assert_eq!(rejected.len(), 1, "{reason}: {rejected:?}");
        assert!(
            rejected[0].error.contains(reason),
            "want `{reason}`, got `{}`",
            rejected[0].error
        );
    }
}

#[test]
fn a_single_zero_byte_names_the_first_message() {
    let text = PROTO.replace("message Other { string x = 1; }", "");
    let p = pool(&text);
    let registry = HashMap::from([(5, schema("PROTOBUF", &text))]);
    let mut payload = vec![0, 0, 0, 0, 5, 0];
    payload.extend(event(&p, 4).encode_to_vec());
    let (batches, rejected) = run(&mut decoder(), &registry, &[payload]);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ids(&batches), [4]);
}

#[test]
fn recursive_messages_have_no_table() {
    let text = "syntax = \"proto3\"; message Node { Node next = 1; }";
    let err = table_schema(&source(text), None).unwrap_err();
    assert!(err.contains("recursive"), "{err}");
}

/// Mutated payloads are refused one by one; nothing panics, every record is a row or a
/// reject.
#[test]
fn mutated_payloads_are_refused_never_a_panic() {
    let p = pool(PROTO);
    let registry = HashMap::from([(5, schema("PROTOBUF", PROTO))]);
    let seed = framed(5, &full_event(&p));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let (mut all_rows, mut all_rejected) = (0, 0);
    for round in 0..150 {
        let mut payloads = Vec::new();
        for _ in 0..40 {
            let mut b = seed.clone();
            match rng.random_range(0..5) {
                0 => {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                1 => b.truncate(rng.random_range(0..b.len())),
                2 => b.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
                3 => {
                    let at = rng.random_range(7..b.len());
                    b[at] |= 0x80;
                }
                _ => {}
            }
            payloads.push(b);
        }
        let (batches, rejected) = run(&mut decoder(), &registry, &payloads);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows + rejected.len(), payloads.len(), "round {round}");
        all_rows += rows;
        all_rejected += rejected.len();
    }
    assert!(
        all_rows > 500 && all_rejected > 1_000,
        "{all_rows} rows, {all_rejected} rejected"
    );
}

#[test]
fn a_writer_version_with_new_fields_offers_a_wider_message() {
    let v2 = proto_v2();
    let mut d = decoder();
    assert_eq!(
        d.learn(5, Some(&schema("PROTOBUF", PROTO))),
        Learned::Same,
        "nothing new"
    );
    let Learned::Wider(wider) = d.learn(6, Some(&schema("PROTOBUF", &as_base64_descriptor(&v2))))
    else {
        panic!("v2 adds a field")
    };
    let table = crate::decode::own_schema(&wider).unwrap().unwrap();
    assert!(table.field_with_name("added").is_ok());
    assert_eq!(table.fields().len(), 18);
}

const SMALL: &str = r#"
syntax = "proto3";
package t;
message M {
  int64 id = 1;
  string name = 2;
  int32 small = 3;
  Inner inner = 4;
  message Inner { int32 x = 1; }
}
"#;

fn small_decoder() -> RouteDecoder {
    let payload = Payload::Protobuf {
        schema: source(SMALL),
        message: Some("t.M".into()),
        registry: true,
    };
    let table = crate::decode::own_schema(&payload).unwrap().unwrap();
    RouteDecoder::new(&payload, table, vec![], 10).unwrap()
}

/// Confluent framing with the index list `[0]` (the single byte 0).
fn framed_first(id: u32, body: &[u8]) -> Vec<u8> {
    [&[0][..], &id.to_be_bytes(), &[0], body].concat()
}

fn push_one(d: &mut RouteDecoder, payload: &[u8]) -> Vec<crate::decode::Rejected> {
    let mut rejected = Vec::new();
    d.push(&Message::payload_only("t", 0, 0, payload), &mut rejected);
    d.flush_chunk(&mut rejected);
    rejected
}

#[test]
fn a_version_that_changes_how_a_field_reads_is_incompatible_and_its_records_refused() {
    for (what, from, to) in [
        ("string to int32", "string name = 2;", "int32 name = 2;"),
        (
            "int32 to sint32 (zig-zag)",
            "int32 small = 3;",
            "sint32 small = 3;",
        ),
        ("int32 to float", "int32 small = 3;", "float small = 3;"),
        (
            "single to repeated",
            "string name = 2;",
            "repeated string name = 2;",
        ),
        ("nested int32 to string", "int32 x = 1;", "string x = 1;"),
        (
            "nested int32 to int64 (no nested promotion)",
            "int32 x = 1;",
            "int64 x = 1;",
        ),
    ] {
        let retyped = SMALL.replace(from, to);
        assert_ne!(retyped, SMALL, "{what}");
        let mut d = small_decoder();
        let Learned::Incompatible(why) = d.learn(7, Some(&schema("PROTOBUF", &retyped))) else {
            panic!("{what}")
        };
        assert!(why.contains("schema id 7 cannot be read"), "{what}: {why}");
        let rejected = push_one(&mut d, &framed_first(7, &[0x08, 0x01]));
        assert_eq!(rejected[0].error, why, "{what}");
    }
}

#[test]
fn int32_to_int64_widens_and_its_records_wait_for_the_wider_column() {
    let wide = SMALL.replace("int32 small = 3;", "int64 small = 3;");
    let mut d = small_decoder();
    let Learned::Wider(wider) = d.learn(8, Some(&schema("PROTOBUF", &wide))) else {
        panic!("int32 → int64 is a promotion")
    };
    let table = crate::decode::own_schema(&wider).unwrap().unwrap();
    assert_eq!(
        table.field_with_name("small").unwrap().data_type(),
        &arrow_schema::DataType::Int64
    );
    // 2^33 in field 3: the narrow decoder never reads it into its int32 column.
    let big = framed_first(8, &[0x18, 0x80, 0x80, 0x80, 0x80, 0x20]);
    let rejected = push_one(&mut d, &big);
    assert!(rejected[0].error.contains("wider types"), "{rejected:?}");
    // The wider decoder reads it, and records of the narrow version too.
    let mut w = RouteDecoder::new(&wider, table, vec![], 10).unwrap();
    let registry = HashMap::from([
        (1, schema("PROTOBUF", SMALL)),
        (8, schema("PROTOBUF", &wide)),
    ]);
    let narrow = framed_first(1, &[0x18, 0x07]);
    let (batches, rejected) = run(&mut w, &registry, &[narrow, big]);
    assert!(rejected.is_empty(), "{rejected:?}");
    let small: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("small")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(small, [7, 1 << 33]);
}

#[test]
fn a_schema_importing_registered_files_reads_through_its_references() {
    let money = "syntax = \"proto3\";\npackage acme;\nmessage Money { int64 cents = 1; string currency = 2; }\n";
    let order = "syntax = \"proto3\";\npackage acme;\nimport \"acme/money.proto\";\nmessage Order { int64 id = 1; acme.Money price = 2; }\n";
    let imports = [Reference {
        name: "acme/money.proto".into(),
        text: money.into(),
    }];
    let payload = Payload::Protobuf {
        schema: ProtoSchema::Source {
            text: order.into(),
            imports: Arc::from(imports.clone()),
        },
        message: None,
        registry: true,
    };
    let table = crate::decode::own_schema(&payload).unwrap().unwrap();
    let mut d = RouteDecoder::new(&payload, table, vec![], 10).unwrap();
    let writer = WriterSchema {
        kind: "PROTOBUF".into(),
        text: order.into(),
        references: Ok(imports.to_vec()),
    };
    let registry = HashMap::from([(3, writer)]);
    // id 1, price { cents 250, currency "EUR" }
    let body = [
        &[0x08, 0x01, 0x12, 0x08, 0x08, 0xfa, 0x01, 0x12, 0x03][..],
        b"EUR",
    ]
    .concat();
    let (batches, rejected) = run(&mut d, &registry, &[framed_first(3, &body)]);
    assert!(rejected.is_empty(), "{rejected:?}");
    let price = batches[0].column_by_name("price").unwrap().as_struct();
    let cents = price
        .column_by_name("cents")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(cents.value(0), 250);

    // Without the import the schema does not compile; a reference the registry lacks
    // refuses the records with the reason.
    assert!(compile_source(order, &[]).is_err());
    let mut d = small_decoder();
    let missing = WriterSchema {
        kind: "PROTOBUF".into(),
        text: order.into(),
        references: Err("`acme/money.proto` (subject `m` version 1)".into()),
    };
    d.learn(4, Some(&missing));
    let rejected = push_one(&mut d, &framed_first(4, &body));
    assert!(
        rejected[0]
            .error
            .contains("refers to a schema the registry cannot give"),
        "{rejected:?}"
    );
}

/// A chunk on a decode worker while the route learns a writer schema: the decoder it
/// comes back with knew only the schemas before, so later chunks (records of the new
/// id among them) must not be decoded with it.
#[test]
fn a_schema_learned_while_chunks_are_on_workers_reaches_the_next_chunks() {
    for round in 0..20 {
        let mut d = small_decoder();
        d.decode_on(std::sync::Arc::new(crate::decode::Workers::new(2).unwrap()));
        assert_eq!(d.learn(1, Some(&schema("PROTOBUF", SMALL))), Learned::Same);
        let mut rejected = Vec::new();
        let mut offset = 0;
        let mut push = |d: &mut RouteDecoder, id: u32, rejected: &mut Vec<_>| {
            let body = [0x08, 0x01];
            d.push(
                &Message::payload_only("t", 0, offset, &framed_first(id, &body)),
                rejected,
            );
            offset += 1;
            if d.chunk_full() {
                d.flush_chunk(rejected);
            }
        };
        for _ in 0..35 {
            push(&mut d, 1, &mut rejected);
        }
        // Chunks of id 1 are on the workers (or back) when id 2 is learned.
        assert_eq!(d.learn(2, Some(&schema("PROTOBUF", SMALL))), Learned::Same);
        for _ in 0..35 {
            push(&mut d, 2, &mut rejected);
        }
        let rows: usize = d
            .take(&mut rejected)
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        assert!(
            rejected.is_empty(),
            "round {round}: {:?}",
            rejected.first().map(|r| &r.error)
        );
        assert_eq!(rows, 70);
    }
}
