//! A coder handler's configuration (`handlers[].coder`): how to reach Agentuity, what sessions
//! are created with, how they are followed, and the checks `agh-worker check` reports.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::repo::RepoConfig;
use crate::agentuity::{ClientSettings, WorkflowMode};

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

/// How a session is followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowMode {
    /// Listen to the session's event stream (as the SDK does), reading the session now and then
    /// in case a broadcast is missed; poll while the stream is down.
    #[default]
    Stream,
    /// Poll the session and its event history every `poll_seconds`.
    Poll,
}

/// Configuration of one coder handler (`handlers[].coder`).
///
/// Serde's derived code here reads and writes the session settings only (`remote = "Self"` makes
/// it inherent functions); the `Deserialize` and `Serialize` of the whole table are in `table`.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct CoderConfig {
    /// How the handler reaches Agentuity: `key`, `key_file`, `org_id`, `region`, `hub_url`,
    /// `catalyst_url` and `request_timeout_seconds` (default 30), in the same table as the session
    /// settings below (see the `table` module for how the one table is read into both).
    #[serde(skip)]
    pub client: ClientSettings,

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
    /// A repository to clone into the sandbox: its web URL (`https://github.com/acme/app`).
    pub repo_url: Option<String>,
    /// Its clone URL; for GitHub derived from `repo_url` (and the other way round) when unset.
    pub repo_clone_url: Option<String>,
    pub repo_branch: Option<String>,
    /// More repositories (`[{url, clone_url, branch}]`), after the one of `repo_url`.
    pub repos: Vec<RepoConfig>,
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

    /// How sessions are followed: `stream` (live events) or `poll`.
    pub follow: FollowMode,
    /// While the event stream is live, the session is still read this often, in seconds, in case
    /// a broadcast was missed.
    pub stream_check_seconds: f64,
    /// A live stream that sends nothing for this long, in seconds, is dropped and reopened
    /// (polling meanwhile).
    pub stream_silence_seconds: f64,
    /// Pause between polls of a session, in seconds (also while its stream is down).
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
            client: ClientSettings {
                request_timeout_seconds: 30,
                ..ClientSettings::default()
            },
            task_template: None,
            label_template: "agh:{identifier}".into(),
            workflow_mode: "standard".into(),
            agent: None,
            workspace_id: None,
            repo_url: None,
            repo_clone_url: None,
            repo_branch: None,
            repos: Vec::new(),
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
            follow: FollowMode::Stream,
            stream_check_seconds: 60.0,
            stream_silence_seconds: 90.0,
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
            // Its own Debug never shows the key, nor credentials written into a URL.
            .field("client", &self.client)
            .field("workflow_mode", &self.workflow_mode)
            .field("agent", &self.agent)
            .field("workspace_id", &self.workspace_id)
            .field("repo_url", &self.repo_url)
            .field("repos", &self.repos)
            .field("env", &env)
            .field("follow", &self.follow)
            .field("poll_seconds", &self.poll_seconds)
            .field("on_stop", &self.on_stop)
            .finish_non_exhaustive()
    }
}

impl CoderConfig {
    /// Problems a config check reports, each naming the key under `path` and what to do.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut problems = self.client.problems(path);
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
            ("stream_check_seconds", self.stream_check_seconds),
            ("stream_silence_seconds", self.stream_silence_seconds),
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
        for (name, value) in [
            ("stream_check_seconds", self.stream_check_seconds),
            ("stream_silence_seconds", self.stream_silence_seconds),
        ] {
            if value.is_finite() && value <= 0.0 {
                problems.push(format!(
                    "{path}.{name} must be above 0: the session would be read without a pause"
                ));
            }
        }
        for (index, repo) in self.repos.iter().enumerate() {
            if repo.url.is_none() && repo.clone_url.is_none() {
                problems.push(format!(
                    "{path}.repos[{index}] has no url: set url (the web URL) or clone_url"
                ));
            }
        }
        if self.event_page_size == 0 {
            problems.push(format!("{path}.event_page_size must be at least 1"));
        }
        problems
    }

    pub(super) fn mode(&self) -> WorkflowMode {
        WorkflowMode::from(self.workflow_mode.clone())
    }
}

/// A setting in seconds as a duration; `fallback` when it is not one (negative, not finite).
pub(super) fn seconds(value: f64, fallback: f64) -> Duration {
    Duration::try_from_secs_f64(value)
        .or_else(|_| Duration::try_from_secs_f64(fallback))
        .unwrap_or_default()
}
