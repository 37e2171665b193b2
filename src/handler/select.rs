//! The handler table: which handler runs which task (first match wins), the handler chosen for
//! one run, and the `noop` kind.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::coder::{self, CoderConfig};
use super::exec::{self, ExecConfig};
use super::health::{HandlerHealth, HandlerHealthReporter};
use super::webhook::{self, WebhookConfig};
use super::{Handler, Outcome, TaskContext, TaskDocument};
use crate::util::sync::Swap;

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

/// The handlers a worker has: in-process handlers added in code, tried first in the order they
/// were added, then the configured `[[handlers]]` table, in order. First match wins.
#[derive(Clone, Debug, Default)]
pub struct HandlerSet {
    in_process: Vec<InProcess>,
    configured: Vec<Arc<HandlerConfig>>,
    /// Where runs report whether their handler can work (a record of its own unless
    /// [`HandlerSet::with_health`] shares the status board's).
    health: HandlerHealth,
}

/// An in-process handler with the tasks it takes.
#[derive(Clone)]
struct InProcess {
    name: String,
    matches: MatchRule,
    handler: Arc<dyn RunBoxed>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("name", &self.name)
            .field("matches", &self.matches)
            .finish_non_exhaustive()
    }
}

type BoxedOutcome<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// [`Handler`] behind a pointer: its future boxed, once per run.
trait RunBoxed: Send + Sync + 'static {
    fn run_boxed(&self, context: TaskContext) -> BoxedOutcome<'_>;
}

impl<T: Handler> RunBoxed for T {
    fn run_boxed(&self, context: TaskContext) -> BoxedOutcome<'_> {
        Box::pin(self.run(context))
    }
}

/// One in-process handler that takes every task.
impl<T: Handler> From<T> for HandlerSet {
    fn from(handler: T) -> Self {
        let name = std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("in-process");
        HandlerSet::default().with_in_process(name, MatchRule::default(), handler)
    }
}

impl HandlerSet {
    /// The configured table (each entry's kind runs it).
    pub fn new(handlers: Vec<HandlerConfig>) -> Self {
        HandlerSet {
            in_process: Vec::new(),
            configured: handlers.into_iter().map(Arc::new).collect(),
            health: HandlerHealth::default(),
        }
    }

    /// Adds an in-process handler named `name` for the tasks `matches` accepts (a default
    /// [`MatchRule`] accepts every task), tried before the configured table.
    pub fn with_in_process(
        mut self,
        name: impl Into<String>,
        matches: MatchRule,
        handler: impl Handler,
    ) -> Self {
        self.in_process.push(InProcess {
            name: name.into(),
            matches,
            handler: Arc::new(handler),
        });
        self
    }

    /// Reports the handlers' health into `health` (the status board's record, which `/readyz`
    /// reads), every handler starting healthy.
    pub fn with_health(mut self, health: HandlerHealth) -> Self {
        health.configure(self.configured.iter().map(|h| (h.name.clone(), false)));
        self.health = health;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.in_process.is_empty() && self.configured.is_empty()
    }

    /// The configured entries.
    pub fn configs(&self) -> impl Iterator<Item = &HandlerConfig> {
        self.configured.iter().map(|config| config.as_ref())
    }

    /// The configured handler named `name`, whatever tasks it takes.
    pub fn by_name(&self, name: &str) -> Option<ChosenHandler> {
        let config = self.configured.iter().find(|h| h.name == name)?;
        Some(self.chosen(config))
    }

    fn chosen(&self, config: &Arc<HandlerConfig>) -> ChosenHandler {
        ChosenHandler {
            name: config.name.clone(),
            runner: Runner::Configured {
                config: config.clone(),
                health: self.health.reporter(&config.name),
            },
        }
    }

    /// The handler for `document`, frozen for its run: a reload after this cannot change it.
    /// `None` when no handler takes the task (the run is released).
    pub fn select(&self, document: &TaskDocument) -> Option<ChosenHandler> {
        if let Some(entry) = self
            .in_process
            .iter()
            .find(|entry| entry.matches.accepts(document))
        {
            return Some(ChosenHandler {
                name: entry.name.clone(),
                runner: Runner::InProcess(entry.handler.clone()),
            });
        }
        let config = self
            .configured
            .iter()
            .find(|h| h.matches.accepts(document))?;
        Some(self.chosen(config))
    }
}

/// The handler chosen for one run, with everything it needs to run: a configured entry as it
/// was at the claim, or an in-process handler.
pub struct ChosenHandler {
    name: String,
    runner: Runner,
}

enum Runner {
    Configured {
        config: Arc<HandlerConfig>,
        health: HandlerHealthReporter,
    },
    InProcess(Arc<dyn RunBoxed>),
}

impl std::fmt::Debug for ChosenHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChosenHandler")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ChosenHandler {
    /// The handler's name, as logs and `/status` show it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the handler to its outcome.
    pub async fn run(self, context: TaskContext) -> Outcome {
        let (config, health) = match self.runner {
            Runner::InProcess(handler) => return handler.run_boxed(context).await,
            Runner::Configured { config, health } => (config, health),
        };
        let name = &config.name;
        match config.kind {
            HandlerKind::Exec => match &config.exec {
                Some(exec) => exec::run(exec, context).await,
                None => {
                    Outcome::Release(format!("agh-worker: handler {name:?} has no exec settings"))
                }
            },
            HandlerKind::Webhook => match &config.webhook {
                Some(webhook) => webhook::run(webhook, context).await,
                None => Outcome::Release(format!(
                    "agh-worker: handler {name:?} has no webhook settings"
                )),
            },
            HandlerKind::Coder => match &config.coder {
                Some(coder) => coder::run(coder, context, &health).await,
                None => Outcome::Release(format!(
                    "agh-worker: handler {name:?} has no coder settings"
                )),
            },
            HandlerKind::Noop => Outcome::Complete(json!({"handler": "noop"})),
        }
    }
}

/// The handler table in force, replaceable while the worker runs (SIGHUP). A run keeps the
/// handler chosen for it ([`ChosenHandler`]).
#[derive(Debug, Default)]
pub struct SharedHandlers {
    current: Swap<HandlerSet>,
}

impl From<HandlerSet> for SharedHandlers {
    fn from(set: HandlerSet) -> Self {
        SharedHandlers::new(set)
    }
}

impl SharedHandlers {
    pub fn new(set: HandlerSet) -> Self {
        SharedHandlers {
            current: Swap::new(set),
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<HandlerSet> {
        self.current.get()
    }

    /// The handler for `document` from the table in force.
    pub fn select(&self, document: &TaskDocument) -> Option<ChosenHandler> {
        self.current().select(document)
    }

    /// Replaces the configured table for runs that start from now on; in-process handlers stay.
    /// The new table reports into the same health record: a handler keeps its verdict only when
    /// its entry is unchanged and its key is not read from a file. A changed entry (a new key,
    /// another hub) or a key file (perhaps fixed in place: a reload is how an operator says so)
    /// starts healthy again until a run says otherwise, and a handler no longer configured loses
    /// its record.
    pub fn replace(&self, handlers: Vec<HandlerConfig>) {
        self.current.replace_with(|current| {
            let health = current.health.clone();
            health.configure(handlers.iter().map(|handler| {
                let unchanged = current.configured.iter().any(|old| **old == *handler);
                let key_file = handler
                    .coder
                    .as_ref()
                    .is_some_and(|coder| coder.client.key_file.is_some());
                (handler.name.clone(), unchanged && !key_file)
            }));
            HandlerSet {
                in_process: current.in_process.clone(),
                configured: handlers.into_iter().map(Arc::new).collect(),
                health,
            }
        });
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
        let pick = |title, priority, metadata| {
            set.select(&document(title, priority, metadata))
                .map(|chosen| chosen.name().to_string())
        };
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
        assert!(
            set.select(&document("fix", Priority::Low, json!({})))
                .is_none()
        );
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
        shared.replace(vec![
            coder("same", Some("k1"), None),
            coder("new-key", Some("k2"), None),
            coder("key-file", None, Some("/run/credentials/key")),
        ]);
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
        let Some(chosen) = set.select(&document("t", Priority::Low, json!({}))) else {
            panic!("the entry takes every task");
        };
        let outcome = chosen.run(context).await;
        assert!(
            matches!(&outcome, Outcome::Release(reason) if reason.contains("no webhook settings")),
            "{outcome:?}"
        );
    }

    struct Echo;

    impl Handler for Echo {
        async fn run(&self, context: TaskContext) -> Outcome {
            Outcome::Complete(json!({"title": context.document.title}))
        }
    }

    #[tokio::test]
    async fn an_in_process_handler_is_tried_before_the_table_and_survives_a_reload() {
        let shared = SharedHandlers::new(
            HandlerSet::new(vec![handler("default", MatchRule::default())]).with_in_process(
                "echo",
                MatchRule {
                    title: Some("echo *".into()),
                    ..Default::default()
                },
                Echo,
            ),
        );
        shared.replace(vec![handler("reloaded", MatchRule::default())]);
        let name = |title: &str| {
            shared
                .select(&document(title, Priority::Low, json!({})))
                .map(|chosen| chosen.name().to_string())
        };
        assert_eq!(name("echo hello").as_deref(), Some("echo"));
        assert_eq!(name("other").as_deref(), Some("reloaded"));
        let Some(chosen) = shared.select(&document("echo hi", Priority::Low, json!({}))) else {
            panic!("echo takes it");
        };
        let (events, _events) = tokio::sync::mpsc::channel(1);
        let (_inbound, inbound) = tokio::sync::mpsc::channel(1);
        let context = TaskContext {
            document: Arc::new(document("echo hi", Priority::Low, json!({}))),
            cancel: tokio_util::sync::CancellationToken::new(),
            time_limit: None,
            events,
            inbound,
        };
        assert_eq!(
            chosen.run(context).await,
            Outcome::Complete(json!({"title": "echo hi"}))
        );
    }

    #[test]
    fn a_handler_chosen_before_a_reload_keeps_its_entry() {
        let shared = SharedHandlers::new(HandlerSet::new(vec![handler("a", MatchRule::default())]));
        let Some(chosen) = shared.select(&document("t", Priority::Low, json!({}))) else {
            panic!("a takes every task");
        };
        shared.replace(Vec::new());
        assert_eq!(chosen.name(), "a");
        assert!(
            shared
                .select(&document("t", Priority::Low, json!({})))
                .is_none()
        );
    }
}
