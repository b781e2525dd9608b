//! Insert gates: one writer per Kafka partition, decided by the ClickHouse server.
//!
//! ClickHouse has no conditional insert, so checking ownership before an insert leaves
//! a window: a member paused after its check (or a broker that hands one partition to
//! two members) can land rows another member already wrote. Gates close it with two
//! things the server does serialize:
//!
//! - A writer never inserts into the table itself but into its own *gate*: a `Null`
//!   table with the table's columns and a materialized view passing the rows on to the
//!   table. Its ledger entries go through a second `Null` table of the gate (`_pos`),
//!   whose view feeds the position ledger (see [`crate::ledger`]).
//! - `DROP TABLE` of a gate waits for the inserts running through it, and every later
//!   insert into it fails with "table doesn't exist" (measured on 18.16; current servers
//!   need `SYNC` for the wait).
//!
//! A writer that starts writing partitions registers its gate in a registry table under
//! an order `(sequence, token)` (the sequence number one past the highest seen; column
//! `k` of the registry), creates it, then reads the
//! registry for the gates registered for the same partitions: a higher one means another
//! writer took them later (this writer gives them up and says so); every lower one is
//! dropped. Only then does it read the table's positions and insert. Registration comes
//! before the read, so of two writers of a partition at least one sees the other: the
//! higher drops the lower (waiting out its inserts under way) before reading positions,
//! or the lower backs off before writing. Either way, once a writer has read positions,
//! no other writer's insert into those partitions can land, whatever the broker says.
//!
//! A partition lost this way stays refused until the consumer group moves (a new
//! rebalance on this member), so two members both told they own it do not take it from
//! each other on every batch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clickhouse::query::Query;
use ingest_sink_api::SinkError;

use crate::client::{
    bind_all, bound_qualified, execute, execute_within, json_number, pin, placeholders, select,
    server_error_code,
};
use crate::ledger::Ledger;
use crate::types::{ServerCaps, quote_ident};

/// A Kafka partition: (topic, partition).
pub use ingest_sink_api::Partition;

/// How long dropping a gate may take. The DROP waits for the inserts running through
/// the gate: ours end within the insert's own timeouts (3 minutes), but one whose writer
/// stopped in the middle of its body is held open until the server's `receive_timeout`
/// (300 s by default; 18.16 ignores it as a URL setting). A shorter deadline would only
/// fail the write, and its retry wait for the same insert again.
const GATE_DROP_TIMEOUT: Duration = Duration::from_secs(330);

/// The gate this writer inserts through.
#[derive(Debug, Clone)]
struct Gate {
    /// Its registration's sequence number: a gate registered later has a higher one.
    sequence: u64,
    token: String,
    admitted: BTreeSet<Partition>,
    /// The consumer generation it was opened in.
    generation: u64,
}

/// What a write may do: the table to insert into and the partitions it must not write.
#[derive(Debug)]
pub struct Admission {
    /// The gate's token (empty when no partition is admitted).
    pub token: String,
    /// The gate table's name (in the sink's database).
    pub table: String,
    /// The gate's table for ledger entries.
    pub entries: String,
    /// Partitions another writer took after this one: their rows are not written.
    pub refused: Vec<Partition>,
}

/// The gates of one table and this writer's own.
pub struct Gates {
    sink: String,
    client: clickhouse::Client,
    database: String,
    table: String,
    /// What follows `DROP TABLE … ` of a gate so that it waits for the inserts running
    /// through it (see [`drop_clause`]).
    drop_clause: &'static str,
    /// Settings pinning what an acknowledged registration means (see
    /// [`crate::client::pin`]): visible to the next read of the registry.
    pinned: Vec<(&'static str, &'static str)>,
    current: Option<Gate>,
    /// This writer's gate that another writer dropped, until the next admission looks
    /// at who took which partitions.
    closed: Option<Gate>,
    /// Partitions taken by a later gate, with the consumer generation they were lost in.
    lost: BTreeMap<Partition, u64>,
    /// Tokens this writer registered whose registrations may still be in the registry:
    /// never "later" than its own gate, whatever their order (a registration whose
    /// INSERT got no answer in time may land after the retry's).
    own: BTreeSet<String>,
}

impl Gates {
    pub fn new(
        sink: &str,
        client: clickhouse::Client,
        database: &str,
        table: &str,
        caps: ServerCaps,
        database_engine: Option<&str>,
        pinned: Vec<(&'static str, &'static str)>,
    ) -> Self {
        Self {
            sink: sink.into(),
            client,
            database: database.into(),
            table: table.into(),
            drop_clause: drop_clause(database_engine, caps),
            pinned,
            current: None,
            closed: None,
            lost: BTreeMap::new(),
            own: BTreeSet::new(),
        }
    }

    /// The token of this writer's open gate, if any.
    pub fn current_token(&self) -> Option<String> {
        self.current.as_ref().map(|g| g.token.clone())
    }

    /// What follows `DROP TABLE … ` of a gate: `" SYNC"`, `" NO DELAY"` or nothing.
    pub fn drop_clause(&self) -> &'static str {
        self.drop_clause
    }

    /// The name of the gate registry of `table` (in the table's database).
    pub fn registry_of(table: &str) -> String {
        format!("{table}__ingest_gates")
    }

    fn registry(&self) -> String {
        Self::registry_of(&self.table)
    }

    fn gate_name(&self, token: &str) -> String {
        format!("{}__gate_{token}", self.table)
    }

    fn qualified(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.database), quote_ident(name))
    }

    /// The registry table (idempotent).
    pub fn create_statement(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (k UInt64, token String, topic String, partition Int32, \
             at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY (topic, partition, k)",
            self.qualified(&self.registry())
        )
    }

    /// Admits a write of `partitions`: reuses this writer's gate when it already admits
    /// them, else registers a new one (taking the partitions from older gates).
    /// `generation` counts the consumer's rebalances: a partition lost to another writer
    /// is refused until it moves.
    pub async fn admit(
        &mut self,
        partitions: &[Partition],
        generation: u64,
    ) -> Result<Admission, SinkError> {
        self.lost.retain(|_, lost_in| *lost_in == generation);
        if let Some(closed) = self.closed.take() {
            self.taken_from(&closed, generation).await?;
        }
        let refused: Vec<Partition> = partitions
            .iter()
            .filter(|p| self.lost.contains_key(*p))
            .cloned()
            .collect();
        let wanted: BTreeSet<Partition> = partitions
            .iter()
            .filter(|p| !self.lost.contains_key(*p))
            .cloned()
            .collect();
        let covered = self
            .current
            .as_ref()
            .is_some_and(|g| wanted.is_subset(&g.admitted));
        if !covered && !wanted.is_empty() {
            let mut all = wanted.clone();
            // The gate's other partitions go along only while no rebalance happened
            // since it opened: after one, some may be another writer's, whose gate a
            // new registration would drop (stalling that partition until the next
            // rebalance; found by the protocol simulation).
            if let Some(g) = self.current.as_ref().filter(|g| g.generation == generation) {
                all.extend(
                    g.admitted
                        .iter()
                        .filter(|p| !self.lost.contains_key(*p))
                        .cloned(),
                );
            }
            self.acquire(all, generation).await?;
        }
        let refused = refused
            .into_iter()
            .chain(
                partitions
                    .iter()
                    .filter(|p| self.lost.contains_key(*p) && wanted.contains(*p))
                    .cloned(),
            )
            .collect();
        let (token, table) = match &self.current {
            Some(g) => (g.token.clone(), self.gate_name(&g.token)),
            None => (String::new(), String::new()),
        };
        let entries = format!("{table}_pos");
        Ok(Admission {
            token,
            table,
            entries,
            refused,
        })
    }

    /// Makes every insert sent through this writer's gate `token` unable to land from
    /// now on: drops the gate, which waits for the inserts running through it, and any
    /// insert arriving later (one a proxy still holds, say) fails with UNKNOWN_TABLE.
    /// The next admission opens a new gate. For an insert whose outcome is unknown, and
    /// after the table gained columns (a gate copies the table's columns); `why` says
    /// which in the log.
    pub async fn retire(&mut self, token: &str, why: &str) -> Result<(), SinkError> {
        self.drop_gate(token).await?;
        if self.current.as_ref().is_some_and(|g| g.token == token) {
            let gate = self.gate_name(token);
            tracing::info!(sink = %self.sink, %gate, "insert gate retired {why}");
            self.current = None;
        }
        Ok(())
    }

    /// True when `error` says this writer's gate is gone: another writer took (some of)
    /// its partitions. The gate is forgotten; the next admission finds out which.
    ///
    /// Two errors say so. UNKNOWN_TABLE (60) naming the gate: the insert came after the
    /// DROP. TABLE_IS_DROPPED (218): the insert resolved the gate while another writer's
    /// DROP of it was waiting for an insert under way, and was refused when it went to
    /// lock the gate, once the DROP was done (issue 16, item 12a). 18.16 names no table
    /// in that message ("Table is dropped"), so the gate's absence from the server
    /// decides: a 218 about another table (the target dropped) leaves the gate in place
    /// and stays an error. Either refusal comes before the server reads a row of the
    /// insert, and the reply says the insert is over: its outcome is known (nothing
    /// landed), and the write re-admits and re-reads positions before inserting again.
    pub async fn closed_by(&mut self, error: &clickhouse::error::Error) -> Result<bool, SinkError> {
        let clickhouse::error::Error::BadResponse(text) = error else {
            return Ok(false);
        };
        let Some(gate) = &self.current else {
            return Ok(false);
        };
        let name = self.gate_name(&gate.token);
        let closed = match server_error_code(text) {
            Some(60) => text.contains(&name),
            Some(218) => !self.table_exists(&name).await?,
            _ => false,
        };
        if closed {
            self.closed = self.current.take();
        }
        Ok(closed)
    }

    /// Whether the table `name` (in the sink's database) exists on the server now.
    /// 18.16 fails a read of `system.tables` with UNKNOWN_TABLE (60) when a table of the
    /// database goes while it lists them, as another writer's DROP of a gate's
    /// companions does: the read is taken again (`make test` saw it fail once, the
    /// error taken as permanent).
    async fn table_exists(&self, name: &str) -> Result<bool, SinkError> {
        let mut attempts = 0;
        loop {
            let query = self
                .client
                .query("SELECT count() AS n FROM system.tables WHERE database = ? AND name = ?")
                .bind(&self.database)
                .bind(name);
            match self.query(query).await {
                Ok(rows) => return Ok(rows.first().is_some_and(|r| number(&r["n"]) > 0)),
                Err(e) if attempts < 5 && e.message.contains("Code: 60") => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After `closed` was dropped by another writer: the partitions registered after it
    /// are lost, unless the consumer group moved since it was opened (this member was
    /// given them again: it takes them back).
    async fn taken_from(&mut self, closed: &Gate, generation: u64) -> Result<(), SinkError> {
        if generation != closed.generation {
            return Ok(());
        }
        let mine = (closed.sequence, closed.token.clone());
        let taken: BTreeSet<Partition> = self
            .registered(&closed.admitted, &closed.token)
            .await?
            .into_iter()
            .filter(|(order, _)| *order > mine && !self.own.contains(&order.1))
            .map(|(_, p)| p)
            .collect();
        if !taken.is_empty() {
            tracing::warn!(sink = %self.sink, partitions = ?taken,
                "another instance took these partitions: leaving them to it until the group rebalances");
        }
        for p in taken {
            self.lost.insert(p, generation);
        }
        Ok(())
    }

    /// Registers and creates a gate for `wanted`, gives up the partitions a later gate
    /// holds, drops the earlier gates of the rest.
    async fn acquire(
        &mut self,
        mut wanted: BTreeSet<Partition>,
        generation: u64,
    ) -> Result<(), SinkError> {
        let previous = self.current.take();
        loop {
            let sequence = self.highest_sequence().await? + 1;
            let token = uuid::Uuid::new_v4().simple().to_string();
            self.own.insert(token.clone());
            self.register(sequence, &token, &wanted).await?;
            self.create_gate(&token).await?;
            let mine = (sequence, token.clone());
            let mut later = BTreeSet::new();
            let mut earlier = BTreeSet::new();
            for (order, partition) in self.registered(&wanted, &token).await? {
                if order > mine && !self.own.contains(&order.1) {
                    later.insert(partition);
                } else {
                    earlier.insert(order.1);
                }
            }
            if !later.is_empty() {
                tracing::warn!(sink = %self.sink, partitions = ?later,
                    "another instance started writing these partitions later: leaving them to it");
                self.drop_gate(&token).await?;
                for p in &later {
                    self.lost.insert(p.clone(), generation);
                    wanted.remove(p);
                }
                if wanted.is_empty() {
                    return Ok(());
                }
                continue;
            }
            if let Some(previous) = &previous {
                earlier.insert(previous.token.clone());
            }
            // A gate registered but not created yet sees this registration once created,
            // and backs off.
            let existing = self.existing_gates().await?;
            for other in earlier.iter().filter(|t| existing.contains(*t)) {
                // Waits for the inserts running through it.
                self.drop_gate(other).await?;
            }
            self.forget(&earlier).await?;
            self.own.retain(|t| !earlier.contains(t));
            tracing::info!(sink = %self.sink, gate = %self.gate_name(&token), sequence,
                partitions = wanted.len(), dropped = earlier.len(), "insert gate opened");
            self.current = Some(Gate {
                sequence,
                generation,
                token,
                admitted: wanted,
            });
            return Ok(());
        }
    }

    /// Removes the registrations of gates that are gone, so the registry holds about one
    /// gate per partition however often partitions move. Never this writer's own: a
    /// later writer must see it.
    async fn forget(&self, tokens: &BTreeSet<String>) -> Result<(), SinkError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let statement = self.client.query(&format!(
            "ALTER TABLE {} DELETE WHERE token IN ({})",
            bound_qualified(&self.database, &self.registry()),
            placeholders(tokens.len())
        ));
        self.run(bind_all(statement, tokens.iter().map(String::as_str)))
            .await
    }

    /// Tokens of the gates (or their leftover views) on the server now.
    async fn existing_gates(&self) -> Result<BTreeSet<String>, SinkError> {
        let prefix = self.gate_name("");
        let query = self
            .client
            .query("SELECT name FROM system.tables WHERE database = ? AND startsWith(name, ?)")
            .bind(&self.database)
            .bind(&prefix);
        Ok(self
            .query(query)
            .await?
            .iter()
            .filter_map(|r| {
                let rest = r["name"].as_str()?.strip_prefix(&prefix)?;
                Some(rest.split('_').next()?.to_string())
            })
            .collect())
    }

    async fn highest_sequence(&self) -> Result<u64, SinkError> {
        let query = self.client.query_raw(&format!(
            "SELECT max(k) AS k FROM {}",
            self.qualified(&self.registry())
        ));
        let rows = self.query(query).await?;
        Ok(rows.first().map_or(0, |r| number(&r["k"])))
    }

    async fn register(
        &self,
        sequence: u64,
        token: &str,
        partitions: &BTreeSet<Partition>,
    ) -> Result<(), SinkError> {
        let values = vec![format!("({sequence}, ?, ?, ?)"); partitions.len()];
        let mut statement = self.client.query(&format!(
            "INSERT INTO {} (k, token, topic, partition) VALUES {}",
            bound_qualified(&self.database, &self.registry()),
            values.join(", ")
        ));
        for p in partitions {
            statement = statement.bind(token).bind(&p.topic).bind(p.partition);
        }
        self.run(pin(statement, &self.pinned)).await
    }

    /// Other gates registered for any of `partitions`: ((sequence, token), partition).
    async fn registered(
        &self,
        partitions: &BTreeSet<Partition>,
        token: &str,
    ) -> Result<Vec<((u64, String), Partition)>, SinkError> {
        let query = self.client.query(&format!(
            "SELECT k, token, topic, partition FROM {} WHERE (topic, partition) IN ({}) \
             AND token != ?",
            bound_qualified(&self.database, &self.registry()),
            placeholders(partitions.len())
        ));
        let query = bind_all(
            query,
            partitions.iter().map(|p| (p.topic.as_str(), p.partition)),
        )
        .bind(token);
        Ok(self
            .query(query)
            .await?
            .iter()
            .map(|r| {
                (
                    (
                        number(&r["k"]),
                        r["token"].as_str().unwrap_or("").to_string(),
                    ),
                    Partition::new(
                        r["topic"].as_str().unwrap_or(""),
                        number(&r["partition"]) as i32,
                    ),
                )
            })
            .collect())
    }

    async fn create_gate(&self, token: &str) -> Result<(), SinkError> {
        let gate = self.gate_name(token);
        self.run_sql(format!(
            "CREATE TABLE {} AS {} ENGINE = Null",
            self.qualified(&gate),
            self.qualified(&self.table)
        ))
        .await?;
        self.run_sql(format!(
            "CREATE MATERIALIZED VIEW {} TO {} AS SELECT * FROM {}",
            self.qualified(&format!("{gate}_rows")),
            self.qualified(&self.table),
            self.qualified(&gate)
        ))
        .await?;
        let ledger = Ledger::new(&self.database, &self.table);
        for sql in ledger.entry_gate_statements(&format!("{gate}_pos")) {
            self.run_sql(sql).await?;
        }
        Ok(())
    }

    /// Drops a gate: its tables first (waiting for their inserts), then their views
    /// (gates of earlier releases lack `_pos`).
    async fn drop_gate(&self, token: &str) -> Result<(), SinkError> {
        let gate = self.gate_name(token);
        let sync = self.drop_clause;
        for name in [
            gate.clone(),
            format!("{gate}_pos"),
            format!("{gate}_rows"),
            format!("{gate}_pos_ledger"),
            format!("{gate}_ledger"),
        ] {
            let statement = self.client.query_raw(&format!(
                "DROP TABLE IF EXISTS {}{sync}",
                self.qualified(&name)
            ));
            execute_within(&self.sink, statement, GATE_DROP_TIMEOUT).await?;
        }
        Ok(())
    }

    async fn run(&self, statement: Query) -> Result<(), SinkError> {
        execute(&self.sink, statement).await
    }

    /// Runs DDL (no values to bind).
    async fn run_sql(&self, sql: String) -> Result<(), SinkError> {
        self.run(self.client.query_raw(&sql)).await
    }

    async fn query(&self, query: Query) -> Result<Vec<serde_json::Value>, SinkError> {
        select(&self.sink, query).await
    }
}

/// What follows `DROP TABLE … ` of a gate in a database of `engine` (from
/// `system.databases`; `None` where the server does not say) so that the DROP waits for
/// the inserts running through the gate, which the gates rely on (issue 16, item 12b):
/// - `Atomic` and `Replicated`: a DROP detaches the table and drops it in the
///   background once unused, without waiting; `SYNC` waits (the keyword since 20.10),
///   `NO DELAY` before it (Atomic exists since 20.1, experimental until 20.10, where it
///   became the default; the version rule alone sent nothing there);
/// - `Ordinary` (18.16's only kind, still possible on current servers): a DROP locks the
///   table, waiting for the queries using it, with or without `SYNC`;
/// - so: `SYNC` wherever the server knows it (every engine accepts it, and it never
///   waits less), `NO DELAY` for Atomic and Replicated databases of older servers,
///   nothing otherwise (18.16 refuses both keywords).
pub(crate) fn drop_clause(engine: Option<&str>, caps: ServerCaps) -> &'static str {
    match engine {
        _ if caps.version >= (20, 10) => " SYNC",
        Some("Atomic" | "Replicated") => " NO DELAY",
        _ => "",
    }
}

/// A number from a JSON output row, 0 when there is none.
fn number(value: &serde_json::Value) -> u64 {
    json_number(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_dropped_waiting_for_their_inserts_in_every_database_engine() {
        let v = |major, minor| ServerCaps {
            version: (major, minor),
        };
        assert_eq!(drop_clause(Some("Ordinary"), v(18, 16)), "");
        assert_eq!(drop_clause(None, v(18, 16)), "");
        assert_eq!(drop_clause(Some("Ordinary"), v(26, 9)), " SYNC");
        assert_eq!(drop_clause(Some("Ordinary"), v(20, 5)), "");
        assert_eq!(drop_clause(Some("Atomic"), v(26, 9)), " SYNC");
        assert_eq!(drop_clause(Some("Replicated"), v(26, 9)), " SYNC");
        // Atomic before SYNC was a keyword, and before it was the default: the version
        // rule (SYNC from 20.10) sent nothing there, and the DROP did not wait.
        assert_eq!(drop_clause(Some("Atomic"), v(20, 5)), " NO DELAY");
        assert_eq!(drop_clause(Some("Memory"), v(26, 9)), " SYNC");
        assert_eq!(drop_clause(None, v(26, 9)), " SYNC");
        assert_eq!(drop_clause(None, v(20, 3)), "");
    }
}
