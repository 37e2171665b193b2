//! Sessions and identity: creating and stopping sessions, resolving the caller from its identity
//! headers, and what a session sees of itself (`me`, `context`, coordinator config).

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::{IdentityFailure, SimError};
use super::super::types::{DEFAULT_AGENT, SessionInfo, SessionSpec, SessionState};
use super::{CONTEXT_SECTION_LIMIT, Envelope, Lineage, Run, RunStatus, Session, SimState, new_id};

/// Identity as asserted by request headers, already trimmed (empty = absent).
#[derive(Debug, Default, Clone)]
pub(crate) struct Credentials {
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub workspace_id: Option<String>,
}

impl Credentials {
    /// Neither the session nor the agent header: on the daemon's non-agent routes, the operator.
    pub(crate) fn is_empty(&self) -> bool {
        self.session_id.is_none() && self.agent.is_none()
    }
}

impl Session {
    /// An active `user` session with nothing but its identity; callers override the rest.
    pub(super) fn new(id: String, agent_name: String, now: Timestamp) -> Session {
        Session {
            id,
            name: agent_name.clone(),
            agent_name,
            workspace_id: None,
            kind: "user",
            state: SessionState::Active,
            channel: None,
            capabilities: Vec::new(),
            provider: None,
            model: None,
            lineage: None,
            created_at: now,
            updated_at: now,
            active_run: None,
            queue: VecDeque::new(),
            delivered: VecDeque::new(),
        }
    }

    pub(super) fn peer_id(&self) -> String {
        format!("{}.{}", self.agent_name.to_lowercase(), self.id)
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            session_id: self.id.clone(),
            agent_name: self.agent_name.clone(),
            workspace_id: self.workspace_id.clone(),
            channel: self.channel.clone(),
            peer_id: self.peer_id(),
        }
    }
}

impl SimState {
    pub(crate) fn create_session(&mut self, spec: SessionSpec, now: Timestamp) -> SessionInfo {
        let id = spec
            .session_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| new_id("sess"));
        let agent_name = if spec.agent_name.trim().is_empty() {
            DEFAULT_AGENT.to_owned()
        } else {
            spec.agent_name.trim().to_owned()
        };
        let lineage =
            (spec.spawn_budget.is_some() || spec.permission_policy.is_some()).then(|| Lineage {
                parent_session_id: None,
                root_session_id: id.clone(),
                spawn_depth: 0,
                spawn_role: None,
                ttl_expires_at: None,
                auto_stop_on_parent: false,
                budget: spec.spawn_budget.unwrap_or_default(),
                permissions: spec.permission_policy.unwrap_or_default(),
            });
        let session = Session {
            name: spec.name.unwrap_or_else(|| agent_name.clone()),
            workspace_id: spec.workspace_id.filter(|ws| !ws.trim().is_empty()),
            state: spec.state,
            channel: spec.channel.filter(|channel| !channel.trim().is_empty()),
            capabilities: spec.capabilities,
            provider: spec.provider,
            model: spec.model,
            lineage,
            ..Session::new(id.clone(), agent_name, now)
        };
        let info = session.info();
        self.sessions.insert(id, session);
        info
    }

    pub(crate) fn session_info(&self, session_id: &str) -> Option<SessionInfo> {
        self.sessions.get(session_id).map(Session::info)
    }

    pub(crate) fn set_session_state(
        &mut self,
        session_id: &str,
        state: SessionState,
        now: Timestamp,
    ) -> bool {
        match self.sessions.get_mut(session_id) {
            Some(session) => {
                session.state = state;
                session.updated_at = now;
                true
            }
            None => false,
        }
    }

    /// Identity resolution in the daemon's order (§1.3); returns the caller's session id.
    pub(crate) fn resolve_identity(&self, credentials: &Credentials) -> Result<String, SimError> {
        let session_id = credentials
            .session_id
            .as_deref()
            .ok_or_else(|| IdentityFailure::SessionIdMissing.into_error())?;
        let agent = credentials
            .agent
            .as_deref()
            .ok_or_else(|| IdentityFailure::AgentMissing.into_error())?;
        let session = self
            .sessions
            .get(session_id)
            .ok_or_else(|| IdentityFailure::UnknownSession.into_error())?;
        if session.state != SessionState::Active {
            return Err(IdentityFailure::InactiveSession.into_error());
        }
        if session.agent_name != agent {
            return Err(IdentityFailure::AgentMismatch.into_error());
        }
        if let Some(workspace) = credentials.workspace_id.as_deref()
            && session.workspace_id.as_deref() != Some(workspace)
        {
            return Err(IdentityFailure::WorkspaceMismatch.into_error());
        }
        Ok(session.id.clone())
    }

    pub(super) fn session(&self, session_id: &str) -> Result<&Session, SimError> {
        self.sessions.get(session_id).ok_or_else(|| {
            SimError::new(404, format!("session: session not found: {session_id:?}"))
        })
    }

    fn active_run(&self, session: &Session) -> Option<&Run> {
        let run = self.runs.get(session.active_run.as_deref()?)?;
        (run.status == RunStatus::Claimed && run.session_id.as_deref() == Some(session.id.as_str()))
            .then_some(run)
    }

    pub(crate) fn me(&self, session_id: &str) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let mut capabilities = Self::capabilities(session);
        capabilities.truncate(CONTEXT_SECTION_LIMIT);
        let leases: Vec<Value> = self
            .active_run(session)
            .map(|run| self.lease_summary(&run.id, true))
            .into_iter()
            .collect();
        let mut channels = match self.channels(session_id)?["channels"].take() {
            Value::Array(channels) => channels,
            _ => Vec::new(),
        };
        // The context's coordination channel (the active run's) is merged in by id.
        if let Some(run_channel) = self
            .active_run(session)
            .and_then(|run| self.coordination_channel(run, Some("task_run_coordination")))
            && !channels
                .iter()
                .any(|channel| channel["id"] == run_channel["id"])
        {
            channels.push(run_channel);
            channels.sort_by(|a, b| {
                let key = |c: &Value| {
                    (
                        c["workspace_id"].as_str().unwrap_or("").to_owned(),
                        c["id"].as_str().unwrap_or("").to_owned(),
                    )
                };
                key(a).cmp(&key(b))
            });
        }
        Ok(json!({ "me": {
            "self": Self::self_payload(session),
            "workspace": Self::workspace_payload(session),
            "session": Self::session_summary(session),
            "capabilities": capabilities,
            "channels": channels,
            "active_task_leases": leases,
            "coordinator": Self::coordinator(session),
            "limits": self.limits(),
        }}))
    }

    pub(crate) fn coordinator_config(&self, session_id: &str) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        Ok(json!({ "coordinator": Self::coordinator(session) }))
    }

    pub(crate) fn context(&self, session_id: &str, now: Timestamp) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let active = self.active_run(session);
        let task_section = match active.and_then(|run| Some((run, self.tasks.get(&run.task_id)?))) {
            Some((run, task)) => json!({
                "available": true,
                "task": self.task_ref(task),
                "lease": self.lease_summary(&run.id, true),
                "bundle": self.context_bundle(task, run),
            }),
            None => json!({ "available": false }),
        };
        let coordination = match active
            .and_then(|run| self.coordination_channel(run, Some("task_run_coordination")))
        {
            Some(channel) => json!({ "available": true, "channel": channel }),
            None => match &session.channel {
                Some(channel) => json!({
                    "available": true,
                    "channel": Self::channel_payload(session.workspace_id.as_deref(), channel),
                }),
                None => json!({ "available": false }),
            },
        };
        let mut inbox: Vec<&Envelope> = session
            .queue
            .iter()
            .filter(|envelope| envelope.is_visible())
            .collect();
        inbox.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
        let unread = inbox.len();
        let items: Vec<Value> = inbox
            .iter()
            .take(CONTEXT_SECTION_LIMIT)
            .map(|envelope| {
                let preview: String = envelope
                    .body
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(180)
                    .collect();
                let metadata = envelope.coordination.clone().unwrap_or(Value::Null);
                json!({
                    "message_id": envelope.message_id,
                    "channel_id": envelope.channel_id(),
                    "kind": metadata.get("message_kind").cloned().unwrap_or(Value::Null),
                    "metadata": metadata,
                    "preview": preview,
                    "timestamp": envelope.sent_at.truncated_to_seconds().to_rfc3339(),
                })
            })
            .collect();
        let mut peers: Vec<Value> = match &session.channel {
            Some(channel) => {
                let mut peers: Vec<(String, &Session)> = self
                    .sessions
                    .values()
                    .filter(|other| {
                        other.id != session.id
                            && other.state == SessionState::Active
                            && other.channel.as_deref() == Some(channel.as_str())
                            && other.workspace_id == session.workspace_id
                    })
                    .map(|other| (other.peer_id(), other))
                    .collect();
                peers.sort_by(|a, b| a.0.cmp(&b.0));
                peers
                    .into_iter()
                    .map(|(peer, other)| {
                        json!({
                            "peer_id": peer,
                            "session_id": other.id,
                            "channel_id": channel,
                            "display_name": other.agent_name,
                            "capabilities": other.capabilities,
                        })
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let peer_total = peers.len();
        peers.truncate(CONTEXT_SECTION_LIMIT);
        let mut capabilities = Self::capabilities(session);
        let capability_total = capabilities.len();
        capabilities.truncate(CONTEXT_SECTION_LIMIT);
        let section = |returned: usize, total: usize| json!({ "limit": CONTEXT_SECTION_LIMIT, "returned": returned, "truncated": total > returned });
        let soul = self.soul_object(&session.agent_name, None, now);
        Ok(json!({ "context": {
            "self": Self::self_payload(session),
            "workspace": Self::workspace_payload(session),
            "session": Self::session_summary(session),
            "soul": {
                "enabled": soul["enabled"],
                "present": soul["present"],
                "active": soul["active"],
                "valid": soul["valid"],
                "validation_status": soul["validation_status"],
                "digest": soul["digest"],
                "truncated": false,
                "max_body_bytes": 32768,
                "max_bytes": 2048,
                "principles": [],
                "tone": [],
            },
            "task": task_section,
            "coordination_channel": coordination,
            "inbox_summary": {
                "items": items,
                "unread_count": unread,
                "section": section(items.len(), unread),
            },
            "peer_roster": { "peers": peers.clone(), "section": section(peers.len(), peer_total) },
            "capabilities": {
                "capabilities": capabilities.clone(),
                "section": section(capabilities.len(), capability_total),
            },
            "limits": self.limits(),
            "provenance": { "source": "daemon.situation", "generated_at": now.to_rfc3339() },
        }}))
    }
}
