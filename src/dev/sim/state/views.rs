//! The read models AGH builds beyond the agent API's own objects: the run summary (the context
//! bundle's `current_run` and `prior_attempts`), the timeline item (its `recent_events`), the
//! bundle itself, and the task view of `GET /api/tasks/{id}`, each in AGH's shape.

use serde_json::{Map, Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::render::{owner_payload, put, put_holder, put_raw, time};
use super::{Run, RunStatus, SimState, Task};

/// How Go writes an unset `time.Time` without `omitempty`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Earlier attempts of the run's task shown in the context bundle.
const PRIOR_ATTEMPTS: usize = 5;

fn zero_or(value: Option<Timestamp>) -> Value {
    value.map_or_else(|| json!(ZERO_TIME), |at| json!(at.to_rfc3339()))
}

/// The simulator stands for the daemon as every writer of events and runs.
fn daemon_actor() -> Value {
    json!({ "kind": "daemon", "ref": "agh-sim" })
}

/// What a stored event says, as both `TimelineItem` and `TaskEventPayload` spell it.
fn put_event_body(map: &mut Map<String, Value>, event: &Value) {
    map.insert("event_type".into(), event["event_type"].clone());
    map.insert("actor".into(), event["actor"].clone());
    map.insert("origin".into(), daemon_actor());
    put_raw(map, "payload", &event["payload"]);
    map.insert("timestamp".into(), event["timestamp"].clone());
}

impl SimState {
    /// `RunSummary` (AGH `internal/task/types.go` ~428-447): no metadata, result or origin, and
    /// unset times as Go's zero time (its time fields have no `omitempty`).
    pub(super) fn run_summary(&self, run: &Run) -> Value {
        let mut map = self.run_chip(run);
        for (key, value) in [
            ("lease_until", run.lease_until),
            ("heartbeat_at", run.heartbeat_at),
            ("claimed_at", run.claimed_at),
            ("started_at", None),
            ("ended_at", run.ended_at),
        ] {
            map.insert(key.into(), zero_or(value));
        }
        Value::Object(map)
    }

    /// `TaskRunSummaryPayload` (AGH `contract/tasks.go` ~167-187): the run summary with its
    /// times as pointers, absent when unset.
    pub(super) fn run_summary_payload(&self, run: &Run) -> Value {
        let mut map = self.run_chip(run);
        for (key, value) in [
            ("lease_until", run.lease_until),
            ("heartbeat_at", run.heartbeat_at),
            ("claimed_at", run.claimed_at),
            ("ended_at", run.ended_at),
        ] {
            put(&mut map, key, time(value));
        }
        Value::Object(map)
    }

    /// The fields the two run summaries share.
    fn run_chip(&self, run: &Run) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("id".into(), json!(run.id));
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("status".into(), json!(run.status.as_str()));
        map.insert("attempt".into(), json!(run.attempt));
        map.insert(
            "max_attempts".into(),
            json!(self.tasks.get(&run.task_id).map_or(0, |t| t.max_attempts)),
        );
        put_holder(&mut map, run);
        put(&mut map, "claim_token_hash", json!(run.claim_token_hash));
        put(
            &mut map,
            "coordination_channel_id",
            json!(run.coordination_channel_id),
        );
        map.insert("queued_at".into(), json!(run.queued_at.to_rfc3339()));
        put(&mut map, "error", json!(run.error));
        map
    }

    /// `TimelineItem` (AGH `internal/task/live_types.go` ~46-56) of one stored task event.
    fn timeline_item(&self, task: &Task, event: &Value) -> Value {
        let mut map = Map::new();
        map.insert("sequence".into(), event["sequence"].clone());
        map.insert("event_id".into(), event["event_id"].clone());
        map.insert("task".into(), self.task_ref(task));
        if let Some(run) = self.event_run(event) {
            map.insert("run".into(), self.run_summary(run));
        }
        put_event_body(&mut map, event);
        Value::Object(map)
    }

    fn event_run(&self, event: &Value) -> Option<&Run> {
        self.runs.get(event["payload"]["run_id"].as_str()?)
    }

    /// `task.ContextBundle` (AGH `internal/task/context.go` ~50-61, normalised ~63-79): a task
    /// reference, run summaries, timeline items, no description and no task metadata.
    pub(super) fn context_bundle(&self, task: &Task, run: &Run) -> Value {
        let prior: Vec<Value> = task
            .run_ids
            .iter()
            .filter_map(|id| self.runs.get(id))
            .filter(|other| other.id != run.id && other.attempt < run.attempt)
            .rev()
            .take(PRIOR_ATTEMPTS)
            .map(|other| self.run_summary(other))
            .collect();
        let events: Vec<Value> = task
            .events
            .iter()
            .map(|event| self.timeline_item(task, event))
            .collect();
        let mut map = Map::new();
        map.insert("task".into(), self.task_ref(task));
        map.insert("latest_event_seq".into(), json!(task.event_seq));
        map.insert("current_run".into(), self.run_summary(run));
        map.insert("prior_attempts".into(), json!(prior));
        map.insert("recent_events".into(), json!(events));
        put(&mut map, "handoff_summary", json!(task.handoff_summary));
        map.insert(
            "limits".into(),
            json!({
                "max_runtime_seconds": task.max_runtime_seconds,
                "summary_max_bytes": 4096,
                "context_body_max_bytes": 8192,
            }),
        );
        map.insert("review_history".into(), json!([]));
        Value::Object(map)
    }

    /// `GET /api/tasks/{id}`: `{"task": TaskDetailPayload}` (AGH `contract/responses.go`
    /// ~160-162, `contract/tasks.go` ~191-199; `core/tasks.go` ~226-252, 2274-2293): the summary,
    /// the task with its description and metadata, every run with its metadata, the events.
    pub(crate) fn task_view(&self, task_id: &str) -> Result<Value, SimError> {
        let task = self
            .tasks
            .get(task_id)
            .ok_or_else(|| SimError::new(404, "task: task not found"))?;
        let runs: Vec<&Run> = task
            .run_ids
            .iter()
            .filter_map(|id| self.runs.get(id))
            .collect();
        let mut view = Map::new();
        view.insert("summary".into(), self.task_summary(task, &runs));
        let mut record = self.task_common(task, &runs);
        put(&mut record, "description", json!(task.description));
        put_raw(&mut record, "metadata", &task.metadata);
        view.insert("task".into(), Value::Object(record));
        let runs: Vec<Value> = runs
            .iter()
            .map(|run| self.run_payload(run, false))
            .collect();
        if !runs.is_empty() {
            view.insert("runs".into(), json!(runs));
        }
        let events: Vec<Value> = task
            .events
            .iter()
            .map(|event| {
                let mut map = Map::new();
                map.insert("id".into(), event["event_id"].clone());
                map.insert("task_id".into(), json!(task.id));
                put(&mut map, "run_id", event["payload"]["run_id"].clone());
                put_event_body(&mut map, event);
                Value::Object(map)
            })
            .collect();
        if !events.is_empty() {
            view.insert("events".into(), json!(events));
        }
        Ok(json!({ "task": view }))
    }

    /// `TaskSummaryPayload` (AGH `contract/tasks.go` ~27-61): the task's common fields, its
    /// active run and when it was last active.
    fn task_summary(&self, task: &Task, runs: &[&Run]) -> Value {
        let mut map = self.task_common(task, runs);
        if let Some(active) = runs.iter().find(|run| run.status == RunStatus::Claimed) {
            map.insert("active_run".into(), self.run_summary_payload(active));
        }
        put(&mut map, "last_activity_at", Self::updated_at(task));
        Value::Object(map)
    }

    /// The fields `TaskPayload` and `TaskSummaryPayload` share, in AGH's `omitempty` spelling.
    fn task_common(&self, task: &Task, runs: &[&Run]) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("id".into(), json!(task.id));
        put(&mut map, "identifier", json!(task.identifier));
        map.insert(
            "scope".into(),
            json!(if task.global { "global" } else { "workspace" }),
        );
        put(&mut map, "workspace_id", json!(task.workspace_id));
        put(&mut map, "network_channel", json!(task.channel));
        map.insert("title".into(), json!(task.title));
        map.insert("priority".into(), json!(task.priority.as_str()));
        map.insert("max_attempts".into(), json!(task.max_attempts));
        map.insert("status".into(), json!(task.status));
        if let Some(owner) = &task.owner {
            map.insert("owner".into(), owner_payload(owner));
        }
        let current = runs
            .iter()
            .rev()
            .find(|run| matches!(run.status, RunStatus::Queued | RunStatus::Claimed));
        put(
            &mut map,
            "current_run_id",
            json!(current.map(|run| &run.id)),
        );
        map.insert("latest_event_seq".into(), json!(task.event_seq));
        Self::put_paused(&mut map, task);
        map.insert("created_by".into(), daemon_actor());
        map.insert("origin".into(), daemon_actor());
        map.insert("created_at".into(), json!(task.created_at.to_rfc3339()));
        let updated = Self::updated_at(task);
        map.insert(
            "updated_at".into(),
            if updated.is_null() {
                json!(task.created_at.to_rfc3339())
            } else {
                updated
            },
        );
        map
    }

    /// The time of the task's latest event, when it remembers one.
    fn updated_at(task: &Task) -> Value {
        task.events
            .back()
            .map_or(Value::Null, |event| event["timestamp"].clone())
    }
}
