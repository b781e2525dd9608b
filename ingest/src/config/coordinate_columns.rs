//! A ClickHouse route's Kafka coordinate columns must hold Kafka coordinates only.
//!
//! The ClickHouse sink reads its positions back from the `_topic`, `_partition` and
//! `_offset` columns (or the names the route's `metadata:` gives them). A payload
//! field, or another metadata column, under one of those names would be written into
//! the same column: the sink fills it from Kafka and the field's own data is lost, or
//! (before that was so) the field's values became the table's positions.

use arrow_schema::SchemaRef;

use super::{MetadataKind, RouteConfig, metadata_fields};

/// Refuses a field or metadata column of `route` that takes a coordinate column's name.
/// `Err` is (the key to name, the message).
pub fn check(
    route: &RouteConfig,
    name: &str,
    schema: &SchemaRef,
) -> Result<(), (&'static str, String)> {
    if route.clickhouse.is_none() {
        return Ok(()); // Iceberg keeps its positions in snapshot summaries.
    }
    let metadata = metadata_fields(&route.metadata);
    let defaults = ingest_sink_clickhouse::CoordinateColumns::default();
    for (kind, what, default) in [
        (MetadataKind::Topic, "topic", defaults.topic),
        (MetadataKind::Partition, "partition", defaults.partition),
        (MetadataKind::Offset, "offset", defaults.offset),
    ] {
        let own = metadata.iter().find(|(_, k)| *k == kind).map(|(n, _)| n);
        let column = own.unwrap_or(&default);
        let taken_by_metadata = metadata.iter().any(|(n, k)| n == column && *k != kind);
        let taken_by_payload = own.is_none() && schema.field_with_name(column).is_ok();
        if taken_by_metadata || taken_by_payload {
            let key = if taken_by_payload {
                "schema"
            } else {
                "metadata"
            };
            return Err((
                key,
                format!(
                    "route `{name}`: field `{column}` has the name of the ClickHouse column \
                     holding each row's Kafka {what}, from which the sink reads its position; \
                     rename the field, or give that column another name with \
                     `metadata: {{ {what}: kafka_{what} }}`"
                ),
            ));
        }
    }
    Ok(())
}
