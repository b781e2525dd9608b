//! Commits as compare-and-swap.
//!
//! iceberg-rust's `Transaction::commit` reloads the table, silently re-applies its
//! actions onto whatever another writer committed meanwhile, and retries conflicts. Our
//! commit records Kafka positions computed from the table we started from, so
//! a silent rebase could record stale positions. `PinnedCatalog` answers `load_table`
//! for the committed table with exactly the table the transaction was built on, so no
//! rebase happens and the catalog's requirement check (the branch must still point at
//! our base snapshot) decides; a conflict comes back as a non-retryable error and the
//! sink reloads, recomputes the positions and builds the commit again.
//!
//! The positions' table properties ride in the same commit. A commit that only changes
//! properties (another tool's) does not move the branch, so it does not refuse ours; the
//! catalog applies each commit's property changes key by key on the current metadata,
//! so neither loses the other's keys.

use std::collections::HashMap;

use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, Namespace, NamespaceIdent, Result, TableCommit, TableCreation,
    TableIdent,
};

#[derive(Debug)]
pub struct PinnedCatalog<'a> {
    inner: &'a dyn Catalog,
    table: Table,
}

impl<'a> PinnedCatalog<'a> {
    pub fn new(inner: &'a dyn Catalog, table: Table) -> Self {
        Self { inner, table }
    }
}

/// True for the error a lost compare-and-swap produces.
pub fn is_conflict(error: &Error) -> bool {
    error.kind() == ErrorKind::CatalogCommitConflicts
}

#[async_trait::async_trait]
impl Catalog for PinnedCatalog<'_> {
    async fn load_table(&self, table: &TableIdent) -> Result<Table> {
        if table == self.table.identifier() {
            Ok(self.table.clone())
        } else {
            self.inner.load_table(table).await
        }
    }

    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        self.inner.update_table(commit).await.map_err(|e| {
            if is_conflict(&e) {
                // Same kind, but not retryable: the transaction must not retry it.
                Error::new(ErrorKind::CatalogCommitConflicts, e.message().to_string())
            } else {
                e
            }
        })
    }

    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn drop_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(&self, table: &TableIdent, metadata_location: String) -> Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
}
