//! The `[[handlers]]` table as configured: the kinds of handler, one entry's settings, and the
//! problems a table can have (each naming its key and what to do).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::coder::CoderConfig;
use super::exec::ExecConfig;
use super::matching::MatchRule;
use super::webhook::WebhookConfig;

/// The kinds of handler this build has (a closed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    /// Runs a program per task (see the README's exec protocol).
    Exec,
    /// Completes every run at once with `{"handler":"noop"}`: for benchmarks and smoke tests.
    Noop,
    /// POSTs the task document to a local sidecar; its JSON answer is the outcome (see the README's
    /// webhook handler).
    Webhook,
    /// Runs the task as an Agentuity Coder Hub session (see the README's coder handler).
    Coder,
}

impl HandlerKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Exec => "exec",
            HandlerKind::Noop => "noop",
            HandlerKind::Webhook => "webhook",
            HandlerKind::Coder => "coder",
        }
    }
}

/// One `[[handlers]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Unique name, shown in logs and `/status`.
    pub name: String,
    /// What the handler is.
    pub kind: HandlerKind,
    /// Which tasks it takes; empty takes every task.
    #[serde(default, rename = "match")]
    pub matches: MatchRule,
    /// Settings of an `exec` handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecConfig>,
    /// Settings of a `webhook` handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Settings of a `coder` handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coder: Option<CoderConfig>,
}

impl HandlerConfig {
    /// An entry of the `noop` kind named `name` that takes the tasks `matches` accepts: the base
    /// of other entries in code (`HandlerConfig { kind, exec, ..HandlerConfig::noop(…) }`).
    pub fn noop(name: impl Into<String>, matches: MatchRule) -> Self {
        HandlerConfig {
            name: name.into(),
            kind: HandlerKind::Noop,
            matches,
            exec: None,
            webhook: None,
            coder: None,
        }
    }
}

/// Problems with a handler table, each naming the key and what to do.
pub fn table_problems(handlers: &[HandlerConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (index, handler) in handlers.iter().enumerate() {
        let path = format!("handlers[{index}]");
        if handler.name.trim().is_empty() {
            problems.push((
                format!("{path}.name"),
                format!("{path}.name is empty: give every handler a name"),
            ));
        } else if !names.insert(handler.name.as_str()) {
            problems.push((
                format!("{path}.name"),
                format!(
                    "{path}.name {:?} is used twice: handler names must be unique",
                    handler.name
                ),
            ));
        }
        for priority in &handler.matches.priority {
            if !["low", "medium", "high", "urgent"]
                .contains(&priority.to_ascii_lowercase().as_str())
            {
                problems.push((
                    format!("{path}.match.priority"),
                    format!(
                        "{path}.match.priority {priority:?} is not a priority: use low, medium, high or urgent"
                    ),
                ));
            }
        }
        problems.extend(section_problems(
            &path,
            handler.kind,
            HandlerKind::Exec,
            handler.exec.as_ref(),
            ExecConfig::problems,
            "an exec handler needs [handlers.exec] with at least `program`",
        ));
        problems.extend(section_problems(
            &path,
            handler.kind,
            HandlerKind::Webhook,
            handler.webhook.as_ref(),
            WebhookConfig::problems,
            "a webhook handler needs [handlers.webhook] with at least `url`",
        ));
        problems.extend(section_problems(
            &path,
            handler.kind,
            HandlerKind::Coder,
            handler.coder.as_ref(),
            CoderConfig::problems,
            "a coder handler needs [handlers.coder] (at least a key, key_file or AGENTUITY_SDK_KEY)",
        ));
    }
    problems
}

/// The problems of the section `[handlers.<owner>]` of the handler at `path`, of `kind`: missing
/// on a handler of the `owner` kind (`needs` says what it must hold), set on one of any other
/// kind, and its own problems (`problems_of`) where it belongs.
fn section_problems<S>(
    path: &str,
    kind: HandlerKind,
    owner: HandlerKind,
    section: Option<&S>,
    problems_of: fn(&S, &str) -> Vec<String>,
    needs: &str,
) -> Vec<(String, String)> {
    let key = format!("{path}.{}", owner.as_str());
    match section {
        None if kind == owner => vec![(key.clone(), format!("{key} is missing: {needs}"))],
        None => Vec::new(),
        Some(section) if kind == owner => problems_of(section, &key)
            .into_iter()
            .map(|problem| (key.clone(), problem))
            .collect(),
        Some(_) => {
            let text = format!(
                "{key} is set on a handler of kind \"{}\": remove it or set kind = \"{}\"",
                kind.as_str(),
                owner.as_str()
            );
            vec![(key, text)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_problems_name_the_entry_and_what_to_do() {
        let mut exec_without_settings = HandlerConfig::noop("a", MatchRule::default());
        exec_without_settings.kind = HandlerKind::Exec;
        let bad_priority = HandlerConfig::noop(
            "a",
            MatchRule {
                priority: vec!["highest".into()],
                ..Default::default()
            },
        );
        let problems = table_problems(&[exec_without_settings, bad_priority]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "handlers[0].exec",
                "handlers[1].name",
                "handlers[1].match.priority"
            ]
        );
    }

    #[test]
    fn webhook_settings_belong_to_webhook_handlers_only() {
        let mut webhook_without_settings = HandlerConfig::noop("a", MatchRule::default());
        webhook_without_settings.kind = HandlerKind::Webhook;
        let mut noop_with_webhook = HandlerConfig::noop("b", MatchRule::default());
        noop_with_webhook.webhook = Some(WebhookConfig {
            url: "http://127.0.0.1:8787/task".into(),
            ..WebhookConfig::default()
        });
        let mut webhook_with_exec = HandlerConfig::noop("c", MatchRule::default());
        webhook_with_exec.kind = HandlerKind::Webhook;
        webhook_with_exec.exec = Some(ExecConfig::default());
        webhook_with_exec.webhook = Some(WebhookConfig {
            url: "https://agent.example/task".into(),
            ..WebhookConfig::default()
        });
        let problems = table_problems(&[
            webhook_without_settings,
            noop_with_webhook,
            webhook_with_exec,
        ]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "handlers[0].webhook",
                "handlers[1].webhook",
                "handlers[2].exec",
                "handlers[2].webhook"
            ]
        );
        assert!(problems[2].1.contains("handler of kind \"webhook\""));
        assert!(
            problems[3].1.contains("sidecar on this host"),
            "{problems:?}"
        );
    }

    #[test]
    fn coder_settings_belong_to_coder_handlers_only() {
        let mut coder_without_settings = HandlerConfig::noop("a", MatchRule::default());
        coder_without_settings.kind = HandlerKind::Coder;
        let mut noop_with_coder = HandlerConfig::noop("b", MatchRule::default());
        noop_with_coder.coder = Some(CoderConfig::default());
        let mut bad_mode = HandlerConfig::noop("c", MatchRule::default());
        bad_mode.kind = HandlerKind::Coder;
        bad_mode.coder = Some(CoderConfig {
            workflow_mode: "sometimes".into(),
            ..CoderConfig::default()
        });
        let problems = table_problems(&[coder_without_settings, noop_with_coder, bad_mode]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "handlers[0].coder",
                "handlers[1].coder",
                "handlers[2].coder"
            ]
        );
        assert!(problems[2].1.contains("workflow_mode"), "{problems:?}");
    }
}
