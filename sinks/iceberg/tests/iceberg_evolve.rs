//! A table widened while running, on a real SQLite catalog: Iceberg's promotions (int →
//! long, float → double, decimal precision up), which iceberg-rust 0.10.1's schema
//! update cannot make, committed with new fields in one schema change; two sinks
//! widening at once end with one schema; the rows of both shapes read back through
//! iceberg-rust's own reader, old files promoted.

#[allow(dead_code)] // this file needs only the catalog
mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int64Type};
use arrow_array::{
    ArrayRef, Decimal128Array, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use common::catalog_config;
use iceberg::spec::{PrimitiveType, Type};
use iceberg::{Catalog, TableIdent};
use ingest_sink_api::{Coordinates, OffsetMap, Sink, SinkBatch};
use ingest_sink_iceberg::{IcebergSink, IcebergTable, open_catalog};

fn narrow() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("q", DataType::Int32, true),
        Field::new("f", DataType::Float32, true),
        Field::new("d", DataType::Decimal128(10, 2), true),
    ]))
}

fn wide() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("q", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("d", DataType::Decimal128(14, 2), true),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// One row at `offset` of partition 0.
fn row(schema: &Arc<Schema>, offset: i64, columns: Vec<ArrayRef>) -> SinkBatch {
    let mut positions = OffsetMap::default();
    positions.advance("events", 0, offset + 1);
    SinkBatch {
        batches: vec![RecordBatch::try_new(schema.clone(), columns).unwrap()],
        coordinates: vec![vec![Coordinates {
            topic: "events".into(),
            partition: 0,
            offset,
        }]],
        positions,
        epoch: 0,
        watermark: None,
    }
}

fn narrow_row(offset: i64) -> SinkBatch {
    row(
        &narrow(),
        offset,
        vec![
            Arc::new(Int64Array::from(vec![offset])),
            Arc::new(Int32Array::from(vec![7])),
            Arc::new(Float32Array::from(vec![0.5])),
            Arc::new(
                Decimal128Array::from(vec![1234])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ],
    )
}

fn wide_row(offset: i64) -> SinkBatch {
    row(
        &wide(),
        offset,
        vec![
            Arc::new(Int64Array::from(vec![offset])),
            Arc::new(Int64Array::from(vec![5_000_000_000])),
            Arc::new(Float64Array::from(vec![0.1])),
            Arc::new(
                Decimal128Array::from(vec![123_456_789_012])
                    .with_precision_and_scale(14, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(vec!["new"])),
        ],
    )
}

async fn open(catalog: &Arc<dyn Catalog>, schema: Arc<Schema>) -> IcebergSink {
    let table: IcebergTable = serde_json::from_str(r#"{"table": "events"}"#).unwrap();
    IcebergSink::open(Arc::clone(catalog), "ns", &table, schema, "group")
        .await
        .unwrap()
}

#[tokio::test]
async fn promoted_types_and_new_fields_commit_as_one_schema_and_old_files_read_promoted() {
    let catalog = open_catalog(&catalog_config("evolve")).await.unwrap();
    let mut first = open(&catalog, narrow()).await;
    let mut second = open(&catalog, narrow()).await;
    first.write(&narrow_row(0)).await.unwrap();
    let ident = TableIdent::from_strs(["ns", "events"]).unwrap();
    let before = catalog.load_table(&ident).await.unwrap();
    let ids_before: Vec<(String, i32)> = before
        .metadata()
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| (f.name.clone(), f.id))
        .collect();

    // Both members widen: one commits, the other finds it done.
    let (a, b) = tokio::join!(first.evolve(wide()), second.evolve(wide()));
    a.unwrap();
    b.unwrap();
    first.write(&wide_row(1)).await.unwrap();

    let table = catalog.load_table(&ident).await.unwrap();
    let schema = table.metadata().current_schema();
    let type_of = |name: &str| {
        schema
            .field_by_name(name)
            .unwrap()
            .field_type
            .as_ref()
            .clone()
    };
    assert_eq!(type_of("q"), Type::Primitive(PrimitiveType::Long));
    assert_eq!(type_of("f"), Type::Primitive(PrimitiveType::Double));
    assert_eq!(
        type_of("d"),
        Type::Primitive(PrimitiveType::Decimal {
            precision: 14,
            scale: 2
        })
    );
    assert!(schema.field_by_name("note").is_some());
    // A promotion keeps the field's id: old files are read as the wider type.
    for (name, id) in ids_before {
        assert_eq!(schema.field_by_name(&name).unwrap().id, id, "{name}");
    }
    // One schema per change: the narrow one and the wide one.
    assert_eq!(table.metadata().schemas_iter().count(), 2);

    let batches = common::scan_all(&table).await;
    let mut rows: Vec<(i64, i64, f64, i128)> = batches
        .iter()
        .flat_map(|b| {
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let (id, q, f, d) = (col("id"), col("q"), col("f"), col("d"));
            (0..b.num_rows())
                .map(|i| {
                    (
                        id.as_primitive::<Int64Type>().value(i),
                        q.as_primitive::<Int64Type>().value(i),
                        f.as_primitive::<Float64Type>().value(i),
                        d.as_primitive::<Decimal128Type>().value(i),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    assert_eq!(
        rows,
        [(0, 7, 0.5, 1234), (1, 5_000_000_000, 0.1, 123_456_789_012)]
    );

    // Reopened with the narrow schema (a member not yet widened), or asked for a type
    // change that is no promotion, the sink never narrows or retypes the table (the
    // route refuses such a schema before any sink sees it: `decode::widens`).
    open(&catalog, narrow()).await;
    let retyped = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("q", DataType::Utf8, true),
    ]));
    let _ = first.evolve(retyped).await;
    let after = catalog.load_table(&ident).await.unwrap();
    assert_eq!(after.metadata().schemas_iter().count(), 2);
    let q = after
        .metadata()
        .current_schema()
        .field_by_name("q")
        .unwrap()
        .clone();
    assert_eq!(*q.field_type, Type::Primitive(PrimitiveType::Long));
}

#[tokio::test]
async fn a_narrower_column_the_route_did_not_widen_is_kept() {
    // The table's owner made `q` an int; the route's schema says long from the start:
    // values that do not fit are the route's dead letters, the table is not changed.
    let catalog = open_catalog(&catalog_config("narrow-kept")).await.unwrap();
    open(&catalog, narrow()).await;
    let mut sink = open(&catalog, wide()).await;
    let ident = TableIdent::from_strs(["ns", "events"]).unwrap();
    let q = |t: &iceberg::table::Table| {
        *t.metadata()
            .current_schema()
            .field_by_name("q")
            .unwrap()
            .field_type
            .clone()
    };
    let table = catalog.load_table(&ident).await.unwrap();
    assert_eq!(q(&table), Type::Primitive(PrimitiveType::Int));
    // Evolving to the same route schema again promotes nothing either.
    sink.evolve(wide()).await.unwrap();
    let table = catalog.load_table(&ident).await.unwrap();
    assert_eq!(q(&table), Type::Primitive(PrimitiveType::Int));
    assert!(
        table
            .metadata()
            .current_schema()
            .field_by_name("note")
            .is_some()
    );
}
