//! Adding the route's new fields to the table while running: an Iceberg schema update
//! (new optional fields get new field ids; data files written before read null). Two
//! members adding the same field race on the catalog: the loser reloads, finds the
//! field there, and has nothing left to add.

use arrow_schema::{Schema, SchemaRef};
use iceberg::Catalog;
use iceberg::table::Table;
use iceberg::transaction::{AddColumn, ApplyTransactionAction, Transaction};

use crate::schema::iceberg_compatible;

/// How many times a schema update lost to another commit is tried again.
const ATTEMPTS: usize = 10;

/// The table with every field of `schema` (adding the ones it lacks as optional
/// fields). Errors are `(message, retryable)`.
pub async fn add_fields(
    catalog: &dyn Catalog,
    mut table: Table,
    schema: &SchemaRef,
) -> Result<Table, (String, bool)> {
    for _ in 0..ATTEMPTS {
        let current = table.metadata().current_schema().clone();
        let missing: Vec<_> = schema
            .fields()
            .iter()
            .filter(|f| current.field_by_name(f.name()).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(table);
        }
        // Rows already in the table have no value for them: optional fields, whatever
        // the route's fields say.
        let missing: Vec<_> = missing
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let types = iceberg_compatible(&Schema::new(missing))
            .and_then(|s| {
                iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&s)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| (e, false))?;
        let mut update = Transaction::new(&table).update_schema();
        for field in types.as_struct().fields() {
            tracing::info!(table = %table.identifier(), column = %field.name, "adding a column while running");
            update = update.add_column(AddColumn::optional(
                &field.name,
                (*field.field_type).clone(),
            ));
        }
        let tx = update
            .apply(Transaction::new(&table))
            .map_err(|e| (e.to_string(), false))?;
        match tx.commit(catalog).await {
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
