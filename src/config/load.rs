//! Building a [`Config`] from its layers while remembering where each value came from.
//!
//! The layers are merged as a JSON tree shaped like `serde_json::to_value(Config::default())`,
//! so the set of known keys and their types come from the structs themselves and cannot drift
//! from them. Every value is checked against its key's type as it is merged, which lets errors
//! name the key and its origin instead of surfacing as a serde message about the whole config.

use std::collections::BTreeMap;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use config::{Format, ValueKind};
use serde_json::Value;

use super::error::ConfigError;
use super::suggest::closest;
use super::{Config, LogFormat, OrphanPolicy};

/// Read when no `--config` is given, and only if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/agh-worker/agh-worker.toml";

/// Environment variables `AGH_WORKER__SECTION__KEY` override the file.
pub const ENV_PREFIX: &str = "AGH_WORKER__";

/// AGH's own variables, in the order they are tried, for the keys they fill when nothing set them.
const AGH_CONVENTIONS: &[(&str, &[&str])] = &[
    ("agh.session_id", &["AGH_SESSION_ID"]),
    ("agh.agent", &["AGH_AGENT", "AGH_AGENT_NAME"]),
    ("agh.session_channel", &["AGH_SESSION_CHANNEL"]),
    ("agh.home", &["AGH_HOME"]),
];

/// Keys whose string value is one of a closed set.
const ENUM_KEYS: &[(&str, &[&str])] = &[
    ("worker.orphan_policy", OrphanPolicy::VARIANTS),
    ("log.format", LogFormat::VARIANTS),
];

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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let table = config::FileFormat::Toml
            .parse(None, &text)
            .map_err(|cause| ConfigError::Syntax {
                path: path.clone(),
                message: cause.to_string().trim_end().to_string(),
            })?;
        layers.apply_file(&table, path, &mut problems);
    }

    for (name, value) in &sources.env {
        if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            let key = rest.split("__").collect::<Vec<_>>().join(".");
            layers.apply_text(
                &key.to_ascii_lowercase(),
                value,
                Origin::Env(name.clone()),
                &mut problems,
            );
        }
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

fn select_file(sources: &ConfigSources) -> Result<Option<PathBuf>, ConfigError> {
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

/// The type a key accepts, as derived from its default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    Text,
    TextList,
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn of(key: &str, default: &Value) -> Kind {
        if let Some((_, variants)) = ENUM_KEYS.iter().find(|(k, _)| *k == key) {
            return Kind::OneOf(variants);
        }
        match default {
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Integer,
            Value::Array(_) => Kind::TextList,
            _ => Kind::Text,
        }
    }

    fn expected(self) -> String {
        match self {
            Kind::Bool => "true or false".to_string(),
            Kind::Integer => "a non-negative integer".to_string(),
            Kind::Text => "a string".to_string(),
            Kind::TextList => {
                "a list of strings (in the environment or a flag: comma-separated)".to_string()
            }
            Kind::OneOf(variants) => {
                let quoted: Vec<String> = variants.iter().map(|v| format!("\"{v}\"")).collect();
                format!("one of {}", quoted.join(", "))
            }
        }
    }

    /// A value written as text (environment, flag) converted to this type.
    fn parse_text(self, raw: &str) -> Option<Value> {
        let trimmed = raw.trim();
        match self {
            Kind::Bool => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(Value::Bool(true)),
                "false" | "0" | "no" | "off" => Some(Value::Bool(false)),
                _ => None,
            },
            Kind::Integer => trimmed.parse::<u64>().ok().map(Value::from),
            Kind::Text => Some(Value::String(raw.to_string())),
            Kind::TextList if trimmed.starts_with('[') => {
                serde_json::from_str::<Vec<String>>(trimmed)
                    .ok()
                    .map(Value::from)
            }
            Kind::TextList => Some(Value::from(
                trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect::<Vec<_>>(),
            )),
            Kind::OneOf(variants) => {
                let lowered = trimmed.to_ascii_lowercase();
                variants
                    .contains(&lowered.as_str())
                    .then(|| Value::String(lowered))
            }
        }
    }

    /// A value from the TOML file converted to this type.
    fn from_toml(self, value: &config::Value) -> Option<Value> {
        match (self, &value.kind) {
            (Kind::Bool, ValueKind::Boolean(b)) => Some(Value::Bool(*b)),
            (Kind::Integer, ValueKind::I64(n)) => u64::try_from(*n).ok().map(Value::from),
            (Kind::Integer, ValueKind::U64(n)) => Some(Value::from(*n)),
            (Kind::Text, ValueKind::String(s)) => Some(Value::String(s.clone())),
            (Kind::OneOf(variants), ValueKind::String(s)) => variants
                .contains(&s.as_str())
                .then(|| Value::String(s.clone())),
            (Kind::TextList, ValueKind::Array(items)) => items
                .iter()
                .map(|item| match &item.kind {
                    ValueKind::String(s) => Some(Value::String(s.clone())),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Value::Array),
            _ => None,
        }
    }
}

/// How a TOML value is described in an error: its text and type, or only its type for secrets.
fn describe_toml(key: &str, value: &config::Value) -> String {
    let (text, kind) = match &value.kind {
        ValueKind::Nil => (None, "nothing"),
        ValueKind::Boolean(b) => (Some(b.to_string()), "a boolean"),
        ValueKind::I64(n) => (Some(n.to_string()), "an integer"),
        ValueKind::I128(n) => (Some(n.to_string()), "an integer"),
        ValueKind::U64(n) => (Some(n.to_string()), "an integer"),
        ValueKind::U128(n) => (Some(n.to_string()), "an integer"),
        ValueKind::Float(n) => (Some(n.to_string()), "a float"),
        ValueKind::String(s) => (Some(format!("{s:?}")), "a string"),
        ValueKind::Table(_) => (None, "a table"),
        ValueKind::Array(_) => (None, "a list"),
    };
    match text {
        Some(text) if !is_secret_key(key) => format!("{text} ({kind})"),
        _ => kind.to_string(),
    }
}

fn describe_text(key: &str, raw: &str) -> String {
    if is_secret_key(key) {
        "a value of the wrong form".to_string()
    } else {
        format!("{raw:?}")
    }
}

/// Flattens a two-level JSON tree into (`section.key`, value) pairs.
fn leaves(tree: &Value) -> Vec<(String, &Value)> {
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
struct Layers {
    tree: Value,
    kinds: BTreeMap<String, Kind>,
    sections: Vec<String>,
    origins: BTreeMap<String, Origin>,
}

impl Layers {
    fn new() -> Result<Self, ConfigError> {
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
        let origins = kinds.keys().map(|k| (k.clone(), Origin::Default)).collect();
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

    fn set(&mut self, key: &str, value: Value, origin: Origin) {
        let Some((section, leaf)) = key.split_once('.') else {
            return;
        };
        if let Some(Value::Object(keys)) = self.tree.get_mut(section) {
            keys.insert(leaf.to_string(), value);
            self.origins.insert(key.to_string(), origin);
        }
    }

    fn apply_file(
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
                match kind.from_toml(value) {
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

    fn apply_text(
        &mut self,
        key: &str,
        raw: &str,
        origin: Origin,
        problems: &mut Vec<ConfigError>,
    ) {
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

    fn text(&self, key: &str) -> &str {
        key.split_once('.')
            .and_then(|(section, leaf)| self.tree.get(section)?.get(leaf)?.as_str())
            .unwrap_or("")
    }

    /// Fills identity and home from AGH's variables where no layer gave a non-empty value,
    /// then defaults home to `~/.agh` and expands a leading `~` in it.
    fn apply_agh_conventions(&mut self, env: &BTreeMap<String, String>) {
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
fn tilde_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('~')?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}
