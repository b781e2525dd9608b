//! Widening a route while running: a writer schema (a new registry version) has fields
//! the route's table lacks, or wider types (int → long, float → double, decimal
//! precision up). The route's decoded rows are written first and every write
//! in flight finished (rows of the old shape never meet the new columns), then each sink
//! adds the columns (idempotent: other members do the same), then the route decodes
//! into the wider schema. The record that brought the new schema is taken afterwards,
//! so no position passes it before its columns exist.

use std::time::Duration;

use super::Pipeline;
use crate::batch::RouteBatch;
use crate::decode::{Payload, own_schema, widens};

/// How a widening ended.
pub(super) enum Widened {
    /// The sinks' tables and the route's decoder are wider (or nothing was to widen).
    Done,
    /// The service is stopping: nothing changed but writes made.
    Stopping,
    /// Not applied, and why: the schema does not only widen, or a sink refused the
    /// change for good (a column ClickHouse cannot retype, `create_tables: false`).
    /// Sinks that changed already keep their wider tables, which take the route's
    /// rows as before.
    Refused(String),
}

impl Pipeline<'_> {
    /// Widens `route` to the schema its new writer version brings.
    pub(super) async fn widen_to(
        &mut self,
        route: &mut RouteBatch,
        payload: Payload,
    ) -> anyhow::Result<Widened> {
        match own_schema(&payload) {
            Ok(Some(wider)) => self.widen(route, payload, wider).await,
            Ok(None) => Ok(Widened::Done),
            Err(e) => Ok(Widened::Refused(format!(
                "the newer writer schema has no table schema: {e}"
            ))),
        }
    }

    /// Reads every route's schema file again (SIGHUP) and widens the routes whose
    /// schema gained fields or wider types. A file that does not load, or a change
    /// that is not applied, is an ERROR, and the route keeps its schema.
    pub(super) async fn reread_schemas(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        tracing::info!("SIGHUP: reading the routes' schema files again");
        for route in routes.iter_mut() {
            match self.loaded.reread_schema(route.index) {
                Ok(Some((payload, schema))) if schema != route.route.schema => {
                    match self.widen(route, payload, schema).await? {
                        Widened::Done => {}
                        Widened::Stopping => return Ok(()),
                        Widened::Refused(why) => {
                            tracing::error!(route = %route.route.name, %why, "the edited schema is not applied; the route keeps its schema")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(route = %route.route.name, error = %e, "the schema file did not load; the route keeps its schema")
                }
            }
        }
        Ok(())
    }

    /// Widens `route` to `payload` read as `wider` when that only adds fields (their
    /// columns are nullable: rows before them have no value) and promotes types.
    pub(super) async fn widen(
        &mut self,
        route: &mut RouteBatch,
        payload: Payload,
        wider: arrow_schema::SchemaRef,
    ) -> anyhow::Result<Widened> {
        let old = route.route.schema.clone();
        if let Err(why) = widens(&old, &wider) {
            return Ok(Widened::Refused(format!(
                "the new schema does not only add columns or promote their types: {why}"
            )));
        }
        let added: Vec<String> = wider
            .fields()
            .iter()
            .filter(|f| old.field_with_name(f.name()).is_err())
            .map(|f| f.name().clone())
            .collect();
        let promoted: Vec<String> = wider
            .fields()
            .iter()
            .filter(|f| {
                old.field_with_name(f.name())
                    .is_ok_and(|o| o.data_type() != f.data_type())
            })
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        tracing::info!(route = %route.route.name, ?added, ?promoted, "the route's schema widened: changing the tables while running");
        self.flush(route, true).await?;
        for lane in 0..route.lanes.len() {
            self.finish_lane(route, lane).await?;
        }
        let output = route.output_schema_of(&wider);
        for lane in 0..route.lanes.len() {
            match self.widen_lane(route, lane, &output).await? {
                Widened::Done => {}
                other => return Ok(other),
            }
        }
        route.widen(payload, wider)?;
        tracing::info!(route = %route.route.name, ?added, ?promoted, "columns added in every sink");
        Ok(Widened::Done)
    }

    /// One sink adds or promotes the columns, retried while it fails transiently.
    async fn widen_lane(
        &mut self,
        route: &mut RouteBatch,
        lane: usize,
        output: &arrow_schema::SchemaRef,
    ) -> anyhow::Result<Widened> {
        let mut stop = self.shutdown.clone();
        let mut wait = Duration::from_millis(200);
        let state = &mut route.lanes[lane];
        let sink = state
            .sink
            .as_mut()
            .expect("no write in flight after finish_lane");
        loop {
            match sink.evolve(output.clone()).await {
                Ok(()) => {
                    self.health.set_sink_failing(&state.name, false);
                    return Ok(Widened::Done);
                }
                Err(e) if e.is_retryable() => {
                    self.health.set_sink_failing(&state.name, true);
                    tracing::warn!(sink = %state.name, error = %e, "changing the table failed; retrying");
                }
                Err(e) => {
                    self.health.set_sink_failing(&state.name, false);
                    return Ok(Widened::Refused(format!(
                        "{} refused the change: {e}",
                        state.name
                    )));
                }
            }
            if *stop.borrow() {
                return Ok(Widened::Stopping);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(Widened::Stopping),
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}
