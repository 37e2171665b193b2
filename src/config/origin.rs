//! Where a configuration value came from, and the environment variable that sets a key.

use std::fmt;
use std::path::PathBuf;

/// Environment variables `AGH_WORKER__SECTION__KEY` override the file.
pub const ENV_PREFIX: &str = "AGH_WORKER__";

/// The environment variable that sets `key` (`worker.lease_seconds` → `AGH_WORKER__WORKER__LEASE_SECONDS`).
pub fn env_var_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// The variable's name: `AGH_WORKER__…` or one of AGH's own (`AGH_SESSION_ID`, …).
    Env(String),
    Flag,
}

impl Origin {
    /// "in config file …", "from environment variable …": reads after a key path.
    pub(crate) fn described_as_source(&self) -> String {
        match self {
            Origin::Default => "from the built-in defaults".to_string(),
            Origin::File(path) => format!("in config file {}", path.display()),
            Origin::Env(name) => format!("from environment variable {name}"),
            Origin::Flag => "from a command-line override".to_string(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag => f.write_str("flag"),
        }
    }
}
