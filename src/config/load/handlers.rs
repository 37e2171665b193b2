//! The `[[handlers]]` table: taken whole from the file or as JSON from the environment or a flag,
//! each entry typed on its own so every mistake is named with its full path.

use config::ValueKind;
use serde_json::Value;

use super::layers::Layers;
use crate::config::error::ConfigError;
use crate::config::origin::Origin;
use crate::config::suggest::closest;

/// The one top-level key that is a list of tables rather than a section.
pub(crate) const HANDLERS_KEY: &str = "handlers";

/// A TOML value as JSON, whole (for the handler table, which is typed as a unit).
pub(super) fn toml_to_json(value: &config::Value) -> Value {
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

impl Layers {
    /// Replaces the handler table; each entry is checked on its own so every mistake is named
    /// with its full path (`handlers[1].exec.programm`).
    pub(super) fn apply_handlers(
        &mut self,
        value: Value,
        origin: Origin,
        problems: &mut Vec<ConfigError>,
    ) {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{AGH_ENV, Fixture, load_err, load_ok, with_agh_env};
    use crate::config::origin::Origin;

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
}
