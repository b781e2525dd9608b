//! Strict numbers by default, coercions only when the route allows them.

use arrow_array::cast::AsArray;
use arrow_array::types::Int16Type;

use super::Coercions;
use crate::decode::{Message, Payload, RouteDecoder};

fn decode(payloads: &[&str], coerce: Coercions) -> (Vec<Option<i16>>, Vec<(i64, String)>) {
    let schema = ingest_schemas::parse_schema(
        r#"
fields:
  - { name: q, type: int16? }
  - { name: f, type: float64? }
  - { name: tags, type: "list<int32>?" }
  - { name: s, type: "struct<n: int64?, label: string?>?" }
  - { name: text, type: string? }
"#,
    )
    .unwrap();
    let mut decoder = RouteDecoder::new(&Payload::Json(coerce), schema, vec![], 100).unwrap();
    let mut rejected = Vec::new();
    for (offset, p) in payloads.iter().enumerate() {
        decoder.push(
            &Message::payload_only("t", 0, offset as i64, p.as_bytes()),
            &mut rejected,
        );
    }
    let q = decoder
        .take(&mut rejected)
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int16Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    let rejected = rejected.into_iter().map(|r| (r.offset, r.error)).collect();
    (q, rejected)
}

#[test]
fn a_number_of_the_wrong_kind_is_a_bad_record_by_default() {
    let cases = [
        (r#"{"q": 2.5}"#, "field `q`: 2.5 is not an integer"),
        (
            r#"{"q": "7"}"#,
            "field `q`: \"7\" is a string where a number is expected",
        ),
        (r#"{"f": "1.5"}"#, "field `f`: \"1.5\" is a string"),
        (r#"{"q": 2.0}"#, "integral_float_to_int"),
        (r#"{"q": 1e3}"#, "integral_float_to_int"),
        (r#"{"tags": [1, "2"]}"#, "field `tags`: \"2\" is a string"),
        (
            r#"{"s": {"label": "x", "n": "5"}}"#,
            "field `s`: field `n`: \"5\"",
        ),
        (r#"{"\u0071": "7"}"#, "field `q`"),
    ];
    for (payload, reason) in cases {
        let (rows, rejected) = decode(
            &[r#"{"q": 1}"#, payload, r#"{"q": 3}"#],
            Coercions::default(),
        );
        assert_eq!(rows, [Some(1), Some(3)], "{payload}");
        assert_eq!(rejected.len(), 1, "{payload}: {rejected:?}");
        assert!(
            rejected[0].1.contains(reason),
            "{payload}: want `{reason}`, got `{}`",
            rejected[0].1
        );
    }
}

#[test]
fn numbers_of_the_right_kind_and_other_fields_pass() {
    let (rows, rejected) = decode(
        &[
            r#"{"q": -7, "f": 1, "tags": [1, 2], "s": {"n": 5, "label": "7"}, "text": "8", "other": "9"}"#,
            r#"{"q": null, "f": 2.5e3, "tags": null, "s": null}"#,
        ],
        Coercions::default(),
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(rows, [Some(-7), None]);
}

#[test]
fn coercions_are_opt_in_and_never_truncate() {
    let lenient = Coercions {
        string_to_number: true,
        integral_float_to_int: true,
    };
    let (rows, rejected) = decode(
        &[r#"{"q": "7"}"#, r#"{"q": 2.0}"#, r#"{"q": 2.5}"#],
        lenient,
    );
    assert_eq!(rows, [Some(7), Some(2)]);
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].1.contains("2.5 is not an integer"),
        "{rejected:?}"
    );
    let (_, rejected) = decode(&[r#"{"f": "1.5"}"#], lenient);
    assert!(rejected.is_empty());
}

/// The decoder reads what arrow-json (with the strict check before it), the decoder it
/// replaced, read, and refuses what it refused, with the same class: 20,000 seeded
/// records over every type a schema file can name, most values of the right kind and
/// the rest of every other (nulls, missing and repeated fields, floats and strings for
/// integers, escapes, wide numbers, bad dates, timestamps and decimals, malformed JSON).
#[test]
fn reads_and_refuses_what_the_arrow_json_decoder_did() {
    use rand::{Rng, SeedableRng};
    let schema = ingest_schemas::parse_schema(
        r#"
fields:
  - { name: b, type: bool? }
  - { name: i8, type: int8? }
  - { name: i32, type: int32? }
  - { name: i64, type: int64 }
  - { name: u16, type: uint16? }
  - { name: u64, type: uint64? }
  - { name: f32, type: float32? }
  - { name: f64, type: float64 }
  - { name: s, type: string? }
  - { name: bin, type: binary? }
  - { name: day, type: date? }
  - { name: ms, type: "timestamp(ms, UTC)?" }
  - { name: us, type: "timestamp(us)?" }
  - { name: sec, type: "timestamp(s, +02:00)?" }
  - { name: price, type: "decimal(12, 2)?" }
  - { name: nums, type: "list<int32?>?" }
  - { name: words, type: "list<string>" }
  - { name: inner, type: "struct<a: int64, b: list<struct<c: string?>?>?>?" }
"#,
    )
    .unwrap();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let any = |rng: &mut rand_chacha::ChaCha8Rng| -> String {
        let pool = [
            "null",
            "true",
            "false",
            "0",
            "-7",
            "2.0",
            "2.5",
            "1e3",
            "300",
            "70000",
            "3000000000",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1e400",
            "12.345",
            "0.1",
            "\"7\"",
            "\"2.5\"",
            "\"abc\"",
            "\"\"",
            "\"caf\\u00e9 \\\"q\\\"\"",
            "\"\\ud83d\\ude00\"",
            "\"0a1B\"",
            "\"0g\"",
            "\"abc\"",
            "\"2024-02-29\"",
            "\"2023-02-29\"",
            "\"2024-01-01T10:00:00Z\"",
            "\"2024-01-01 10:00:00.123+05:00\"",
            "\"2024-01-01T10:00:00\"",
            "\"10:00\"",
            "\"1969-12-31T23:59:59.999Z\"",
            "\"2024-02-30T00:00:00Z\"",
            "\"2024-01-01T24:00:00Z\"",
            "\"2016-12-31T23:59:60Z\"",
            "\"2024-01-01T10:00:00.123456789Z\"",
            "\"2024-1-1\"",
            "\"2262-04-12T00:00:00Z\"",
            "1700000000000",
            "1.7e12",
            "\"99999999999.99\"",
            "\"999999999999\"",
            "123456789.125",
            "[]",
            "[1, null, 3]",
            "[\"x\", \"y\"]",
            "[\"x\", null]",
            "[1, \"2\"]",
            "{}",
            "{\"a\": 1}",
            "{\"a\": 1, \"b\": [{\"c\": \"x\"}, null, {}]}",
            "{\"a\": null}",
            "{\"b\": []}",
            "{\"a\": \"1\"}",
            "{\"a\": 1, \"b\": [{\"c\": 5}]}",
            "[[1]]",
        ];
        pool[rng.random_range(0..pool.len())].to_string()
    };
    let good = |rng: &mut rand_chacha::ChaCha8Rng, name: &str| -> String {
        let n = rng.random_range(0..100);
        match name {
            "b" => ["true", "false"][n % 2].into(),
            "i8" => format!("{}", n as i64 - 50),
            "i32" | "u16" => format!("{}", n * 611),
            "i64" => format!("{}", (n as i64 - 50) * 1_000_000_007),
            "u64" => format!("{}", n as u64 * 184_467_440_737),
            "f32" | "f64" => format!("{}.{}", n, n * 7),
            "s" => format!("\"word {n} é\""),
            "bin" => format!("\"{n:02x}ff\""),
            "day" => format!("\"2024-03-{:02}\"", n % 28 + 1),
            "ms" | "us" | "sec" => format!("\"2024-05-01T12:{:02}:00Z\"", n % 60),
            "price" => format!("{n}.{:02}", n),
            "nums" => format!("[{n}, {}]", n + 1),
            "words" => format!("[\"w{n}\"]"),
            _ => format!("{{\"a\": {n}, \"b\": [{{\"c\": \"c{n}\"}}]}}"),
        }
    };
    let malformed = [
        "",
        "{",
        "not json",
        "[1]",
        "null",
        "\"x\"",
        "{\"i64\": 1} {}",
        "{i64: 1}",
        "{\"s\": \"a\tb\"}",
        "{\"s\": tru}",
    ];
    let mut payloads = Vec::new();
    for _ in 0..20_000 {
        if rng.random_range(0..50) == 0 {
            payloads.push(malformed[rng.random_range(0..malformed.len())].to_string());
            continue;
        }
        // Per field, the members it gives (none, one, or a repeat with the last
        // counting); fields in schema order but for one moved back.
        let mut fields: Vec<Vec<String>> = Vec::new();
        for name in &names {
            fields.push(match rng.random_range(0..100) {
                0..=84 => vec![format!("\"{name}\": {}", good(&mut rng, name))],
                85..=89 => vec![],
                90..=91 => vec![
                    format!("\"{name}\": {}", good(&mut rng, name)),
                    format!("\"{name}\": {}", any(&mut rng)),
                ],
                _ => vec![format!("\"{name}\": {}", any(&mut rng))],
            });
        }
        if rng.random_range(0..10) == 0 {
            fields.push(vec![format!("\"extra\": {}", any(&mut rng))]);
        }
        let cut = rng.random_range(0..=fields.len());
        fields[..cut].rotate_left(cut.min(1));
        let members: Vec<String> = fields.into_iter().flatten().collect();
        payloads.push(format!("{{{}}}", members.join(", ")));
    }
    for coerce in [
        Coercions::default(),
        Coercions {
            string_to_number: true,
            integral_float_to_int: true,
        },
    ] {
        let run = |format: Box<dyn crate::decode::Format>| {
            let mut decoder = RouteDecoder::with_format(format, schema.clone(), vec![], 500);
            let mut rejected = Vec::new();
            for (offset, p) in payloads.iter().enumerate() {
                let message = Message::payload_only("t", 0, offset as i64, p.as_bytes());
                decoder.push(&message, &mut rejected);
                if decoder.chunk_full() {
                    decoder.flush_chunk(&mut rejected);
                }
            }
            let batches = decoder.take(&mut rejected);
            let batch = arrow_select::concat::concat_batches(&schema, &batches).unwrap();
            let mut rejected: Vec<_> = rejected.into_iter().map(|r| (r.offset, r.class)).collect();
            rejected.sort_by_key(|r| r.0);
            (batch, rejected)
        };
        let (ours, our_rejected) = run(Box::new(super::Json::new(schema.clone(), coerce).unwrap()));
        let (theirs, their_rejected) = run(Box::new(
            super::reference::Reference::new(schema.clone(), 500, coerce).unwrap(),
        ));
        let differ: Vec<_> = our_rejected
            .iter()
            .filter(|r| !their_rejected.contains(r))
            .map(|r| ("only we refuse", r))
            .chain(
                their_rejected
                    .iter()
                    .filter(|r| !our_rejected.contains(r))
                    .map(|r| ("only arrow-json refused", r)),
            )
            .map(|(who, (offset, class))| (who, class, &payloads[*offset as usize]))
            .take(12)
            .collect();
        assert!(differ.is_empty(), "{coerce:?}: {differ:#?}");
        assert!(
            our_rejected.len() > 2_000 && ours.num_rows() > 2_000,
            "{}",
            ours.num_rows()
        );
        for (column, name) in names.iter().enumerate() {
            assert_eq!(
                ours.column(column),
                theirs.column(column),
                "{coerce:?}: column {name}"
            );
        }
    }
}

/// Where the decoder differs from arrow-json and the strict check: JSON that is not
/// JSON is undecodable, also in a number's place (arrow-json took a trailing comma, and
/// the strict check called a broken number a schema mismatch); every value of a
/// repeated name must be one of the field's (arrow-json looked at the last only); `-0`
/// is the integer 0 (serde read it as a float).
#[test]
fn malformed_json_is_undecodable_wherever_it_is() {
    let schema = ingest_schemas::parse_schema("fields:\n  - { name: n, type: int64? }\n").unwrap();
    for (payload, why) in [
        (r#"{"n": 1,}"#, "invalid JSON: expected a string at byte 8"),
        (r#"{"n" 1}"#, "invalid JSON: expected `:` at byte 5"),
        (
            r#"{"n": tru}"#,
            "invalid JSON: expected `true`, `false` or `null` at byte 6",
        ),
        (
            r#"{"n": 01}"#,
            "invalid JSON: expected `,` or `}` at byte 7",
        ),
        (r#"{"n": 1"#, "invalid JSON: truncated JSON value at byte 7"),
        (r#"{"n": "x", "n": 1}"#, ""),
    ] {
        let mut decoder = RouteDecoder::new(&Payload::json(), schema.clone(), vec![], 10).unwrap();
        let mut rejected = Vec::new();
        decoder.push(
            &Message::payload_only("t", 0, 0, payload.as_bytes()),
            &mut rejected,
        );
        decoder.flush_chunk(&mut rejected);
        assert_eq!(rejected.len(), 1, "{payload}");
        if why.is_empty() {
            assert_eq!(rejected[0].class, crate::decode::ErrorClass::SchemaMismatch);
            continue;
        }
        assert_eq!(
            rejected[0].class,
            crate::decode::ErrorClass::Undecodable,
            "{payload}"
        );
        assert_eq!(rejected[0].error, why, "{payload}");
    }
    let (rows, rejected) = decode(&[r#"{"q": -0}"#], Coercions::default());
    assert_eq!((rows, rejected), (vec![Some(0)], vec![]));
}
