//! Finding the route's table in the catalog, or creating it (and its namespace) from the
//! route's schema and partition spec.

use std::collections::HashMap;

use arrow_schema::SchemaRef;
use iceberg::table::Table;
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};

use crate::config::IcebergTable;
use crate::partition::partition_spec;
use crate::rest_auth::is_permanent_refusal;
use crate::schema::iceberg_compatible;

/// Loads `namespace.table`, creating the namespace and the table if missing. An error
/// comes with whether retrying may help: catalog calls are retried, unless the catalog
/// refused the credentials for good; a schema or spec that does not fit never is.
pub async fn ensure_table(
    catalog: &dyn Catalog,
    namespace: &str,
    config: &IcebergTable,
    schema: &SchemaRef,
) -> Result<Table, (String, bool)> {
    let io = |what: &str, e: iceberg::Error| (format!("{what}: {e}"), !is_permanent_refusal(&e));
    let namespace_ident =
        NamespaceIdent::from_strs(namespace.split('.')).map_err(|e| (e.to_string(), false))?;
    if !catalog
        .namespace_exists(&namespace_ident)
        .await
        .map_err(|e| io("checking the namespace", e))?
    {
        catalog
            .create_namespace(&namespace_ident, HashMap::new())
            .await
            .map_err(|e| io("creating the namespace", e))?;
    }
    let ident = TableIdent::new(namespace_ident.clone(), config.table.clone());
    if catalog
        .table_exists(&ident)
        .await
        .map_err(|e| io("checking the table", e))?
    {
        return catalog
            .load_table(&ident)
            .await
            .map_err(|e| io("loading the table", e));
    }
    let compatible = iceberg_compatible(schema).map_err(|e| (e, false))?;
    let iceberg_schema = iceberg::arrow::arrow_schema_to_schema_auto_assign_ids(&compatible)
        .map_err(|e| (e.to_string(), false))?;
    let spec = partition_spec(&iceberg_schema, &config.partition_by).map_err(|e| (e, false))?;
    let creation = TableCreation::builder()
        .name(config.table.clone())
        .schema(iceberg_schema)
        .partition_spec(spec)
        .properties([
            ("write.format.default".to_string(), "parquet".to_string()),
            (
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            ),
        ])
        .build();
    match catalog.create_table(&namespace_ident, creation).await {
        Ok(table) => Ok(table),
        // Another instance created it first.
        Err(_) if catalog.table_exists(&ident).await.unwrap_or(false) => catalog
            .load_table(&ident)
            .await
            .map_err(|e| io("loading the table", e)),
        Err(e) => Err((format!("creating the table: {e}"), false)),
    }
}
