//! What [`load`](super::load) reads: the TOML file, the `AGH_WORKER__…` environment, and AGH's
//! own variables (`AGH_SESSION_ID`, `AGH_HOME`, …) for the keys no layer set. Flag overrides
//! are given as they are, in [`ConfigSources::overrides`].

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use config::Format;
use serde_json::Value;

use super::layers::Layers;
use crate::config::error::ConfigError;
use crate::config::origin::{ENV_PREFIX, Origin};

/// Read when no `--config` is given, and only if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/agh-worker/agh-worker.toml";

/// AGH's own variables, in the order they are tried, for the keys they fill when nothing set them.
pub const AGH_CONVENTIONS: &[(&str, &[&str])] = &[
    ("agh.session_id", &["AGH_SESSION_ID"]),
    ("agh.agent", &["AGH_AGENT", "AGH_AGENT_NAME"]),
    ("agh.session_channel", &["AGH_SESSION_CHANNEL"]),
    ("agh.home", &["AGH_HOME"]),
];

/// Everything [`load`] reads, so that tests can supply it and never touch the real process.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    /// `--config PATH`: must exist when given.
    pub file: Option<PathBuf>,
    /// Read when `file` is `None` and this path exists.
    pub default_file: PathBuf,
    /// The environment; only `AGH_WORKER__*`, the AGH variables and `HOME` are looked at.
    pub env: BTreeMap<String, String>,
    /// Flag overrides as (key path, value), applied in order.
    pub overrides: Vec<(String, String)>,
}

impl ConfigSources {
    /// Sources for the running process: its environment and the system default file.
    pub fn from_process(file: Option<PathBuf>, overrides: Vec<(String, String)>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                // A mangled value must still reach the type check, so convert lossily.
                (name.starts_with("AGH_") || name == "HOME")
                    .then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect();
        Self {
            file,
            default_file: PathBuf::from(DEFAULT_CONFIG_PATH),
            env,
            overrides,
        }
    }
}

pub(super) fn select_file(sources: &ConfigSources) -> Result<Option<PathBuf>, ConfigError> {
    match &sources.file {
        Some(path) => match std::fs::metadata(path) {
            Ok(_) => Ok(Some(path.clone())),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(ConfigError::FileNotFound { path: path.clone() })
            }
            Err(source) => Err(ConfigError::Unreadable {
                path: path.clone(),
                source,
            }),
        },
        None => match std::fs::metadata(&sources.default_file) {
            Ok(_) => Ok(Some(sources.default_file.clone())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            // An operator put a file there; ignoring it because it is unreadable would surprise them.
            Err(source) => Err(ConfigError::Unreadable {
                path: sources.default_file.clone(),
                source,
            }),
        },
    }
}

/// The file's text parsed as TOML; a syntax error names the file and the line.
pub(super) fn read_file(path: &Path) -> Result<config::Map<String, config::Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    config::FileFormat::Toml
        .parse(None, &text)
        .map_err(|cause| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: cause.to_string().trim_end().to_string(),
        })
}

/// The `AGH_WORKER__SECTION__KEY` variables as (`section.key`, value, origin), in name order.
pub(super) fn env_settings(
    env: &BTreeMap<String, String>,
) -> impl Iterator<Item = (String, &str, Origin)> {
    env.iter().filter_map(|(name, value)| {
        let rest = name.strip_prefix(ENV_PREFIX)?;
        let key = rest.split("__").collect::<Vec<_>>().join(".");
        Some((
            key.to_ascii_lowercase(),
            value.as_str(),
            Origin::Env(name.clone()),
        ))
    })
}

impl Layers {
    fn text(&self, key: &str) -> &str {
        key.split_once('.')
            .and_then(|(section, leaf)| self.tree.get(section)?.get(leaf)?.as_str())
            .unwrap_or("")
    }

    /// Fills identity and home from AGH's variables where no layer gave a non-empty value,
    /// then defaults home to `~/.agh` and expands a leading `~` in it.
    pub(super) fn apply_agh_conventions(&mut self, env: &BTreeMap<String, String>) {
        for (key, vars) in AGH_CONVENTIONS {
            if !self.text(key).trim().is_empty() {
                continue;
            }
            let found = vars.iter().find_map(|var| {
                let value = env.get(*var)?.trim();
                (!value.is_empty()).then(|| (*var, value.to_string()))
            });
            if let Some((var, value)) = found {
                self.set(key, Value::String(value), Origin::Env(var.to_string()));
            }
        }

        let user_home = env
            .get("HOME")
            .map(|h| h.trim().trim_end_matches('/'))
            .filter(|h| !h.is_empty());
        let home = self.text("agh.home").trim().to_string();
        let origin = self
            .origins
            .get("agh.home")
            .cloned()
            .unwrap_or(Origin::Default);
        if home.is_empty() {
            if let Some(user_home) = user_home {
                self.set(
                    "agh.home",
                    Value::String(format!("{user_home}/.agh")),
                    Origin::Default,
                );
            }
        } else if let (Some(rest), Some(user_home)) = (tilde_rest(&home), user_home) {
            self.set(
                "agh.home",
                Value::String(format!("{user_home}{rest}")),
                origin,
            );
        }
    }
}

/// `~` → `""`, `~/x` → `"/x"`; anything else (including `~user`) is left alone.
pub(in crate::config) fn tilde_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('~')?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{AGH_ENV, Fixture, load_err, load_ok, with_agh_env};
    use super::*;
    use crate::config::error::ConfigError;

    #[test]
    fn agh_variables_fill_identity_channel_and_home() {
        let fx = Fixture::new();
        let loaded = load_ok(&fx.sources(&[
            ("AGH_SESSION_ID", " sess-0123456789abcdef "),
            ("AGH_AGENT_NAME", "reviewer"),
            ("AGH_SESSION_CHANNEL", "team"),
            ("AGH_HOME", "/srv/agh"),
        ]));
        let agh = &loaded.config.agh;
        assert_eq!(agh.session_id, "sess-0123456789abcdef");
        assert_eq!(agh.agent, "reviewer");
        assert_eq!(agh.session_channel, "team");
        assert_eq!(agh.home, "/srv/agh");
        assert_eq!(
            loaded.origin("agh.agent"),
            Some(&Origin::Env("AGH_AGENT_NAME".into()))
        );
        assert_eq!(
            loaded.origin("agh.home"),
            Some(&Origin::Env("AGH_HOME".into()))
        );
    }

    #[test]
    fn agh_agent_is_preferred_over_agh_agent_name() {
        let fx = Fixture::new();
        let loaded = load_ok(&fx.sources(&with_agh_env(&[("AGH_AGENT_NAME", "other")])));
        assert_eq!(loaded.config.agh.agent, "coder");
    }

    #[test]
    fn explicit_worker_keys_win_over_agh_variables() {
        let fx = Fixture::new();
        let file = fx.file(
            "w.toml",
            "[agh]\nagent = \"from-file\"\nhome = \"~/agh-home\"\n",
        );
        let mut sources = fx.sources(&with_agh_env(&[
            ("AGH_HOME", "/srv/agh"),
            ("AGH_SESSION_CHANNEL", "team"),
            ("AGH_WORKER__AGH__SESSION_ID", "sess-fedcba9876543210"),
        ]));
        sources.file = Some(file.clone());
        sources.overrides = vec![("agh.session_channel".into(), "ops".into())];
        let loaded = load_ok(&sources);
        let agh = &loaded.config.agh;
        assert_eq!(agh.session_id, "sess-fedcba9876543210");
        assert_eq!(agh.agent, "from-file");
        assert_eq!(agh.session_channel, "ops");
        assert_eq!(
            agh.home, "/home/op/agh-home",
            "a leading ~ is the user's home"
        );
        assert_eq!(
            loaded.origin("agh.session_id"),
            Some(&Origin::Env("AGH_WORKER__AGH__SESSION_ID".into()))
        );
        assert_eq!(loaded.origin("agh.home"), Some(&Origin::File(file)));
    }

    #[test]
    fn an_empty_explicit_identity_key_does_not_hide_the_agh_variable() {
        let fx = Fixture::new();
        let file = fx.file("w.toml", "[agh]\nsession_id = \"\"\nagent = \"\"\n");
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(file);
        let loaded = load_ok(&sources);
        assert_eq!(loaded.config.agh.session_id, "sess-0123456789abcdef");
    }

    #[test]
    fn a_toml_syntax_error_names_the_file_and_the_line() {
        let fx = Fixture::new();
        let mut sources = fx.sources(AGH_ENV);
        let file = fx.file("w.toml", "[worker]\nlease_seconds = 60\nmax_runs = = 2\n");
        sources.file = Some(file.clone());
        let err = load_err(&sources);
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn an_explicit_config_file_that_does_not_exist_is_an_error() {
        let fx = Fixture::new();
        let mut sources = fx.sources(AGH_ENV);
        let missing = fx.dir.path().join("nope.toml");
        sources.file = Some(missing.clone());
        let err = load_err(&sources);
        assert!(
            matches!(&err, ConfigError::FileNotFound { path } if *path == missing),
            "{err:?}"
        );
        assert!(err.to_string().contains("--config"), "{err}");
    }

    #[test]
    fn the_default_file_is_read_only_when_it_exists() {
        let fx = Fixture::new();
        let sources = fx.sources(AGH_ENV);
        assert_eq!(load_ok(&sources).file_used, None);

        fx.file("etc-agh-worker.toml", "[worker]\nmax_runs = 4\n");
        let loaded = load_ok(&sources);
        assert_eq!(loaded.file_used, Some(sources.default_file.clone()));
        assert_eq!(loaded.config.worker.max_runs, 4);
    }

    #[test]
    fn an_explicit_file_is_used_instead_of_the_default_one() {
        let fx = Fixture::new();
        fx.file("etc-agh-worker.toml", "[worker]\nmax_runs = 4\n");
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(fx.file("mine.toml", "[worker]\nidle_exit_seconds = 8\n"));
        let loaded = load_ok(&sources);
        assert_eq!(loaded.config.worker.max_runs, 0);
        assert_eq!(loaded.config.worker.idle_exit_seconds, 8);
    }
}
