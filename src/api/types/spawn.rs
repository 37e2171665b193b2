//! Spawning child sessions, and the coordinator settings that bound them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::identity::{Lineage, Permissions, SessionState};

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

/// `{"coordinator": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorResponse {
    #[serde(default)]
    pub coordinator: CoordinatorConfig,
}

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

/// `GET /api/sessions`: `{"sessions": [SessionPayload]}` (AGH `internal/api/contract/responses.go`
/// ~8-10; the payload `contract/contract.go` ~91-120, `lineage` among its fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionsResponse {
    #[serde(default, deserialize_with = "super::null_as_empty")]
    pub sessions: Vec<SpawnedSession>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
