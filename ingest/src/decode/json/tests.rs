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
