//! `GET /api/tasks/{id}`: the task view, wrapped twice (`{"task": {"summary", "task", "runs",
//! "events"}}`, AGH `internal/api/contract/responses.go` ~160-162 and `contract/tasks.go` ~64-95,
//! 141-165, 191-211). The only read that carries a task's description and its own metadata: the
//! claim and the context bundle hold a task reference without either.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::null_as_empty;
use super::tasks::TaskRun;

/// `{"task": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskViewResponse {
    #[serde(default)]
    pub task: TaskView,
}

/// One task as the operator sees it: its summary, the task itself, its runs and its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The list-oriented summary (active run, counts); kept as the daemon sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Value>,
    #[serde(default)]
    pub task: TaskRecord,
    /// Every run of the task, each with its own `metadata` (the enqueue metadata and the `soul`
    /// entry of its claim).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub runs: Vec<TaskRun>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub events: Vec<Value>,
    /// Fields this build does not model (children, dependencies).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The task itself (`TaskPayload`): what the reference lacks, its description and metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_event_seq: Option<i64>,
    /// Fields this build does not model, kept for handlers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskView {
    /// The run with this id, when the task lists it.
    pub fn run(&self, run_id: &str) -> Option<&TaskRun> {
        self.runs.iter().find(|run| run.id == run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_read_from_inside_the_twice_wrapped_answer() {
        let raw = serde_json::json!({"task": {
            "summary": {"id": "task-1", "title": "Build", "status": "in_progress"},
            "task": {"id": "task-1", "title": "Build", "description": "Build it all",
                     "metadata": {"team": "infra"}, "latest_event_seq": 4, "scope": "workspace"},
            "runs": [{"id": "run-1", "task_id": "task-1", "metadata": {"lane": "fast"}}],
            "events": [{"id": "evt-1", "event_type": "task.created"}],
            "children": [],
        }});
        let view = serde_json::from_value::<TaskViewResponse>(raw)
            .unwrap()
            .task;
        assert_eq!(view.task.description.as_deref(), Some("Build it all"));
        assert_eq!(
            view.task.metadata,
            Some(serde_json::json!({"team": "infra"}))
        );
        assert_eq!(view.task.latest_event_seq, Some(4));
        assert_eq!(
            view.run("run-1").and_then(|run| run.metadata.clone()),
            Some(serde_json::json!({"lane": "fast"}))
        );
        assert!(view.run("run-2").is_none());
        assert!(view.extra.contains_key("children"));
    }

    #[test]
    fn a_task_without_runs_or_description_still_reads() {
        let view = serde_json::from_str::<TaskViewResponse>(
            r#"{"task":{"task":{"id":"task-1","title":"x"},"runs":null}}"#,
        )
        .unwrap()
        .task;
        assert!(view.runs.is_empty());
        assert_eq!(view.task.description, None);
    }
}
