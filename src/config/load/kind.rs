//! The type each key accepts, derived from its default, and how values are checked against it
//! and described in errors.

use config::ValueKind;
use serde_json::Value;

use super::is_secret_key;
use crate::config::{LogFormat, OrphanPolicy};

/// Keys whose string value is one of a closed set.
const ENUM_KEYS: &[(&str, &[&str])] = &[
    ("worker.orphan_policy", OrphanPolicy::VARIANTS),
    ("log.format", LogFormat::VARIANTS),
];

/// The type a key accepts, as derived from its default value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Integer,
    Text,
    TextList,
    OneOf(&'static [&'static str]),
}

impl Kind {
    pub(super) fn of(key: &str, default: &Value) -> Kind {
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

    pub(super) fn expected(self) -> String {
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
    pub(super) fn parse_text(self, raw: &str) -> Option<Value> {
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
    pub(super) fn convert_toml(self, value: &config::Value) -> Option<Value> {
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
pub(super) fn describe_toml(key: &str, value: &config::Value) -> String {
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

pub(super) fn describe_text(key: &str, raw: &str) -> String {
    if is_secret_key(key) {
        "a value of the wrong form".to_string()
    } else {
        format!("{raw:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Fixture, load_err, load_ok, with_agh_env};
    use super::*;
    use crate::config::error::ConfigError;

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
}
