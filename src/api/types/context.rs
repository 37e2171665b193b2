//! `GET /api/agent/context`: the caller's situation, section by section (task bundle, channel, inbox, peers).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::channels::{CoordinationChannel, MessageKind, MessageMetadata};
use super::identity::{AgentLimits, Capability, SelfInfo, SessionSummary, WorkspaceInfo};
use super::null_as_empty;
use super::tasks::{LeaseSummary, TaskRef, TaskRun};

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
