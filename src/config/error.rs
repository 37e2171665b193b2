//! Configuration errors, worded for the person who has to fix them (the binary prints them and exits 64).

use std::fmt;
use std::path::PathBuf;

use super::origin::{Origin, env_var_for};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {} does not exist: check the --config path (without --config, {} is read only when present)",
        .path.display(),
        super::DEFAULT_CONFIG_PATH
    )]
    FileNotFound { path: PathBuf },

    #[error("config file {} cannot be read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("config file {} is not valid TOML: {message}", .path.display())]
    Syntax { path: PathBuf, message: String },

    #[error("unknown key {key} {}{}", origin.described_as_source(), suggestion_text(.suggestion.as_deref(), .origin))]
    UnknownKey {
        /// Full key path, e.g. `worker.lease_secs`.
        key: String,
        origin: Origin,
        /// The nearest known key path, when one is close.
        suggestion: Option<String>,
    },

    #[error("{key} {} must be {expected}, but is {found}", origin.described_as_source())]
    BadValue {
        key: String,
        /// What the key accepts, e.g. `a non-negative integer`.
        expected: String,
        /// What was given (never the value itself for secret-looking keys).
        found: String,
        origin: Origin,
    },

    #[error("{}", list_problems(.0))]
    Several(Vec<ConfigError>),

    #[error("invalid configuration:\n{0}")]
    Invalid(ValidationErrors),
}

impl ConfigError {
    /// Every individual problem, flattening [`ConfigError::Several`].
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Several(all) => all.iter().flat_map(ConfigError::problems).collect(),
            other => vec![other],
        }
    }

    /// One error for a list of problems: the problem itself when there is only one.
    pub(crate) fn from_problems(mut problems: Vec<ConfigError>) -> Option<ConfigError> {
        match problems.len() {
            0 => None,
            1 => problems.pop(),
            _ => Some(ConfigError::Several(problems)),
        }
    }
}

fn list_problems(problems: &[ConfigError]) -> String {
    let mut out = format!("{} problems in the configuration:", problems.len());
    for problem in problems {
        out.push_str("\n  - ");
        out.push_str(&problem.to_string());
    }
    out
}

/// The suggestion, spelled the way the person wrote the key.
fn suggestion_text(suggestion: Option<&str>, origin: &Origin) -> String {
    let Some(key) = suggestion else {
        return ": remove it (see config/agh-worker.toml for every key)".to_string();
    };
    match origin {
        Origin::Env(_) => format!(": did you mean {} ({key})?", env_var_for(key)),
        _ => format!(": did you mean {key}?"),
    }
}

/// One problem found by [`super::Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Key path the problem is about, e.g. `worker.heartbeat_every_seconds`.
    pub key: String,
    /// What is wrong and what to do, starting with the key path.
    pub message: String,
    /// Where the offending value came from, when known (added by [`super::load`]).
    pub origin: Option<Origin>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.origin {
            Some(origin) if *origin != Origin::Default => {
                write!(f, " (value {})", origin.described_as_source())
            }
            _ => Ok(()),
        }
    }
}

/// Every problem [`super::Config::validate`] found; displays one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key paths with a problem, in report order.
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.key.as_str()).collect()
    }

    pub(crate) fn push(&mut self, key: &str, message: String) {
        self.0.push(ValidationError {
            key: key.to_string(),
            message,
            origin: None,
        });
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
