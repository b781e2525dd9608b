//! Avro payloads written by a second implementation (apache-avro), read through the
//! route decoder: versions interleaved, every type the mapping names, refusals, and
//! mutated payloads that must be refused, never panic.

use std::collections::HashMap;

use apache_avro::types::Value;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use rand::{Rng, SeedableRng};

use super::*;
use crate::decode::registry_tests::{ids, run, schema};
use crate::decode::{Learned, Payload, RouteDecoder};

const V1: &str = r#"{"type":"record","name":"Event","namespace":"t","fields":[
  {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Event","namespace":"t","fields":[
  {"name":"id","type":"long"},{"name":"name","type":"string"},
  {"name":"note","type":["null","string"],"default":null}]}"#;

const ALL: &str = r#"{"type":"record","name":"All","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"flag","type":"boolean"},
  {"name":"small","type":"int"},
  {"name":"ratio","type":"float"},
  {"name":"score","type":"double"},
  {"name":"name","type":"string"},
  {"name":"blob","type":"bytes"},
  {"name":"note","type":["null","string"],"default":null},
  {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
  {"name":"tags","type":{"type":"array","items":"string"}},
  {"name":"attrs","type":{"type":"map","values":"long"}},
  {"name":"hash","type":{"type":"fixed","name":"Hash","size":4}},
  {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
  {"name":"uid","type":{"type":"string","logicalType":"uuid"}},
  {"name":"day","type":{"type":"int","logicalType":"date"}},
  {"name":"t_ms","type":{"type":"int","logicalType":"time-millis"}},
  {"name":"t_us","type":{"type":"long","logicalType":"time-micros"}},
  {"name":"at_ms","type":{"type":"long","logicalType":"timestamp-millis"}},
  {"name":"at_us","type":{"type":"long","logicalType":"timestamp-micros"}},
  {"name":"local_us","type":{"type":"long","logicalType":"local-timestamp-micros"}},
  {"name":"inner","type":{"type":"record","name":"Inner","fields":[
     {"name":"x","type":"int"},{"name":"y","type":["null","double"],"default":null}]}}
]}"#;

fn framed(id: u32, schema: &str, value: Value) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(schema).unwrap();
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
    out
}

fn v1(id: i64) -> Value {
    Value::Record(vec![
        ("id".into(), Value::Long(id)),
        ("name".into(), Value::String(format!("n{id}"))),
    ])
}

fn v2(id: i64, note: Option<&str>) -> Value {
    let note = match note {
        Some(n) => Value::Union(1, Box::new(Value::String(n.into()))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    Value::Record(vec![
        ("id".into(), Value::Long(id)),
        ("name".into(), Value::String(format!("n{id}"))),
        ("note".into(), note),
    ])
}

fn decoder(reader: &str, chunk_rows: usize) -> RouteDecoder {
    let payload = Payload::Avro {
        reader: reader.into(),
        registry: true,
    };
    let table = own_schema_of(&payload);
    RouteDecoder::new(&payload, table, vec![], chunk_rows).unwrap()
}

fn own_schema_of(payload: &Payload) -> SchemaRef {
    crate::decode::own_schema(payload).unwrap().unwrap()
}

#[test]
fn two_writer_versions_interleaved_land_in_the_reader_s_columns_in_order() {
    let registry = HashMap::from([(11, schema("AVRO", V1)), (12, schema("AVRO", V2))]);
    let payloads: Vec<Vec<u8>> = (0..40)
        .map(|i| match i % 3 {
            0 => framed(11, V1, v1(i)),
            1 => framed(12, V2, v2(i, Some("hi"))),
            _ => framed(12, V2, v2(i, None)),
        })
        .collect();
    // Chunks of 7 rows: switches fall inside chunks and on their edges.
    let mut decoder = decoder(V2, 7);
    let (batches, rejected) = run(&mut decoder, &registry, &payloads);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ids(&batches), (0..40).collect::<Vec<_>>());
    let notes: Vec<Option<String>> = batches
        .iter()
        .flat_map(|b| {
            let n = b.column_by_name("note").unwrap().as_string::<i32>();
            n.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        })
        .collect();
    for (i, note) in notes.iter().enumerate() {
        let want = (i % 3 == 1).then(|| "hi".to_string());
        assert_eq!(note, &want, "row {i}");
    }
}

const UID: &str = "8c2e6d5e-95b5-4bd1-9d3c-7c9c6c0c1a11";

fn all_record(id: i64) -> Value {
    let uid = uuid::Uuid::parse_str(UID).unwrap();
    Value::Record(vec![
        ("id".into(), Value::Long(id)),
        ("flag".into(), Value::Boolean(true)),
        ("small".into(), Value::Int(-7)),
        ("ratio".into(), Value::Float(1.5)),
        ("score".into(), Value::Double(2.25)),
        ("name".into(), Value::String("é".into())),
        ("blob".into(), Value::Bytes(vec![0, 255])),
        (
            "note".into(),
            Value::Union(1, Box::new(Value::String("n".into()))),
        ),
        ("kind".into(), Value::Enum(2, "C".into())),
        (
            "tags".into(),
            Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        ),
        (
            "attrs".into(),
            Value::Map(HashMap::from([("k".to_string(), Value::Long(9))])),
        ),
        ("hash".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
        (
            "price".into(),
            Value::Decimal(apache_avro::Decimal::from(
                (-1234567i64).to_be_bytes().to_vec(),
            )),
        ),
        ("uid".into(), Value::Uuid(uid)),
        ("day".into(), Value::Date(19_000)),
        ("t_ms".into(), Value::TimeMillis(3_723_004)),
        ("t_us".into(), Value::TimeMicros(3_723_004_005)),
        ("at_ms".into(), Value::TimestampMillis(1_700_000_000_123)),
        (
            "at_us".into(),
            Value::TimestampMicros(1_700_000_000_123_456),
        ),
        (
            "local_us".into(),
            Value::LocalTimestampMicros(1_700_000_000_000_001),
        ),
        (
            "inner".into(),
            Value::Record(vec![
                ("x".into(), Value::Int(5)),
                ("y".into(), Value::Union(0, Box::new(Value::Null))),
            ]),
        ),
    ])
}

#[test]
fn every_avro_type_has_its_table_type_and_exact_value() {
    let uid = uuid::Uuid::parse_str(UID).unwrap();
    let record = all_record(1);
    let registry = HashMap::from([(3, schema("AVRO", ALL))]);
    let mut decoder = decoder(ALL, 10);
    let (batches, rejected) = run(&mut decoder, &registry, &[framed(3, ALL, record)]);
    assert!(rejected.is_empty(), "{rejected:?}");
    let batch = &batches[0];
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    let types: Vec<(String, DataType)> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let type_of = |name: &str| types.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(type_of("kind"), DataType::Utf8);
    assert_eq!(type_of("uid"), DataType::Utf8);
    assert_eq!(type_of("hash"), DataType::Binary);
    assert_eq!(type_of("price"), DataType::Decimal128(10, 2));
    assert_eq!(type_of("t_ms"), DataType::Int64);
    assert!(matches!(type_of("attrs"), DataType::List(_)));
    assert!(matches!(
        type_of("at_us"),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_))
    ));
    assert_eq!(
        type_of("local_us"),
        DataType::Timestamp(TimeUnit::Microsecond, None)
    );
    assert!(column("flag").as_boolean().value(0));
    assert_eq!(column("small").as_primitive::<Int32Type>().value(0), -7);
    assert_eq!(column("ratio").as_primitive::<Float32Type>().value(0), 1.5);
    assert_eq!(column("score").as_primitive::<Float64Type>().value(0), 2.25);
    assert_eq!(column("name").as_string::<i32>().value(0), "é");
    assert_eq!(column("blob").as_binary::<i32>().value(0), &[0, 255]);
    assert_eq!(column("note").as_string::<i32>().value(0), "n");
    assert_eq!(column("kind").as_string::<i32>().value(0), "C");
    let tags = column("tags");
    let tags = tags.as_list::<i32>().value(0);
    assert_eq!(
        tags.as_string::<i32>().iter().collect::<Vec<_>>(),
        [Some("a"), Some("b")]
    );
    let attrs = column("attrs");
    let pair = attrs.as_list::<i32>().value(0);
    let pair = pair.as_struct();
    assert_eq!(pair.column(0).as_string::<i32>().value(0), "k");
    assert_eq!(pair.column(1).as_primitive::<Int64Type>().value(0), 9);
    assert_eq!(column("hash").as_binary::<i32>().value(0), &[1, 2, 3, 4]);
    assert_eq!(
        column("price").as_primitive::<Decimal128Type>().value(0),
        -1234567
    );
    assert_eq!(column("uid").as_string::<i32>().value(0), uid.to_string());
    assert_eq!(column("day").as_primitive::<Date32Type>().value(0), 19_000);
    assert_eq!(
        column("t_ms").as_primitive::<Int64Type>().value(0),
        3_723_004_000
    );
    assert_eq!(
        column("t_us").as_primitive::<Int64Type>().value(0),
        3_723_004_005
    );
    assert_eq!(
        column("at_ms")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        1_700_000_000_123
    );
    assert_eq!(
        column("at_us")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_700_000_000_123_456
    );
    let inner = column("inner");
    let inner = inner.as_struct();
    assert_eq!(inner.column(0).as_primitive::<Int32Type>().value(0), 5);
    assert!(inner.column(1).is_null(0));
}

#[test]
fn records_that_cannot_be_read_are_refused_with_their_reason_and_the_rest_kept() {
    let int_name = V1.replace(r#""name","type":"string""#, r#""name","type":"int""#);
    let registry = HashMap::from([
        (11, schema("AVRO", V1)),
        (13, schema("PROTOBUF", "syntax = \"proto3\";")),
        (14, schema("AVRO", &int_name)),
    ]);
    let good = framed(11, V1, v1(1));
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 2);
    let mut trailing = good.clone();
    trailing.extend([2, 2, 2]);
    let mut unframed = good.clone();
    unframed[0] = b'{';
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (unframed, "not schema-registry framed"),
        (vec![0, 0, 0], "shorter than the 5-byte"),
        (truncated, "truncated Avro record"),
        (trailing, "after the Avro record"),
        (
            {
                let mut p = good.clone();
                p[4] = 99;
                p
            },
            "schema id 99 is not in the registry",
        ),
        (
            {
                let mut p = good.clone();
                p[4] = 13;
                p
            },
            "is a PROTOBUF schema",
        ),
        (
            {
                let mut p = good.clone();
                p[4] = 14;
                p
            },
            "cannot be read as the route's schema",
        ),
    ];
    for (bad, reason) in cases {
        let mut decoder = decoder(V1, 100);
        let payloads = vec![framed(11, V1, v1(0)), bad, framed(11, V1, v1(2))];
        let (batches, rejected) = run(&mut decoder, &registry, &payloads);
        assert_eq!(ids(&batches), [0, 2], "{reason}");
        assert_eq!(rejected.len(), 1, "{reason}: {rejected:?}");
        assert_eq!(rejected[0].offset, 1);
        assert!(
            rejected[0].error.contains(reason),
            "want `{reason}`, got `{}`",
            rejected[0].error
        );
    }
}

#[test]
fn bare_bodies_read_with_the_schema_file() {
    let payload = Payload::Avro {
        reader: V2.into(),
        registry: false,
    };
    let mut decoder = RouteDecoder::new(&payload, own_schema_of(&payload), vec![], 10).unwrap();
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|i| framed(0, V2, v2(i, Some("x")))[5..].to_vec())
        .collect();
    let (batches, rejected) = run(&mut decoder, &HashMap::new(), &bodies);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(ids(&batches), [0, 1, 2]);
}

#[test]
fn tables_refuse_what_no_column_can_hold() {
    let union = V1.replace(r#""type":"string""#, r#""type":["int","string"]"#);
    let err = table_schema(&union).unwrap_err();
    assert!(err.contains("union"), "{err}");
    let not_record = table_schema(r#""string""#).unwrap_err();
    assert!(!not_record.is_empty());
}

/// Avro from the network is untrusted: mutated payloads (bytes flipped, cut, grown, or
/// huge lengths written in) are refused one by one; nothing panics, nothing else is
/// lost, and every record is either a row or a reject.
#[test]
fn mutated_payloads_are_refused_never_a_panic() {
    // Two ids of one schema: records switch writers often.
    let registry = HashMap::from([(3, schema("AVRO", ALL)), (5, schema("AVRO", ALL))]);
    let seed = framed(3, ALL, all_record(0));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let (mut all_rows, mut all_rejected) = (0, 0);
    for round in 0..150 {
        let mut payloads = Vec::new();
        for i in 0..50 {
            let mut p = match i % 3 {
                0 => framed(5, ALL, all_record(i)),
                1 => framed(3, ALL, all_record(i)),
                _ => seed.clone(),
            };
            match rng.random_range(0..6) {
                0 => {
                    let at = rng.random_range(0..p.len());
                    p[at] = rng.random();
                }
                1 => p.truncate(rng.random_range(0..p.len())),
                2 => p.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
                3 => {
                    // A length or count of many gigabytes where the name's length is.
                    p.truncate(rng.random_range(5..p.len()));
                    p.extend([0xfe, 0xff, 0xff, 0xff, 0x1f]);
                }
                4 => {
                    let at = rng.random_range(5..p.len());
                    p[at] = 0x80 | rng.random::<u8>();
                }
                _ => {}
            }
            payloads.push(p);
        }
        let mut decoder = decoder(ALL, 16);
        let (batches, rejected) = run(&mut decoder, &registry, &payloads);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows + rejected.len(), payloads.len(), "round {round}");
        all_rows += rows;
        all_rejected += rejected.len();
    }
    assert!(
        all_rows > 1_000 && all_rejected > 2_500,
        "{all_rows} rows, {all_rejected} rejected"
    );
}

#[test]
fn a_writer_with_new_fields_offers_a_wider_reader_that_reads_every_version() {
    let v3 = V2.replace(
        r#"{"name":"note","type":["null","string"],"default":null}]}"#,
        r#"{"name":"note","type":["null","string"],"default":null},
  {"name":"score","type":"double"},{"name":"tag","type":["string","null"],"default":"x"}]}"#,
    );
    let mut decoder = decoder(V1, 10);
    assert_eq!(
        decoder.learn(11, Some(&schema("AVRO", V1))),
        Learned::Same,
        "nothing new"
    );
    let Learned::Wider(Payload::Avro { reader, registry }) =
        decoder.learn(13, Some(&schema("AVRO", &v3)))
    else {
        panic!("v3 adds fields")
    };
    assert!(registry);
    let table = table_schema(&reader).unwrap();
    let fields: Vec<String> = table
        .fields()
        .iter()
        .map(|f| format!("{}:{}:{}", f.name(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        [
            "id:Int64:false",
            "name:Utf8:false",
            "note:Utf8:true",
            "score:Float64:true",
            "tag:Utf8:true"
        ]
    );
    // The wider reader reads both versions; v1 records read null in the new columns.
    let payload = Payload::Avro {
        reader,
        registry: true,
    };
    let mut wider = RouteDecoder::new(&payload, table, vec![], 10).unwrap();
    let registry = HashMap::from([(11, schema("AVRO", V1)), (13, schema("AVRO", &v3))]);
    let v3_record = Value::Record(vec![
        ("id".into(), Value::Long(2)),
        ("name".into(), Value::String("b".into())),
        ("note".into(), Value::Union(0, Box::new(Value::Null))),
        ("score".into(), Value::Double(0.5)),
        (
            "tag".into(),
            Value::Union(0, Box::new(Value::String("t".into()))),
        ),
    ]);
    let (batches, rejected) = run(
        &mut wider,
        &registry,
        &[framed(11, V1, v1(1)), framed(13, &v3, v3_record)],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
    let score = batch.column_by_name("score").unwrap();
    assert!(score.is_null(0));
    assert_eq!(score.as_primitive::<Float64Type>().value(1), 0.5);
    let tag = batch.column_by_name("tag").unwrap();
    assert!(tag.is_null(0));
    assert_eq!(tag.as_string::<i32>().value(1), "t");
}

const NARROW: &str = r#"{"type":"record","name":"M","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"q","type":"int"},
  {"name":"f","type":["null","float"],"default":null},
  {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}}]}"#;

const WIDE: &str = r#"{"type":"record","name":"M","namespace":"t","fields":[
  {"name":"id","type":"long"},
  {"name":"q","type":"long"},
  {"name":"f","type":["null","double"],"default":null},
  {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":14,"scale":2}}]}"#;

fn measure(id: i64, q: i64, f: f64, cents: i64) -> (Value, Value) {
    let narrow = Value::Record(vec![
        ("id".into(), Value::Long(id)),
        ("q".into(), Value::Int(q as i32)),
        (
            "f".into(),
            Value::Union(1, Box::new(Value::Float(f as f32))),
        ),
        (
            "d".into(),
            Value::Decimal(apache_avro::Decimal::from(cents.to_be_bytes().to_vec())),
        ),
    ]);
    let wide = Value::Record(vec![
        ("id".into(), Value::Long(id)),
        ("q".into(), Value::Long(q)),
        ("f".into(), Value::Union(1, Box::new(Value::Double(f)))),
        (
            "d".into(),
            Value::Decimal(apache_avro::Decimal::from(cents.to_be_bytes().to_vec())),
        ),
    ]);
    (narrow, wide)
}

#[test]
fn a_writer_with_wider_types_offers_a_promoted_reader_and_its_records_wait_for_it() {
    let mut narrow = decoder(NARROW, 10);
    assert_eq!(
        narrow.learn(1, Some(&schema("AVRO", NARROW))),
        Learned::Same
    );
    let Learned::Wider(payload @ Payload::Avro { .. }) =
        narrow.learn(2, Some(&schema("AVRO", WIDE)))
    else {
        panic!("long, double and decimal(14,2) promote int, float and decimal(10,2)")
    };
    // Until the route widens, the wide writer's records are refused, never narrowed.
    let registry = HashMap::from([(1, schema("AVRO", NARROW)), (2, schema("AVRO", WIDE))]);
    let big = 5_000_000_000_i64;
    let (old, new) = (
        measure(1, 7, 0.5, 1234).0,
        measure(2, big, 0.1, 12_345_678_901).1,
    );
    let (_, rejected) = run(&mut narrow, &registry, &[framed(2, WIDE, new.clone())]);
    assert!(rejected[0].error.contains("wider types"), "{rejected:?}");

    let Payload::Avro { reader, .. } = &payload else {
        unreachable!()
    };
    let table = table_schema(reader).unwrap();
    let types: Vec<String> = table
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(types, ["Int64", "Int64", "Float64", "Decimal128(14, 2)"]);
    let mut wide = RouteDecoder::new(&payload, table, vec![], 10).unwrap();
    let (batches, rejected) = run(
        &mut wide,
        &registry,
        &[framed(1, NARROW, old), framed(2, WIDE, new)],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
    let q = batch
        .column_by_name("q")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!((q.value(0), q.value(1)), (7, big));
    let f = batch
        .column_by_name("f")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((f.value(0), f.value(1)), (0.5, 0.1));
    let d = batch
        .column_by_name("d")
        .unwrap()
        .as_primitive::<Decimal128Type>();
    assert_eq!((d.value(0), d.value(1)), (1234, 12_345_678_901));
}

#[test]
fn a_writer_that_changes_a_type_against_the_rules_is_incompatible() {
    for (what, from, to) in [
        (
            "long to string",
            r#"{"name":"id","type":"long"}"#,
            r#"{"name":"id","type":"string"}"#,
        ),
        (
            "long narrowed to int",
            r#"{"name":"id","type":"long"}"#,
            r#"{"name":"id","type":"int"}"#,
        ),
        (
            "a required field dropped",
            r#",{"name":"name","type":"string"}"#,
            "",
        ),
    ] {
        let changed = V1.replace(from, to);
        assert_ne!(changed, V1, "{what}");
        let mut d = decoder(V1, 10);
        let learned = d.learn(4, Some(&schema("AVRO", &changed)));
        // int → long promotes as Avro resolution allows: that one is readable.
        if what == "long narrowed to int" {
            assert_eq!(learned, Learned::Same, "{what}");
            continue;
        }
        let Learned::Incompatible(why) = learned else {
            panic!("{what}: {learned:?}")
        };
        assert!(why.contains("schema id 4 cannot be read"), "{what}: {why}");
        let registry = HashMap::from([(4, schema("AVRO", &changed))]);
        let record = match what {
            "long to string" => Value::Record(vec![
                ("id".into(), Value::String("x".into())),
                ("name".into(), Value::String("n".into())),
            ]),
            _ => Value::Record(vec![("id".into(), Value::Long(1))]),
        };
        let (_, rejected) = run(&mut d, &registry, &[framed(4, &changed, record)]);
        assert_eq!(
            rejected[0].error, why,
            "{what}: its records are refused with the reason"
        );
    }
}
