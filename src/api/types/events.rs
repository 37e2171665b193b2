//! The task event stream (`GET /api/tasks/{id}/stream`): one event per SSE frame, and what the
//! worker reads from the few event types it acts on.
//!
//! AGH frames each event as `id: <sequence>`, `event: <type>` and `data:` a
//! `TaskStreamEventPayload` (`internal/api/core/sse.go` ~55-123, `internal/api/contract/tasks.go`
//! ~213-231): `{"sequence", "type", "timeline": {"sequence", "event_id", "task": {reference},
//! "run"?: {run summary}, "event_type", "actor", "origin", "payload"?, "timestamp"}}`. The event
//! names are in `internal/events/registry.go` ~75-89; the cancel payloads in
//! `internal/task/manager.go` ~3931-3985, the pause payload in `internal/task/scheduler_controls.go`
//! ~48-56.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::null_as_empty;
use super::tasks::{RunStatus, TaskRef, TaskRun, TaskStatus};
use crate::util::sse::SseEvent;

/// `task.run_canceled`: one run was cancelled (by an operator, or with its task).
pub const EVENT_RUN_CANCELED: &str = "task.run_canceled";
/// `task.canceled`: the task was cancelled; its open runs are in `canceled_run_ids`.
pub const EVENT_TASK_CANCELED: &str = "task.canceled";
/// `task.paused`: no new claims of the task's runs; the run in hand goes on.
pub const EVENT_TASK_PAUSED: &str = "task.paused";
/// `task.resumed`: the pause is lifted.
pub const EVENT_TASK_RESUMED: &str = "task.resumed";

/// One event of a task's stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStreamEvent {
    /// The daemon-wide event sequence (global across tasks): the resume cursor.
    #[serde(default)]
    pub sequence: i64,
    #[serde(default, rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub timeline: TimelineItem,
}

/// The timeline entry an event carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default)]
    pub task: TaskRef,
    /// The run the event is about (a run summary), absent for task-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<TaskRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Fields this build does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The payload of `task.run_canceled`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCanceledPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The payload of `task.canceled`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskCanceledPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub canceled_run_ids: Vec<String>,
}

/// The payload of `task.paused` and `task.resumed`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PausePayload {
    #[serde(default)]
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
}

/// What an event means for the run `run_id` in hand.
#[derive(Clone, Debug, PartialEq)]
pub enum RunSignal {
    /// The run was cancelled: stop its handler, make no terminal call.
    Canceled {
        /// The event that said so.
        event_type: String,
        reason: Option<String>,
    },
    /// The task was paused (no new claims; this run goes on).
    Paused { reason: Option<String> },
    /// The task's pause was lifted.
    Resumed,
}

/// Why a frame of the task stream could not be read as an event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskEventError {
    /// The `data:` is not the event JSON.
    #[error("task event {id:?} is not the expected JSON: {reason}")]
    NotJson { id: Option<String>, reason: String },
    /// The event's payload does not have the shape its type promises.
    #[error("the payload of task event {sequence} ({event_type}) is malformed: {reason}")]
    BadPayload {
        sequence: i64,
        event_type: String,
        reason: String,
    },
}

impl TaskStreamEvent {
    /// Reads one SSE frame; the frame's `event:` name stands in for a missing `type`, and its
    /// `id:` for a missing sequence.
    pub fn from_sse(frame: &SseEvent) -> Result<TaskStreamEvent, TaskEventError> {
        let mut event: TaskStreamEvent =
            serde_json::from_str(&frame.data).map_err(|err| TaskEventError::NotJson {
                id: frame.id.clone(),
                reason: err.to_string(),
            })?;
        if event.event_type.is_empty() && frame.event != "message" {
            event.event_type = frame.event.clone();
        }
        if event.sequence == 0
            && let Some(id) = frame.id.as_deref().and_then(|id| id.parse().ok())
        {
            event.sequence = id;
        }
        Ok(event)
    }

    /// The id of the run the event is about, if it is about one.
    pub fn run_id(&self) -> Option<&str> {
        self.timeline
            .run
            .as_ref()
            .map(|run| run.id.as_str())
            .filter(|id| !id.is_empty())
    }

    /// What this event says about the run `run_id` of the task `task_id`; `None` for events
    /// about anything else (the stream carries the whole task tree).
    pub fn signal_for(
        &self,
        task_id: &str,
        run_id: &str,
    ) -> Result<Option<RunSignal>, TaskEventError> {
        let own_task = self.timeline.task.id.is_empty() || self.timeline.task.id == task_id;
        match self.event_type.as_str() {
            EVENT_RUN_CANCELED if self.run_id() == Some(run_id) => {
                let payload: RunCanceledPayload = self.payload()?;
                Ok(Some(RunSignal::Canceled {
                    event_type: self.event_type.clone(),
                    reason: payload.reason,
                }))
            }
            EVENT_TASK_CANCELED => {
                let payload: TaskCanceledPayload = self.payload()?;
                let listed = payload.canceled_run_ids.iter().any(|id| id == run_id);
                Ok(listed.then(|| RunSignal::Canceled {
                    event_type: self.event_type.clone(),
                    reason: payload.reason,
                }))
            }
            EVENT_TASK_PAUSED if own_task => {
                let payload: PausePayload = self.payload()?;
                Ok(Some(RunSignal::Paused {
                    reason: payload.reason,
                }))
            }
            EVENT_TASK_RESUMED if own_task => Ok(Some(RunSignal::Resumed)),
            _ => Ok(None),
        }
    }

    fn payload<T: serde::de::DeserializeOwned + Default>(&self) -> Result<T, TaskEventError> {
        match &self.timeline.payload {
            None | Some(Value::Null) => Ok(T::default()),
            Some(value) => T::deserialize(value).map_err(|err| TaskEventError::BadPayload {
                sequence: self.sequence,
                event_type: self.event_type.clone(),
                reason: err.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(id: &str, event: &str, data: Value) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.to_string(),
            id: Some(id.into()),
        }
    }

    fn timeline(event_type: &str, run: Option<&str>, payload: Value) -> Value {
        let mut item = json!({
            "sequence": 42, "event_id": "evt-1",
            "task": {"id": "task-1", "title": "Build", "status": "canceled", "scope": "workspace",
                     "latest_event_seq": 42},
            "event_type": event_type,
            "actor": {"kind": "human", "ref": "operator"},
            "origin": {"kind": "uds", "ref": "tasks.cancel"},
            "payload": payload,
            "timestamp": "2026-01-01T00:00:00Z",
        });
        if let Some(run) = run {
            item["run"] = json!({"id": run, "task_id": "task-1", "status": "canceled",
                                 "attempt": 1, "queued_at": "2026-01-01T00:00:00Z"});
        }
        json!({"sequence": 42, "type": event_type, "timeline": item})
    }

    #[test]
    fn a_run_cancel_for_the_run_in_hand_is_a_cancel_signal() {
        let data = timeline(
            EVENT_RUN_CANCELED,
            Some("run-1"),
            json!({"status": "canceled", "task_status": "canceled", "reason": "not needed",
                   "session_id": "sess-1", "cooperative_stop_requested": false}),
        );
        let event = TaskStreamEvent::from_sse(&frame("42", EVENT_RUN_CANCELED, data)).unwrap();
        assert_eq!(event.sequence, 42);
        assert_eq!(event.run_id(), Some("run-1"));
        assert_eq!(
            event.signal_for("task-1", "run-1").unwrap(),
            Some(RunSignal::Canceled {
                event_type: EVENT_RUN_CANCELED.into(),
                reason: Some("not needed".into()),
            })
        );
        assert_eq!(event.signal_for("task-1", "run-2").unwrap(), None);
    }

    #[test]
    fn a_task_cancel_concerns_only_the_runs_it_lists() {
        let data = timeline(
            EVENT_TASK_CANCELED,
            None,
            json!({"status": "canceled", "canceled_run_ids": ["run-1", "run-9"]}),
        );
        let event = TaskStreamEvent::from_sse(&frame("43", EVENT_TASK_CANCELED, data)).unwrap();
        assert!(matches!(
            event.signal_for("task-1", "run-9").unwrap(),
            Some(RunSignal::Canceled { .. })
        ));
        assert_eq!(event.signal_for("task-1", "run-2").unwrap(), None);
    }

    #[test]
    fn pause_and_resume_of_the_task_are_signals_and_other_events_are_not() {
        let paused = timeline(
            EVENT_TASK_PAUSED,
            None,
            json!({"manual": true, "actor_kind": "human", "previous_paused": false,
                   "paused": true, "reason": "incident"}),
        );
        let event = TaskStreamEvent::from_sse(&frame("44", EVENT_TASK_PAUSED, paused)).unwrap();
        assert_eq!(
            event.signal_for("task-1", "run-1").unwrap(),
            Some(RunSignal::Paused {
                reason: Some("incident".into())
            })
        );
        assert_eq!(
            event.signal_for("task-other", "run-1").unwrap(),
            None,
            "a pause of a subtask is not a pause of this task"
        );
        let resumed = timeline(EVENT_TASK_RESUMED, None, json!({"paused": false}));
        let event = TaskStreamEvent::from_sse(&frame("45", EVENT_TASK_RESUMED, resumed)).unwrap();
        assert_eq!(
            event.signal_for("task-1", "run-1").unwrap(),
            Some(RunSignal::Resumed)
        );
        let claimed = timeline("task.run_claimed", Some("run-1"), json!({}));
        let event = TaskStreamEvent::from_sse(&frame("46", "task.run_claimed", claimed)).unwrap();
        assert_eq!(event.signal_for("task-1", "run-1").unwrap(), None);
    }

    #[test]
    fn unknown_fields_are_tolerated_and_the_frame_fills_in_what_is_missing() {
        let data = json!({"timeline": {"task": {"id": "task-1"}, "future": 1}, "also": true});
        let event = TaskStreamEvent::from_sse(&frame("77", "task.updated", data)).unwrap();
        assert_eq!(event.sequence, 77);
        assert_eq!(event.event_type, "task.updated");
        assert_eq!(event.timeline.extra.get("future"), Some(&json!(1)));
    }

    #[test]
    fn data_that_is_not_an_event_is_a_typed_error() {
        let frame = SseEvent {
            event: "task.canceled".into(),
            data: "not json".into(),
            id: Some("5".into()),
        };
        assert!(matches!(
            TaskStreamEvent::from_sse(&frame),
            Err(TaskEventError::NotJson { id: Some(_), .. })
        ));
        let data = timeline(
            EVENT_TASK_CANCELED,
            None,
            json!({"canceled_run_ids": "run-1"}),
        );
        let event = TaskStreamEvent::from_sse(&self::frame("6", EVENT_TASK_CANCELED, data))
            .expect("the frame itself is JSON");
        assert!(matches!(
            event.signal_for("task-1", "run-1"),
            Err(TaskEventError::BadPayload { sequence: 42, .. })
        ));
    }
}
