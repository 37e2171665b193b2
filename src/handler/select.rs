//! The handler table: which handler runs which task (first match wins), and the `noop` kind.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Handlers;
use super::coder::{self, CoderConfig};
use super::exec::{self, ExecConfig};
use super::health::HandlerHealth;
use super::webhook::{self, WebhookConfig};
use super::{Outcome, TaskContext, TaskDocument};

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

/// Conditions on task fields; all given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchRule {
    /// Glob on the task title (`*` any run of characters, `?` one character), case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Task priorities accepted (`low`, `medium`, `high`, `urgent`); empty accepts all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub priority: Vec<String>,
    /// A key that must be present in the run's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_key: Option<String>,
}

impl MatchRule {
    /// Whether a task satisfies every given condition.
    pub fn accepts(&self, document: &TaskDocument) -> bool {
        if let Some(pattern) = &self.title
            && !glob_matches(&pattern.to_lowercase(), &document.title.to_lowercase())
        {
            return false;
        }
        if !self.priority.is_empty() {
            let priority = document
                .claim
                .task
                .priority
                .as_ref()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "medium".to_string());
            if !self
                .priority
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&priority))
            {
                return false;
            }
        }
        if let Some(key) = &self.metadata_key {
            let in_run = document
                .claim
                .run
                .metadata
                .as_ref()
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key(key));
            let in_task = document
                .claim
                .task
                .extra
                .get("metadata")
                .and_then(Value::as_object)
                .is_some_and(|m| m.contains_key(key));
            if !in_run && !in_task {
                return false;
            }
        }
        true
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
        match (handler.kind, &handler.exec) {
            (HandlerKind::Exec, None) => problems.push((
                format!("{path}.exec"),
                format!("{path}.exec is missing: an exec handler needs [handlers.exec] with at least `program`"),
            )),
            (HandlerKind::Exec, Some(exec)) => {
                for problem in exec.problems(&format!("{path}.exec")) {
                    problems.push((format!("{path}.exec"), problem));
                }
            }
            (kind @ (HandlerKind::Noop | HandlerKind::Webhook | HandlerKind::Coder), Some(_)) => problems.push((
                format!("{path}.exec"),
                format!(
                    "{path}.exec is set on a handler of kind \"{}\": remove it or set kind = \"exec\"",
                    kind.as_str()
                ),
            )),
            (HandlerKind::Noop | HandlerKind::Webhook | HandlerKind::Coder, None) => {}
        }
        match (handler.kind, &handler.webhook) {
            (HandlerKind::Webhook, None) => problems.push((
                format!("{path}.webhook"),
                format!("{path}.webhook is missing: a webhook handler needs [handlers.webhook] with at least `url`"),
            )),
            (HandlerKind::Webhook, Some(webhook)) => {
                for problem in webhook.problems(&format!("{path}.webhook")) {
                    problems.push((format!("{path}.webhook"), problem));
                }
            }
            (kind @ (HandlerKind::Exec | HandlerKind::Noop | HandlerKind::Coder), Some(_)) => problems.push((
                format!("{path}.webhook"),
                format!(
                    "{path}.webhook is set on a handler of kind \"{}\": remove it or set kind = \"webhook\"",
                    kind.as_str()
                ),
            )),
            (HandlerKind::Exec | HandlerKind::Noop | HandlerKind::Coder, None) => {}
        }
        match (handler.kind, &handler.coder) {
            (HandlerKind::Coder, None) => problems.push((
                format!("{path}.coder"),
                format!("{path}.coder is missing: a coder handler needs [handlers.coder] (at least a key, key_file or AGENTUITY_SDK_KEY)"),
            )),
            (HandlerKind::Coder, Some(coder)) => {
                for problem in coder.problems(&format!("{path}.coder")) {
                    problems.push((format!("{path}.coder"), problem));
                }
            }
            (kind, Some(_)) => problems.push((
                format!("{path}.coder"),
                format!(
                    "{path}.coder is set on a handler of kind \"{}\": remove it or set kind = \"coder\"",
                    kind.as_str()
                ),
            )),
            (_, None) => {}
        }
    }
    problems
}

/// The configured handlers, tried in order.
#[derive(Clone, Debug, Default)]
pub struct HandlerSet {
    handlers: Vec<HandlerConfig>,
    /// Where runs report whether their handler can work (a record of its own unless
    /// [`HandlerSet::with_health`] shares the status board's).
    health: HandlerHealth,
}

impl HandlerSet {
    pub fn new(handlers: Vec<HandlerConfig>) -> Self {
        HandlerSet {
            handlers,
            health: HandlerHealth::default(),
        }
    }

    /// Reports the handlers' health into `health` (the status board's record, which `/readyz`
    /// reads), every handler starting healthy.
    pub fn with_health(mut self, health: HandlerHealth) -> Self {
        health.configure(self.handlers.iter().map(|h| (h.name.clone(), false)));
        self.health = health;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub fn configs(&self) -> &[HandlerConfig] {
        &self.handlers
    }
}

impl Handlers for HandlerSet {
    fn select(&self, document: &TaskDocument) -> Option<String> {
        self.handlers
            .iter()
            .find(|h| h.matches.accepts(document))
            .map(|h| h.name.clone())
    }

    async fn run(&self, name: &str, context: TaskContext) -> Outcome {
        let Some(handler) = self.handlers.iter().find(|h| h.name == name) else {
            return Outcome::Release(format!(
                "agh-worker: handler {name:?} is no longer configured"
            ));
        };
        match handler.kind {
            HandlerKind::Exec => match &handler.exec {
                Some(config) => exec::run(config, context).await,
                None => {
                    Outcome::Release(format!("agh-worker: handler {name:?} has no exec settings"))
                }
            },
            HandlerKind::Webhook => match &handler.webhook {
                Some(config) => webhook::run(config, context).await,
                None => Outcome::Release(format!(
                    "agh-worker: handler {name:?} has no webhook settings"
                )),
            },
            HandlerKind::Coder => match &handler.coder {
                Some(config) => coder::run(config, context, &self.health.reporter(name)).await,
                None => Outcome::Release(format!(
                    "agh-worker: handler {name:?} has no coder settings"
                )),
            },
            HandlerKind::Noop => Outcome::Complete(json!({"handler": "noop"})),
        }
    }
}

/// The handler table behind a lock, so SIGHUP can replace it while the worker runs.
/// A run keeps the table it started with.
#[derive(Debug, Default)]
pub struct SharedHandlers {
    current: std::sync::RwLock<std::sync::Arc<HandlerSet>>,
}

impl SharedHandlers {
    pub fn new(set: HandlerSet) -> Self {
        SharedHandlers {
            current: std::sync::RwLock::new(std::sync::Arc::new(set)),
        }
    }

    /// The table in force.
    pub fn current(&self) -> std::sync::Arc<HandlerSet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the table for runs that start from now on. The new table reports into the same
    /// health record: a handler keeps its verdict only when its entry is unchanged and its key is
    /// not read from a file. A changed entry (a new key, another hub) or a key file (perhaps fixed
    /// in place: a reload is how an operator says so) starts healthy again until a run says
    /// otherwise, and a handler no longer configured loses its record.
    pub fn replace(&self, mut set: HandlerSet) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let health = current.health.clone();
        health.configure(set.handlers.iter().map(|handler| {
            let unchanged = current.handlers.iter().any(|old| old == handler);
            let key_file = handler
                .coder
                .as_ref()
                .is_some_and(|coder| coder.client.key_file.is_some());
            (handler.name.clone(), unchanged && !key_file)
        }));
        set.health = health;
        *current = std::sync::Arc::new(set);
    }
}

impl Handlers for SharedHandlers {
    fn select(&self, document: &TaskDocument) -> Option<String> {
        self.current().select(document)
    }

    async fn run(&self, name: &str, context: TaskContext) -> Outcome {
        let set = self.current();
        set.run(name, context).await
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else literally.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            // Let the last star swallow one more character and try again.
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Claim, Priority, TaskRef, TaskRun};

    fn document(title: &str, priority: Priority, metadata: Value) -> TaskDocument {
        TaskDocument::new(
            Claim {
                task: TaskRef {
                    id: "task-1".into(),
                    title: Some(title.into()),
                    priority: Some(priority),
                    ..Default::default()
                },
                run: TaskRun {
                    id: "run-1".into(),
                    metadata: Some(metadata),
                    ..Default::default()
                },
                ..Default::default()
            },
            None,
            None,
        )
    }

    fn handler(name: &str, matches: MatchRule) -> HandlerConfig {
        HandlerConfig {
            name: name.into(),
            kind: HandlerKind::Noop,
            matches,
            exec: None,
            webhook: None,
            coder: None,
        }
    }

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_matches("deploy *", "deploy web"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a?c", "abc"));
        assert!(glob_matches("*fix*bug*", "please fix this bug now"));
        assert!(!glob_matches("deploy *", "redeploy web"));
        assert!(!glob_matches("a?c", "ac"));
    }

    #[test]
    fn the_first_matching_handler_wins_and_an_empty_rule_is_the_default() {
        let set = HandlerSet::new(vec![
            handler(
                "deploys",
                MatchRule {
                    title: Some("Deploy *".into()),
                    ..Default::default()
                },
            ),
            handler(
                "urgent",
                MatchRule {
                    priority: vec!["urgent".into()],
                    ..Default::default()
                },
            ),
            handler(
                "python",
                MatchRule {
                    metadata_key: Some("python".into()),
                    ..Default::default()
                },
            ),
            handler("default", MatchRule::default()),
        ]);
        let pick = |title, priority, metadata| set.select(&document(title, priority, metadata));
        assert_eq!(
            pick("deploy api", Priority::Urgent, json!({})),
            Some("deploys".into())
        );
        assert_eq!(
            pick("fix", Priority::Urgent, json!({})),
            Some("urgent".into())
        );
        assert_eq!(
            pick("fix", Priority::Low, json!({"python": true})),
            Some("python".into())
        );
        assert_eq!(
            pick("fix", Priority::Low, json!({})),
            Some("default".into())
        );
    }

    #[test]
    fn a_run_no_handler_matches_selects_nothing() {
        let set = HandlerSet::new(vec![handler(
            "deploys",
            MatchRule {
                title: Some("deploy *".into()),
                ..Default::default()
            },
        )]);
        assert_eq!(set.select(&document("fix", Priority::Low, json!({}))), None);
    }

    #[test]
    fn table_problems_name_the_entry_and_what_to_do() {
        let mut exec_without_settings = handler("a", MatchRule::default());
        exec_without_settings.kind = HandlerKind::Exec;
        let bad_priority = handler(
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
        let mut webhook_without_settings = handler("a", MatchRule::default());
        webhook_without_settings.kind = HandlerKind::Webhook;
        let mut noop_with_webhook = handler("b", MatchRule::default());
        noop_with_webhook.webhook = Some(WebhookConfig {
            url: "http://127.0.0.1:8787/task".into(),
            ..WebhookConfig::default()
        });
        let mut webhook_with_exec = handler("c", MatchRule::default());
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
        let mut coder_without_settings = handler("a", MatchRule::default());
        coder_without_settings.kind = HandlerKind::Coder;
        let mut noop_with_coder = handler("b", MatchRule::default());
        noop_with_coder.coder = Some(CoderConfig::default());
        let mut bad_mode = handler("c", MatchRule::default());
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

    #[test]
    fn a_reload_keeps_the_health_verdict_of_unchanged_handlers_only() {
        let coder = |name: &str, key: Option<&str>, key_file: Option<&str>| HandlerConfig {
            kind: HandlerKind::Coder,
            coder: Some(CoderConfig {
                client: crate::agentuity::ClientSettings {
                    key: key.map(str::to_string),
                    key_file: key_file.map(std::path::PathBuf::from),
                    ..crate::agentuity::ClientSettings::default()
                },
                ..CoderConfig::default()
            }),
            ..handler(name, MatchRule::default())
        };
        let health = HandlerHealth::default();
        let shared = SharedHandlers::new(
            HandlerSet::new(vec![
                coder("same", Some("k1"), None),
                coder("new-key", Some("k1"), None),
                coder("key-file", None, Some("/run/credentials/key")),
                coder("removed", Some("k1"), None),
            ])
            .with_health(health.clone()),
        );
        for name in ["same", "new-key", "key-file", "removed"] {
            health.reporter(name).unhealthy("refused");
        }
        shared.replace(HandlerSet::new(vec![
            coder("same", Some("k1"), None),
            coder("new-key", Some("k2"), None),
            coder("key-file", None, Some("/run/credentials/key")),
        ]));
        let unhealthy: Vec<String> = health.unhealthy().into_iter().map(|h| h.name).collect();
        assert_eq!(unhealthy, vec!["same".to_string()]);
        let configured: Vec<String> = health.handlers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(configured, vec!["key-file", "new-key", "same"]);
        // The new table reports into the same record.
        shared
            .current()
            .health
            .reporter("new-key")
            .unhealthy("refused");
        assert_eq!(health.unhealthy().len(), 2);
    }

    #[tokio::test]
    async fn a_webhook_entry_without_settings_releases_rather_than_guessing() {
        let mut entry = handler("hook", MatchRule::default());
        entry.kind = HandlerKind::Webhook;
        let set = HandlerSet::new(vec![entry]);
        let (events, _events) = tokio::sync::mpsc::channel(1);
        let (_inbound, inbound) = tokio::sync::mpsc::channel(1);
        let context = TaskContext {
            document: std::sync::Arc::new(document("t", Priority::Low, json!({}))),
            cancel: tokio_util::sync::CancellationToken::new(),
            time_limit: None,
            events,
            inbound,
        };
        let outcome = set.run("hook", context).await;
        assert!(
            matches!(&outcome, Outcome::Release(reason) if reason.contains("no webhook settings")),
            "{outcome:?}"
        );
    }
}
