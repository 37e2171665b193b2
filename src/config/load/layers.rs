//! The tree the layers are merged into: each value checked against its key's type and recorded
//! with its origin, and unknown keys reported with the nearest known one.

use std::collections::BTreeMap;
use std::path::Path;

use config::ValueKind;
use serde_json::Value;

use super::handlers::{HANDLERS_KEY, toml_to_json};
use super::kind::{Kind, describe_text, describe_toml};
use crate::config::Config;
use crate::config::error::ConfigError;
use crate::config::origin::Origin;
use crate::config::suggest::closest;

/// Flattens a two-level JSON tree into (`section.key`, value) pairs.
pub(in crate::config) fn leaves(tree: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    if let Value::Object(sections) = tree {
        for (section, keys) in sections {
            if let Value::Object(keys) = keys {
                for (key, value) in keys {
                    out.push((format!("{section}.{key}"), value));
                }
            }
        }
    }
    out
}

/// The tree being layered, the type of each key, and the origin of each current value.
pub(super) struct Layers {
    pub(super) tree: Value,
    kinds: BTreeMap<String, Kind>,
    sections: Vec<String>,
    pub(super) origins: BTreeMap<String, Origin>,
}

impl Layers {
    pub(super) fn new() -> Result<Self, ConfigError> {
        let tree = serde_json::to_value(Config::default()).map_err(|e| ConfigError::BadValue {
            key: "(defaults)".to_string(),
            expected: "serializable defaults".to_string(),
            found: e.to_string(),
            origin: Origin::Default,
        })?;
        let kinds = leaves(&tree)
            .into_iter()
            .map(|(key, value)| {
                let kind = Kind::of(&key, value);
                (key, kind)
            })
            .collect::<BTreeMap<_, _>>();
        let sections = match &tree {
            Value::Object(sections) => sections.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut origins: BTreeMap<String, Origin> =
            kinds.keys().map(|k| (k.clone(), Origin::Default)).collect();
        origins.insert(HANDLERS_KEY.to_string(), Origin::Default);
        Ok(Self {
            tree,
            kinds,
            sections,
            origins,
        })
    }

    fn unknown(&self, key: &str, origin: Origin) -> ConfigError {
        let candidates = self
            .kinds
            .keys()
            .map(String::as_str)
            .chain(self.sections.iter().map(String::as_str));
        ConfigError::UnknownKey {
            key: key.to_string(),
            origin,
            suggestion: closest(key, candidates).map(str::to_string),
        }
    }

    pub(super) fn set(&mut self, key: &str, value: Value, origin: Origin) {
        let Some((section, leaf)) = key.split_once('.') else {
            return;
        };
        if let Some(Value::Object(keys)) = self.tree.get_mut(section) {
            keys.insert(leaf.to_string(), value);
            self.origins.insert(key.to_string(), origin);
        }
    }

    pub(super) fn apply_file(
        &mut self,
        table: &config::Map<String, config::Value>,
        path: &Path,
        problems: &mut Vec<ConfigError>,
    ) {
        let origin = || Origin::File(path.to_path_buf());
        // HashMap order is random; sorting keeps error lists stable between runs.
        let mut sections: Vec<_> = table.iter().collect();
        sections.sort_by(|a, b| a.0.cmp(b.0));
        for (section, value) in sections {
            if section == HANDLERS_KEY {
                self.apply_handlers(toml_to_json(value), origin(), problems);
                continue;
            }
            if !self.sections.contains(section) {
                problems.push(self.unknown(section, origin()));
                continue;
            }
            let ValueKind::Table(keys) = &value.kind else {
                problems.push(ConfigError::BadValue {
                    key: section.clone(),
                    expected: format!("a table (a [{section}] section)"),
                    found: describe_toml(section, value),
                    origin: origin(),
                });
                continue;
            };
            let mut keys: Vec<_> = keys.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (leaf, value) in keys {
                let key = format!("{section}.{leaf}");
                let Some(kind) = self.kinds.get(&key).copied() else {
                    problems.push(self.unknown(&key, origin()));
                    continue;
                };
                match kind.convert_toml(value) {
                    Some(parsed) => self.set(&key, parsed, origin()),
                    None => problems.push(ConfigError::BadValue {
                        found: describe_toml(&key, value),
                        key,
                        expected: kind.expected(),
                        origin: origin(),
                    }),
                }
            }
        }
    }

    pub(super) fn apply_text(
        &mut self,
        key: &str,
        raw: &str,
        origin: Origin,
        problems: &mut Vec<ConfigError>,
    ) {
        if key == HANDLERS_KEY {
            match serde_json::from_str::<Value>(raw.trim()) {
                Ok(value) => self.apply_handlers(value, origin, problems),
                Err(err) => problems.push(ConfigError::BadValue {
                    key: key.to_string(),
                    expected: "a JSON list of handler tables, e.g. [{\"name\":\"main\",\"kind\":\"exec\",\"exec\":{\"program\":\"/usr/local/bin/handle-task\"}}]".to_string(),
                    found: format!("text that is not JSON ({err})"),
                    origin,
                }),
            }
            return;
        }
        let Some(kind) = self.kinds.get(key).copied() else {
            problems.push(self.unknown(key, origin));
            return;
        };
        match kind.parse_text(raw) {
            Some(value) => self.set(key, value, origin),
            None => problems.push(ConfigError::BadValue {
                key: key.to_string(),
                expected: kind.expected(),
                found: describe_text(key, raw),
                origin,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{AGH_ENV, Fixture, load_err, schema_keys, with_agh_env};
    use super::super::load_unvalidated;
    use crate::config::env_var_for;
    use crate::config::error::ConfigError;
    use crate::config::origin::Origin;

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_its_path_file_and_nearest_key() {
        let fx = Fixture::new();
        let file = fx.file("w.toml", "[worker]\nlease_secs = 30\n");
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(file.clone());
        let err = load_err(&sources);
        match &err {
            ConfigError::UnknownKey {
                key,
                origin,
                suggestion,
            } => {
                assert_eq!(key, "worker.lease_secs");
                assert_eq!(origin, &Origin::File(file.clone()));
                assert_eq!(suggestion.as_deref(), Some("worker.lease_seconds"));
            }
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("worker.lease_secs"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(
            text.contains("did you mean worker.lease_seconds?"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_section_or_top_level_key_in_the_file_is_named() {
        let fx = Fixture::new();
        let file = fx.file("w.toml", "lease_seconds = 30\n[wroker]\nmax_runs = 1\n");
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(file);
        let err = load_err(&sources);
        let found: Vec<(String, Option<String>)> = err
            .problems()
            .into_iter()
            .filter_map(|p| match p {
                ConfigError::UnknownKey {
                    key, suggestion, ..
                } => Some((key.clone(), suggestion.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("lease_seconds".into(), Some("worker.lease_seconds".into())),
                ("wroker".into(), Some("worker".into())),
            ]
        );
    }

    #[test]
    fn an_unknown_environment_key_names_the_variable_and_the_right_one() {
        let fx = Fixture::new();
        let sources = fx.sources(&with_agh_env(&[("AGH_WORKER__WORKER__LEASE_SECS", "30")]));
        let err = load_err(&sources);
        let text = err.to_string();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, origin: Origin::Env(var), .. }
                if key == "worker.lease_secs" && var == "AGH_WORKER__WORKER__LEASE_SECS"),
            "{err:?}"
        );
        assert!(
            text.contains("did you mean AGH_WORKER__WORKER__LEASE_SECONDS (worker.lease_seconds)?"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_override_is_named_with_a_suggestion() {
        let fx = Fixture::new();
        let mut sources = fx.sources(AGH_ENV);
        sources.overrides = vec![("worker.max_run".into(), "3".into())];
        let err = load_err(&sources);
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, origin: Origin::Flag, suggestion }
                if key == "worker.max_run" && suggestion.as_deref() == Some("worker.max_runs")),
            "{err:?}"
        );
        assert!(err.to_string().contains("command-line override"), "{err}");
    }

    #[test]
    fn an_unrelated_unknown_key_gets_no_suggestion_but_a_pointer_to_the_docs() {
        let fx = Fixture::new();
        let mut sources = fx.sources(AGH_ENV);
        sources.overrides = vec![("database.url".into(), "x".into())];
        let err = load_err(&sources);
        assert!(
            matches!(
                &err,
                ConfigError::UnknownKey {
                    suggestion: None,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("remove it"), "{err}");
    }

    #[test]
    fn a_section_that_is_not_a_table_is_a_type_error() {
        let fx = Fixture::new();
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(fx.file("w.toml", "worker = 3\n"));
        let err = load_err(&sources);
        assert!(
            matches!(&err, ConfigError::BadValue { key, expected, .. }
                if key == "worker" && expected.contains("[worker]")),
            "{err:?}"
        );
    }

    #[test]
    fn every_schema_key_has_an_environment_variable_that_sets_it() {
        let fx = Fixture::new();
        for key in schema_keys() {
            let var = env_var_for(&key);
            let env = with_agh_env(&[]);
            let mut sources = fx.sources(&env);
            // A string that is never valid for a typed key proves the variable reached that key.
            sources.env.insert(var.clone(), "\u{1}not-a-value".into());
            if let Err(ConfigError::UnknownKey { .. }) = load_unvalidated(&sources) {
                panic!("{var} is not recognised as {key}");
            }
        }
    }
}
