//! Building a [`Config`] from its layers while remembering where each value came from.
//!
//! The layers are merged as a JSON tree shaped like `serde_json::to_value(Config::default())`,
//! so the set of known keys and their types come from the structs themselves and cannot drift
//! from them. Every value is checked against its key's type as it is merged, which lets errors
//! name the key and its origin instead of surfacing as a serde message about the whole config.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use config::{Format, ValueKind};
use serde_json::Value;

use super::error::ConfigError;
use super::origin::{ENV_PREFIX, Origin};
use super::suggest::closest;
use super::{Config, LogFormat, OrphanPolicy};

/// Read when no `--config` is given, and only if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/agh-worker/agh-worker.toml";

/// AGH's own variables, in the order they are tried, for the keys they fill when nothing set them.
pub const AGH_CONVENTIONS: &[(&str, &[&str])] = &[
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

/// The one top-level key that is a list of tables rather than a section.
pub(crate) const HANDLERS_KEY: &str = "handlers";

/// A TOML value as JSON, whole (for the handler table, which is typed as a unit).
fn toml_to_json(value: &config::Value) -> Value {
    match &value.kind {
        ValueKind::Nil => Value::Null,
        ValueKind::Boolean(b) => Value::Bool(*b),
        ValueKind::I64(n) => Value::from(*n),
        ValueKind::I128(n) => i64::try_from(*n).map(Value::from).unwrap_or(Value::Null),
        ValueKind::U64(n) => Value::from(*n),
        ValueKind::U128(n) => u64::try_from(*n).map(Value::from).unwrap_or(Value::Null),
        ValueKind::Float(n) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ValueKind::String(s) => Value::String(s.clone()),
        ValueKind::Table(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
        ValueKind::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
    }
}

/// Turns serde's complaint about one handler entry into an unknown-key or bad-value error.
fn handler_entry_problem(key: String, message: &str, origin: Origin) -> ConfigError {
    // serde: "unknown field `programm`, expected one of `program`, `args`, …"
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        // The path already ends at the unknown field; a suggestion replaces that last part.
        let full_key = if key.ends_with(&format!(".{field}")) {
            key
        } else {
            format!("{key}.{field}")
        };
        let parent = full_key
            .rsplit_once('.')
            .map(|(parent, _)| parent.to_string())
            .unwrap_or_default();
        let suggestion =
            closest(field, candidates.iter().copied()).map(|leaf| format!("{parent}.{leaf}"));
        return ConfigError::UnknownKey {
            key: full_key,
            origin,
            suggestion,
        };
    }
    ConfigError::BadValue {
        key,
        expected: "a handler table as documented in config/agh-worker.toml".to_string(),
        found: message.to_string(),
        origin,
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
                    .then_some(Value::String(lowered))
            }
        }
    }

    /// A value from the TOML file converted to this type.
    fn convert_toml(self, value: &config::Value) -> Option<Value> {
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
pub(super) fn leaves(tree: &Value) -> Vec<(String, &Value)> {
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

    fn apply_text(
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

    /// Replaces the handler table; each entry is checked on its own so every mistake is named
    /// with its full path (`handlers[1].exec.programm`).
    fn apply_handlers(&mut self, value: Value, origin: Origin, problems: &mut Vec<ConfigError>) {
        let Value::Array(entries) = value else {
            problems.push(ConfigError::BadValue {
                key: HANDLERS_KEY.to_string(),
                expected: "a list of handler tables ([[handlers]] in the file)".to_string(),
                found: "something else".to_string(),
                origin,
            });
            return;
        };
        let mut ok = true;
        for (index, entry) in entries.iter().enumerate() {
            let result: Result<crate::handler::HandlerConfig, _> =
                serde_path_to_error::deserialize(entry);
            if let Err(err) = result {
                ok = false;
                let path = err.path().to_string();
                let key = if path == "." || path.is_empty() {
                    format!("{HANDLERS_KEY}[{index}]")
                } else {
                    format!("{HANDLERS_KEY}[{index}].{path}")
                };
                let message = err.into_inner().to_string();
                problems.push(handler_entry_problem(key, &message, origin.clone()));
            }
        }
        if ok {
            if let Value::Object(root) = &mut self.tree {
                root.insert(HANDLERS_KEY.to_string(), Value::Array(entries));
            }
            self.origins.insert(HANDLERS_KEY.to_string(), origin);
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
pub(super) fn tilde_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('~')?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env_var_for;
    use crate::config::{LogFormat, OrphanPolicy};

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            }
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        }

        /// Sources with the given environment and no file: the default file path does not exist.
        fn sources(&self, env: &[(&str, &str)]) -> ConfigSources {
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

    const AGH_ENV: &[(&str, &str)] = &[
        ("AGH_SESSION_ID", "sess-0123456789abcdef"),
        ("AGH_AGENT", "coder"),
        ("HOME", "/home/op"),
    ];

    fn with_agh_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        AGH_ENV.iter().chain(extra).copied().collect()
    }

    fn load_ok(sources: &ConfigSources) -> LoadedConfig {
        load(sources).unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
    }

    fn load_err(sources: &ConfigSources) -> ConfigError {
        match load(sources) {
            Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
            Err(e) => e,
        }
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agh-worker.toml")
    }

    fn schema_keys() -> Vec<String> {
        crate::config::section_keys()
    }

    #[test]
    fn a_handler_table_in_the_file_is_read_in_order() {
        let fx = Fixture::new();
        let file = fx.file(
            "h.toml",
            "[[handlers]]\nname = \"deploys\"\nkind = \"noop\"\n[handlers.match]\ntitle = \"deploy *\"\n\n[[handlers]]\nname = \"rest\"\nkind = \"noop\"\n",
        );
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(file.clone());
        let loaded = load_ok(&sources);
        let names: Vec<&str> = loaded
            .config
            .handlers
            .iter()
            .map(|h| h.name.as_str())
            .collect();
        assert_eq!(names, vec!["deploys", "rest"]);
        assert_eq!(
            loaded.config.handlers[0].matches.title.as_deref(),
            Some("deploy *")
        );
        assert_eq!(loaded.origin("handlers"), Some(&Origin::File(file)));
    }

    #[test]
    fn a_handler_table_can_come_from_the_environment_as_json() {
        let fx = Fixture::new();
        let env = with_agh_env(&[("AGH_WORKER__HANDLERS", r#"[{"name":"main","kind":"noop"}]"#)]);
        let loaded = load_ok(&fx.sources(&env));
        assert_eq!(loaded.config.handlers.len(), 1);
        assert_eq!(
            loaded.origin("handlers"),
            Some(&Origin::Env("AGH_WORKER__HANDLERS".into()))
        );
    }

    #[test]
    fn an_unknown_key_inside_a_handler_is_named_with_its_full_path_and_the_nearest_key() {
        let fx = Fixture::new();
        let file = fx.file(
            "h.toml",
            "[[handlers]]\nname = \"main\"\nkind = \"exec\"\n[handlers.exec]\nprogramm = \"/bin/true\"\n",
        );
        let mut sources = fx.sources(AGH_ENV);
        sources.file = Some(file);
        let text = load_err(&sources).to_string();
        assert!(text.contains("handlers[0].exec.programm"), "{text}");
        assert!(
            text.contains("did you mean handlers[0].exec.program?"),
            "{text}"
        );
    }

    #[test]
    fn handler_json_that_does_not_parse_says_what_form_is_expected() {
        let fx = Fixture::new();
        let env = with_agh_env(&[("AGH_WORKER__HANDLERS", "main=exec")]);
        let text = load_err(&fx.sources(&env)).to_string();
        assert!(text.contains("AGH_WORKER__HANDLERS"), "{text}");
        assert!(text.contains("a JSON list of handler tables"), "{text}");
    }

    #[test]
    fn handler_table_problems_are_validation_errors_with_their_keys() {
        let fx = Fixture::new();
        let env = with_agh_env(&[(
            "AGH_WORKER__HANDLERS",
            r#"[{"name":"a","kind":"exec"},{"name":"a","kind":"noop","match":{"priority":["highest"]}}]"#,
        )]);
        let text = load_err(&fx.sources(&env)).to_string();
        assert!(text.contains("handlers[0].exec is missing"), "{text}");
        assert!(
            text.contains("handlers[1].name \"a\" is used twice"),
            "{text}"
        );
        assert!(
            text.contains("handlers[1].match.priority \"highest\""),
            "{text}"
        );
    }

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
    fn type_errors_name_the_key_the_expected_type_and_the_origin() {
        let fx = Fixture::new();
        let file = fx.file(
            "w.toml",
            "[worker]\nlease_seconds = \"sixty\"\nmax_runs = -1\nidle_exit_seconds = 1.5\norphan_policy = \"keep\"\nrequired_capabilities = [\"a\", 2]\n[log]\nlevel = 3\n",
        );
        let mut sources = fx.sources(&with_agh_env(&[(
            "AGH_WORKER__WORKER__CLAIM_WAIT",
            "maybe",
        )]));
        sources.file = Some(file);
        sources.overrides = vec![("agh.connect_timeout_ms".into(), "2s".into())];
        let err = load_err(&sources);
        let bad: Vec<(String, String)> = err
            .problems()
            .into_iter()
            .filter_map(|p| match p {
                ConfigError::BadValue { key, expected, .. } => {
                    Some((key.clone(), expected.clone()))
                }
                _ => None,
            })
            .collect();
        let keys: Vec<&str> = bad.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "log.level",
                "worker.idle_exit_seconds",
                "worker.lease_seconds",
                "worker.max_runs",
                "worker.orphan_policy",
                "worker.required_capabilities",
                "worker.claim_wait",
                "agh.connect_timeout_ms",
            ]
        );
        let text = err.to_string();
        assert!(
            text.starts_with("8 problems in the configuration:"),
            "{text}"
        );
        assert!(
            text.contains("worker.lease_seconds in config file")
                && text.contains("must be a non-negative integer, but is \"sixty\" (a string)"),
            "{text}"
        );
        assert!(text.contains("one of \"adopt\", \"release\""), "{text}");
        assert!(
            text.contains(
                "worker.claim_wait from environment variable AGH_WORKER__WORKER__CLAIM_WAIT must be true or false, but is \"maybe\""
            ),
            "{text}"
        );
    }

    #[test]
    fn text_values_are_parsed_to_the_type_of_their_key() {
        let fx = Fixture::new();
        let mut sources = fx.sources(&with_agh_env(&[
            ("AGH_WORKER__WORKER__CLAIM_WAIT", "no"),
            ("AGH_WORKER__WORKER__ORPHAN_POLICY", "Release"),
            (
                "AGH_WORKER__WORKER__REQUIRED_CAPABILITIES",
                "skill:rust, gpu ,",
            ),
        ]));
        sources.overrides = vec![("log.format".into(), "json".into())];
        let loaded = load_ok(&sources);
        let worker = &loaded.config.worker;
        assert!(!worker.claim_wait);
        assert_eq!(worker.orphan_policy, OrphanPolicy::Release);
        assert_eq!(worker.required_capabilities, vec!["skill:rust", "gpu"]);
        assert_eq!(loaded.config.log.format, LogFormat::Json);

        sources.overrides = vec![("worker.required_capabilities".into(), r#"["a","b"]"#.into())];
        let loaded = load_ok(&sources);
        assert_eq!(loaded.config.worker.required_capabilities, vec!["a", "b"]);
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
