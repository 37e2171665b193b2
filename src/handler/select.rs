//! Choosing the handler of a run: the handlers a worker has (in-process ones, then the configured
//! table; first match wins), the handler chosen for one run with everything it needs, the table
//! in force that a reload replaces, and the `noop` kind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use super::health::{HandlerHealth, HandlerHealthReporter};
use super::matching::MatchRule;
use super::process_groups::ProcessGroups;
use super::table::{HandlerConfig, HandlerKind};
use super::{Handler, Outcome, TaskContext, TaskDocument, coder, exec, webhook};
use crate::util::sync::Swap;

/// The handlers a worker has: in-process handlers added in code, tried first in the order they
/// were added, then the configured `[[handlers]]` table, in order. First match wins.
#[derive(Clone, Debug, Default)]
pub struct HandlerSet {
    in_process: Vec<InProcess>,
    configured: Vec<Arc<HandlerConfig>>,
    /// Where runs report whether their handler can work (a record of its own unless
    /// [`HandlerSet::with_health`] shares the status board's).
    health: HandlerHealth,
    /// Where handler programs' process groups are recorded (nowhere unless
    /// [`HandlerSet::with_process_groups`] says).
    process_groups: ProcessGroups,
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
            process_groups: ProcessGroups::disabled(),
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

    /// Records the process groups of the handler programs it starts in `groups`.
    pub fn with_process_groups(mut self, groups: ProcessGroups) -> Self {
        self.process_groups = groups;
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
                process_groups: self.process_groups.clone(),
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
        process_groups: ProcessGroups,
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
        let (config, health, process_groups) = match self.runner {
            Runner::InProcess(handler) => return handler.run_boxed(context).await,
            Runner::Configured {
                config,
                health,
                process_groups,
            } => (config, health, process_groups),
        };
        let name = &config.name;
        match config.kind {
            HandlerKind::Exec => match &config.exec {
                Some(exec) => exec::run(exec, context, &process_groups).await,
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
                process_groups: current.process_groups.clone(),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{Claim, Priority, TaskRef, TaskRun};
    use crate::handler::coder::CoderConfig;
    use serde_json::Value;

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

    #[test]
    fn the_first_matching_handler_wins_and_an_empty_rule_is_the_default() {
        let set = HandlerSet::new(vec![
            HandlerConfig::noop(
                "deploys",
                MatchRule {
                    title: Some("Deploy *".into()),
                    ..Default::default()
                },
            ),
            HandlerConfig::noop(
                "urgent",
                MatchRule {
                    priority: vec!["urgent".into()],
                    ..Default::default()
                },
            ),
            HandlerConfig::noop(
                "python",
                MatchRule {
                    metadata_key: Some("python".into()),
                    ..Default::default()
                },
            ),
            HandlerConfig::noop("default", MatchRule::default()),
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
        let set = HandlerSet::new(vec![HandlerConfig::noop(
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
            ..HandlerConfig::noop(name, MatchRule::default())
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
        let mut entry = HandlerConfig::noop("hook", MatchRule::default());
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
            HandlerSet::new(vec![HandlerConfig::noop("default", MatchRule::default())])
                .with_in_process(
                    "echo",
                    MatchRule {
                        title: Some("echo *".into()),
                        ..Default::default()
                    },
                    Echo,
                ),
        );
        shared.replace(vec![HandlerConfig::noop("reloaded", MatchRule::default())]);
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
        let shared = SharedHandlers::new(HandlerSet::new(vec![HandlerConfig::noop(
            "a",
            MatchRule::default(),
        )]));
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
