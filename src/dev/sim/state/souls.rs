//! Souls: the SOUL.md body set per agent, and the soul object `soul` and `soul/validate` answer
//! (a body containing `INVALID` or over 32 KiB fails validation).

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::SimState;

impl SimState {
    pub(crate) fn set_soul(&mut self, agent_name: &str, body: Option<String>) {
        match body {
            Some(body) => {
                self.souls.insert(agent_name.to_owned(), body);
            }
            None => {
                self.souls.remove(agent_name);
            }
        }
    }

    /// The soul object; a body containing `INVALID` is deemed invalid (status 422).
    pub(crate) fn soul_object(
        &self,
        agent_name: &str,
        override_body: Option<&str>,
        now: Timestamp,
    ) -> Value {
        let body = override_body.or_else(|| self.souls.get(agent_name).map(String::as_str));
        let limits = json!({ "max_body_bytes": 32768, "context_projection_bytes": 2048, "max_bytes": 32768 });
        let provenance = json!({
            "digest": "sha256:sim",
            "source": "default",
            "enabled": true,
            "max_body_bytes": 32768,
            "context_projection_bytes": 2048,
        });
        let Some(body) = body else {
            return json!({
                "agent_name": agent_name,
                "enabled": true,
                "present": false,
                "active": false,
                "valid": true,
                "validation_status": "missing",
                "truncated": false,
                "limits": limits,
                "config_provenance": provenance,
                "diagnostics": [],
                "created_at": now.to_rfc3339(),
            });
        };
        let too_long = body.len() > 32_768;
        let invalid = body.contains("INVALID") || too_long;
        let diagnostics = if invalid {
            vec![json!({
                "code": if too_long { "soul_body_too_large" } else { "soul_invalid" },
                "severity": "error",
                "message": if too_long { "SOUL.md body exceeds 32768 bytes" } else { "SOUL.md failed validation" },
                "source_path": "SOUL.md",
            })]
        } else {
            Vec::new()
        };
        json!({
            "agent_name": agent_name,
            "enabled": true,
            "present": true,
            "active": !invalid,
            "valid": !invalid,
            "validation_status": if invalid { "invalid" } else { "valid" },
            "snapshot_id": format!("soul-{:016x}", body.len()),
            "digest": format!("sha256:{:064x}", body.len()),
            "source_path": "SOUL.md",
            "frontmatter": { "tone": [], "principles": [], "constraints": [], "collaboration": [], "memory_policy": [], "tags": [] },
            "body": body,
            "truncated": false,
            "limits": limits,
            "config_provenance": provenance,
            "diagnostics": diagnostics,
            "created_at": now.to_rfc3339(),
        })
    }

    /// The `soul` entry a claim merges into the run's metadata when the claiming agent has a
    /// valid soul: `{snapshot_id, digest, agent_name, captured_at}` (AGH
    /// `global_db_task_claim.go` ~744-754).
    pub(crate) fn claim_soul_entry(&self, agent_name: &str, now: Timestamp) -> Option<Value> {
        let soul = self.soul_object(agent_name, None, now);
        if soul["active"] != json!(true) {
            return None;
        }
        Some(json!({
            "snapshot_id": soul["snapshot_id"],
            "digest": soul["digest"],
            "agent_name": agent_name,
            "captured_at": now.to_rfc3339(),
        }))
    }

    pub(crate) fn soul(
        &self,
        session_id: &str,
        agent_override: Option<&str>,
        body_override: Option<&str>,
        now: Timestamp,
    ) -> Result<(u16, Value), SimError> {
        let session = self.session(session_id)?;
        if session.workspace_id.is_none() {
            return Err(SimError::bad_request("workspace_id is required"));
        }
        let agent = agent_override.unwrap_or(&session.agent_name);
        let soul = self.soul_object(agent, body_override, now);
        let status = if soul["valid"] == json!(false) {
            422
        } else {
            200
        };
        Ok((status, soul))
    }
}
