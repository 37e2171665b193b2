//! Rendering: the model turned into the JSON shapes of the agent API (task, run, lease, claim,
//! channel, session, lineage and coordinator objects) and of the run detail, with Go's
//! `omitempty` where AGH has it.

use serde_json::{Map, Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::super::requests::MESSAGE_KINDS;
use super::{
    CONTEXT_SECTION_LIMIT, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH, Lineage, Run, Session,
    SimState, Task,
};

pub(super) fn time(value: Option<Timestamp>) -> Value {
    value.map_or(Value::Null, |instant| Value::String(instant.to_rfc3339()))
}

/// Inserts `key: value` unless the value is null or an empty string (Go's `omitempty`).
pub(super) fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

/// The session a run is bound to, as `session_id` and the `claimed_by` actor.
pub(super) fn put_holder(map: &mut Map<String, Value>, run: &Run) {
    if let Some(session_id) = &run.session_id {
        map.insert("session_id".into(), json!(session_id));
        map.insert(
            "claimed_by".into(),
            json!({ "kind": "agent_session", "ref": session_id }),
        );
    }
}

/// A `json.RawMessage` with `omitempty`: absent when nothing was stored.
pub(super) fn put_raw(map: &mut Map<String, Value>, key: &str, value: &Value) {
    if !value.is_null() {
        map.insert(key.to_owned(), value.clone());
    }
}

pub(super) fn owner_payload(owner: &str) -> Value {
    let (kind, reference) = owner.split_once(':').unwrap_or(("pool", owner));
    json!({ "kind": kind, "ref": reference })
}

impl SimState {
    /// `TaskReferencePayload` (AGH `internal/api/contract/tasks.go` ~11-24): no description and
    /// no metadata; the pause fields only when paused (`omitempty`).
    pub(super) fn task_ref(&self, task: &Task) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(task.id));
        put(&mut map, "identifier", json!(task.identifier));
        map.insert("title".into(), json!(task.title));
        map.insert("status".into(), json!(task.status));
        map.insert("priority".into(), json!(task.priority.as_str()));
        if let Some(owner) = &task.owner {
            map.insert("owner".into(), owner_payload(owner));
        }
        map.insert(
            "scope".into(),
            json!(if task.global { "global" } else { "workspace" }),
        );
        put(&mut map, "workspace_id", json!(task.workspace_id));
        map.insert("latest_event_seq".into(), json!(task.event_seq));
        Self::put_paused(&mut map, task);
        Value::Object(map)
    }

    /// The claim's task reference, built from the task record alone: `latest_event_seq` is never
    /// filled in (always 0) and of the pause fields only `paused` is (AGH
    /// `internal/api/core/agent_tasks.go` ~532-544).
    fn claim_task_ref(&self, task: &Task) -> Value {
        let mut reference = self.task_ref(task);
        if let Some(map) = reference.as_object_mut() {
            map.insert("latest_event_seq".into(), json!(0));
            map.remove("effective_paused");
            map.remove("paused_by_task_id");
        }
        reference
    }

    /// `paused`, `effective_paused` and `paused_by_task_id`, all `omitempty`.
    pub(super) fn put_paused(map: &mut Map<String, Value>, task: &Task) {
        if task.paused {
            map.insert("paused".into(), json!(true));
            map.insert("effective_paused".into(), json!(true));
            map.insert("paused_by_task_id".into(), json!(task.id));
        }
    }

    pub(super) fn coordination_channel(&self, run: &Run, purpose: Option<&str>) -> Option<Value> {
        let channel = run.coordination_channel_id.as_ref()?;
        let task = self.tasks.get(&run.task_id);
        let mut map = Map::new();
        map.insert("id".into(), json!(channel));
        map.insert("channel".into(), json!(channel));
        // Never omitted: the channel id when the channel has no name of its own (AGH
        // `internal/api/core/agent_tasks.go` ~513-516).
        map.insert("display_name".into(), json!(channel));
        put(
            &mut map,
            "workspace_id",
            json!(task.and_then(|t| t.workspace_id.clone())),
        );
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("run_id".into(), json!(run.id));
        if let Some(purpose) = purpose {
            map.insert("purpose".into(), json!(purpose));
        }
        map.insert("allowed_message_kinds".into(), json!(MESSAGE_KINDS));
        Some(Value::Object(map))
    }

    /// `TaskRunPayload` (AGH `contract/tasks.go` ~141-165): `metadata` and `result` only when
    /// set (`omitempty`), no `max_attempts` (that is the run summary's).
    pub(super) fn run_payload(&self, run: &Run, with_channel: bool) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(run.id));
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("status".into(), json!(run.status.as_str()));
        map.insert("attempt".into(), json!(run.attempt));
        put_holder(&mut map, run);
        map.insert(
            "origin".into(),
            json!({ "kind": run.origin, "ref": "agent.task.next" }),
        );
        put(&mut map, "claim_token_hash", json!(run.claim_token_hash));
        put(&mut map, "lease_until", time(run.lease_until));
        put(&mut map, "heartbeat_at", time(run.heartbeat_at));
        put(&mut map, "claimed_at", time(run.claimed_at));
        map.insert("queued_at".into(), json!(run.queued_at.to_rfc3339()));
        put(&mut map, "ended_at", time(run.ended_at));
        self.put_run_channel(&mut map, run, with_channel);
        put(&mut map, "error", json!(run.error));
        put_raw(&mut map, "metadata", &run.metadata);
        if let Some(result) = &run.result {
            put_raw(&mut map, "result", result);
        }
        Value::Object(map)
    }

    /// The run's coordination channel id and, `with_channel`, the channel itself.
    fn put_run_channel(&self, map: &mut Map<String, Value>, run: &Run, with_channel: bool) {
        put(
            map,
            "coordination_channel_id",
            json!(run.coordination_channel_id),
        );
        if with_channel
            && let Some(channel) = self.coordination_channel(run, Some("task_run_coordination"))
        {
            map.insert("coordination_channel".into(), channel);
        }
    }

    pub(super) fn lease_summary(&self, run_id: &str, with_channel: bool) -> Value {
        let Some(run) = self.runs.get(run_id) else {
            return Value::Null;
        };
        let mut map = Map::new();
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("run_id".into(), json!(run.id));
        map.insert("status".into(), json!(run.status.as_str()));
        put_holder(&mut map, run);
        put(&mut map, "claim_token_hash", json!(run.claim_token_hash));
        put(&mut map, "lease_until", time(run.lease_until));
        put(&mut map, "heartbeat_at", time(run.heartbeat_at));
        self.put_run_channel(&mut map, run, with_channel);
        Value::Object(map)
    }

    pub(super) fn claim_payload(&self, run_id: &str) -> Value {
        let Some(run) = self.runs.get(run_id) else {
            return Value::Null;
        };
        let task = self
            .tasks
            .get(&run.task_id)
            .map(|task| self.claim_task_ref(task));
        let mut claim = Map::new();
        claim.insert("task".into(), task.unwrap_or(Value::Null));
        claim.insert("run".into(), self.run_payload(run, true));
        claim.insert("lease".into(), self.lease_summary(run_id, true));
        if let Some(channel) = self.coordination_channel(run, Some("task_run_coordination")) {
            claim.insert("coordination_channel".into(), channel);
        }
        json!({ "claim": claim })
    }

    /// `GET /api/task-runs/{id}`: `{"run": {"run", "task", "session"?, "summary"}}`, the session
    /// while the run is bound to one (a claim, and after complete or fail; a release clears it).
    pub(crate) fn task_run_detail(&self, run_id: &str) -> Result<Value, SimError> {
        let run = self
            .runs
            .get(run_id)
            .ok_or_else(|| SimError::new(404, "task: task run not found"))?;
        let task = self.tasks.get(&run.task_id);
        let mut detail = Map::new();
        // `TaskRunPayloadFromRun` alone: no coordination channel object (AGH
        // `internal/api/core/tasks.go` ~2136-2163).
        detail.insert("run".into(), self.run_payload(run, false));
        detail.insert(
            "task".into(),
            task.map_or(Value::Null, |task| self.task_ref(task)),
        );
        if let Some(session) = run.session_id.as_ref().and_then(|id| self.sessions.get(id)) {
            let mut map = Map::new();
            map.insert("session_id".into(), json!(session.id));
            put(&mut map, "workspace_id", json!(session.workspace_id));
            put(&mut map, "agent_name", json!(session.agent_name));
            put(&mut map, "name", json!(session.name));
            put(&mut map, "channel", json!(session.channel));
            put(&mut map, "state", json!(session.state.as_str()));
            map.insert("created_at".into(), json!(session.created_at.to_rfc3339()));
            map.insert("updated_at".into(), json!(session.updated_at.to_rfc3339()));
            detail.insert("session".into(), Value::Object(map));
        }
        // The run's latest event, when the task still remembers one.
        let last_event = task.and_then(|task| {
            task.events
                .iter()
                .rev()
                .find(|event| event["payload"]["run_id"] == json!(run.id))
        });
        let mut summary = Map::new();
        summary.insert(
            "last_activity_at".into(),
            last_event.map_or_else(
                || json!(run.queued_at.to_rfc3339()),
                |event| event["timestamp"].clone(),
            ),
        );
        put(
            &mut summary,
            "last_event_type",
            last_event.map_or(Value::Null, |event| event["event_type"].clone()),
        );
        detail.insert("summary".into(), Value::Object(summary));
        Ok(json!({ "run": detail }))
    }

    pub(super) fn lineage_payload(lineage: &Lineage) -> Value {
        let mut map = Map::new();
        put(
            &mut map,
            "parent_session_id",
            json!(lineage.parent_session_id),
        );
        map.insert("root_session_id".into(), json!(lineage.root_session_id));
        map.insert("spawn_depth".into(), json!(lineage.spawn_depth));
        put(&mut map, "spawn_role", json!(lineage.spawn_role));
        put(&mut map, "ttl_expires_at", time(lineage.ttl_expires_at));
        map.insert(
            "auto_stop_on_parent".into(),
            json!(lineage.auto_stop_on_parent),
        );
        map.insert("spawn_budget".into(), json!(lineage.budget));
        map.insert("permission_policy".into(), json!(lineage.permissions));
        Value::Object(map)
    }

    pub(super) fn session_summary(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(session.id));
        map.insert("name".into(), json!(session.name));
        map.insert("type".into(), json!(session.kind));
        map.insert("state".into(), json!(session.state.as_str()));
        put(&mut map, "channel", json!(session.channel));
        if let Some(lineage) = &session.lineage {
            map.insert("lineage".into(), Self::lineage_payload(lineage));
        }
        map.insert("created_at".into(), json!(session.created_at.to_rfc3339()));
        map.insert("updated_at".into(), json!(session.updated_at.to_rfc3339()));
        Value::Object(map)
    }

    pub(super) fn session_full(session: &Session) -> Value {
        let mut map = match Self::session_summary(session) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("agent_name".into(), json!(session.agent_name));
        put(&mut map, "provider", json!(session.provider));
        put(&mut map, "model", json!(session.model));
        put(&mut map, "workspace_id", json!(session.workspace_id));
        map.insert("attachable".into(), json!(false));
        map.insert(
            "badge".into(),
            json!(if session.state.is_live() {
                "running"
            } else {
                "stopped"
            }),
        );
        Value::Object(map)
    }

    pub(super) fn self_payload(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("session_id".into(), json!(session.id));
        map.insert("agent_name".into(), json!(session.agent_name));
        put(&mut map, "provider", json!(session.provider));
        put(&mut map, "model", json!(session.model));
        Value::Object(map)
    }

    pub(super) fn workspace_payload(session: &Session) -> Value {
        match &session.workspace_id {
            Some(workspace) => json!({ "id": workspace, "name": workspace }),
            None => json!({}),
        }
    }

    pub(super) fn capabilities(session: &Session) -> Vec<Value> {
        let mut capabilities: Vec<(&str, &str)> = session
            .capabilities
            .iter()
            .map(|id| {
                let source = if id.starts_with("skill:") {
                    "skill"
                } else {
                    "agent"
                };
                (source, id.as_str())
            })
            .collect();
        capabilities.sort_unstable();
        capabilities
            .into_iter()
            .map(|(source, id)| json!({ "id": id, "source": source }))
            .collect()
    }

    pub(super) fn channel_payload(workspace: Option<&str>, channel: &str) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(channel));
        map.insert("channel".into(), json!(channel));
        map.insert("display_name".into(), json!(channel));
        map.insert("purpose".into(), json!("network_channel"));
        put(&mut map, "workspace_id", json!(workspace));
        map.insert("allowed_message_kinds".into(), json!(MESSAGE_KINDS));
        Value::Object(map)
    }

    pub(super) fn limits(&self) -> Value {
        json!({
            "max_children": DEFAULT_MAX_CHILDREN,
            "max_spawn_depth": DEFAULT_MAX_DEPTH,
            "max_active_task_leases": 1,
            "context_section_limit": CONTEXT_SECTION_LIMIT,
        })
    }

    pub(super) fn coordinator(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("enabled".into(), json!(false));
        map.insert("agent_name".into(), json!("coordinator"));
        map.insert("default_ttl_seconds".into(), json!(7200));
        map.insert("max_children".into(), json!(5));
        map.insert("max_active_sessions_per_workspace".into(), json!(5));
        map.insert(
            "source".into(),
            json!(if session.workspace_id.is_some() {
                "workspace"
            } else {
                "global"
            }),
        );
        put(&mut map, "workspace_id", json!(session.workspace_id));
        Value::Object(map)
    }
}
