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

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_schema::{DataType, Field, Schema};
    use ingest_sink_clickhouse::native::{NativeColumn, Source};
    use ingest_sink_clickhouse::ranges::ColumnRanges;
    use ingest_sink_clickhouse::types::{ChType, ServerCaps};
    use ingest_sink_iceberg::values::TableValues;

    use crate::config::MetadataKind;
    use crate::decode::{JsonDecoder, Message};

    fn message(offset: i64, payload: &str) -> Message<'_> {
        Message {
            topic: "events",
            partition: 0,
            offset,
            timestamp: None,
            key: None,
            payload: Some(payload.as_bytes()),
        }
    }

    /// A ClickHouse table with a narrower `day Date` and `n Int16`, an Iceberg table
    /// with `n int`: rows either refuses are rejected whole, with the right payload and
    /// every reason; a record that does not match the schema (bisected away first)
    /// does not shift which payload goes with which refusal.
    #[test]
    fn rows_a_sink_cannot_store_are_rejected_with_their_record() {
        let schema = ingest_schemas::parse_schema(
            "fields:\n  - {name: id, type: int64}\n  - {name: day, type: date}\n  - {name: n, type: int64}\n",
        )
        .unwrap();
        let meta = vec![("_offset".to_string(), MetadataKind::Offset)];
        let mut decoder = JsonDecoder::new(schema, meta, 100).unwrap();
        let columns = ["id Int64", "day Date", "n Int16"]
            .iter()
            .map(|c| {
                let (name, ty) = c.split_once(' ').unwrap();
                NativeColumn {
                    name: name.into(),
                    type_name: ty.into(),
                    ty: ChType::parse(ty).unwrap(),
                    source: Source::Field,
                }
            })
            .collect();
        let caps = ServerCaps::from_version("18.16.1");
        decoder.add_check(Arc::new(ColumnRanges::new(
            "clickhouse db.t",
            columns,
            caps,
        )));
        let lake = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Date32, false),
            Field::new("n", DataType::Int32, false),
        ]);
        decoder.add_check(Arc::new(TableValues::new("iceberg ns.t", Arc::new(lake))));

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
            day.contains("clickhouse db.t: column `day` (Date)") && !day.contains("iceberg"),
            "{day}"
        );
        // Too wide for both sinks: both reasons.
        let both = &by_offset(4).error;
        assert!(
            both.contains("clickhouse db.t: column `n`")
                && both.contains("iceberg ns.t: column `n`"),
            "{both}"
        );
        let one = &by_offset(5).error;
        assert!(
            one.contains("clickhouse db.t: column `n` (Int16)") && !one.contains("iceberg"),
            "{one}"
        );
    }
}
