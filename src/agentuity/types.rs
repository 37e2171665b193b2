//! Tolerant DTOs of the Coder Hub and the Sessions API.
//!
//! The Hub adds fields often and documents few of its statuses, so almost everything is optional,
//! unknown fields are kept in `extra`, and every status enum keeps values it does not know as
//! `Other` instead of failing the whole answer.

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A string enum that keeps unknown values: `(variant, "wire name")`, then `Other(String)`.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know, kept as sent.
            Other(String),
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                match value.as_str() {
                    $($wire => $name::$variant,)+
                    _ => $name::Other(value),
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.as_str().to_string()
            }
        }

        impl $name {
            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(value) => value,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_enum!(
    /// A Coder session's `status` (no authoritative list exists; see the research notes §4.3).
    SessionStatus {
        Creating => "creating",
        Provisioning => "provisioning",
        Active => "active",
        Running => "running",
        Connected => "connected",
        Idle => "idle",
        Paused => "paused",
        Resuming => "resuming",
        Archived => "archived",
        Shutdown => "shutdown",
        Stopped => "stopped",
        Ended => "ended",
        Error => "error",
        Failed => "failed",
    }
);

open_enum!(
    /// Where the Hub files a session.
    Bucket {
        Running => "running",
        Paused => "paused",
        Provisioning => "provisioning",
        History => "history",
    }
);

open_enum!(
    /// A loop-mode session's loop status.
    LoopStatus {
        Idle => "idle",
        Starting => "starting",
        Running => "running",
        Paused => "paused",
        Completed => "completed",
        Cancelled => "cancelled",
        Blocked => "blocked",
        AwaitingInput => "awaiting_input",
    }
);

open_enum!(
    /// Where a session runs: a Hub-managed `sandbox`, or a `tui` on someone's machine.
    SessionMode {
        Sandbox => "sandbox",
        Tui => "tui",
    }
);

open_enum!(
    /// `standard` (an interactive lead) or `loop` (iterates toward a goal).
    WorkflowMode {
        Standard => "standard",
        Loop => "loop",
    }
);

/// A number sent as a number or a numeric string; anything else is dropped rather than failing
/// the whole answer.
fn lenient_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(lenient_f64(deserializer)?
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n as u64))
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(lenient_f64(deserializer)?
        .filter(|n| n.is_finite())
        .map(|n| n as i64))
}

/// `null` or a non-list becomes an empty list; entries that do not parse are skipped.
fn lenient_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A value of the wrong shape becomes `None` instead of failing the whole answer.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    Ok(serde_json::from_value(Value::deserialize(deserializer)?).ok())
}

/// An identifier sent as a string or a number (GitHub ids are numbers in some answers and
/// strings in others), kept as a string.
fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Token counts and cost of a session (`usage` in the session detail; undocumented).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub reasoning_tokens: Option<u64>,
    /// In US dollars; `None` when unknown (never read as 0).
    #[serde(default, deserialize_with = "lenient_f64")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A sub-agent task in the session detail (undocumented `tasks[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionTask {
    #[serde(default)]
    pub task_id: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub result: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub duration: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Coder session, from the detail or the list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// `codesess_…`; some answers call it `id`.
    #[serde(default, alias = "id")]
    pub session_id: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<SessionStatus>,
    #[serde(default, deserialize_with = "lenient")]
    pub bucket: Option<Bucket>,
    #[serde(default, deserialize_with = "lenient")]
    pub mode: Option<SessionMode>,
    #[serde(default, deserialize_with = "lenient")]
    pub workflow_mode: Option<WorkflowMode>,
    #[serde(default, deserialize_with = "lenient")]
    pub loop_status: Option<LoopStatus>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub loop_iteration: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub history_only: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub runtime_available: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub wake_available: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_activity_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "lenient")]
    pub task: Option<String>,
    /// A runtime failure, when the session had one (usually a string).
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default, rename = "loop", deserialize_with = "lenient")]
    pub loop_state: Option<LoopState>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub tasks: Vec<SessionTask>,
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Session {
    /// The session is over: no runtime remains (history, archived, shut down).
    pub fn is_over(&self) -> bool {
        self.bucket == Some(Bucket::History)
            || self.history_only == Some(true)
            || matches!(
                self.status,
                Some(
                    SessionStatus::Archived
                        | SessionStatus::Shutdown
                        | SessionStatus::Stopped
                        | SessionStatus::Ended
                )
            )
    }

    /// The session failed: an error status or a non-empty `error`.
    pub fn failure(&self) -> Option<String> {
        let text = match &self.error {
            Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
            Some(Value::Object(error)) => error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| Some(Value::Object(error.clone()).to_string())),
            _ => None,
        };
        match (&self.status, text) {
            (_, Some(text)) => Some(text),
            (Some(SessionStatus::Error | SessionStatus::Failed), None) => {
                Some(format!("the session's status is {:?}", self.status_str()))
            }
            _ => None,
        }
    }

    /// A remote client can attach to it now: the runtime is reported reachable, or, when the
    /// Hub leaves `runtimeAvailable` out, nothing says it is asleep or still starting (the SDK
    /// also reads a missing flag as available).
    pub fn runtime_ready(&self) -> bool {
        match self.runtime_available {
            Some(available) => available,
            None => {
                !self.is_over()
                    && !self.is_provisioning()
                    && self.bucket != Some(Bucket::Paused)
                    && !matches!(
                        self.status,
                        Some(SessionStatus::Paused | SessionStatus::Resuming)
                    )
            }
        }
    }

    /// The SDK's `listConnectableSessions` filter: a sandbox session that is not history-only
    /// and is either running, or paused with its runtime still up or able to be woken.
    pub fn is_connectable(&self) -> bool {
        if self.mode != Some(SessionMode::Sandbox) || self.history_only == Some(true) {
            return false;
        }
        match self.bucket {
            Some(Bucket::Running) => true,
            Some(Bucket::Paused) => {
                self.runtime_available == Some(true) || self.wake_available == Some(true)
            }
            _ => false,
        }
    }

    /// Still being set up.
    pub fn is_provisioning(&self) -> bool {
        matches!(
            self.status,
            Some(SessionStatus::Creating | SessionStatus::Provisioning)
        ) || self.bucket == Some(Bucket::Provisioning)
    }

    pub fn status_str(&self) -> &str {
        self.status
            .as_ref()
            .map_or("unknown", SessionStatus::as_str)
    }

    /// A metadata value as a string.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }
}

/// The answer to a create.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSession {
    #[serde(alias = "id")]
    pub session_id: String,
    #[serde(default, deserialize_with = "lenient")]
    pub sandbox_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<SessionStatus>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/sessions` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListSessions {
    pub search: Option<String>,
    pub include_archived: bool,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// One page of sessions, flattened from `{sessions:{websocket:[…],sandbox:[…]},total}` (or a
/// plain `sessions:[…]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: Option<u64>,
}

impl SessionPage {
    pub(crate) fn from_value(value: Value) -> Self {
        let parse = |items: &Value| -> Vec<Session> {
            items
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| serde_json::from_value(item.clone()).ok())
                .collect()
        };
        let sessions = match value.get("sessions") {
            Some(list @ Value::Array(_)) => parse(list),
            Some(Value::Object(groups)) => groups.values().flat_map(parse).collect(),
            _ => Vec::new(),
        };
        let total = value.get("total").and_then(Value::as_u64);
        SessionPage { sessions, total }
    }
}

/// A loop-mode session's loop state (timestamps are Unix milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopState {
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<LoopStatus>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub iteration: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub max_iterations: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub goal: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub summary: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub next_action: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_error: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub blockers: Vec<String>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub started_at: Option<i64>,
    #[serde(default, deserialize_with = "lenient_i64")]
    pub completed_at: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/session/{id}/loop`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopStateAnswer {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub workflow_mode: Option<WorkflowMode>,
    /// `None` when the session is not in loop mode.
    #[serde(default, rename = "loop", deserialize_with = "lenient")]
    pub loop_state: Option<LoopState>,
}

/// One entry of a session's event history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubEvent {
    /// The sequence number; `beforeId` pages with it.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub id: Option<i64>,
    #[serde(default)]
    pub event: String,
    #[serde(default, deserialize_with = "lenient")]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub agent: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub task_id: Option<String>,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, deserialize_with = "lenient")]
    pub occurred_at: Option<String>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/session/{id}/events/history`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHistory {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub events: Vec<HubEvent>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One transcript entry of a replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationEntry {
    #[serde(default, rename = "type")]
    pub entry_type: String,
    #[serde(default, deserialize_with = "lenient")]
    pub agent: Option<String>,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default, deserialize_with = "lenient")]
    pub task_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/session/{id}/replay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub entries_source: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub entries: Vec<ConversationEntry>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Replay {
    /// The lead's last message (a `message` entry without a task id): the session's answer.
    pub fn final_message(&self) -> Option<String> {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.entry_type == "message" && e.task_id.is_none())
            .find_map(|e| match &e.content {
                Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
                _ => None,
            })
    }
}

/// `GET /session` parameters of the Sessions API (agent executions, not Coder sessions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListAgentSessions {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// Any other documented filter (`sort`, `direction`, `projectId`, `trigger`, …).
    pub filters: BTreeMap<String, String>,
}

/// `GET /hub/sessions` filtered to the sessions a client can attach to (see
/// [`Session::is_connectable`]); `limit` and `offset` apply to the filtered list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListConnectable {
    pub search: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// `GET /hub/users` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListUsers {
    /// Matches display names.
    pub search: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// `GET /hub/session/{id}/participants` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListParticipants {
    pub limit: Option<u32>,
    pub include_disconnected: bool,
    /// Sent for parity with the SDK; the Hub route is documented to ignore it.
    pub offset: Option<u32>,
}

/// `GET /hub/agents` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListAgents {
    pub include_archived: bool,
}

/// A person the Hub knows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubUser {
    #[serde(default, deserialize_with = "lenient")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub last_seen_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/users`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub users: Vec<HubUser>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub limit: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub offset: Option<u64>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Someone or something attached to a session: the lead, a sub-agent, an observer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub transport: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub agent_role: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub connected_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub disconnected_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/session/{id}/participants`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantList {
    #[serde(default, deserialize_with = "lenient")]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub participants: Vec<Participant>,
    /// Fields this client does not model, kept so operators see the whole answer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A reusable set of repositories, skills and setup attached to sessions by `workspaceId`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    /// `user` or `org`.
    #[serde(default, deserialize_with = "lenient")]
    pub scope: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub repos: Vec<Map<String, Value>>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub saved_skill_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skill_bucket_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/workspaces`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub workspaces: Vec<Workspace>,
}

/// A skill in the caller's library.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedSkill {
    /// The library record id (what delete and `savedSkillIds` take).
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub source: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub repo: Option<String>,
    /// The skill's id within its repository.
    #[serde(default, deserialize_with = "lenient")]
    pub skill_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/skills/library`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedSkillList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skills: Vec<SavedSkill>,
}

/// A named group of saved skills.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkillBucket {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub skill_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub skills: Vec<SavedSkill>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/skills/buckets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillBucketList {
    #[serde(default, deserialize_with = "lenient_vec")]
    pub buckets: Vec<SkillBucket>,
}

/// A GitHub user or organisation reachable through a GitHub App installation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAccount {
    /// What [`list_github_repos`](crate::agentuity::AgentuityClient::list_github_repos) takes.
    #[serde(default, deserialize_with = "lenient_id")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub account_name: Option<String>,
    /// `User` or `Organization`.
    #[serde(default, deserialize_with = "lenient")]
    pub account_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub installation_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/github/accounts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubAccountList {
    /// Whether the caller has connected GitHub at all.
    #[serde(default, deserialize_with = "lenient")]
    pub connected: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub accounts: Vec<GitHubAccount>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A repository of a GitHub account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubRepo {
    #[serde(default, deserialize_with = "lenient_id")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub full_name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub private: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    pub default_branch: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub clone_url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub archived: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /hub/github/repos?accountId=`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubRepoList {
    #[serde(default, deserialize_with = "lenient_id")]
    pub account_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub total_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient_vec")]
    pub repositories: Vec<GitHubRepo>,
}
