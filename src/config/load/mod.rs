//! Building a [`Config`] from its layers while remembering where each value came from.
//!
//! The layers are merged as a JSON tree shaped like `serde_json::to_value(Config::default())`,
//! so the set of known keys and their types come from the structs themselves and cannot drift
//! from them. Every value is checked against its key's type as it is merged, which lets errors
//! name the key and its origin instead of surfacing as a serde message about the whole config.
//!
//! The pieces, in the order [`load`] uses them: `sources` (what is read: the file, the
//! `AGH_WORKER__…` environment, flag overrides and AGH's own variables), `layers` (the merged
//! tree with each value's origin, and unknown keys with their suggestions), `kind` (the type
//! each key accepts) and `handlers` (the `[[handlers]]` table, typed as a whole). This file
//! holds the result: the final typed deserialisation and what it remembers.

mod handlers;
mod kind;
mod layers;
mod sources;

#[cfg(test)]
mod fixture;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::Config;
use super::error::ConfigError;
use super::origin::Origin;
use layers::Layers;
use sources::{env_settings, read_file, select_file};

pub(super) use layers::leaves;
pub(super) use sources::tilde_rest;
pub use sources::{AGH_CONVENTIONS, ConfigSources, DEFAULT_CONFIG_PATH};

/// A loaded configuration and where each of its values came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// Key path (`worker.lease_seconds`) → origin, for every key.
    pub origins: BTreeMap<String, Origin>,
    /// The file that was read, if any.
    pub file_used: Option<PathBuf>,
}

/// One effective setting, as `agh-worker check` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// The value as TOML-ish text; `<redacted>` for secret-looking keys.
    pub value: String,
    pub origin: Origin,
}

impl LoadedConfig {
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// Every key with its effective value and origin, secrets redacted.
    pub fn entries(&self) -> Vec<Entry> {
        let tree = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        leaves(&tree)
            .into_iter()
            .map(|(key, value)| Entry {
                value: if is_secret_key(&key) {
                    "<redacted>".to_string()
                } else {
                    value.to_string()
                },
                origin: self.origins.get(&key).cloned().unwrap_or(Origin::Default),
                key,
            })
            .collect()
    }
}

/// Keys whose values must never be printed (none today; the rule is here for when they come).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["key", "token", "secret", "password"]
        .iter()
        .any(|word| leaf.contains(word))
}

/// Loads every layer and validates the result; see the module docs for the order.
pub fn load(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let loaded = load_unvalidated(sources)?;
    if let Err(mut errors) = loaded.config.validate() {
        for error in &mut errors.0 {
            error.origin = loaded.origins.get(&error.key).cloned();
        }
        return Err(ConfigError::Invalid(errors));
    }
    Ok(loaded)
}

/// Like [`load`] without [`Config::validate`], for callers that report validation themselves.
pub fn load_unvalidated(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let mut layers = Layers::new()?;
    let file_used = select_file(sources)?;
    let mut problems = Vec::new();

    if let Some(path) = &file_used {
        let table = read_file(path)?;
        layers.apply_file(&table, path, &mut problems);
    }

    for (key, value, origin) in env_settings(&sources.env) {
        layers.apply_text(&key, value, origin, &mut problems);
    }

    for (key, value) in &sources.overrides {
        layers.apply_text(key.trim(), value, Origin::Flag, &mut problems);
    }

    if let Some(error) = ConfigError::from_problems(problems) {
        return Err(error);
    }

    layers.apply_agh_conventions(&sources.env);
    let config = serde_json::from_value(layers.tree).map_err(|e| ConfigError::BadValue {
        key: "(configuration)".to_string(),
        expected: "values of the documented types".to_string(),
        found: e.to_string(),
        origin: Origin::Default,
    })?;
    Ok(LoadedConfig {
        config,
        origins: layers.origins,
        file_used,
    })
}

#[cfg(test)]
mod tests {
    use super::fixture::{
        AGH_ENV, Fixture, example_path, load_err, load_ok, schema_keys, with_agh_env,
    };
    use super::*;
    use crate::config::{LogFormat, OrphanPolicy};

    #[test]
    fn defaults_and_the_agh_environment_alone_make_a_valid_config() {
        let fx = Fixture::new();
        let loaded = load_ok(&fx.sources(AGH_ENV));
        assert_eq!(loaded.file_used, None);
        let config = &loaded.config;
        assert_eq!(config.agh.session_id, "sess-0123456789abcdef");
        assert_eq!(config.agh.agent, "coder");
        assert_eq!(config.agh.home, "/home/op/.agh");
        assert_eq!(config.worker.lease_seconds, 60);
        assert_eq!(config.worker.orphan_policy, OrphanPolicy::Adopt);
        assert_eq!(
            loaded.origin("agh.session_id"),
            Some(&Origin::Env("AGH_SESSION_ID".into()))
        );
        assert_eq!(loaded.origin("agh.home"), Some(&Origin::Default));
        assert_eq!(
            loaded.origin("worker.lease_seconds"),
            Some(&Origin::Default)
        );
        // Every section key, plus the handler table.
        assert_eq!(loaded.origins.len(), schema_keys().len() + 1);
    }

    #[test]
    fn file_then_environment_then_flags_win_and_each_origin_is_recorded() {
        let fx = Fixture::new();
        let file = fx.file(
            "w.toml",
            "[worker]\nlease_seconds = 120\nmax_runs = 5\ndrain_timeout_seconds = 9\n[log]\nformat = \"json\"\n",
        );
        let mut sources = fx.sources(&with_agh_env(&[
            ("AGH_WORKER__WORKER__MAX_RUNS", "7"),
            ("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "11"),
        ]));
        sources.file = Some(file.clone());
        sources.overrides = vec![("worker.max_runs".into(), "3".into())];
        let loaded = load_ok(&sources);
        let worker = &loaded.config.worker;
        assert_eq!(
            (
                worker.lease_seconds,
                worker.drain_timeout_seconds,
                worker.max_runs
            ),
            (120, 11, 3)
        );
        assert_eq!(loaded.config.log.format, LogFormat::Json);
        assert_eq!(loaded.file_used, Some(file.clone()));
        assert_eq!(
            loaded.origin("worker.lease_seconds"),
            Some(&Origin::File(file))
        );
        assert_eq!(
            loaded.origin("worker.drain_timeout_seconds"),
            Some(&Origin::Env(
                "AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS".into()
            ))
        );
        assert_eq!(loaded.origin("worker.max_runs"), Some(&Origin::Flag));
        assert_eq!(loaded.origin("worker.claim_wait"), Some(&Origin::Default));
    }

    #[test]
    fn validation_problems_from_load_say_where_the_bad_value_came_from() {
        let fx = Fixture::new();
        let sources = fx.sources(&[
            ("HOME", "/home/op"),
            ("AGH_WORKER__WORKER__LEASE_SECONDS", "0"),
        ]);
        let ConfigError::Invalid(errors) = load_err(&sources) else {
            panic!("expected validation errors");
        };
        assert_eq!(
            errors.keys(),
            vec![
                "agh.session_id",
                "agh.agent",
                "worker.lease_seconds",
                "worker.heartbeat_every_seconds"
            ]
        );
        let text = errors.to_string();
        assert!(
            text.contains("(value from environment variable AGH_WORKER__WORKER__LEASE_SECONDS)"),
            "{text}"
        );
    }

    #[test]
    fn entries_list_every_key_with_its_origin_and_redact_secret_looking_keys() {
        let fx = Fixture::new();
        let loaded = load_ok(&fx.sources(AGH_ENV));
        let entries = loaded.entries();
        assert_eq!(entries.len(), schema_keys().len());
        assert!(entries.iter().any(|e| e.key == "agh.agent"
            && e.value == "\"coder\""
            && e.origin == Origin::Env("AGH_AGENT".into())));
        assert!(is_secret_key("coder.api_key"));
        assert!(is_secret_key("webhook.token"));
        assert!(!is_secret_key("agh.session_id"));
    }

    #[test]
    fn the_documented_example_file_loads_cleanly() {
        let mut sources = Fixture::new().sources(AGH_ENV);
        sources.file = Some(example_path());
        let loaded = load_ok(&sources);
        let mut expected = Config::default();
        expected.agh.session_id = "sess-0123456789abcdef".into();
        expected.agh.agent = "coder".into();
        expected.agh.home = "/home/op/.agh".into();
        assert_eq!(
            loaded.config, expected,
            "the example must set only defaults"
        );
    }
}
