//! Tasks and their runs: claim, leases, the terminal calls (complete, fail, release) and the run detail.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::channels::CoordinationChannel;
use super::identity::SessionState;

open_enum!(
    /// Task-run status.
    RunStatus {
        Queued => "queued",
        Claimed => "claimed",
        Starting => "starting",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Canceled => "canceled",
        NeedsAttention => "needs_attention",
    }
);

open_enum!(
    /// Task status.
    TaskStatus {
        Draft => "draft",
        Pending => "pending",
        Blocked => "blocked",
        Ready => "ready",
        InProgress => "in_progress",
        Completed => "completed",
        Failed => "failed",
        Canceled => "canceled",
    }
);

open_enum!(
    /// Task priority; claim weights low=10, medium=20, high=30, urgent=40.
    Priority {
        Low => "low",
        Medium => "medium",
        High => "high",
        Urgent => "urgent",
    }
);

/// `{kind, ref}` actor or owner reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A task as referenced from claims, bundles and events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRef {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_event_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by_task_id: Option<String>,
    /// Fields this build does not model, kept for handlers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A task run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Fields this build does not model, kept for handlers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskRun {
    /// The session the run is bound to: `session_id`, or the `agent_session` that claimed it.
    pub fn holder(&self) -> Option<&str> {
        self.session_id
            .as_deref()
            .or_else(|| {
                self.claimed_by
                    .as_ref()
                    .filter(|actor| actor.kind.as_deref() == Some("agent_session"))
                    .and_then(|actor| actor.reference.as_deref())
            })
            .filter(|session| !session.is_empty())
    }
}

/// The lease summary returned by claim and by every lease mutation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseSummary {
    #[serde(default)]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<ActorRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

// ---------------------------------------------------------------------------------------------
// Claim and lease calls

/// Body of `POST /api/agent/tasks/claim-next`; everything optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClaimRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_min: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

/// `{"claim": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimResponse {
    #[serde(default)]
    pub claim: Claim,
}

/// A claimed run: the task, the run, the lease and the run's coordination channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default)]
    pub run: TaskRun,
    #[serde(default)]
    pub lease: LeaseSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_channel: Option<CoordinationChannel>,
}

/// Body of heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeartbeatRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
}

/// Body of complete.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompleteRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Body of fail.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FailRequest {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Body of release.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReleaseRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{"lease": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseResponse {
    #[serde(default)]
    pub lease: LeaseSummary,
}

// ---------------------------------------------------------------------------------------------
// Run detail (`GET /api/task-runs/{id}`, outside the agent API)

/// `{"run": …}`: the daemon's run-detail read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunResponse {
    #[serde(default)]
    pub run: TaskRunDetail,
}

/// One run as the daemon stores it, with its task, the session it is bound to (when there is
/// one) and figures about its activity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunDetail {
    #[serde(default)]
    pub run: TaskRun,
    #[serde(default)]
    pub task: TaskRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<TaskRunSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<TaskRunActivity>,
}

/// The session a run is bound to, as the run detail names it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunSession {
    #[serde(default)]
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SessionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Fields this build does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The run detail's `summary`: when the run was last active and what it has used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRunActivity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_currency: Option<String>,
    /// Fields this build does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept_not_fatal() {
        let run: TaskRun =
            serde_json::from_str(r#"{"id":"run-1","status":"paused_for_review"}"#).unwrap();
        assert_eq!(
            run.status,
            Some(RunStatus::Other("paused_for_review".into()))
        );
        assert_eq!(
            serde_json::to_value(&run.status).unwrap(),
            serde_json::json!("paused_for_review")
        );
    }

    #[test]
    fn unknown_fields_of_runs_are_kept_for_handlers() {
        let run: TaskRun =
            serde_json::from_str(r#"{"id":"run-1","future_field":{"a":1}}"#).unwrap();
        assert_eq!(
            run.extra.get("future_field"),
            Some(&serde_json::json!({"a":1}))
        );
    }

    #[test]
    fn a_run_detail_reads_in_the_daemons_shape() {
        let raw = serde_json::json!({"run": {
            "run": {"id": "run-1", "task_id": "task-1", "status": "completed", "attempt": 2,
                    "claimed_by": {"kind": "agent_session", "ref": "sess-1"},
                    "session_id": "sess-1", "origin": {"kind": "uds", "ref": "agent.task.next"},
                    "queued_at": "2026-01-01T00:00:00Z", "ended_at": "2026-01-01T00:01:00Z",
                    "result": {"ok": true}, "designation_group_id": "grp-1"},
            "task": {"id": "task-1", "title": "Build", "status": "completed",
                     "scope": "workspace", "latest_event_seq": 7},
            "session": {"session_id": "sess-1", "workspace_id": "ws-1", "agent_name": "coder",
                        "state": "active", "created_at": "2026-01-01T00:00:00Z",
                        "updated_at": "2026-01-01T00:00:00Z"},
            "summary": {"last_activity_at": "2026-01-01T00:01:00Z",
                        "last_event_type": "task.run_completed", "turn_count": 3,
                        "total_cost": 0.25},
        }});
        let detail = serde_json::from_value::<TaskRunResponse>(raw).unwrap().run;
        assert_eq!(detail.run.status, Some(RunStatus::Completed));
        assert_eq!(detail.run.holder(), Some("sess-1"));
        assert_eq!(
            detail.run.extra.get("designation_group_id"),
            Some(&serde_json::json!("grp-1"))
        );
        assert_eq!(detail.task.latest_event_seq, Some(7));
        let session = detail.session.unwrap();
        assert_eq!(session.state, Some(SessionState::Active));
        let summary = detail.summary.unwrap();
        assert_eq!(summary.turn_count, Some(3));
        assert_eq!(summary.total_cost, Some(0.25));
    }

    #[test]
    fn the_holder_of_a_run_is_its_session_or_the_agent_session_that_claimed_it() {
        let claimed_by = |kind: &str| TaskRun {
            claimed_by: Some(ActorRef {
                kind: Some(kind.into()),
                reference: Some("sess-2".into()),
            }),
            ..Default::default()
        };
        assert_eq!(claimed_by("agent_session").holder(), Some("sess-2"));
        assert_eq!(claimed_by("human").holder(), None);
        let both = TaskRun {
            session_id: Some("sess-1".into()),
            ..claimed_by("agent_session")
        };
        assert_eq!(both.holder(), Some("sess-1"));
        assert_eq!(TaskRun::default().holder(), None);
    }

    #[test]
    fn claim_request_sends_only_what_is_set() {
        assert_eq!(
            serde_json::to_string(&ClaimRequest::default()).unwrap(),
            "{}"
        );
        let wait = ClaimRequest {
            wait: true,
            lease_seconds: Some(60),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&wait).unwrap(),
            serde_json::json!({"wait": true, "lease_seconds": 60})
        );
    }
}
