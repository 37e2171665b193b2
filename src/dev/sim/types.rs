//! Public data types of the simulator API: session, task and message specs and snapshots.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The default workspace used by the default session and by tasks without a workspace.
pub const DEFAULT_WORKSPACE: &str = "ws-default";
/// The agent name of the default session.
pub const DEFAULT_AGENT: &str = "worker";

/// Lifecycle state of a session; only `Active` sessions pass identity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Starting,
    #[default]
    Active,
    Stopping,
    Stopped,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Active => "active",
            SessionState::Stopping => "stopping",
            SessionState::Stopped => "stopped",
        }
    }

    /// `starting`, `active` and `stopping` sessions count as live for spawn budgets.
    pub fn is_live(self) -> bool {
        self != SessionState::Stopped
    }
}

/// Spawn budget of a session's lineage; zeros mean the daemon defaults (5 children, depth 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SpawnBudget {
    pub max_children: u32,
    pub max_depth: u32,
    pub ttl_seconds: u64,
    pub max_active_per_workspace: u32,
}

/// Lineage permission policy: the atoms a child may be granted (children may only narrow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PermissionPolicy {
    pub tools: Vec<String>,
    pub skills: Vec<String>,
    pub mcp_servers: Vec<String>,
    pub workspace_paths: Vec<String>,
    pub network_channels: Vec<String>,
    pub sandbox_profiles: Vec<String>,
}

impl PermissionPolicy {
    pub(crate) fn categories(&self) -> [(&'static str, &Vec<String>); 6] {
        [
            ("tools", &self.tools),
            ("skills", &self.skills),
            ("mcp_servers", &self.mcp_servers),
            ("workspace_paths", &self.workspace_paths),
            ("network_channels", &self.network_channels),
            ("sandbox_profiles", &self.sandbox_profiles),
        ]
    }
}

/// What to create with [`Simulator::create_session`](super::Simulator::create_session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SessionSpec {
    /// Empty means `worker`.
    pub agent_name: String,
    /// `None` = a global session (claims only global tasks).
    pub workspace_id: Option<String>,
    /// The session's network channel; `None` = not joined to the network.
    pub channel: Option<String>,
    pub state: SessionState,
    /// Capability ids offered by the session (agent catalog ids and `skill:<name>`).
    pub capabilities: Vec<String>,
    pub name: Option<String>,
    /// Fixes the session id (otherwise `sess-<16 hex>`).
    pub session_id: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub spawn_budget: Option<SpawnBudget>,
    pub permission_policy: Option<PermissionPolicy>,
}

impl SessionSpec {
    pub fn for_agent(agent_name: &str, workspace_id: Option<&str>) -> SessionSpec {
        SessionSpec {
            agent_name: agent_name.to_owned(),
            workspace_id: workspace_id.map(str::to_owned),
            ..SessionSpec::default()
        }
    }
}

/// What a caller needs to act as a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub agent_name: String,
    pub workspace_id: Option<String>,
    pub channel: Option<String>,
    /// `<lowercase agent>.<session id>`.
    pub peer_id: String,
}

/// Task priority; claim weights low=10, medium=20, high=30, urgent=40.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub fn weight(self) -> i64 {
        match self {
            Priority::Low => 10,
            Priority::Medium => 20,
            Priority::High => 30,
            Priority::Urgent => 40,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// Task scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskScope {
    #[default]
    Workspace,
    Global,
}

/// What to enqueue with [`Simulator::enqueue_task`](super::Simulator::enqueue_task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TaskSpec {
    pub title: String,
    /// Empty means `T-<n>`.
    pub identifier: Option<String>,
    pub priority: Priority,
    /// `None` = the default workspace `ws-default`; `Some("")` (or `scope: Global`) = a global task.
    pub workspace_id: Option<String>,
    pub scope: TaskScope,
    /// The task's network channel; becomes the run's coordination channel (workspace runs).
    pub channel: Option<String>,
    /// The task's description: only `GET /api/tasks/{id}` shows it, as in AGH (the claim and
    /// the context carry a task reference without it).
    pub description: Option<String>,
    /// The metadata the task's runs are enqueued with: the claim's `run.metadata` (plus a `soul`
    /// entry when the claiming agent has a valid soul).
    pub metadata: Value,
    /// The task's own metadata, given at creation: only `GET /api/tasks/{id}` shows it.
    pub task_metadata: Value,
    pub handoff_summary: Option<String>,
    pub max_runtime_seconds: u64,
    /// Capabilities a claimer must offer.
    pub required_capabilities: Vec<String>,
    /// `pool:<agent>` or `agent_session:<session id>`; `None` = unowned.
    pub owner: Option<String>,
    pub paused: bool,
    /// 0 means 3; capped at 10.
    pub max_attempts: u32,
}

impl TaskSpec {
    pub fn titled(title: &str) -> TaskSpec {
        TaskSpec {
            title: title.to_owned(),
            ..TaskSpec::default()
        }
    }
}

/// Ids of an enqueued run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueuedRun {
    pub task_id: String,
    pub run_id: String,
}

/// A message placed into a session's pending-delivery queue, as if a peer had sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MessageSpec {
    pub channel: String,
    /// Sender peer id, e.g. `reviewer.sess-peer`.
    pub from_peer: String,
    pub body: Value,
    /// Coordination metadata; messages without it are invisible to `recv`.
    pub metadata: Option<Value>,
    /// Fixes the message id (otherwise `msg-<16 hex>`).
    pub message_id: Option<String>,
    /// Target peer id for a direct message.
    pub to_peer: Option<String>,
}

/// A copy of one run's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSnapshot {
    pub run_id: String,
    pub task_id: String,
    pub attempt: u32,
    pub status: String,
    pub session_id: Option<String>,
    pub claim_token_hash: Option<String>,
    pub lease_until: Option<String>,
    pub heartbeat_at: Option<String>,
    pub claimed_at: Option<String>,
    pub queued_at: String,
    pub ended_at: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub coordination_channel_id: Option<String>,
    /// Number of times the run was claimed (re-claims after release or sweep included).
    pub claims: u32,
}
