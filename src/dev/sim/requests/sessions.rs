//! Requests about the caller's own session: `spawn` (decoded strictly) and `soul/validate`.

use serde::Deserialize;

use super::super::errors::SimError;
use super::super::types::PermissionPolicy;
use super::single_json_value;

/// `POST /api/agent/spawn`, decoded strictly.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SpawnRequest {
    pub agent_name: String,
    pub ttl_seconds: i64,
    pub spawn_role: Option<String>,
    pub auto_stop_on_parent: Option<bool>,
    pub permissions: Option<PermissionPolicy>,
    pub provider: Option<String>,
    pub name: Option<String>,
    // Accepted (so strict decoding does not reject them) but ignored, as the daemon does.
    #[allow(dead_code)]
    pub prompt_overlay: Option<String>,
    #[allow(dead_code)]
    pub model: Option<String>,
    #[allow(dead_code)]
    pub idempotency_key: Option<String>,
}

impl SpawnRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<SpawnRequest, SimError> {
        let invalid = |detail: String| {
            SimError::new(422, format!("session: spawn validation failed: {detail}"))
        };
        let first = single_json_value(body)
            .map_err(|detail| invalid(format!("decode spawn request: {detail}")))?
            .ok_or_else(|| invalid("request body is required".to_owned()))?;
        let request: SpawnRequest = serde_json::from_value(first)
            .map_err(|error| invalid(format!("decode spawn request: {error}")))?;
        if request.agent_name.trim().is_empty() {
            return Err(invalid("agent_name is required".to_owned()));
        }
        if request.ttl_seconds <= 0 {
            return Err(invalid("ttl_seconds must be positive".to_owned()));
        }
        if request
            .spawn_role
            .as_deref()
            .is_some_and(|role| role.trim().eq_ignore_ascii_case("coordinator"))
        {
            return Err(invalid(
                "spawn_role \"coordinator\" is reserved for coordinator sessions".to_owned(),
            ));
        }
        Ok(request)
    }

    pub(crate) fn role(&self) -> String {
        match self.spawn_role.as_deref().map(str::trim) {
            Some(role) if !role.is_empty() => role.to_owned(),
            _ => "worker".to_owned(),
        }
    }
}

/// `POST /api/agent/soul/validate` (empty body allowed).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SoulValidateRequest {
    // The simulator keeps one soul per agent, whatever the workspace.
    #[allow(dead_code)]
    pub workspace_id: Option<String>,
    pub agent_name: Option<String>,
    pub body: Option<String>,
}

impl SoulValidateRequest {
    pub(crate) fn parse(body: &[u8]) -> Result<SoulValidateRequest, SimError> {
        let decode_error = |detail: &dyn std::fmt::Display| {
            SimError::bad_request(format!("decode soul validate request: {detail}"))
        };
        let Some(first) = single_json_value(body).map_err(|detail| decode_error(&detail))? else {
            return Ok(SoulValidateRequest::default());
        };
        serde_json::from_value(first).map_err(|error| decode_error(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_decoding_is_strict() {
        let status = |body: &str| {
            SpawnRequest::parse(body.as_bytes())
                .map(|_| ())
                .map_err(|e| e.status)
        };
        assert_eq!(status(r#"{"agent_name":"coder","ttl_seconds":60}"#), Ok(()));
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":0}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"x":1}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"permissions":{"filesystem":[]}}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60,"spawn_role":"Coordinator"}"#),
            Err(422)
        );
        assert_eq!(
            status(r#"{"agent_name":"coder","ttl_seconds":60} {}"#),
            Err(422)
        );
        assert_eq!(status(""), Err(422));
    }
}
