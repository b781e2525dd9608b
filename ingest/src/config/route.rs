//! One route of the config, resolved: the topics it reads, its schema and metadata
//! columns, what happens to bad records, and the table it writes in each sink.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use ingest_sink_api::{RouteBlock, RouteSpec};
use regex::Regex;

use super::sinks::Blocks;
use super::{Config, OnError, Route, RouteConfig, RouteSink, metadata_fields, topics};
use crate::plugins;

/// What earlier routes already claimed: topics, and tables per sink.
#[derive(Default)]
pub(super) struct Seen {
    topics: HashSet<String>,
    tables: HashSet<(&'static str, String)>,
}

/// A problem in a route: the key under `routes[i]` and what is wrong.
type Problem = (String, String);

/// Resolves route `i`; errors name the key (`at `routes[0].batch`: ...`).
pub(super) fn resolve(
    i: usize,
    route: &RouteConfig,
    blocks: Blocks,
    config: &Config,
    base: &Path,
    sections: &super::Sections,
    seen: &mut Seen,
) -> Result<Route, String> {
    let at = |(key, message): Problem| format!("at `routes[{i}].{key}`: {message}");
    let pattern = topic_matcher(route, seen).map_err(at)?;
    route
        .batch
        .check()
        .map_err(|e| at(("batch".into(), e.into())))?;
    let (payload, schema) = super::payload::resolve(route, config, base).map_err(at)?;
    let spec = RouteSpec {
        name: route_name(route),
        payload: schema.clone(),
        metadata: metadata_fields(&route.metadata),
    };
    check_metadata(&spec).map_err(at)?;
    check_time_field(route, &spec).map_err(at)?;
    let sinks = open_tables(blocks, &spec, route, sections, seen).map_err(at)?;
    let (on_error, dead_letter_topic) = error_handling(route, config).map_err(at)?;
    Ok(Route {
        name: spec.name,
        config: route.clone(),
        payload,
        schema,
        pattern,
        on_error,
        dead_letter_topic,
        sinks,
    })
}

/// `topics` or `topic_pattern`, and each listed topic routed once.
fn topic_matcher(route: &RouteConfig, seen: &mut Seen) -> Result<Option<Regex>, Problem> {
    let pattern = match (&route.topic_pattern, route.topics.is_empty()) {
        (Some(_), false) => {
            return Err(problem(
                "topics",
                "give `topics` or `topic_pattern`, not both",
            ));
        }
        (None, true) => return Err(problem("topics", "give `topics` or `topic_pattern`")),
        (Some(p), true) => Some(topics::matcher(p).map_err(|e| problem("topic_pattern", e))?),
        (None, false) => None,
    };
    for topic in &route.topics {
        topics::check_topic_name(topic).map_err(|e| problem("topics", e))?;
        if !seen.topics.insert(topic.clone()) {
            return Err(problem(
                "topics",
                format!("topic `{topic}` is already routed by another route"),
            ));
        }
    }
    Ok(pattern)
}

/// The route's label: its name, else its first topic or its pattern.
fn route_name(route: &RouteConfig) -> String {
    route.name.clone().unwrap_or_else(|| {
        route
            .topics
            .first()
            .cloned()
            .or_else(|| route.topic_pattern.clone())
            .unwrap_or_default()
    })
}

/// A metadata column must not shadow a payload field.
fn check_metadata(spec: &RouteSpec) -> Result<(), Problem> {
    match spec
        .metadata
        .iter()
        .find(|(column, _)| spec.payload.field_with_name(column).is_ok())
    {
        Some((column, _)) => Err(problem(
            "metadata",
            format!("column `{column}` is also a schema field"),
        )),
        None => Ok(()),
    }
}

/// `watermark.time_field` names a timestamp or date field of the payload.
fn check_time_field(route: &RouteConfig, spec: &RouteSpec) -> Result<(), Problem> {
    use arrow_schema::DataType;
    let Some(name) = &route.watermark.time_field else {
        return Ok(());
    };
    let field = spec.payload.field_with_name(name).map_err(|_| {
        problem(
            "watermark.time_field",
            format!("`{name}` is not a field of the route's schema"),
        )
    })?;
    match field.data_type() {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => Ok(()),
        other => Err(problem(
            "watermark.time_field",
            format!("`{name}` is {other}, not a timestamp or a date"),
        )),
    }
}

/// Each sink block of the route, parsed by its sink: the route needs one at least,
/// its sink's section, a table no other route writes, and sound batch limits.
fn open_tables(
    blocks: Blocks,
    spec: &RouteSpec,
    route: &RouteConfig,
    sections: &super::Sections,
    seen: &mut Seen,
) -> Result<Vec<RouteSink>, Problem> {
    if blocks.is_empty() {
        let keys: Vec<String> = plugins::registered()
            .iter()
            .map(|p| format!("`{}`", p.key))
            .collect();
        let first = plugins::registered()[0].key;
        return Err(problem(
            first,
            format!("the route has no sink (add {})", keys.join(" or ")),
        ));
    }
    let mut sinks = Vec::with_capacity(blocks.len());
    for (plugin, block) in blocks {
        let key = plugin.key;
        let Some((_, section)) = sections.iter().find(|(k, _)| *k == key) else {
            return Err(problem(
                key,
                format!(
                    "the route writes to {} but there is no top-level `{key}` section",
                    plugin.title
                ),
            ));
        };
        let block = RouteBlock {
            key,
            value: block,
            route: spec,
        };
        let table = Arc::clone(section)
            .table(block)
            .map_err(|p| (p.at, p.message))?;
        if !seen.tables.insert((key, table.name.clone())) {
            return Err(problem(
                &format!("{key}.table"),
                format!(
                    "{} table `{}` is written by another route; route both topics in one route",
                    plugin.title, table.name
                ),
            ));
        }
        route
            .batch
            .overridden(&table.batch)
            .check()
            .map_err(|e| problem(&format!("{key}.batch"), e))?;
        sinks.push(RouteSink {
            key,
            name: table.name,
            batch: table.batch,
            table: table.table,
        });
    }
    Ok(sinks)
}

/// Where bad records go: the route's dead-letter topic or the global one, and
/// whether the route stops or sends them there.
fn error_handling(
    route: &RouteConfig,
    config: &Config,
) -> Result<(OnError, Option<String>), Problem> {
    let dead_letter_topic = route
        .dead_letter
        .as_ref()
        .or(config.dead_letter.as_ref())
        .map(|d| d.topic.clone());
    let on_error = match (route.on_error, &dead_letter_topic) {
        (Some(OnError::DeadLetter), None) => {
            return Err(problem(
                "on_error",
                "`dead_letter` needs a dead-letter topic (`dead_letter.topic`)",
            ));
        }
        (Some(mode), _) => mode,
        (None, Some(_)) => OnError::DeadLetter,
        (None, None) => OnError::Fail,
    };
    Ok((on_error, dead_letter_topic))
}

fn problem(key: &str, message: impl std::fmt::Display) -> Problem {
    (key.to_string(), message.to_string())
}
