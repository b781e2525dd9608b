//! Widening the table to the route's schema while running: new optional fields (new
//! field ids; data files written before read null) and promoted types (int → long,
//! float → double, decimal precision up: Iceberg's promotions, which readers apply to
//! the files written before).
//!
//! iceberg-rust 0.10.1's schema update adds and deletes columns but cannot promote a
//! type, and its commit builder is crate-private. So a promotion is committed through
//! that same update, built on the table as it would be with the types promoted: the
//! update is handed that table by [`PinnedCatalog`] (as every commit of ours is), adds
//! the new schema (the current one, promoted, plus the new fields) and makes it
//! current, with the catalog's check that the current schema is still the one it was
//! built on. Two members changing the same table race on that check: the loser
//! reloads, finds the change made, and has nothing left to do.

use arrow_schema::SchemaRef;
use iceberg::Catalog;
use iceberg::spec::{NestedField, PrimitiveType, Schema, TableMetadata, Type};
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use crate::pinned::PinnedCatalog;
use crate::schema::iceberg_compatible;

/// How many times a schema update lost to another commit is tried again.
const ATTEMPTS: usize = 10;

/// The table with every field of `schema`: the ones it lacks added as optional fields,
/// and, of the fields the route's schema widened from `before`, the ones the table has
/// with a narrower type promoted (a narrower column the route did not widen is the
/// table owner's choice, kept). Errors are `(message, retryable)`.
pub async fn add_fields(
    catalog: &dyn Catalog,
    mut table: Table,
    schema: &SchemaRef,
    before: Option<&SchemaRef>,
) -> Result<Table, (String, bool)> {
    let widened = |name: &str| {
        before.is_some_and(|b| {
            b.field_with_name(name).is_ok_and(|b| {
                schema
                    .field_with_name(name)
                    .is_ok_and(|f| f.data_type() != b.data_type())
            })
        })
    };
    let wanted = iceberg_compatible(schema)
        .and_then(|s| {
            iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&s).map_err(|e| e.to_string())
        })
        .map_err(|e| (e, false))?;
    for _ in 0..ATTEMPTS {
        let current = table.metadata().current_schema().clone();
        // Added as optional fields, whatever the route says: rows already in the table
        // have no value for them.
        let missing: Vec<NestedField> = wanted
            .as_struct()
            .fields()
            .iter()
            .filter(|w| current.field_by_name(&w.name).is_none())
            .map(|w| w.as_ref().clone())
            .collect();
        let promoted: Vec<(String, PrimitiveType)> = wanted
            .as_struct()
            .fields()
            .iter()
            .filter(|w| widened(&w.name))
            .filter_map(|w| {
                let have = current.field_by_name(&w.name)?;
                match (have.field_type.as_ref(), w.field_type.as_ref()) {
                    (Type::Primitive(from), Type::Primitive(to)) if promotes(from, to) => {
                        Some((w.name.clone(), to.clone()))
                    }
                    _ => None,
                }
            })
            .collect();
        if missing.is_empty() && promoted.is_empty() {
            return Ok(table);
        }
        let base = promoted_base(&table, &promoted).map_err(|e| (e, false))?;
        let mut update = Transaction::new(&base).update_schema();
        for field in &missing {
            tracing::info!(table = %table.identifier(), column = %field.name, "adding a column while running");
            update = update.add_column(AddColumn::optional(
                &field.name,
                (*field.field_type).clone(),
            ));
        }
        for (name, to) in &promoted {
            tracing::info!(table = %table.identifier(), column = %name, to = %to, "promoting a column while running");
        }
        let tx = update
            .apply(Transaction::new(&base))
            .map_err(|e| (e.to_string(), false))?;
        match tx.commit(&PinnedCatalog::new(catalog, base)).await {
            Ok(updated) => return Ok(updated),
            Err(e) => {
                tracing::info!(table = %table.identifier(), error = %e, "schema update lost a race; reloading");
                table = catalog
                    .load_table(table.identifier())
                    .await
                    .map_err(|e| (format!("loading the table: {e}"), true))?;
            }
        }
    }
    Err((
        format!("the schema update lost {ATTEMPTS} races in a row"),
        true,
    ))
}

/// Iceberg's type promotions.
fn promotes(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    use PrimitiveType::*;
    match (from, to) {
        (Int, Long) | (Float, Double) => true,
        (
            Decimal {
                precision: p,
                scale: s,
            },
            Decimal {
                precision: q,
                scale: t,
            },
        ) => s == t && q > p,
        _ => false,
    }
}

/// `table` as it would be with `promoted` fields of its current schema given their
/// wider types, under the same schema id: the base the schema update is built on.
fn promoted_base(table: &Table, promoted: &[(String, PrimitiveType)]) -> Result<Table, String> {
    if promoted.is_empty() {
        return Ok(table.clone());
    }
    let current = table.metadata().current_schema();
    let fields = current
        .as_struct()
        .fields()
        .iter()
        .map(
            |f| match promoted.iter().find(|(name, _)| *name == f.name) {
                Some((_, to)) => {
                    let mut wider = f.as_ref().clone();
                    wider.field_type = Box::new(Type::Primitive(to.clone()));
                    std::sync::Arc::new(wider)
                }
                None => f.clone(),
            },
        )
        .collect::<Vec<_>>();
    let schema = Schema::builder()
        .with_schema_id(current.schema_id())
        .with_fields(fields)
        .with_identifier_field_ids(current.identifier_field_ids())
        .build()
        .map_err(|e| e.to_string())?;
    // No public way replaces a schema in table metadata: through its JSON form.
    let mut json = serde_json::to_value(table.metadata()).map_err(|e| e.to_string())?;
    let schema_json = serde_json::to_value(&schema).map_err(|e| e.to_string())?;
    let schemas = json["schemas"]
        .as_array_mut()
        .ok_or("table metadata without schemas")?;
    for s in schemas.iter_mut() {
        if s["schema-id"] == current.schema_id() {
            *s = schema_json.clone();
        }
    }
    let metadata: TableMetadata = serde_json::from_value(json).map_err(|e| e.to_string())?;
    let mut builder = Table::builder()
        .metadata(metadata)
        .identifier(table.identifier().clone())
        .file_io(table.file_io().clone())
        .runtime(iceberg::Runtime::try_current().map_err(|e| e.to_string())?);
    if let Some(location) = table.metadata_location() {
        builder = builder.metadata_location(location);
    }
    builder.build().map_err(|e| e.to_string())
}
