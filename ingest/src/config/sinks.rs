//! The sinks' parts of the config: each registered sink's top-level section and its
//! block in each route. They are taken out of the YAML before the rest is read
//! strictly, and each is handed to its sink's plug-in to parse and check.

use std::path::Path;

use ingest_sink_api::SinkPlugin;
use serde_norway::Value;

use crate::plugins;

/// One route's sink blocks, by plug-in, in registration order.
pub type Blocks = Vec<(&'static SinkPlugin, serde_json::Value)>;

/// The sink parts of a config.
#[derive(Default)]
pub struct Taken {
    pub sections: Blocks,
    /// One entry per route, in the config's order.
    pub routes: Vec<Blocks>,
}

/// Removes every registered sink's section and route blocks from `config`. A key
/// left empty (`clickhouse:` with nothing under it) counts as absent.
pub fn take_blocks(config: &mut Value) -> Result<Taken, String> {
    let mut taken = Taken::default();
    let Some(top) = config.as_mapping_mut() else {
        return Ok(taken); // Not a mapping: reading the rest says so.
    };
    taken.sections = take(top, "")?;
    if let Some(Value::Sequence(routes)) = top.get_mut("routes") {
        for (i, route) in routes.iter_mut().enumerate() {
            let blocks = match route.as_mapping_mut() {
                Some(route) => take(route, &format!("routes[{i}]."))?,
                None => Vec::new(),
            };
            taken.routes.push(blocks);
        }
    }
    Ok(taken)
}

fn take(map: &mut serde_norway::Mapping, at: &str) -> Result<Blocks, String> {
    let mut blocks = Vec::new();
    for plugin in plugins::registered() {
        match map.remove(plugin.key) {
            None | Some(Value::Null) => {}
            Some(mut block) => {
                untag(&mut block);
                let block = serde_json::to_value(&block)
                    .map_err(|e| format!("at `{at}{}`: {e}", plugin.key))?;
                blocks.push((plugin, block));
            }
        }
    }
    Ok(blocks)
}

/// An unknown-key error lists the keys serde knows; where sink keys are allowed too
/// (the top level and a route: `at` is the unknown key's path), they are added.
pub fn name_sinks_in(at: &str, message: String) -> String {
    let parent = at.rsplit_once('.').map_or("", |(parent, _)| parent);
    let sinks_allowed =
        parent.is_empty() || (parent.starts_with("routes[") && !parent.contains('.'));
    if !sinks_allowed || !message.starts_with("unknown field") {
        return message;
    }
    let keys: Vec<String> = plugins::registered()
        .iter()
        .map(|p| format!("`{}`", p.key))
        .collect();
    format!("{message}, or a sink: {}", keys.join(", "))
}

/// Drops YAML tags (`!secret x` is `x`), as reading the YAML into typed structs does:
/// serialized as JSON a tag would become a map.
fn untag(value: &mut Value) {
    match value {
        Value::Tagged(tagged) => {
            let mut inner = std::mem::take(&mut tagged.value);
            untag(&mut inner);
            *value = inner;
        }
        Value::Sequence(items) => items.iter_mut().for_each(untag),
        Value::Mapping(map) => map.values_mut().for_each(untag),
        _ => {}
    }
}

/// Parses each sink's top-level section.
pub fn open_sections(sections: Blocks, base: &Path) -> Result<super::Sections, String> {
    sections
        .into_iter()
        .map(|(plugin, block)| {
            let section = (plugin.section)(block, base)
                .map_err(|p| format!("at `{}`: {}", p.at, p.message))?;
            Ok((plugin.key, section))
        })
        .collect()
}

/// Secrets the configured sinks read from the environment when the config leaves
/// them out (object store keys), to be masked like the config's own.
pub fn environment_secrets(
    config: &Value,
    env_lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    plugins::registered()
        .into_iter()
        .filter(|plugin| config.get(plugin.key).is_some())
        .flat_map(|plugin| plugin.secret_env.iter().filter_map(|name| env_lookup(name)))
        .collect()
}
