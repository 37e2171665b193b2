//! The `coder` handler: runs each task as an Agentuity Coder Hub session.
//!
//! The flow follows the research notes (§9): adopt a session already made for this run (by the
//! `agh-run:<run_id>` tag or metadata) or create one from the configured template; wait while it
//! provisions; follow it by polling its detail, its loop state and the tail of its event history,
//! forwarding milestones as throttled progress; decide completion by the loop's terminal states,
//! or in standard mode by `session_complete`/`session_error`, the session going to history, or the
//! lead's `agent_end` followed by a quiet period confirmed by a re-read. The result carries the
//! summary, the session id, usage with cost (`null` when unknown, never 0) and the duration. The
//! session is archived once done, on the deadline, and (by default) when the run is cancelled.
//!
//! There is no idempotency key on session create, so a create whose fate is unknown (a timeout, a
//! 502/503) is never repeated blindly: the run's tag is looked up first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::health::HandlerHealthReporter;
use super::{CANCEL_GRACE, FORCED_STOP_GRACE};
use super::{Outcome, TaskContext, TaskDocument};
use crate::agentuity::{
    AgentuityClient, AgentuityError, ClientSettings, CreatedSession, Env, ErrorClass, EventHistory,
    HubEvent, ListSessions, LoopState, LoopStateAnswer, LoopStatus, Replay, RetryPolicy, Session,
    SessionPage, SessionStatus, Usage, WorkflowMode, process_env,
};
use crate::util::redact::without_userinfo;
use crate::util::time::sleep_until_option;

const LOG_TARGET: &str = "agh_worker::handler::coder";
/// Milestones kept for the next progress line; older ones are dropped (the count is reported).
const MAX_PENDING_MILESTONES: usize = 20;
/// Consecutive failed reads of the session before the run fails.
const MAX_READ_FAILURES: u32 = 10;
/// Creates attempted when each one's fate was unknown (each preceded by a lookup).
const CREATE_ATTEMPTS: u32 = 3;
/// Everything a stopped run does (find an interrupted create's session, archive, read the final
/// usage) shares this budget. The lease task abandons a cancelled handler after
/// [`CANCEL_GRACE`] (10 s), and after a forced stop (a second `SIGTERM`) after
/// [`FORCED_STOP_GRACE`] (3 s); 8 s leaves 2 s of the grace to report the outcome. The archive
/// is sent first, at once when the session is known, so a forced stop still archives whenever
/// the Hub answers within its 3 s; the usage read only gets what the archive left.
const STOP_BUDGET: Duration = Duration::from_secs(8);
/// The part of [`STOP_BUDGET`] spent looking for a session whose create was interrupted; short
/// of a forced stop's grace, so the archive can follow.
const STOP_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of [`STOP_BUDGET`] the final usage read takes, after the archive.
const STOP_READ_TIMEOUT: Duration = Duration::from_secs(2);
// The stop path's arithmetic, checked where the constants live.
const _: () = assert!(
    STOP_BUDGET.as_millis() + 2000 <= CANCEL_GRACE.as_millis()
        && STOP_LOOKUP_TIMEOUT.as_millis() < FORCED_STOP_GRACE.as_millis()
        && STOP_LOOKUP_TIMEOUT.as_millis() + STOP_READ_TIMEOUT.as_millis()
            < STOP_BUDGET.as_millis()
        && FINISH_ARCHIVE_AFTER_CANCEL.as_millis() < FORCED_STOP_GRACE.as_millis()
);
/// The longest a finished run spends archiving and reading its final usage and answer.
const FINISH_BUDGET_MAX: Duration = Duration::from_secs(20);
/// The least a finished run gets for that, even at its deadline: the worker's own limit comes
/// later (the deadline margin, then the cancel grace), and its cancellation cuts the reads.
const FINISH_BUDGET_MIN: Duration = Duration::from_secs(5);
/// How long an archive already sent may still take once the worker cancels a finishing run;
/// within the forced stop's grace.
const FINISH_ARCHIVE_AFTER_CANCEL: Duration = Duration::from_secs(2);
/// A stop this close to the run's time limit is the time limit. The worker's clock for it starts
/// a moment before the handler's, so when the handler keeps no margin (or the margin is longer
/// than the limit) the worker's cancellation arrives just before the handler's own deadline; taken
/// for an ordinary stop, it left the session running under `leave_running` although a run failed
/// on its time limit is never claimed again.
const TIME_LIMIT_SLACK: Duration = Duration::from_secs(1);
/// Event history pages read in one poll: more new events than this many pages hold between two
/// polls are not news any more, and a bound keeps a Hub that pages wrongly from holding a poll.
const MAX_EVENT_PAGES: u32 = 10;
/// The longest progress line sent.
const MAX_PROGRESS_CHARS: usize = 600;

/// What to do with a live session when the run is stopped by the worker (lease lost, shutdown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopPolicy {
    /// Read its usage and archive it (the sandbox stops; the transcript stays).
    #[default]
    Archive,
    /// Leave it running and release the run, naming the session: the next claim of the run finds
    /// it by its tag and adopts it.
    LeaveRunning,
}

/// Configuration of one coder handler (`handlers[].coder`).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoderConfig {
    /// The API key (never printed); prefer `key_file` or `AGENTUITY_SDK_KEY`.
    pub key: Option<String>,
    /// A file holding the key; relative paths are resolved against `$CREDENTIALS_DIRECTORY`.
    pub key_file: Option<PathBuf>,
    /// Sent as `x-agentuity-orgid`.
    pub org_id: Option<String>,
    /// Catalyst region; else `AGENTUITY_REGION`, else `usc`.
    pub region: Option<String>,
    /// Coder Hub base URL; else `AGENTUITY_CODER_URL`, else discovery through Catalyst.
    pub hub_url: Option<String>,
    /// Catalyst base URL; else `AGENTUITY_CATALYST_URL`, else the region's.
    pub catalyst_url: Option<String>,
    /// Longest wait for one HTTP answer, in seconds.
    pub request_timeout_seconds: u64,

    /// The session's task text; placeholders `{title}`, `{description}`, `{handoff_summary}`,
    /// `{task_id}`, `{run_id}`, `{attempt}`, `{identifier}`. Unset: title, description and
    /// handoff summary, one paragraph each.
    pub task_template: Option<String>,
    /// The session's label (same placeholders).
    pub label_template: String,
    /// `standard` or `loop`.
    pub workflow_mode: String,
    /// The agent to route to, when not the default.
    pub agent: Option<String>,
    /// A pre-built workspace (repos, skills, system prompt).
    pub workspace_id: Option<String>,
    /// A repository to clone into the sandbox.
    pub repo_url: Option<String>,
    pub repo_branch: Option<String>,
    /// `private`, `organization` or `collaborate`.
    pub visibility: String,
    /// Loop mode: the goal (same placeholders; default the task text).
    pub loop_goal: Option<String>,
    pub loop_max_iterations: Option<u32>,
    /// Loop mode: go on to the next iteration without approval (no one is there to approve).
    pub loop_auto_continue: bool,
    /// Loop mode: keep going with no client attached (the worker never attaches).
    pub loop_allow_detached: bool,
    /// Sandbox timeouts, as the Hub spells them (`30m`, `2h`): bounds on a sandbox the worker
    /// could no longer archive.
    pub sandbox_idle_timeout: Option<String>,
    pub sandbox_execution_timeout: Option<String>,
    pub sandbox_paused_timeout: Option<String>,
    /// Environment of the sandbox runtime. Values are never printed.
    pub env: BTreeMap<String, String>,
    /// Tags added to the run's own (`agh-run:<run_id>`, `agh-task:<task_id>`).
    pub tags: Vec<String>,

    /// Pause between polls of a session, in seconds.
    pub poll_seconds: f64,
    /// Longest wait for a session to leave `creating`/`provisioning`, in seconds.
    pub provisioning_timeout_seconds: f64,
    /// Events per page of the history; a poll reads up to 10 pages of new events.
    pub event_page_size: u32,
    /// Shortest pause between two progress lines, in seconds.
    pub progress_interval_seconds: f64,
    /// How long a loop may stay `blocked` or `awaiting_input` before the run fails, in seconds.
    pub blocked_grace_seconds: f64,
    /// Standard mode: quiet time after the lead's `agent_end` before the session counts as
    /// finished, in seconds.
    pub quiet_seconds: f64,
    /// Wake-ups of a paused session allowed per run.
    pub max_resumes: u32,
    /// Time kept back from the run's time limit to archive and report, in seconds.
    pub deadline_margin_seconds: f64,
    /// Archive the session once the run is complete or failed.
    pub archive_on_finish: bool,
    /// What to do with a live session when the worker stops the run.
    pub on_stop: StopPolicy,
}

impl Default for CoderConfig {
    fn default() -> Self {
        CoderConfig {
            key: None,
            key_file: None,
            org_id: None,
            region: None,
            hub_url: None,
            catalyst_url: None,
            request_timeout_seconds: 30,
            task_template: None,
            label_template: "agh:{identifier}".into(),
            workflow_mode: "standard".into(),
            agent: None,
            workspace_id: None,
            repo_url: None,
            repo_branch: None,
            visibility: "private".into(),
            loop_goal: None,
            loop_max_iterations: None,
            loop_auto_continue: true,
            loop_allow_detached: true,
            sandbox_idle_timeout: Some("30m".into()),
            sandbox_execution_timeout: None,
            sandbox_paused_timeout: Some("1h".into()),
            env: BTreeMap::new(),
            tags: Vec::new(),
            poll_seconds: 5.0,
            provisioning_timeout_seconds: 300.0,
            event_page_size: 100,
            progress_interval_seconds: 15.0,
            blocked_grace_seconds: 120.0,
            quiet_seconds: 45.0,
            max_resumes: 3,
            deadline_margin_seconds: 15.0,
            archive_on_finish: true,
            on_stop: StopPolicy::Archive,
        }
    }
}

/// Written by hand so the key and the sandbox environment values never reach a log line.
impl fmt::Debug for CoderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: BTreeMap<&str, &str> = self
            .env
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("CoderConfig")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("key_file", &self.key_file)
            .field("org_id", &self.org_id)
            .field("region", &self.region)
            .field("hub_url", &self.hub_url.as_deref().map(without_userinfo))
            .field(
                "catalyst_url",
                &self.catalyst_url.as_deref().map(without_userinfo),
            )
            .field("workflow_mode", &self.workflow_mode)
            .field("agent", &self.agent)
            .field("workspace_id", &self.workspace_id)
            .field("repo_url", &self.repo_url)
            .field("env", &env)
            .field("poll_seconds", &self.poll_seconds)
            .field("on_stop", &self.on_stop)
            .finish_non_exhaustive()
    }
}

impl CoderConfig {
    /// How the client reaches Agentuity.
    pub fn client_settings(&self) -> ClientSettings {
        ClientSettings {
            key: self.key.clone(),
            key_file: self.key_file.clone(),
            org_id: self.org_id.clone(),
            region: self.region.clone(),
            hub_url: self.hub_url.clone(),
            catalyst_url: self.catalyst_url.clone(),
            api_url: None,
            request_timeout_seconds: self.request_timeout_seconds,
        }
    }

    /// Problems a config check reports, each naming the key under `path` and what to do.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = self.client_settings().problems(path);
        if !matches!(self.workflow_mode.as_str(), "standard" | "loop") {
            problems.push(format!(
                "{path}.workflow_mode {:?} is not a mode: use \"standard\" or \"loop\"",
                self.workflow_mode
            ));
        }
        if !matches!(
            self.visibility.as_str(),
            "private" | "organization" | "collaborate"
        ) {
            problems.push(format!(
                "{path}.visibility {:?} is not a visibility: use private, organization or collaborate",
                self.visibility
            ));
        }
        for (name, value) in [
            ("poll_seconds", self.poll_seconds),
            (
                "provisioning_timeout_seconds",
                self.provisioning_timeout_seconds,
            ),
            ("progress_interval_seconds", self.progress_interval_seconds),
            ("blocked_grace_seconds", self.blocked_grace_seconds),
            ("quiet_seconds", self.quiet_seconds),
            ("deadline_margin_seconds", self.deadline_margin_seconds),
        ] {
            if !value.is_finite() || value < 0.0 {
                problems.push(format!(
                    "{path}.{name} = {value} is not a duration: use a number of seconds, 0 or more"
                ));
            }
        }
        if self.poll_seconds.is_finite() && self.poll_seconds <= 0.0 {
            problems.push(format!(
                "{path}.poll_seconds must be above 0: the hub would be polled without a pause"
            ));
        }
        if self.event_page_size == 0 {
            problems.push(format!("{path}.event_page_size must be at least 1"));
        }
        problems
    }

    fn mode(&self) -> WorkflowMode {
        WorkflowMode::from(self.workflow_mode.clone())
    }

    /// The body of `POST /hub/session` for a task.
    pub fn session_body(&self, document: &TaskDocument) -> Value {
        let task = match &self.task_template {
            Some(template) => substitute(template, document),
            None => default_task_text(document),
        };
        let mut tags = vec![run_tag(&document.run_id)];
        if !document.task_id.is_empty() {
            tags.push(format!("agh-task:{}", document.task_id));
        }
        tags.extend(self.tags.iter().cloned());
        let mut body = json!({
            "task": task,
            "label": substitute(&self.label_template, document),
            "workflowMode": self.workflow_mode,
            "visibility": self.visibility,
            "tags": tags,
            // Strings only: the Hub accepts string metadata values on update.
            "metadata": {
                "agh_run_id": document.run_id,
                "agh_task_id": document.task_id,
                "agh_attempt": document.attempt.to_string(),
            },
        });
        let mut extra = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                extra.insert(key.into(), value);
            }
        };
        put("agent", self.agent.clone().map(Value::from));
        put("workspaceId", self.workspace_id.clone().map(Value::from));
        put(
            "repo",
            self.repo_url.as_ref().map(|url| {
                let mut repo = json!({ "url": url });
                if let Some(branch) = &self.repo_branch {
                    repo["branch"] = json!(branch);
                }
                repo
            }),
        );
        if self.mode() == WorkflowMode::Loop {
            let mut loop_body = json!({
                "goal": self.loop_goal.as_ref().map_or_else(|| task.clone(), |g| substitute(g, document)),
                "autoContinue": self.loop_auto_continue,
                "allowDetached": self.loop_allow_detached,
            });
            if let Some(max) = self.loop_max_iterations {
                loop_body["maxIterations"] = json!(max);
            }
            put("loop", Some(loop_body));
        }
        let mut timeout = Map::new();
        for (key, value) in [
            ("idle", &self.sandbox_idle_timeout),
            ("execution", &self.sandbox_execution_timeout),
            ("paused", &self.sandbox_paused_timeout),
        ] {
            if let Some(value) = value {
                timeout.insert(key.into(), json!(value));
            }
        }
        if !timeout.is_empty() {
            put("timeout", Some(Value::Object(timeout)));
        }
        if !self.env.is_empty() {
            put("env", Some(json!(self.env)));
        }
        if let Some(object) = body.as_object_mut() {
            object.append(&mut extra);
        }
        body
    }
}

fn seconds(value: f64, fallback: f64) -> Duration {
    Duration::try_from_secs_f64(value)
        .or_else(|_| Duration::try_from_secs_f64(fallback))
        .unwrap_or_default()
}

/// The tag that marks a session as this run's.
pub fn run_tag(run_id: &str) -> String {
    format!("agh-run:{run_id}")
}

fn description(document: &TaskDocument) -> Option<String> {
    document
        .claim
        .task
        .extra
        .get("description")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

fn handoff(document: &TaskDocument) -> Option<String> {
    document
        .bundle
        .as_ref()
        .and_then(|b| b.handoff_summary.as_deref())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn default_task_text(document: &TaskDocument) -> String {
    let mut parts = vec![document.title.trim().to_string()];
    parts.extend(description(document));
    if let Some(summary) = handoff(document) {
        parts.push(format!("Handoff from earlier attempts:\n{summary}"));
    }
    parts.retain(|p| !p.is_empty());
    parts.join("\n\n")
}

fn substitute(template: &str, document: &TaskDocument) -> String {
    let identifier = document
        .claim
        .task
        .identifier
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| document.task_id.clone());
    template
        .replace("{title}", &document.title)
        .replace("{description}", &description(document).unwrap_or_default())
        .replace("{handoff_summary}", &handoff(document).unwrap_or_default())
        .replace("{task_id}", &document.task_id)
        .replace("{run_id}", &document.run_id)
        .replace("{attempt}", &document.attempt.to_string())
        .replace("{identifier}", &identifier)
}

/// What to tell a person whose key Agentuity refused (401) or denied access (403): where the key
/// came from and what to do. Never the key itself.
pub fn refused_key_reason(config: &CoderConfig, status: Option<u16>) -> String {
    let fix = |wanted: &str| {
        if config.key.is_some() {
            format!("set handlers.coder.key to {wanted}")
        } else if let Some(file) = &config.key_file {
            format!(
                "put {wanted} in handlers.coder.key_file ({})",
                file.display()
            )
        } else {
            format!("set AGENTUITY_SDK_KEY (or handlers.coder.key) to {wanted}")
        }
    };
    match status {
        Some(403) => format!(
            "Agentuity denied the key access (403): {}{}",
            fix("an SDK key with access to the Coder Hub"),
            if config.org_id.is_some() {
                ", and check handlers.coder.org_id"
            } else {
                ""
            }
        ),
        status => format!(
            "Agentuity refused the key ({}): {}",
            status.unwrap_or(401),
            fix("a valid SDK key")
        ),
    }
}

/// An error as a run reports it: an account or key problem also says what to do about it.
fn explain(config: &CoderConfig, err: &AgentuityError) -> String {
    match err.class() {
        Some(ErrorClass::Unauthorized) => {
            format!("{err} — {}", refused_key_reason(config, err.status()))
        }
        Some(ErrorClass::PaymentRequired) => {
            format!("{err} — the Agentuity account needs a plan or credit for Coder sessions")
        }
        Some(ErrorClass::UpgradeRequired) => format!(
            "{err} — the Coder Hub no longer accepts this agh-worker version: upgrade agh-worker"
        ),
        _ => err.to_string(),
    }
}

/// Why `agh-worker check`'s probe of a coder handler failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// What is wrong and what to do, naming the URL tried; never the key.
    pub problem: String,
    /// The error as Agentuity or the network gave it (scrubbed of the key by the client).
    pub detail: String,
}

/// `agh-worker check`'s probe: resolves the Hub URL (the configured one, else discovery through
/// Catalyst) and makes one cheap authenticated read (a one-session page), each within `timeout`
/// and without retries. Answers what was found, or what is wrong and what to do.
pub async fn probe(
    config: &CoderConfig,
    env: &Env,
    timeout: Duration,
) -> Result<String, ProbeFailure> {
    let mut settings = config.client_settings();
    settings.request_timeout_seconds = timeout.as_secs().max(1);
    let retry = RetryPolicy {
        retries: 0,
        unavailable_budget: Duration::ZERO,
        max_server_wait: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let client =
        AgentuityClient::with_retry(&settings, env, retry).map_err(|err| ProbeFailure {
            problem: "the Agentuity client cannot be set up".into(),
            detail: without_userinfo(&err.to_string()),
        })?;
    let failed = |err: AgentuityError, what: &str| ProbeFailure {
        problem: match (&err, err.status()) {
            _ if err.class() == Some(ErrorClass::Unauthorized) => {
                refused_key_reason(config, err.status())
            }
            (_, Some(status)) => format!("{what} answered HTTP {status}"),
            (AgentuityError::Transport { .. }, None) => format!("{what} cannot be reached"),
            (_, None) => format!("{what} gave an answer that is not what was expected"),
        },
        detail: without_userinfo(&err.to_string()),
    };
    let late = |what: &str| ProbeFailure {
        problem: format!("{what} did not answer within {} s", timeout.as_secs_f64()),
        detail: "check the network path to Agentuity, or handlers.coder.hub_url / catalyst_url"
            .into(),
    };
    // A URL configured with `user:password@` is shown without it.
    let discovery = format!(
        "the Agentuity discovery at {}/coder",
        without_userinfo(client.catalyst_url())
    );
    let hub = match tokio::time::timeout(timeout, client.hub_url()).await {
        Ok(Ok(hub)) => without_userinfo(&hub),
        Ok(Err(err)) => return Err(failed(err, &discovery)),
        Err(_) => return Err(late(&discovery)),
    };
    let one = ListSessions {
        limit: Some(1),
        ..ListSessions::default()
    };
    let reading = format!("the Coder Hub at {hub}");
    match tokio::time::timeout(timeout, client.list_sessions(&one)).await {
        Ok(Ok(_)) => Ok(format!("Agentuity accepts the key (Coder Hub {hub})")),
        Ok(Err(err)) => Err(failed(err, &reading)),
        Err(_) => Err(late(&reading)),
    }
}

/// Runs one task as a Coder session, with the key and URLs from this process's environment;
/// whether Agentuity accepts the key goes to `health`.
pub async fn run(
    config: &CoderConfig,
    context: TaskContext,
    health: &HandlerHealthReporter,
) -> Outcome {
    match AgentuityClient::new(&config.client_settings(), &process_env()) {
        Ok(client) => run_with_health(config, context, &client, health).await,
        Err(err) => {
            let error = without_userinfo(&format!("the Agentuity client cannot be set up: {err}"));
            health.unhealthy(error.clone());
            Outcome::Fail {
                error: format!("coder: {error}"),
                metadata: None,
            }
        }
    }
}

/// Runs one task as a Coder session through `client`, reporting health nowhere.
pub async fn run_with_client(
    config: &CoderConfig,
    context: TaskContext,
    client: &AgentuityClient,
) -> Outcome {
    run_with_health(config, context, client, &HandlerHealthReporter::default()).await
}

/// Runs one task as a Coder session through `client`. A refused key marks the handler unhealthy
/// in `health`: a 401 on any call, a 403 on discovery, listing or creating (a 403 on one
/// session's call does not); any accepted call marks it healthy again.
pub async fn run_with_health(
    config: &CoderConfig,
    context: TaskContext,
    client: &AgentuityClient,
    health: &HandlerHealthReporter,
) -> Outcome {
    let hub = Hub {
        client,
        health,
        config,
    };
    let mut run = Run::new(config, &context, hub);
    let id = tokio::select! {
        biased;
        _ = context.cancel.cancelled() => return run.stopped(None).await,
        _ = sleep_until_option(run.deadline) => return run.stopped(None).await,
        adopted = run.adopt_or_create() => match adopted {
            Ok(id) => id,
            Err(outcome) => return outcome,
        },
    };
    tracing::info!(target: LOG_TARGET, session_id = %id, "following the coder session");
    run.follow(&id).await
}

/// Why a followed session is done.
enum End {
    Complete {
        status: String,
        summary: Option<String>,
    },
    Fail(String),
}

/// The client as a run uses it: every answer also tells the handler's health whether
/// Agentuity accepts the key.
struct Hub<'a> {
    client: &'a AgentuityClient,
    health: &'a HandlerHealthReporter,
    config: &'a CoderConfig,
}

/// What a call's refusal says about: the key itself, or one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallScope {
    /// Calls every run makes whatever session it works on: discovery, listing, creating.
    Key,
    /// Calls on one session (read, archive, resume, loop, replay, events).
    Session,
}

/// The path of Catalyst's Hub discovery, which any call may make first.
const DISCOVERY_PATH: &str = "/coder";

/// Whether `err` says Agentuity refuses the key: any 401, and a 403 on a key-level call. A 403
/// on one session's call (a session the key may not touch) says nothing of the key as a whole,
/// so it fails the run (when fatal) without marking the handler unhealthy.
fn refuses_key(scope: CallScope, err: &AgentuityError) -> bool {
    if err.class() != Some(ErrorClass::Unauthorized) {
        return false;
    }
    match err.status() {
        Some(403) => {
            scope == CallScope::Key || err.failure().is_some_and(|f| f.path == DISCOVERY_PATH)
        }
        _ => true,
    }
}

impl Hub<'_> {
    fn seen<T>(
        &self,
        scope: CallScope,
        answer: Result<T, AgentuityError>,
    ) -> Result<T, AgentuityError> {
        match &answer {
            Ok(_) => self.health.healthy(),
            Err(err) if refuses_key(scope, err) => self
                .health
                .unhealthy(refused_key_reason(self.config, err.status())),
            Err(_) => {}
        }
        answer
    }

    async fn create_session(&self, body: &Value) -> Result<CreatedSession, AgentuityError> {
        self.seen(CallScope::Key, self.client.create_session(body).await)
    }

    async fn get_session(&self, id: &str) -> Result<Session, AgentuityError> {
        self.seen(CallScope::Session, self.client.get_session(id).await)
    }

    async fn list_sessions(&self, params: &ListSessions) -> Result<SessionPage, AgentuityError> {
        self.seen(CallScope::Key, self.client.list_sessions(params).await)
    }

    async fn archive_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.seen(CallScope::Session, self.client.archive_session(id).await)
    }

    async fn resume_session(&self, id: &str) -> Result<Value, AgentuityError> {
        self.seen(CallScope::Session, self.client.resume_session(id).await)
    }

    async fn loop_state(&self, id: &str) -> Result<LoopStateAnswer, AgentuityError> {
        self.seen(CallScope::Session, self.client.loop_state(id).await)
    }

    async fn replay(&self, id: &str) -> Result<Replay, AgentuityError> {
        self.seen(CallScope::Session, self.client.replay(id).await)
    }

    async fn event_history(
        &self,
        id: &str,
        limit: Option<u32>,
        before_id: Option<i64>,
    ) -> Result<EventHistory, AgentuityError> {
        self.seen(
            CallScope::Session,
            self.client.event_history(id, limit, before_id).await,
        )
    }
}

struct Run<'a> {
    config: &'a CoderConfig,
    context: &'a TaskContext,
    client: Hub<'a>,
    started: Instant,
    deadline: Option<Instant>,
    poll: Duration,
    session_id: Option<String>,
    created_at: Option<Instant>,
    last_event_id: Option<i64>,
    lead_ended_at: Option<Instant>,
    blocked_since: Option<Instant>,
    resumes: u32,
    last_progress: Option<Instant>,
    pending: Vec<String>,
    dropped: usize,
    last_loop: Option<LoopState>,
    last_session: Option<Session>,
    session_ended: Option<End>,
    provisioning_since: Option<Instant>,
    read_failures: u32,
    reported_cost: Option<f64>,
}

impl<'a> Run<'a> {
    fn new(config: &'a CoderConfig, context: &'a TaskContext, client: Hub<'a>) -> Self {
        let started = Instant::now();
        let deadline = context.time_limit.map(|limit| {
            let margin = seconds(config.deadline_margin_seconds, 15.0);
            // A margin as long as the limit would leave no time at all: keep the limit then.
            started
                + if margin < limit {
                    limit - margin
                } else {
                    limit
                }
        });
        Run {
            config,
            context,
            client,
            started,
            deadline,
            poll: seconds(config.poll_seconds, 5.0).max(Duration::from_millis(1)),
            session_id: None,
            created_at: None,
            last_event_id: None,
            lead_ended_at: None,
            blocked_since: None,
            resumes: 0,
            last_progress: None,
            pending: Vec::new(),
            dropped: 0,
            last_loop: None,
            last_session: None,
            session_ended: None,
            provisioning_since: None,
            read_failures: 0,
            reported_cost: None,
        }
    }

    fn document(&self) -> &TaskDocument {
        &self.context.document
    }

    async fn progress(&mut self, text: String, force: bool) {
        let now = Instant::now();
        self.pending.push(text);
        if self.pending.len() > MAX_PENDING_MILESTONES {
            let extra = self.pending.len() - MAX_PENDING_MILESTONES;
            self.pending.drain(..extra);
            self.dropped += extra;
        }
        let interval = seconds(self.config.progress_interval_seconds, 15.0);
        if !force && self.last_progress.is_some_and(|at| now - at < interval) {
            return;
        }
        self.flush_progress().await;
    }

    async fn progress_due(&mut self) {
        let interval = seconds(self.config.progress_interval_seconds, 15.0);
        if self.last_progress.is_none_or(|at| at.elapsed() >= interval) {
            self.flush_progress().await;
        }
    }

    async fn flush_progress(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut line = self.pending.join("; ");
        if self.dropped > 0 {
            line = format!("(+{} earlier) {line}", self.dropped);
        }
        if line.chars().count() > MAX_PROGRESS_CHARS {
            line = line.chars().take(MAX_PROGRESS_CHARS).collect::<String>() + "…";
        }
        self.pending.clear();
        self.dropped = 0;
        self.last_progress = Some(Instant::now());
        self.context.progress(format!("coder: {line}")).await;
    }

    /// A session already made for this run (run metadata, then the tag), else a new one.
    async fn adopt_or_create(&mut self) -> Result<String, Outcome> {
        let remembered = self
            .document()
            .claim
            .run
            .metadata
            .as_ref()
            .and_then(|m| m.get("coder_session_id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string);
        if let Some(id) = remembered {
            match self.client.get_session(&id).await {
                Ok(session) if !session.is_over() => {
                    return Ok(self.adopted(id, "run metadata").await);
                }
                Ok(_) => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run's recorded coder session is over; looking further")
                }
                Err(err) if err.is_gone() => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run's recorded coder session is gone; looking further")
                }
                Err(err) => {
                    return Err(early(
                        self.config,
                        format!("reading the run's coder session {id}"),
                        &err,
                    ));
                }
            }
        }
        let body = self.config.session_body(self.document());
        let mut last_error = None;
        for attempt in 1..=CREATE_ATTEMPTS {
            match self.find_for_run().await {
                Ok(Some(id)) => return Ok(self.adopted(id, "its agh-run tag").await),
                Ok(None) => {}
                Err(err) => {
                    return Err(early(
                        self.config,
                        "looking for this run's coder session".into(),
                        &err,
                    ));
                }
            }
            match self.client.create_session(&body).await {
                Ok(created) => {
                    let id = created.session_id;
                    self.session_id = Some(id.clone());
                    self.created_at = Some(Instant::now());
                    tracing::info!(target: LOG_TARGET, session_id = %id, "created a coder session");
                    self.progress(format!("session {id} created"), true).await;
                    return Ok(id);
                }
                Err(err) if err.outcome_unknown() => {
                    // The create may have happened: look for it before trying again.
                    tracing::warn!(target: LOG_TARGET, error = %err, attempt, "creating the coder session had an unknown outcome; looking it up before trying again");
                    last_error = Some(err);
                    tokio::time::sleep(self.poll).await;
                }
                Err(err) => {
                    return Err(early(
                        self.config,
                        "creating the coder session".into(),
                        &err,
                    ));
                }
            }
        }
        // A last look: the last create may have made the session after all.
        if let Ok(Some(id)) = self.find_for_run().await {
            return Ok(self.adopted(id, "its agh-run tag").await);
        }
        Err(Outcome::Release(format!(
            "coder: creating the coder session kept failing ({CREATE_ATTEMPTS} attempts){}",
            last_error.map(|e| format!(": {e}")).unwrap_or_default()
        )))
    }

    async fn adopted(&mut self, id: String, how: &str) -> String {
        tracing::info!(target: LOG_TARGET, session_id = %id, how, "adopted an existing coder session");
        self.session_id = Some(id.clone());
        self.progress(format!("adopted session {id} (found by {how})"), true)
            .await;
        id
    }

    /// A live session tagged (or labelled in metadata) with this run.
    async fn find_for_run(&self) -> Result<Option<String>, AgentuityError> {
        let run_id = &self.document().run_id;
        let tag = run_tag(run_id);
        // Whether `search` covers tags is unconfirmed (it covers title, task and metadata), so
        // the tag is tried first and the bare run id (the `agh_run_id` metadata value) second.
        for search in [tag.clone(), run_id.clone()] {
            let page = self
                .client
                .list_sessions(&ListSessions {
                    search: Some(search),
                    include_archived: true,
                    limit: Some(50),
                    offset: None,
                })
                .await?;
            let found = page
                .sessions
                .into_iter()
                .filter(|s| s.tags.contains(&tag) || s.metadata_str("agh_run_id") == Some(run_id))
                // A session already over was finished (or archived) by an earlier holder of the
                // run; its outcome was reported then.
                .filter(|s| !s.is_over())
                .find_map(|s| s.session_id);
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn follow(&mut self, id: &str) -> Outcome {
        let cancel = self.context.cancel.clone();
        let deadline = self.deadline;
        let mut first = true;
        loop {
            // Every Hub call of a poll can be interrupted: a stop must not wait for a slow answer.
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                _ = sleep_until_option(deadline) => None,
                end = self.poll_once(id, first) => Some(end),
            };
            first = false;
            match step {
                None => return self.stopped(Some(id)).await,
                Some(Some(end)) => return self.finish(id, end).await,
                Some(None) => {}
            }
        }
    }

    /// One poll: waits the cadence (except the first time), reads the session and its events,
    /// and says whether it is done.
    async fn poll_once(&mut self, id: &str, first: bool) -> Option<End> {
        if !first {
            tokio::time::sleep(self.poll).await;
        }
        let provisioning_limit = seconds(self.config.provisioning_timeout_seconds, 300.0);
        let session = match self.client.get_session(id).await {
            Ok(session) => {
                self.read_failures = 0;
                session
            }
            // A just-created session may not be readable yet (the SDK tolerates a 404 while it
            // waits too): until it has been read once, gone counts as a failed read.
            Err(err) if err.is_gone() && self.last_session.is_some() => {
                return Some(End::Fail(format!("the session disappeared: {err}")));
            }
            Err(err) if err.is_fatal() => {
                return Some(End::Fail(format!(
                    "reading the session: {}",
                    explain(self.config, &err)
                )));
            }
            Err(err) => {
                self.read_failures += 1;
                tracing::warn!(target: LOG_TARGET, error = %err, failures = self.read_failures, "reading the coder session failed");
                if self.read_failures >= MAX_READ_FAILURES {
                    return Some(End::Fail(format!(
                        "reading the session failed {} times: {err}",
                        self.read_failures
                    )));
                }
                return None;
            }
        };
        if let Some(SessionStatus::Other(status)) = &session.status {
            tracing::debug!(target: LOG_TARGET, status, "the coder session has a status this build does not know");
        }
        if session.is_provisioning() {
            let since = *self.provisioning_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= provisioning_limit {
                return Some(End::Fail(format!(
                    "the session was still {} after {} s",
                    session.status_str(),
                    provisioning_limit.as_secs()
                )));
            }
            self.last_session = Some(session);
            return None;
        }
        self.read_events(id).await;
        let end = self.decide(id, &session).await;
        if let Some(cost) = session.usage.as_ref().and_then(|u| u.cost_usd)
            && self
                .reported_cost
                .is_none_or(|last| (cost - last).abs() >= 0.01)
        {
            self.reported_cost = Some(cost);
            self.pending.push(format!("${cost:.2} so far"));
        }
        self.last_session = Some(session);
        let end = end.or_else(|| self.session_ended.take());
        if end.is_none() {
            // Milestones wait for the throttle, not for the next event.
            self.progress_due().await;
        }
        end
    }

    /// Reads events newer than the last seen, paging back with `beforeId` when a whole page is new,
    /// at most [`MAX_EVENT_PAGES`] pages a poll.
    async fn read_events(&mut self, id: &str) {
        let limit = self.config.event_page_size.max(1);
        let mut fresh: Vec<HubEvent> = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = match self.client.event_history(id, Some(limit), before).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::debug!(target: LOG_TARGET, error = %err, "reading the event history failed; trying again next poll");
                    return;
                }
            };
            pages += 1;
            let count = page.events.len();
            let mut new: Vec<HubEvent> = page
                .events
                .into_iter()
                .filter(|e| match (e.id, self.last_event_id) {
                    (Some(event), Some(seen)) => event > seen,
                    (_, None) => true,
                    (None, Some(_)) => false,
                })
                .collect();
            let all_new = !new.is_empty() && new.len() == count;
            let oldest = new.iter().filter_map(|e| e.id).min();
            // A Hub that ignores `beforeId` answers the same page again: paging on would never end.
            if let Some(before) = before
                && oldest.is_none_or(|oldest| oldest >= before)
            {
                tracing::debug!(target: LOG_TARGET, before, pages, "the event history did not page back past the oldest event read; older new events of this poll are skipped");
                break;
            }
            fresh.append(&mut new);
            // A first read takes one page only: older history is not news.
            if !(all_new && self.last_event_id.is_some() && count as u32 >= limit) {
                break;
            }
            let Some(oldest) = oldest else { break };
            if pages >= MAX_EVENT_PAGES {
                tracing::debug!(target: LOG_TARGET, pages, oldest, "read the most event pages a poll reads; older new events of this poll are skipped");
                break;
            }
            before = Some(oldest);
        }
        fresh.sort_by_key(|e| e.id.unwrap_or(i64::MIN));
        fresh.dedup_by_key(|e| e.id);
        for event in fresh {
            if let Some(event_id) = event.id {
                self.last_event_id = Some(self.last_event_id.map_or(event_id, |s| s.max(event_id)));
            }
            self.on_event(&event).await;
        }
    }

    async fn on_event(&mut self, event: &HubEvent) {
        let name = event.event.as_str();
        let payload_text = |key: &str| {
            event.payload.get(key).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| (!v.is_null()).then(|| v.to_string()))
            })
        };
        let agent = event
            .agent
            .clone()
            .or_else(|| payload_text("agentName"))
            .or_else(|| payload_text("agent"));
        let who = agent.clone().unwrap_or_else(|| "lead".into());
        match name {
            "session_complete" => {
                self.session_ended = Some(End::Complete {
                    status: "session_complete".into(),
                    summary: payload_text("summary").or_else(|| payload_text("result")),
                });
            }
            "session_error" => {
                let error = payload_text("error")
                    .or_else(|| payload_text("message"))
                    .unwrap_or_else(|| "the session reported an error".into());
                self.session_ended = Some(End::Fail(error));
            }
            "agent_end" if event.task_id.is_none() => {
                self.lead_ended_at = Some(Instant::now());
            }
            "agent_start"
            | "turn_start"
            | "task_start"
            | "tool_execution_start"
            | "message_start" => {
                // The lead (or a sub-agent) is working again: the quiet period starts over.
                self.lead_ended_at = None;
            }
            _ => {}
        }
        let milestone = match name {
            "session_complete" => Some("session complete".to_string()),
            "session_error" => Some(format!(
                "session error: {}",
                payload_text("error").unwrap_or_default()
            )),
            "session_shutdown" => Some("session shut down".into()),
            "task_start" => Some(format!("{who} started a task")),
            "task_complete" => Some(format!("{who} finished a task")),
            "task_error" => Some(format!(
                "{who} task failed: {}",
                payload_text("error").unwrap_or_default()
            )),
            "agent_end" if event.task_id.is_none() => Some(format!("{who} finished its turn")),
            "agent_progress" => match payload_text("status").as_deref() {
                Some("tool_start") => Some(format!(
                    "{who}: {}",
                    payload_text("currentTool").unwrap_or_else(|| "tool".into())
                )),
                Some(status @ ("completed" | "failed")) => Some(format!("{who} {status}")),
                _ => None,
            },
            _ => None,
        };
        if let Some(milestone) = milestone {
            self.progress(milestone, false).await;
        }
    }

    async fn decide(&mut self, id: &str, session: &Session) -> Option<End> {
        if let Some(error) = session.failure() {
            return Some(End::Fail(error));
        }
        let loop_mode = session.workflow_mode == Some(WorkflowMode::Loop)
            || self.config.mode() == WorkflowMode::Loop
            || session.loop_status.is_some();
        if loop_mode {
            let state = match self.client.loop_state(id).await {
                Ok(answer) => answer.loop_state,
                Err(err) => {
                    tracing::debug!(target: LOG_TARGET, error = %err, "reading the loop state failed");
                    None
                }
            }
            .or_else(|| session.loop_state.clone());
            let status = state
                .as_ref()
                .and_then(|s| s.status.clone())
                .or_else(|| session.loop_status.clone());
            if status != self.last_loop.as_ref().and_then(|s| s.status.clone())
                && let Some(status) = &status
            {
                let iteration = state
                    .as_ref()
                    .and_then(|s| s.iteration)
                    .or(session.loop_iteration);
                self.progress(
                    format!(
                        "loop {status}{}",
                        iteration
                            .map(|i| format!(" (iteration {i})"))
                            .unwrap_or_default()
                    ),
                    false,
                )
                .await;
            }
            if let Some(state) = state.clone() {
                self.last_loop = Some(state);
            }
            let summary = state.as_ref().and_then(|s| s.summary.clone());
            match status {
                Some(LoopStatus::Completed) => {
                    return Some(End::Complete {
                        status: "completed".into(),
                        summary,
                    });
                }
                Some(LoopStatus::Cancelled) => {
                    return Some(End::Fail(format!(
                        "the loop was cancelled{}",
                        summary.map(|s| format!(": {s}")).unwrap_or_default()
                    )));
                }
                Some(status @ (LoopStatus::Blocked | LoopStatus::AwaitingInput)) => {
                    let since = *self.blocked_since.get_or_insert_with(Instant::now);
                    let grace = seconds(self.config.blocked_grace_seconds, 120.0);
                    if since.elapsed() >= grace {
                        let mut why =
                            vec![format!("the loop is {status} and no one can answer it")];
                        if let Some(state) = &state {
                            why.extend(state.summary.clone());
                            if !state.blockers.is_empty() {
                                why.push(format!("blockers: {}", state.blockers.join("; ")));
                            }
                            why.extend(
                                state.last_error.clone().map(|e| format!("last error: {e}")),
                            );
                        }
                        return Some(End::Fail(why.join(" — ")));
                    }
                    return None;
                }
                Some(LoopStatus::Paused) => {
                    self.blocked_since = None;
                    self.wake(id, session).await;
                }
                _ => self.blocked_since = None,
            }
            if session.is_over() {
                return Some(End::Fail(format!(
                    "the session ended ({}) before its loop completed",
                    session.status_str()
                )));
            }
            return None;
        }
        if session.is_over() {
            return Some(End::Complete {
                status: session.status_str().to_string(),
                summary: None,
            });
        }
        if session.status == Some(SessionStatus::Paused) {
            self.wake(id, session).await;
        }
        let quiet = seconds(self.config.quiet_seconds, 45.0);
        if let Some(ended) = self.lead_ended_at
            && ended.elapsed() >= quiet
            && !tasks_running(session)
        {
            // Confirm with a fresh read: nothing newer happened and no task started meanwhile.
            let seen = self.last_event_id;
            self.read_events(id).await;
            if self.last_event_id == seen && self.lead_ended_at.is_some() {
                match self.client.get_session(id).await {
                    Ok(again) if !tasks_running(&again) && again.failure().is_none() => {
                        return Some(End::Complete {
                            status: "idle".into(),
                            summary: None,
                        });
                    }
                    Ok(again) => {
                        if let Some(error) = again.failure() {
                            return Some(End::Fail(error));
                        }
                    }
                    Err(err) => {
                        tracing::debug!(target: LOG_TARGET, error = %err, "the confirming read failed")
                    }
                }
            }
        }
        None
    }

    async fn wake(&mut self, id: &str, session: &Session) {
        if session.wake_available == Some(true) && self.resumes < self.config.max_resumes {
            self.resumes += 1;
            match self.client.resume_session(id).await {
                Ok(_) => {
                    self.progress(
                        format!(
                            "woke the paused session ({} of {})",
                            self.resumes, self.config.max_resumes
                        ),
                        false,
                    )
                    .await
                }
                Err(err) => {
                    tracing::warn!(target: LOG_TARGET, error = %err, "waking the paused coder session failed")
                }
            }
        }
    }

    /// How long finishing may take: the time left to the deadline, within
    /// [`FINISH_BUDGET_MIN`]..[`FINISH_BUDGET_MAX`].
    fn finish_budget(&self) -> Duration {
        finish_budget(self.deadline, Instant::now())
    }

    /// Archives when configured, reads the final usage and answer, and builds the outcome, all
    /// within [`Self::finish_budget`]. The outcome is decided: a cancellation meanwhile (the
    /// worker's time limit, a shutdown) cuts the reads short and the outcome is reported with
    /// what is known, which the lease task keeps for a completed run.
    async fn finish(&mut self, id: &str, end: End) -> Outcome {
        let until = Instant::now() + self.finish_budget();
        let cancel = self.context.cancel.clone();
        let archived = if self.config.archive_on_finish {
            self.archive_while_finishing(id, until, &cancel).await
        } else {
            false
        };
        let known = match &end {
            End::Complete {
                summary: Some(s), ..
            } if !s.trim().is_empty() => Some(s.clone()),
            _ => self.last_loop.as_ref().and_then(|l| l.summary.clone()),
        };
        let mut after = None;
        let mut replayed = None;
        if !cancel.is_cancelled() {
            let client = &self.client;
            let (after_slot, replayed_slot) = (&mut after, &mut replayed);
            let reads = async {
                tokio::join!(
                    async { *after_slot = client.get_session(id).await.ok() },
                    async {
                        if known.is_none() {
                            *replayed_slot = final_message(client, id).await;
                        }
                    },
                )
            };
            tokio::select! {
                biased;
                _ = reads => {}
                _ = cancel.cancelled() => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run was stopped while finishing; reporting its outcome with what is known");
                }
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(target: LOG_TARGET, session_id = %id, "the final reads of the coder session took too long; reporting with what is known");
                }
            }
        }
        let summary = known.or(replayed).or_else(|| {
            after
                .as_ref()
                .or(self.last_session.as_ref())
                .and_then(|s| s.tasks.iter().rev().find_map(|t| t.result.clone()))
        });
        // The last milestones ("session complete") still go out, but a stopped run does not
        // wait long on a full event channel.
        let flush_until = if cancel.is_cancelled() {
            until.min(Instant::now() + Duration::from_secs(1))
        } else {
            until
        };
        let _ = tokio::time::timeout_at(flush_until, self.flush_progress()).await;
        let usage = best_usage([after.as_ref(), self.last_session.as_ref()]);
        match end {
            End::Complete { status, .. } => Outcome::Complete(json!({
                "summary": summary.unwrap_or_default(),
                "status": status,
                "coder_session_id": id,
                "usage": usage_json(usage.as_ref()),
                "duration_ms": self.duration_ms(),
                "archived": archived,
            })),
            End::Fail(error) => Outcome::Fail {
                error: format!("coder session {id}: {error}"),
                metadata: Some(json!({
                    "coder_session_id": id,
                    "summary": summary,
                    "usage": usage_json(usage.as_ref()),
                    "duration_ms": self.duration_ms(),
                    "archived": archived,
                })),
            },
        }
    }

    /// Archives by `until`; once `cancel` fires, an archive under way gets at most
    /// [`FINISH_ARCHIVE_AFTER_CANCEL`] more. Whether the session is archived.
    async fn archive_while_finishing(
        &self,
        id: &str,
        until: Instant,
        cancel: &CancellationToken,
    ) -> bool {
        let archiving = self.archive(id);
        tokio::pin!(archiving);
        let until = tokio::select! {
            biased;
            archived = &mut archiving => return archived,
            _ = tokio::time::sleep_until(until) => until,
            _ = cancel.cancelled() => until.min(Instant::now() + FINISH_ARCHIVE_AFTER_CANCEL),
        };
        match tokio::time::timeout_at(until, archiving).await {
            Ok(archived) => archived,
            Err(_) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "archiving the coder session took too long; its sandbox timeouts bound it");
                false
            }
        }
    }

    /// The run was stopped (cancel token or deadline). `id` is `None` before a session exists.
    /// Everything here fits in [`STOP_BUDGET`], the archive first.
    async fn stopped(&mut self, id: Option<&str>) -> Outcome {
        let until = Instant::now() + STOP_BUDGET;
        let mut id = id.map(str::to_string).or_else(|| self.session_id.clone());
        if id.is_none() {
            // Stopped mid-create: the session may exist anyway; find it so it is not orphaned.
            id = tokio::time::timeout(STOP_LOOKUP_TIMEOUT, self.find_for_run())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        }
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d)
            || self
                .context
                .time_limit
                .is_some_and(|limit| self.started.elapsed() + TIME_LIMIT_SLACK >= limit);
        let Some(id) = id else {
            return if past_deadline {
                Outcome::Fail {
                    error: "coder: the time limit passed before a session existed".into(),
                    metadata: None,
                }
            } else {
                Outcome::Release("coder: stopped before a session existed".into())
            };
        };
        if past_deadline {
            tracing::warn!(target: LOG_TARGET, session_id = %id, "the run reached its time limit; archiving the coder session");
            let archived = self.archive_by(&id, until).await;
            let read_until = until.min(Instant::now() + STOP_READ_TIMEOUT);
            let after = tokio::time::timeout_at(read_until, self.client.get_session(&id))
                .await
                .ok()
                .and_then(Result::ok);
            let usage = best_usage([after.as_ref(), self.last_session.as_ref()]);
            return Outcome::Fail {
                error: format!(
                    "coder session {id}: the time limit passed; {}",
                    if archived {
                        "the session was archived"
                    } else {
                        "archiving the session failed (its sandbox timeouts bound it)"
                    }
                ),
                metadata: Some(json!({
                    "coder_session_id": id,
                    "usage": usage_json(usage.as_ref()),
                    "duration_ms": self.duration_ms(),
                    "archived": archived,
                })),
            };
        }
        match self.config.on_stop {
            StopPolicy::Archive => {
                tracing::info!(target: LOG_TARGET, session_id = %id, "the run was stopped; archiving the coder session");
                Outcome::Release(if self.archive_by(&id, until).await {
                    format!("coder: the run was stopped; coder session {id} was archived")
                } else {
                    format!(
                        "coder: the run was stopped; archiving coder session {id} failed (its sandbox timeouts bound it)"
                    )
                })
            }
            StopPolicy::LeaveRunning => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "the run was stopped; the coder session is left running for the next claim to adopt");
                Outcome::Release(format!(
                    "coder: worker stopped; coder session {id} left running (tag {}) for the next claim to adopt",
                    run_tag(&self.document().run_id)
                ))
            }
        }
    }

    /// Archives, giving up at `until`. Whether the session is archived.
    async fn archive_by(&self, id: &str, until: Instant) -> bool {
        match tokio::time::timeout_at(until, self.archive(id)).await {
            Ok(archived) => archived,
            Err(_) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "archiving the coder session took too long; its sandbox timeouts bound it");
                false
            }
        }
    }

    /// Archives the session: whether it is archived now (already gone counts as archived).
    async fn archive(&self, id: &str) -> bool {
        match self.client.archive_session(id).await {
            Ok(_) => true,
            Err(err) if err.is_gone() => true,
            Err(err) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, error = %err, "archiving the coder session failed; its sandbox timeouts bound it");
                false
            }
        }
    }

    fn duration_ms(&self) -> u64 {
        let from = self.created_at.unwrap_or(self.started);
        u64::try_from(from.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// How long finishing at `now` may take with the run's `deadline`.
fn finish_budget(deadline: Option<Instant>, now: Instant) -> Duration {
    deadline
        .map_or(FINISH_BUDGET_MAX, |d| d.saturating_duration_since(now))
        .clamp(FINISH_BUDGET_MIN, FINISH_BUDGET_MAX)
}

/// The lead's last message in the session's replay.
async fn final_message(client: &Hub<'_>, id: &str) -> Option<String> {
    match client.replay(id).await {
        Ok(replay) => replay.final_message(),
        Err(err) => {
            tracing::debug!(target: LOG_TARGET, error = %err, "reading the replay failed");
            None
        }
    }
}

/// The outcome of an error before any session is being followed: a setting or account problem
/// fails the run; anything that may pass (the Hub restarting, the network) gives it back.
fn early(config: &CoderConfig, context: String, err: &AgentuityError) -> Outcome {
    if err.is_fatal() {
        Outcome::Fail {
            error: format!("coder: {context}: {}", explain(config, err)),
            metadata: None,
        }
    } else {
        Outcome::Release(format!("coder: {context}: {err}"))
    }
}

fn tasks_running(session: &Session) -> bool {
    session
        .tasks
        .iter()
        .any(|t| t.status.as_deref() == Some("running"))
}

/// The usage with the highest known cost among the reads (cost only grows).
fn best_usage<const N: usize>(sessions: [Option<&Session>; N]) -> Option<Usage> {
    sessions
        .into_iter()
        .flatten()
        .filter_map(|s| s.usage.clone())
        .max_by(|a, b| {
            a.cost_usd
                .unwrap_or(-1.0)
                .total_cmp(&b.cost_usd.unwrap_or(-1.0))
                .then(a.input_tokens.cmp(&b.input_tokens))
        })
}

/// `usage` of the result: unknown values are `null`, never 0.
fn usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.cloned().unwrap_or_default();
    json!({
        "cost_usd": usage.cost_usd,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agentuity::ApiFailure;

    fn answered(status: u16, path: &str) -> AgentuityError {
        AgentuityError::Api(Box::new(ApiFailure {
            method: "GET".into(),
            path: path.into(),
            status,
            code: None,
            message: "no".into(),
            issues: Vec::new(),
            trace_id: None,
            upgrade_url: None,
            retry_after: None,
            rate_limited: false,
        }))
    }

    #[test]
    fn finishing_takes_the_time_left_to_the_deadline_within_bounds() {
        let now = Instant::now();
        assert_eq!(finish_budget(None, now), FINISH_BUDGET_MAX);
        let left = Duration::from_secs(12);
        assert_eq!(finish_budget(Some(now + left), now), left);
        assert_eq!(
            finish_budget(Some(now + Duration::from_secs(3600)), now),
            FINISH_BUDGET_MAX
        );
        // At or past the deadline there is still time to archive: the worker's limit is later.
        assert_eq!(finish_budget(Some(now), now), FINISH_BUDGET_MIN);
        assert!(FINISH_BUDGET_MIN + FINISH_ARCHIVE_AFTER_CANCEL < CANCEL_GRACE);
    }

    #[tokio::test]
    async fn the_probe_refuses_credentials_written_into_a_hub_url_without_showing_them() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = closed.local_addr().expect("address");
        drop(closed);
        let config = CoderConfig {
            key: Some("ag_probe_key".into()),
            hub_url: Some(format!("http://op:hub-s3cret@{address}")),
            catalyst_url: Some(format!("http://op:cat-s3cret@{address}")),
            ..CoderConfig::default()
        };
        let failure = probe(&config, &Env::new(), Duration::from_secs(5))
            .await
            .expect_err("credentials in the urls");
        assert_eq!(failure.problem, "the Agentuity client cannot be set up");
        assert!(
            failure.detail.contains("must not carry credentials"),
            "{}",
            failure.detail
        );
        let debug = format!("{config:?} {:?}", config.client_settings());
        for shown in [&failure.problem, &failure.detail, &debug] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn only_key_level_refusals_say_the_key_is_refused() {
        let session = "/api/hub/session/codesess_1/archive";
        assert!(refuses_key(CallScope::Session, &answered(401, session)));
        assert!(!refuses_key(CallScope::Session, &answered(403, session)));
        assert!(refuses_key(
            CallScope::Key,
            &answered(403, "/api/hub/sessions")
        ));
        // A session call that had to discover the Hub first was refused by the discovery.
        assert!(refuses_key(
            CallScope::Session,
            &answered(403, DISCOVERY_PATH)
        ));
        assert!(!refuses_key(
            CallScope::Key,
            &answered(500, "/api/hub/sessions")
        ));
    }

    #[test]
    fn a_refused_key_is_explained_by_where_the_key_came_from() {
        let inline = CoderConfig {
            key: Some("ag_inline_secret".into()),
            ..CoderConfig::default()
        };
        let from_file = CoderConfig {
            key_file: Some("agentuity-key".into()),
            ..CoderConfig::default()
        };
        let from_env = CoderConfig::default();
        assert_eq!(
            refused_key_reason(&inline, Some(401)),
            "Agentuity refused the key (401): set handlers.coder.key to a valid SDK key"
        );
        assert_eq!(
            refused_key_reason(&from_file, Some(401)),
            "Agentuity refused the key (401): put a valid SDK key in handlers.coder.key_file (agentuity-key)"
        );
        assert_eq!(
            refused_key_reason(&from_env, Some(401)),
            "Agentuity refused the key (401): set AGENTUITY_SDK_KEY (or handlers.coder.key) to a valid SDK key"
        );
        let denied = refused_key_reason(
            &CoderConfig {
                org_id: Some("org_1".into()),
                ..from_env
            },
            Some(403),
        );
        assert!(
            denied.starts_with("Agentuity denied the key access (403)")
                && denied.contains("handlers.coder.org_id"),
            "{denied}"
        );
        assert!(!refused_key_reason(&inline, Some(401)).contains("ag_inline_secret"));
    }
}
