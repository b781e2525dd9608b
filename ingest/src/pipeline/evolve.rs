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

impl Pipeline<'_> {
    /// Widens `route` to the schema its new writer version brings.
    pub(super) async fn widen_to(
        &mut self,
        route: &mut RouteBatch,
        payload: Payload,
    ) -> anyhow::Result<bool> {
        match own_schema(&payload) {
            Ok(Some(wider)) => self.widen(route, payload, wider).await,
            Ok(None) => Ok(true),
            Err(e) => {
                tracing::warn!(route = %route.route.name, error = %e, "a newer writer schema has no table; its new fields are skipped");
                Ok(true)
            }
        }
    }

    /// Reads every route's schema file again (SIGHUP) and widens the routes whose
    /// schema gained fields. A file that does not load is an ERROR, and the route keeps
    /// its schema.
    pub(super) async fn reread_schemas(&mut self, routes: &mut [RouteBatch]) -> anyhow::Result<()> {
        tracing::info!("SIGHUP: reading the routes' schema files again");
        for route in routes.iter_mut() {
            match self.loaded.reread_schema(route.index) {
                Ok(Some((payload, schema))) if schema != route.route.schema => {
                    if !self.widen(route, payload, schema).await? {
                        return Ok(());
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
    /// columns are nullable: rows before them have no value) and promotes types;
    /// `false` when the service is stopping (nothing changed then but writes made).
    pub(super) async fn widen(
        &mut self,
        route: &mut RouteBatch,
        payload: Payload,
        wider: arrow_schema::SchemaRef,
    ) -> anyhow::Result<bool> {
        let old = route.route.schema.clone();
        if let Err(why) = widens(&old, &wider) {
            tracing::error!(route = %route.route.name, %why, "the new schema is not applied: it does not only add columns or promote their types");
            return Ok(true);
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
            if !self.widen_lane(route, lane, &output).await? {
                return Ok(false);
            }
        }
        route.widen(payload, wider)?;
        tracing::info!(route = %route.route.name, ?added, "columns added in every sink");
        Ok(true)
    }

    /// One sink adds the columns, retried while it fails transiently; `false` when the
    /// service stops meanwhile.
    async fn widen_lane(
        &mut self,
        route: &mut RouteBatch,
        lane: usize,
        output: &arrow_schema::SchemaRef,
    ) -> anyhow::Result<bool> {
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
                    return Ok(true);
                }
                Err(e) if e.is_retryable() => {
                    self.health.set_sink_failing(&state.name, true);
                    tracing::warn!(sink = %state.name, error = %e, "adding columns failed; retrying");
                }
                Err(e) => return Err(e.into()),
            }
            if *stop.borrow() {
                return Ok(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(false),
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }
}
