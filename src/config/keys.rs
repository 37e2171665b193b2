//! The configuration's keys as the structs define them, so the example file and the docs can be
//! checked against the code (`tests/config_docs.rs`) instead of against a hand-kept list.

use serde_json::Value;

use super::Config;
use super::load::leaves;
use crate::handler::coder::CoderConfig;
use crate::handler::exec::ExecConfig;
use crate::handler::webhook::WebhookConfig;
use crate::handler::{HandlerConfig, HandlerKind, MatchRule};

/// The prefix of a handler entry's keys: `handlers[].exec.program` is `program` in the `exec`
/// sub-table of any `[[handlers]]` entry.
pub const HANDLER_KEY_PREFIX: &str = "handlers[].";

/// Every key of the sections (`[agh]`, `[worker]`, …) as `section.key`, read from the serialised
/// defaults: the same tree the loader layers values onto, so the list cannot drift from it.
pub fn section_keys() -> Vec<String> {
    let tree = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    leaves(&tree).into_iter().map(|(key, _)| key).collect()
}

/// Every key of one `[[handlers]]` entry, as `handlers[].name`, `handlers[].match.title`,
/// `handlers[].exec.program` and so on: an entry with every sub-table set (each at its defaults,
/// every match condition given so none is skipped) is serialised and read two levels deep. Maps
/// such as `exec.env` are one key; their own entries are the user's.
pub fn handler_keys() -> Vec<String> {
    let entry = HandlerConfig {
        name: String::new(),
        kind: HandlerKind::Noop,
        matches: MatchRule {
            title: Some(String::new()),
            priority: vec![String::new()],
            metadata_key: Some(String::new()),
            run_metadata_key: Some(String::new()),
            task_metadata_key: Some(String::new()),
        },
        exec: Some(ExecConfig::default()),
        webhook: Some(WebhookConfig::default()),
        coder: Some(CoderConfig::default()),
    };
    let Ok(Value::Object(fields)) = serde_json::to_value(entry) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (field, value) in fields {
        match value {
            Value::Object(table) => keys.extend(
                table
                    .keys()
                    .map(|key| format!("{HANDLER_KEY_PREFIX}{field}.{key}")),
            ),
            _ => keys.push(format!("{HANDLER_KEY_PREFIX}{field}")),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_keys_reach_into_every_sub_table_but_not_into_maps() {
        let keys = handler_keys();
        for key in [
            "handlers[].name",
            "handlers[].kind",
            "handlers[].match.title",
            "handlers[].match.priority",
            "handlers[].match.metadata_key",
            "handlers[].exec.program",
            "handlers[].exec.env",
            "handlers[].webhook.url",
            "handlers[].webhook.headers",
            "handlers[].coder.key",
            "handlers[].coder.on_stop",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("handlers[].exec.env.")));
    }

    #[test]
    fn section_keys_are_the_keys_the_loader_knows() {
        let keys = section_keys();
        assert!(keys.iter().any(|k| k == "worker.lease_seconds"));
        assert!(keys.iter().all(|k| !k.starts_with("handlers")), "{keys:?}");
    }
}
