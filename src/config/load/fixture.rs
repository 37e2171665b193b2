//! What the loader's tests share: a temporary directory for files, sources built from a given
//! environment, and `load` that must succeed or fail.

use std::path::{Path, PathBuf};

use super::{ConfigSources, LoadedConfig, load};
use crate::config::error::ConfigError;

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
        }
    }

    pub(super) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
        path
    }

    /// Sources with the given environment and no file: the default file path does not exist.
    pub(super) fn sources(&self, env: &[(&str, &str)]) -> ConfigSources {
        ConfigSources {
            file: None,
            default_file: self.dir.path().join("etc-agh-worker.toml"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overrides: Vec::new(),
        }
    }
}

pub(super) const AGH_ENV: &[(&str, &str)] = &[
    ("AGH_SESSION_ID", "sess-0123456789abcdef"),
    ("AGH_AGENT", "coder"),
    ("HOME", "/home/op"),
];

pub(super) fn with_agh_env(
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    AGH_ENV.iter().chain(extra).copied().collect()
}

pub(super) fn load_ok(sources: &ConfigSources) -> LoadedConfig {
    load(sources).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

pub(super) fn load_err(sources: &ConfigSources) -> ConfigError {
    match load(sources) {
        Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
        Err(e) => e,
    }
}

pub(super) fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agh-worker.toml")
}

pub(super) fn schema_keys() -> Vec<String> {
    crate::config::section_keys()
}
