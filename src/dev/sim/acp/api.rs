//! AGH's operator routes that start and stop agent sessions, served when a provider runs the
//! agent: `POST /api/sessions` (`internal/api/contract/contract.go` ~21-30,
//! `internal/api/core/handlers.go` ~405-440, `session_workspace.go` ~27-41) and
//! `POST /api/workspaces/{ws}/sessions/{id}/stop` (`handlers.go` ~480-491, 204 on success).
//!
//! The simulator has workspace ids but no registry of their roots: a `workspace` session runs in
//! the provider's `workspace_root`; a `workspace_path` session is a global one run in that path.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::super::errors::{SimError, Transport};
use super::super::requests::{is_blank, single_json_value};
use super::super::types::{SessionSpec, SessionState};
use super::super::{Inner, Simulator};

/// `contract.CreateSessionRequest`; unknown fields are ignored, as gin's binding does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateSessionRequest {
    agent_name: String,
    provider: String,
    model: String,
    reasoning_effort: String,
    name: String,
    workspace: String,
    workspace_path: String,
    channel: String,
}

/// An answer: the status and the JSON body, if any.
type Answer = Result<(u16, Option<Value>), SimError>;

/// Serves the request when it is one of these routes; `None` otherwise.
pub(crate) async fn serve(
    inner: &Arc<Inner>,
    method: &Method,
    path: &str,
    body: &[u8],
    transport: Transport,
) -> Option<Answer> {
    let simulator = Simulator {
        inner: inner.clone(),
    };
    if path == "/api/sessions" && method == Method::POST {
        return Some(create(&simulator, body, transport).await);
    }
    let rest = path.strip_prefix("/api/workspaces/")?;
    match (method, rest.split('/').collect::<Vec<_>>().as_slice()) {
        (&Method::POST, [workspace, "sessions", session_id, "stop"]) => {
            Some(stop(&simulator, workspace, session_id, transport).await)
        }
        _ => None,
    }
}

async fn create(simulator: &Simulator, body: &[u8], transport: Transport) -> Answer {
    let prefix = transport.as_str();
    let decode = |detail: String| {
        SimError::bad_request(format!("{prefix}: decode create session request: {detail}"))
    };
    if is_blank(body) {
        return Err(decode("EOF".to_owned()));
    }
    let value = single_json_value(body)
        .map_err(decode)?
        .unwrap_or(Value::Null);
    let request: CreateSessionRequest =
        serde_json::from_value(value).map_err(|err| decode(err.to_string()))?;
    let workspace = request.workspace.trim();
    let workspace_path = request.workspace_path.trim();
    let invalid = |detail: &str| SimError::bad_request(format!("{prefix}: {detail}"));
    match (workspace.is_empty(), workspace_path.is_empty()) {
        (true, true) => return Err(invalid("workspace or workspace_path is required")),
        (false, false) => {
            return Err(invalid(
                "workspace and workspace_path are mutually exclusive",
            ));
        }
        (true, false) if !workspace_path.starts_with('/') => {
            return Err(invalid("workspace_path must be an absolute path"));
        }
        _ => {}
    }
    if request.provider.trim().is_empty()
        && !(request.model.trim().is_empty() && request.reasoning_effort.trim().is_empty())
    {
        return Err(invalid(
            "invalid runtime override: provider is required when model or reasoning_effort is set",
        ));
    }
    let agent_name = request.agent_name.trim();
    let Some(provider) = simulator.agent_provider(agent_name) else {
        return Err(SimError::new(
            404,
            format!(
                "session: agent not found: no provider command runs agent {agent_name:?} in this simulator"
            ),
        ));
    };
    let (workspace_id, cwd) = if workspace.is_empty() {
        (None, PathBuf::from(workspace_path))
    } else {
        (Some(workspace), provider.workspace_root())
    };
    // An empty channel is the network's default channel (`core/bundles.go` ~177-196).
    let channel = match request.channel.trim() {
        "" => "default",
        channel => channel,
    };
    let spec = SessionSpec {
        name: Some(request.name.trim().to_owned()).filter(|name| !name.is_empty()),
        channel: Some(channel.to_owned()),
        provider: Some(request.provider.trim().to_owned()).filter(|p| !p.is_empty()),
        model: Some(request.model.trim().to_owned()).filter(|m| !m.is_empty()),
        ..SessionSpec::for_agent(agent_name, workspace_id)
    };
    let info = simulator
        .start_agent_session(spec, &cwd)
        .await
        .map_err(|err| SimError::new(500, format!("session: start agent: {err}")))?;
    let payload = simulator
        .inner
        .state()
        .session_response(&info.session_id)
        .ok_or_else(|| SimError::new(500, "session: the new session is gone"))?;
    Ok((201, Some(payload)))
}

async fn stop(
    simulator: &Simulator,
    workspace: &str,
    session_id: &str,
    transport: Transport,
) -> Answer {
    let session_id = session_id.trim();
    if session_id.is_empty() {
        return Err(SimError::bad_request(format!(
            "{}: session_id path is required",
            transport.as_str()
        )));
    }
    let in_workspace = simulator
        .session(session_id)
        .is_some_and(|info| info.workspace_id.as_deref() == Some(workspace.trim()));
    if !in_workspace {
        return Err(SimError::new(
            404,
            format!("session: session not found: {session_id} in workspace {workspace}"),
        ));
    }
    // A session without an agent process (made through the admin surface) just ends.
    if simulator.stop_agent_session(session_id).await.is_err() {
        simulator.set_session_state(session_id, SessionState::Stopped);
    }
    Ok((204, None))
}
