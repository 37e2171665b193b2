//! The agent's SOUL.md as the daemon reads and validates it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::null_as_empty;

open_enum!(
    /// Soul validation status.
    SoulValidationStatus {
        Missing => "missing",
        Inactive => "inactive",
        Valid => "valid",
        Invalid => "invalid",
    }
);

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
