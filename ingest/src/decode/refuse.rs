//! Rows some sink of the route cannot store (a date outside a column's range, a number
//! too wide for a narrower column, a timestamp that overflows a unit conversion) are
//! rejected right after decoding, like a record that does not match the schema: the raw
//! record goes to the dead-letter topic with every refusing sink's reason, before any
//! lane sees its row.
//!
//! A record is thus written to every sink of its route or to none. The alternative, a
//! record dead-lettered for one sink and written to the other, would make the
//! dead-letter step part of each lane's write: a lane's offsets could only count as
//! durable once its own dead letters were acknowledged, and a replay would have to
//! tell which sink already dead-lettered what. Deciding once, from the values and the
//! tables' column types, keeps the rule the exactly-once protocol already has: the
//! dead-letter topic takes a record before any lane can count its offset as done.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use ingest_sink_api::ValueCheck;

/// The value checks of a route's sinks.
#[derive(Default, Clone)]
pub struct ValueChecks(Vec<Arc<dyn ValueCheck>>);

impl ValueChecks {
    pub fn add(&mut self, check: Arc<dyn ValueCheck>) {
        self.0.push(check);
    }

    /// Per row some sink refuses, every reason (sink, column, value) joined.
    pub fn refused(&self, batch: &RecordBatch) -> BTreeMap<usize, String> {
        let mut out: BTreeMap<usize, String> = BTreeMap::new();
        for check in &self.0 {
            for refusal in check.refusals(batch) {
                let reason = out.entry(refusal.row).or_default();
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                reason.push_str(&refusal.reason);
            }
        }
        out
    }
}

/// A mask keeping the rows not refused.
pub fn keep_mask(rows: usize, refused: &BTreeMap<usize, String>) -> BooleanArray {
    (0..rows)
        .map(|row| Some(!refused.contains_key(&row)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::RecordBatch;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::DataType;
    use ingest_sink_api::{Refusal, ValueCheck};

    use crate::config::MetadataKind;
    use crate::decode::Payload;
    use crate::decode::{Message, RouteDecoder};

    fn message(offset: i64, payload: &str) -> Message<'_> {
        Message {
            topic: "events",
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            payload: Some(payload.as_bytes()),
            headers: None,
        }
    }

    /// A stand-in for a sink's value check (the sinks' own checks are tested in their
    /// crates, and through the service in `tests/e2e/test_bad_values.py`): refuses the
    /// rows whose column holds more than its limit.
    struct AtMost {
        sink: &'static str,
        limits: Vec<(&'static str, i64)>,
    }

    impl ValueCheck for AtMost {
        fn refusals(&self, batch: &RecordBatch) -> Vec<Refusal> {
            let mut found = Vec::new();
            for (column, max) in &self.limits {
                let values = batch.column_by_name(column).unwrap();
                let values = arrow_cast::cast(values, &DataType::Int64).unwrap();
                for (row, value) in values.as_primitive::<Int64Type>().iter().enumerate() {
                    if let Some(value) = value.filter(|v| v > max) {
                        let reason = format!("{}: column `{column}`: {value} > {max}", self.sink);
                        found.push(Refusal { row, reason });
                    }
                }
            }
            found.sort_by_key(|r| r.row);
            found
        }
    }

    /// One sink refusing a `day` past 2149-06-06 (65,535 days) and an `n` wider than
    /// 16 bits, another an `n` wider than 32 bits: rows either refuses are rejected
    /// whole, with the right payload and every reason; a record that does not match
    /// the schema (bisected away first) does not shift which payload goes with which
    /// refusal.
    #[test]
    fn rows_a_sink_cannot_store_are_rejected_with_their_record() {
        let schema = ingest_schemas::parse_schema(
            "fields:\n  - {name: id, type: int64}\n  - {name: day, type: date}\n  - {name: n, type: int64}\n",
        )
        .unwrap();
        let meta = vec![("_offset".to_string(), MetadataKind::Offset)];
        let mut decoder = RouteDecoder::new(&Payload::json(), schema, meta, 100).unwrap();
        decoder.add_check(Arc::new(AtMost {
            sink: "narrow db.t",
            limits: vec![("day", 65_535), ("n", i16::MAX.into())],
        }));
        decoder.add_check(Arc::new(AtMost {
            sink: "wide ns.t",
            limits: vec![("n", i32::MAX.into())],
        }));

        let payloads = [
            r#"{"id": 0, "day": "2024-01-01", "n": 1}"#,
            r#"{"id": 1, "day": "2024-01-01", "n": "not a number"}"#,
            r#"{"id": 2, "day": "2150-01-01", "n": 1}"#,
            r#"{"id": 3, "day": "2024-01-01", "n": 1}"#,
            r#"{"id": 4, "day": "2024-01-01", "n": 3000000000}"#,
            r#"{"id": 5, "day": "2024-01-01", "n": 40000}"#,
            r#"{"id": 6, "day": "2024-01-01", "n": 2}"#,
        ];
        let mut rejected = Vec::new();
        for (offset, payload) in payloads.iter().enumerate() {
            decoder.push(&message(offset as i64, payload), &mut rejected);
        }
        let (batches, positions) = decoder.take_with_coordinates(&mut rejected);

        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, vec![0, 3, 6]);
        let offsets: Vec<i64> = positions.iter().flatten().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![0, 3, 6], "positions follow the rows kept");
        let by_offset = |o: i64| rejected.iter().find(|r| r.offset == o).expect("rejected");
        assert_eq!(rejected.len(), 4, "{rejected:?}");
        for offset in [1, 2, 4, 5] {
            let r = by_offset(offset);
            assert_eq!(
                r.payload.as_deref(),
                Some(payloads[offset as usize].as_bytes())
            );
        }
        assert!(by_offset(1).error.contains("does not match the schema"));
        let day = &by_offset(2).error;
        assert!(
            day.contains("narrow db.t: column `day`") && !day.contains("wide"),
            "{day}"
        );
        // Too wide for both sinks: both reasons.
        let both = &by_offset(4).error;
        assert!(
            both.contains("narrow db.t: column `n`") && both.contains("wide ns.t: column `n`"),
            "{both}"
        );
        let one = &by_offset(5).error;
        assert!(
            one.contains("narrow db.t: column `n`: 40000") && !one.contains("wide"),
            "{one}"
        );
    }
}
