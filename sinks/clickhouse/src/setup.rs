//! Opening a sink: connect, make sure the table and everything that makes its writes
//! exactly-once exist (the Kafka coordinate columns, the position ledger, the insert
//! gate registry), and check that every schema field can be written into the table
//! before any data arrives.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, SchemaRef};
use ingest_sink_api::{OffsetMap, SinkError};

use crate::client::{
    execute, fetch_json, is_retryable, json_number, server_caps, server_error_code,
    server_pinned_settings, try_client,
};
use crate::columns::{TableColumn, has_column, match_columns, table_columns};
use crate::config::{ClickHouseConnection, ClickHouseTable};
use crate::connect;
use crate::coordinate_columns::with_coordinate_fields;
use crate::ddl;
use crate::engine;
use crate::gate::Gates;
use crate::ledger::{CoordinateColumns, Ledger, LedgerReader};
use crate::native::{NativeColumn, encode_block};
use crate::types::{ChType, ServerCaps, ddl_type, quote_ident};
use crate::watermarks::Watermarks;
use crate::write::ClickHouseSink;
use ingest_sink_api::evolution::promotes;

impl ClickHouseSink {
    /// Connects, creates the table (with its coordinate columns and position ledger) if
    /// configured, and checks that every schema field can be written into the table.
    pub async fn open(
        conn: &ClickHouseConnection,
        table: &ClickHouseTable,
        schema: SchemaRef,
        coordinates: CoordinateColumns,
    ) -> Result<Self, SinkError> {
        let setup = Setup::connect(conn, table).await?;
        let schema = with_coordinate_fields(&schema, &coordinates);
        setup.create_database_and_table(&schema).await?;
        let columns = setup.existing_columns().await?;
        setup.check_engine().await?;
        let ledger = Ledger::new(&conn.database, &table.table);
        let gates = setup.gates().await?;
        let companions = [ledger.create_statement(), gates.create_statement()];
        let columns = setup
            .add_coordinate_columns(columns, &coordinates, &companions)
            .await?;
        setup
            .create_ledger_and_gate_registry(&ledger, companions)
            .await?;
        let watermarks = setup
            .watermarks(Watermarks::new(&conn.database, &table.table))
            .await?;
        setup.add_from_block(&ledger).await?;
        // The route's schema may have gained nullable fields since the table was made.
        // A column narrower than its field is kept: the table's owner may want it so
        // (values that do not fit are dead letters); only a type the route's schema
        // widens while running is promoted (`evolve_table`).
        let columns = match setup.add_columns(&schema, &columns).await? {
            true => setup.read_columns().await?,
            false => columns,
        };
        setup.warn_narrower(&schema, &columns);
        let columns = setup.match_columns(&schema, columns)?;
        setup.check_encoding(&schema, &columns)?;
        let sink = setup.into_sink(schema, columns, (ledger, watermarks), coordinates, gates);
        // The ledger must answer before any write relies on it.
        sink.ledger.held(&OffsetMap::default()).await?;
        Ok(sink)
    }
}

impl ClickHouseSink {
    /// Widens the table to `schema` while running: adds the columns of its new fields
    /// (nullable ones only), promotes the columns its fields widen, takes the table's
    /// columns again, and retires this writer's
    /// gate, whose `Null` table copies the table's old columns (the next insert opens a
    /// new one). Another member adding the same column first is not an error.
    pub(crate) async fn evolve_table(&mut self, schema: SchemaRef) -> Result<(), SinkError> {
        let setup = Setup::connect(&self.conn, &self.table).await?;
        let schema = with_coordinate_fields(&schema, &self.ledger.coordinates);
        let columns = setup.existing_columns().await?;
        setup.add_columns(&schema, &columns).await?;
        setup
            .promote_columns(&schema, &self.schema, &columns)
            .await?;
        let columns = setup.read_columns().await?;
        let columns = setup.match_columns(&schema, columns)?;
        setup.check_encoding(&schema, &columns)?;
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        self.column_list = format!("({})", names.join(", "));
        self.columns = columns;
        self.schema = schema;
        if let Some(token) = self.gates.current_token() {
            self.gates
                .retire(&token, "after the table gained columns")
                .await?;
        }
        Ok(())
    }
}

/// A sink being opened: its server and table.
struct Setup<'a> {
    name: String,
    client: clickhouse::Client,
    caps: ServerCaps,
    /// The settings pinning what an acknowledged insert means, as this server knows them.
    pinned: Vec<(&'static str, &'static str)>,
    conn: &'a ClickHouseConnection,
    table: &'a ClickHouseTable,
}

impl<'a> Setup<'a> {
    /// Opens the client and asks the server its version.
    async fn connect(
        conn: &'a ClickHouseConnection,
        table: &'a ClickHouseTable,
    ) -> Result<Self, SinkError> {
        let name = format!("clickhouse {}.{}", conn.database, table.table);
        let client = try_client(conn).map_err(|e| {
            SinkError::permanent(&name, format!("clickhouse `{}`: {e}", conn.display_url()))
        })?;
        let (version, caps) = server_caps(&client).await.map_err(|e| {
            // Unreachable is worth waiting out; refused credentials or certificate are not.
            let retryable = is_retryable(&e) && !connect::is_certificate_error(&e);
            let message = format!(
                "cannot reach {}: {}",
                conn.display_url(),
                connect::describe(&e)
            );
            SinkError::new(&name, message, retryable)
        })?;
        crate::one_server::check(&name, &client, &conn.display_url()).await?;
        let pinned = server_pinned_settings(&client).await.map_err(|e| {
            SinkError::new(
                &name,
                format!("cannot read system.settings: {e}"),
                is_retryable(&e),
            )
        })?;
        tracing::info!(sink = %name, %version, ?pinned, "connected to ClickHouse");
        Ok(Self {
            name,
            client,
            caps,
            pinned,
            conn,
            table,
        })
    }

    /// The insert gates of the table, none opened yet; how they are dropped depends on
    /// the database's engine.
    async fn gates(&self) -> Result<Gates, SinkError> {
        let engine = self.database_engine().await?;
        Ok(Gates::new(
            &self.name,
            self.client.clone(),
            &self.conn.database,
            &self.table.table,
            self.caps,
            engine.as_deref(),
            self.pinned.clone(),
        ))
    }

    /// The engine of the sink's database (`Ordinary`, `Atomic`, ...), `None` on a
    /// server whose `system.databases` has no `engine` column.
    async fn database_engine(&self) -> Result<Option<String>, SinkError> {
        let query = self
            .client
            .query("SELECT engine FROM system.databases WHERE name = ?")
            .bind(&self.conn.database);
        match fetch_json(query).await {
            Ok(rows) => Ok(rows
                .first()
                .and_then(|r| r["engine"].as_str())
                .map(str::to_string)),
            // UNKNOWN_IDENTIFIER: no such column.
            Err(clickhouse::error::Error::BadResponse(text))
                if server_error_code(&text) == Some(47) =>
            {
                Ok(None)
            }
            Err(e) => Err(SinkError::new(
                &self.name,
                format!("cannot read system.databases: {e}"),
                is_retryable(&e),
            )),
        }
    }

    /// With `create_tables`: the database and the table, unless they exist.
    async fn create_database_and_table(&self, schema: &SchemaRef) -> Result<(), SinkError> {
        if !self.conn.create_tables {
            return Ok(());
        }
        self.run(ddl::create_database(&self.conn.database)).await?;
        let create = ddl::create_table(&self.conn.database, self.table, schema, self.caps)
            .map_err(|e| self.refused(e))?;
        self.run(create).await
    }

    /// The table's columns; an error when the table does not exist.
    async fn existing_columns(&self) -> Result<Vec<TableColumn>, SinkError> {
        let columns = self.read_columns().await?;
        if columns.is_empty() {
            return Err(self.refused(
                "table does not exist (set clickhouse.create_tables: true or create it)",
            ));
        }
        Ok(columns)
    }

    async fn read_columns(&self) -> Result<Vec<TableColumn>, SinkError> {
        table_columns(&self.client, &self.conn.database, &self.table.table)
            .await
            .map_err(|e| {
                SinkError::new(
                    &self.name,
                    format!("cannot read the table's columns: {e}"),
                    is_retryable(&e),
                )
            })
    }

    /// Refuses a table whose engine the sink cannot write exactly once.
    async fn check_engine(&self) -> Result<(), SinkError> {
        engine::check_table(&self.client, &self.conn.database, &self.table.table)
            .await
            .map_err(|(message, retryable)| SinkError::new(&self.name, message, retryable))
    }

    /// Adds the coordinate columns a table made before positions were kept lacks (old
    /// rows read offset -1: they count for no partition). Without `create_tables`
    /// nothing is changed: a missing column, ledger or gate registry (`companions`, the
    /// statements creating them) is an error naming the statements to run.
    async fn add_coordinate_columns(
        &self,
        columns: Vec<TableColumn>,
        coordinates: &CoordinateColumns,
        companions: &[String; 2],
    ) -> Result<Vec<TableColumn>, SinkError> {
        let missing = missing_coordinate_columns(&columns, coordinates);
        let alter = (!missing.is_empty()).then(|| {
            format!(
                "ALTER TABLE {}.{} {}",
                quote_ident(&self.conn.database),
                quote_ident(&self.table.table),
                missing.join(", ")
            )
        });
        if !self.conn.create_tables {
            let companions_missing = self.companions_missing().await?;
            if alter.is_some() || companions_missing {
                let statements: Vec<&str> =
                    alter.iter().chain(companions).map(String::as_str).collect();
                return Err(self.refused(format!(
                    "the table lacks the Kafka coordinate columns, position ledger or gate registry that make writes exactly-once; run: {}",
                    statements.join("; ")
                )));
            }
            return Ok(columns);
        }
        match alter {
            Some(alter) => {
                self.run(alter).await?;
                self.read_columns().await
            }
            None => Ok(columns),
        }
    }

    /// Whether the ledger or the gate registry is missing from the table's database.
    async fn companions_missing(&self) -> Result<bool, SinkError> {
        let names = [
            Ledger::new(&self.conn.database, &self.table.table)
                .name()
                .to_string(),
            Gates::registry_of(&self.table.table),
        ];
        let query = self
            .client
            .query("SELECT count() AS n FROM system.tables WHERE database = ? AND name IN (?, ?)")
            .bind(&self.conn.database)
            .bind(&names[0])
            .bind(&names[1]);
        let rows = fetch_json(query).await.map_err(|e| {
            SinkError::new(
                &self.name,
                format!("cannot read system.tables: {e}"),
                is_retryable(&e),
            )
        })?;
        let found = rows.first().and_then(|r| json_number::<u64>(&r["n"]));
        Ok(found != Some(names.len() as u64))
    }

    /// With `create_tables`: the ledger and the gate registry (`companions`). Drops the
    /// view that fed the ledger in earlier releases in any case.
    async fn create_ledger_and_gate_registry(
        &self,
        ledger: &Ledger,
        companions: [String; 2],
    ) -> Result<(), SinkError> {
        if self.conn.create_tables {
            for sql in companions {
                self.run(sql).await?;
            }
        }
        self.run(ledger.drop_old_view_statement()).await
    }

    /// The `n` a `SELECT count() AS n` query answers (0 when it answers nothing).
    async fn count(&self, query: clickhouse::query::Query, what: &str) -> Result<u64, SinkError> {
        let rows = fetch_json(query).await.map_err(|e| {
            SinkError::new(
                &self.name,
                format!("cannot read {what}: {e}"),
                is_retryable(&e),
            )
        })?;
        Ok(rows
            .first()
            .and_then(|r| json_number::<u64>(&r["n"]))
            .unwrap_or(0))
    }

    /// The completeness watermark's table: created with `create_tables`; without, used
    /// only if it exists (the watermark is a reader's aid, not a position).
    async fn watermarks(&self, watermarks: Watermarks) -> Result<Option<Watermarks>, SinkError> {
        if self.conn.create_tables {
            self.run(watermarks.create_statement()).await?;
            return Ok(Some(watermarks));
        }
        let query = self
            .client
            .query("SELECT count() AS n FROM system.tables WHERE database = ? AND name = ?")
            .bind(&self.conn.database)
            .bind(watermarks.name());
        let exists = self.count(query, "system.tables").await? > 0;
        if !exists {
            tracing::info!(sink = %self.name, table = watermarks.name(),
                "no watermark table and create_tables is off: the watermark is not recorded \
                 in ClickHouse (create the table to have it; see docs/operations.md)");
        }
        Ok(exists.then_some(watermarks))
    }

    /// Adds `from_block` to a ledger made by an earlier release (without
    /// `create_tables`: an error naming the statement to run).
    async fn add_from_block(&self, ledger: &Ledger) -> Result<(), SinkError> {
        let query = self
            .client
            .query(
                "SELECT count() AS n FROM system.columns WHERE database = ? AND table = ? \
                 AND name = 'from_block'",
            )
            .bind(&self.conn.database)
            .bind(ledger.name());
        if self.count(query, "the position ledger's columns").await? == 1 {
            return Ok(());
        }
        let alter = ledger.add_from_block_statement();
        if !self.conn.create_tables {
            return Err(self.refused(format!(
                "the position ledger was made by an earlier release and lacks the column recovery now reads; run: {alter}"
            )));
        }
        self.run(alter).await
    }

    /// The table's columns paired with the schema's fields.
    fn match_columns(
        &self,
        schema: &SchemaRef,
        columns: Vec<TableColumn>,
    ) -> Result<Vec<NativeColumn>, SinkError> {
        match_columns(schema, columns).map_err(|e| self.refused(e))
    }

    /// Encoding an empty batch runs every cast check once, before any data arrives.
    fn check_encoding(
        &self,
        schema: &SchemaRef,
        columns: &[NativeColumn],
    ) -> Result<(), SinkError> {
        encode_block(
            &RecordBatch::new_empty(schema.clone()),
            columns,
            &mut Vec::new(),
        )
        .map_err(|e| self.refused(e.to_string()))
    }

    fn into_sink(
        self,
        schema: SchemaRef,
        columns: Vec<NativeColumn>,
        (ledger, watermarks): (Ledger, Option<Watermarks>),
        coordinates: CoordinateColumns,
        gates: Gates,
    ) -> ClickHouseSink {
        let column_list: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let ledger = Arc::new(LedgerReader {
            sink: self.name.clone(),
            client: self.client.clone(),
            ledger,
            coordinates,
            scanned: Default::default(),
        });
        ClickHouseSink {
            name: self.name,
            client: self.client,
            database: self.conn.database.clone(),
            column_list: format!("({})", column_list.join(", ")),
            columns,
            settings: self.conn.settings.clone(),
            caps: self.caps,
            pinned: self.pinned,
            schema,
            ledger,
            fence: None,
            gates,
            in_flight: None,
            watermarks,
            watermark_failed: false,
            conn: self.conn.clone(),
            table: self.table.clone(),
        }
    }

    /// Runs DDL.
    async fn run(&self, sql: String) -> Result<(), SinkError> {
        execute(&self.name, self.client.query_raw(&sql)).await
    }

    /// `ALTER TABLE … ADD COLUMN` for each field of `schema` the table lacks, as a
    /// nullable column; whether any was added.
    async fn add_columns(
        &self,
        schema: &SchemaRef,
        columns: &[TableColumn],
    ) -> Result<bool, SinkError> {
        let mut added = false;
        for field in schema.fields() {
            if has_column(field, columns) {
                continue;
            }
            // Rows already in the table have no value for it: the column is nullable
            // whatever the field says.
            let nullable = field.as_ref().clone().with_nullable(true);
            let ty = ddl_type(&nullable, self.caps).map_err(|e| self.refused(e))?;
            let why = format!("the route's schema gained field `{}`", field.name());
            match self.alter_column("ADD", field.name(), &ty, &why).await {
                Ok(()) => {}
                // Another member added it first: DUPLICATE_COLUMN is code 15 on current
                // servers, ILLEGAL_COLUMN (44) on 18.16.
                Err(e) if matches!(server_error_code(&e.to_string()), Some(15 | 44)) => {}
                Err(e) => return Err(e),
            }
            added = true;
        }
        Ok(added)
    }

    /// `ALTER TABLE … MODIFY COLUMN` for each column whose field the route's schema
    /// widened (from `before`) to a type the column cannot hold (int → long, float →
    /// double, decimal precision up: `ingest_sink_api::evolution`), its nullability
    /// kept; whether any changed. A column another member promoted first already has
    /// the type.
    async fn promote_columns(
        &self,
        schema: &SchemaRef,
        before: &SchemaRef,
        columns: &[TableColumn],
    ) -> Result<bool, SinkError> {
        let mut promoted = false;
        for field in schema.fields() {
            let widened = before
                .field_with_name(field.name())
                .is_ok_and(|b| b.data_type() != field.data_type());
            let Some((column, ty)) = narrower_column(field, columns).filter(|_| widened) else {
                continue;
            };
            let wider = field.as_ref().clone().with_nullable(ty.is_nullable());
            let new_type = ddl_type(&wider, self.caps).map_err(|e| self.refused(e))?;
            let why = format!(
                "the route's schema widened field `{}` from {} to {}",
                field.name(),
                column.type_name,
                field.data_type()
            );
            self.alter_column("MODIFY", field.name(), &new_type, &why)
                .await?;
            promoted = true;
        }
        Ok(promoted)
    }

    /// `ALTER TABLE … {ADD|MODIFY} COLUMN name ty`, or with `create_tables: false` a
    /// refusal saying `why` and the statement to run.
    async fn alter_column(
        &self,
        action: &str,
        name: &str,
        ty: &str,
        why: &str,
    ) -> Result<(), SinkError> {
        let sql = format!(
            "ALTER TABLE {}.{} {action} COLUMN {} {ty}",
            quote_ident(&self.conn.database),
            quote_ident(&self.table.table),
            quote_ident(name)
        );
        if !self.conn.create_tables {
            return Err(self.refused(format!("{why}; with create_tables: false, run: {sql}")));
        }
        tracing::info!(sink = %self.name, column = %name, %why, "changing the table while running: {sql}");
        self.run(sql).await
    }

    /// A WARN for each column narrower than its field (a promotion of it would hold
    /// every value): values that do not fit go to the dead-letter topic.
    fn warn_narrower(&self, schema: &SchemaRef, columns: &[TableColumn]) {
        for field in schema.fields() {
            if let Some((column, _)) = narrower_column(field, columns) {
                tracing::warn!(
                    sink = %self.name,
                    column = %column.name,
                    column_type = %column.type_name,
                    field_type = %field.data_type(),
                    "the column is narrower than the route's field: values that do not fit are dead letters; to keep them, ALTER TABLE … MODIFY COLUMN to the wider type"
                );
            }
        }
    }

    /// What the table or schema does not allow: retrying cannot help.
    fn refused(&self, message: impl Into<String>) -> SinkError {
        SinkError::permanent(&self.name, message)
    }
}

/// The column of `field` when its type is narrower than the field's (a promotion of
/// it would hold every value), with that type.
fn narrower_column<'c>(
    field: &Field,
    columns: &'c [TableColumn],
) -> Option<(&'c TableColumn, ChType)> {
    let column = columns.iter().find(|c| &c.name == field.name())?;
    let ty = ChType::parse(&column.type_name).ok()?;
    let from = arrow_type(&ty)?;
    promotes(&from, field.data_type()).then_some((column, ty))
}

/// The Arrow type of a column type promotions apply to (numbers and decimals), else
/// `None`.
fn arrow_type(ty: &ChType) -> Option<arrow_schema::DataType> {
    use arrow_schema::DataType;
    Some(match ty {
        ChType::Nullable(inner) => return arrow_type(inner),
        ChType::Int8 => DataType::Int8,
        ChType::Int16 => DataType::Int16,
        ChType::Int32 => DataType::Int32,
        ChType::Int64 => DataType::Int64,
        ChType::Float32 => DataType::Float32,
        ChType::Float64 => DataType::Float64,
        ChType::Decimal(p, s) => {
            DataType::Decimal128(u8::try_from(*p).ok()?, i8::try_from(*s).ok()?)
        }
        _ => return None,
    })
}

/// `ADD COLUMN` clauses for the coordinate columns the table lacks.
fn missing_coordinate_columns(
    columns: &[TableColumn],
    coordinates: &CoordinateColumns,
) -> Vec<String> {
    coordinates
        .columns()
        .iter()
        .filter(|(column, _)| !columns.iter().any(|c| c.name == *column))
        .map(|(column, ty)| {
            let default = if *ty == "String" { "''" } else { "-1" };
            format!("ADD COLUMN {} {ty} DEFAULT {default}", quote_ident(column))
        })
        .collect()
}
