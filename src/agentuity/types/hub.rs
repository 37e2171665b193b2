//! The Coder Hub answers and parameters the coder handler works with: sessions, their loop
//! state, event history and transcript.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{lenient, lenient_f64, lenient_i64, lenient_u64, lenient_vec};

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
/// plain `sessions:[…]`, or a bare array, which the SDK's list schema also accepts).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub total: Option<u64>,
}

impl SessionPage {
    pub(crate) fn from_value(value: Value) -> Self {
        let value = super::listed(value, "sessions");
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("sessions".to_string()),
                        Just("total".to_string()),
                        Just("websocket".to_string()),
                        Just("sessionId".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..4
                )
                .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_session_page_is_read_from_any_answer_without_panicking(value in any_json()) {
            let page = SessionPage::from_value(value);
            prop_assert!(page.sessions.len() <= 64);
        }
    }
}
