//! Who the caller is: self, workspace, session and lineage, permissions, limits, and `me`.

use serde::{Deserialize, Serialize};

use super::channels::CoordinationChannel;
use super::null_as_empty;
use super::spawn::CoordinatorConfig;
use super::tasks::LeaseSummary;

open_enum!(
    /// Session state.
    SessionState {
        Starting => "starting",
        Active => "active",
        Stopping => "stopping",
        Stopped => "stopped",
    }
);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_lists_read_as_empty() {
        let me: Me =
            serde_json::from_str(r#"{"self":{},"active_task_leases":null,"channels":null}"#)
                .unwrap();
        assert!(me.active_task_leases.is_empty());
        assert!(me.channels.is_empty());
    }
}
