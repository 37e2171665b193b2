//! Wire types of the AGH agent API: tolerant readers for every response, exact writers for requests.
//!
//! Readers accept what a newer or older daemon may send: unknown fields are ignored (or kept in
//! `extra` where a handler may want them), every field is optional, lists default to empty, and
//! enum values this build does not know are kept as `Other(..)` instead of failing the call.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Declares a string enum that keeps values it does not know.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(raw) => raw.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                match raw {
                    $($wire => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Ok($name::from(raw.as_str()))
            }
        }
    };
}

open_enum!(
    /// Task-run status.
    RunStatus {
        Queued => "queued",
        Claimed => "claimed",
        Starting => "starting",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Canceled => "canceled",
        NeedsAttention => "needs_attention",
    }
);

open_enum!(
    /// Task status.
    TaskStatus {
        Draft => "draft",
        Pending => "pending",
        Blocked => "blocked",
        Ready => "ready",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
        Canceled => "canceled",
    }
);

open_enum!(
    /// Task priority; claim weights low=10, medium=20, high=30, urgent=40.
    Priority {
        Low => "low",
        Medium => "medium",
        High => "high",
        Urgent => "urgent",
    }
);

open_enum!(
    /// Session state.
    SessionState {
        Starting => "starting",
        Active => "active",
        Stopping => "stopping",
        Stopped => "stopped",
    }
);

open_enum!(
    /// Coordination message kind.
    MessageKind {
        Status => "status",
        Request => "request",
        Reply => "reply",
        Blocker => "blocker",
        Handoff => "handoff",
        Result => "result",
        ReviewRequest => "review_request",
    }
);

open_enum!(
    /// Soul validation status.
    SoulValidationStatus {
        Missing => "missing",
        Inactive => "inactive",
        Valid => "valid",
        Invalid => "invalid",
    }
);

/// Accepts `null` where a list is expected (the daemon normalises to `[]`, but a reader should not care).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The error envelope of every non-2xx JSON answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<Diagnostic>,
}

/// Structured diagnostic; on the agent API only identity errors carry one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_freshness: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Map<String, Value>>,
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// `{kind, ref}` actor or owner reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A coordination channel as the agent API describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinationChannel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed_message_kinds: Vec<MessageKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
}

/// A task as referenced from claims, bundles and events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRef {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_event_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by_task_id: Option<String>,
    /// Fields this build does not model, kept for handlers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A task run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Fields this build does not model, kept for handlers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The lease summary returned by claim and by every lease mutation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseSummary {
    #[serde(default)]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

/// A capability offered by the session (agent catalog id or `skill:<name>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Bounded-section bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SectionInfo {
    #[serde(default)]
    pub limit: i64,
    #[serde(default)]
    pub returned: i64,
    #[serde(default)]
    pub truncated: bool,
}

/// Limits the daemon applies to this session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentLimits {
    #[serde(default)]
    pub max_children: i64,
    #[serde(default)]
    pub max_spawn_depth: i64,
    #[serde(default)]
    pub max_active_task_leases: i64,
    #[serde(default)]
    pub context_section_limit: i64,
}

/// The caller as the daemon knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfInfo {
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub agent_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The caller's workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<String>,
}

/// Permission atoms per category.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub tools: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub skills: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub mcp_servers: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub workspace_paths: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub network_channels: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub sandbox_profiles: Vec<String>,
}

impl Permissions {
    /// True when no category holds an atom.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
            && self.skills.is_empty()
            && self.mcp_servers.is_empty()
            && self.workspace_paths.is_empty()
            && self.network_channels.is_empty()
            && self.sandbox_profiles.is_empty()
    }
}

/// Spawn budget stored in a session's lineage; zeros mean "the daemon's defaults".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnBudget {
    #[serde(default)]
    pub max_children: i64,
    #[serde(default)]
    pub max_depth: i64,
    #[serde(default)]
    pub ttl_seconds: i64,
    #[serde(default)]
    pub max_active_per_workspace: i64,
}

/// Where a session sits in its spawn tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_session_id: Option<String>,
    #[serde(default)]
    pub spawn_depth: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_on_parent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_budget: Option<SpawnBudget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_policy: Option<Permissions>,
}

/// A session summary (me, context).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub session_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// The coordinator settings that apply to the caller's workspace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub default_ttl_seconds: i64,
    #[serde(default)]
    pub max_children: i64,
    #[serde(default)]
    pub max_active_sessions_per_workspace: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// GET /api/agent/me

/// `{"me": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeResponse {
    #[serde(default)]
    pub me: Me,
}

/// Who the caller is, what it holds, and its limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Me {
    #[serde(default, rename = "self")]
    pub self_info: SelfInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionSummary>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub capabilities: Vec<Capability>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub channels: Vec<CoordinationChannel>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub active_task_leases: Vec<LeaseSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AgentLimits>,
}

// ---------------------------------------------------------------------------------------------
// GET /api/agent/context

/// `{"context": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextResponse {
    #[serde(default)]
    pub context: AgentContext,
}

/// The situation of the caller: its task bundle, channel, inbox, peers and limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentContext {
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub self_info: Option<SelfInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soul: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannelSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_summary: Option<InboxSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_roster: Option<PeerRoster>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilitiesSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<AgentLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Value>,
}

/// The caller's active task, when it has one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSection {
    #[serde(default)]
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<TaskBundle>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Everything a worker needs to do the task: the handoff, prior attempts, limits and profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskBundle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<TaskRun>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub prior_attempts: Vec<TaskRun>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub recent_events: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_event_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BundleLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_profile: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_continuation: Option<Value>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub review_history: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Bundle limits; `max_runtime_seconds` 0 means "no limit from the daemon".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BundleLimits {
    #[serde(default)]
    pub max_runtime_seconds: i64,
    #[serde(default)]
    pub summary_max_bytes: i64,
    #[serde(default)]
    pub context_body_max_bytes: i64,
}

/// The caller's active coordination channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinationChannelSection {
    #[serde(default)]
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<CoordinationChannel>,
}

/// Newest coordination messages waiting for the caller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InboxSummary {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub items: Vec<InboxItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<SectionInfo>,
    #[serde(default)]
    pub unread_count: i64,
}

/// One inbox item.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    #[serde(default)]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Peers on the active channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerRoster {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub peers: Vec<Peer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<SectionInfo>,
}

/// One peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    #[serde(default)]
    pub peer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub capabilities: Vec<String>,
}

/// The capabilities section of the context.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapabilitiesSection {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<SectionInfo>,
}

// ---------------------------------------------------------------------------------------------
// Channels

/// `{"channels": […]}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelsResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub channels: Vec<CoordinationChannel>,
}

/// Coordination metadata carried by every agent-channel message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMetadata {
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub coordination_channel_id: String,
    pub message_kind: MessageKind,
    #[serde(default)]
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
}

// Declared by hand: the enum comes from `open_enum!`, which cannot mark a default variant.
#[allow(clippy::derivable_impls)]
impl Default for MessageKind {
    fn default() -> Self {
        MessageKind::Status
    }
}

/// One message as `recv`, `send` and `reply` return it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessage {
    #[serde(default)]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// In `recv` this is the sender's peer id; in send/reply answers the caller's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_session_id: Option<String>,
    #[serde(default)]
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl ChannelMessage {
    /// The `text` of a say body, when there is one.
    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }
}

/// `{"messages": […]}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecvResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub messages: Vec<ChannelMessage>,
}

/// `{"message": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    #[serde(default)]
    pub message: ChannelMessage,
}

/// Body of `POST /api/agent/channels/{channel}/send`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SendRequest {
    /// A say body: an object with a non-empty `text`.
    pub body: Value,
    pub metadata: MessageMetadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Body of `POST /api/agent/channels/reply`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplyRequest {
    pub reply_to_message_id: String,
    pub body: Value,
    /// Omitted: the reply inherits the source's metadata with `message_kind: reply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Coordinator, soul

/// `{"coordinator": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorResponse {
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
}

/// The agent's SOUL.md as the daemon sees it (top-level object, also on 422).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Soul {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub present: bool,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_status: Option<SoulValidationStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontmatter: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_provenance: Option<Value>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diagnostics: Vec<SoulDiagnostic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// One SOUL.md finding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoulDiagnostic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_surface: Option<String>,
}

/// Body of `POST /api/agent/soul/validate`; all optional, an empty body validates the current SOUL.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SoulValidateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Spawn

/// Body of `POST /api/agent/spawn`. The server decodes strictly: only these keys exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SpawnRequest {
    pub agent_name: String,
    pub ttl_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_stop_on_parent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_overlay: Option<String>,
}

/// `{"spawn": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnResponse {
    #[serde(default)]
    pub spawn: Spawned,
}

/// The child session the daemon created.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spawned {
    #[serde(default)]
    pub session: SpawnedSession,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

/// The subset of the session payload a worker uses; the rest is kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnedSession {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub session_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// Body of `POST /api/agent/tasks/claim-next`; everything optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClaimRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

/// `{"claim": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    #[serde(default)]
    pub claim: Claim,
}

/// A claimed run: the task, the run, the lease and the run's coordination channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default)]
    pub run: TaskRun,
    #[serde(default)]
    pub lease: LeaseSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

/// Body of heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeartbeatRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
}

/// Body of complete.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompleteRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Body of fail.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FailRequest {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Body of release.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReleaseRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{"lease": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseResponse {
    #[serde(default)]
    pub lease: LeaseSummary,
}

// ---------------------------------------------------------------------------------------------
// Run detail (`GET /api/task-runs/{id}`, outside the agent API)

/// `{"run": …}`: the daemon's run-detail read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunResponse {
    #[serde(default)]
    pub run: TaskRunDetail,
}

/// One run as the daemon stores it, with its task, the session it is bound to (when there is
/// one) and figures about its activity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunDetail {
    #[serde(default)]
    pub run: TaskRun,
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<TaskRunSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<TaskRunActivity>,
}

/// The session a run is bound to, as the run detail names it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunSession {
    #[serde(default)]
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Fields this build does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The run detail's `summary`: when the run was last active and what it has used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunActivity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_currency: Option<String>,
    /// Fields this build does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskRun {
    /// The session the run is bound to: `session_id`, or the `agent_session` that claimed it.
    pub fn holder(&self) -> Option<&str> {
        self.session_id
            .as_deref()
            .or_else(|| {
                self.claimed_by
                    .as_ref()
                    .filter(|actor| actor.kind.as_deref() == Some("agent_session"))
                    .and_then(|actor| actor.reference.as_deref())
            })
            .filter(|session| !session.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept_not_fatal() {
        let run: TaskRun =
            serde_json::from_str(r#"{"id":"run-1","status":"paused_for_review"}"#).unwrap();
        assert_eq!(
            run.status,
            Some(RunStatus::Other("paused_for_review".into()))
        );
        assert_eq!(
            serde_json::to_value(&run.status).unwrap(),
            serde_json::json!("paused_for_review")
        );
    }

    #[test]
    fn null_lists_read_as_empty() {
        let me: Me =
            serde_json::from_str(r#"{"self":{},"active_task_leases":null,"channels":null}"#)
                .unwrap();
        assert!(me.active_task_leases.is_empty());
        assert!(me.channels.is_empty());
    }

    #[test]
    fn unknown_fields_of_runs_are_kept_for_handlers() {
        let run: TaskRun =
            serde_json::from_str(r#"{"id":"run-1","future_field":{"a":1}}"#).unwrap();
        assert_eq!(
            run.extra.get("future_field"),
            Some(&serde_json::json!({"a":1}))
        );
    }

    #[test]
    fn a_run_detail_reads_in_the_daemons_shape() {
        let raw = serde_json::json!({"run": {
            "run": {"id": "run-1", "task_id": "task-1", "status": "completed", "attempt": 2,
                    "claimed_by": {"kind": "agent_session", "ref": "sess-1"},
                    "session_id": "sess-1", "origin": {"kind": "uds", "ref": "agent.task.next"},
                    "queued_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:01:00Z",
                    "result": {"ok": true}, "designation_group_id": "grp-1"},
            "task": {"id": "task-1", "title": "Build", "status": "completed",
                     "scope": "workspace", "latest_event_seq": 7},
            "session": {"session_id": "sess-1", "workspace_id": "ws-1", "agent_name": "coder",
                        "state": "active", "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z"},
            "summary": {"last_activity_at": "2026-01-01T00:01:00Z",
                        "last_event_type": "task.run_completed", "turn_count": 3,
                        "total_cost": 0.25},
        }});
        let detail = serde_json::from_value::<TaskRunResponse>(raw).unwrap().run;
        assert_eq!(detail.run.status, Some(RunStatus::Completed));
        assert_eq!(detail.run.holder(), Some("sess-1"));
        assert_eq!(
            detail.run.extra.get("designation_group_id"),
            Some(&serde_json::json!("grp-1"))
        );
        assert_eq!(detail.task.latest_event_seq, Some(7));
        let session = detail.session.unwrap();
        assert_eq!(session.state, Some(SessionState::Active));
        let summary = detail.summary.unwrap();
        assert_eq!(summary.turn_count, Some(3));
        assert_eq!(summary.total_cost, Some(0.25));
    }

    #[test]
    fn the_holder_of_a_run_is_its_session_or_the_agent_session_that_claimed_it() {
        let claimed_by = |kind: &str| TaskRun {
            claimed_by: Some(ActorRef {
                kind: Some(kind.into()),
                reference: Some("sess-2".into()),
            }),
            ..Default::default()
        };
        assert_eq!(claimed_by("agent_session").holder(), Some("sess-2"));
        assert_eq!(claimed_by("human").holder(), None);
        let both = TaskRun {
            session_id: Some("sess-1".into()),
            ..claimed_by("agent_session")
        };
        assert_eq!(both.holder(), Some("sess-1"));
        assert_eq!(TaskRun::default().holder(), None);
    }

    #[test]
    fn claim_request_sends_only_what_is_set() {
        assert_eq!(
            serde_json::to_string(&ClaimRequest::default()).unwrap(),
            "{}"
        );
        let wait = ClaimRequest {
            wait: true,
            lease_seconds: Some(60),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&wait).unwrap(),
            serde_json::json!({"wait": true, "lease_seconds": 60})
        );
    }

    #[test]
    fn spawn_request_never_carries_keys_the_server_rejects() {
        let body = serde_json::to_value(SpawnRequest {
            agent_name: "coder".into(),
            ttl_seconds: 60,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"agent_name":"coder","ttl_seconds":60})
        );
    }
}
