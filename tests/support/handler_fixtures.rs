//! Task documents and channel messages for handler tests, the same for every handler kind.

use std::time::Duration;

use agh_worker::api::types::{ChannelMessage, Claim};
use agh_worker::handler::TaskDocument;
use serde_json::json;

/// A claimed run `run_id` of task `task-1` titled `title`, attempt 2, on channel `chan-1`,
/// with ten minutes to run.
pub fn document(run_id: &str, title: &str) -> TaskDocument {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": title},
        "run": {"id": run_id, "task_id": "task-1", "attempt": 2, "coordination_channel_id": "chan-1"},
        "lease": {"run_id": run_id}
    }))
    .expect("claim fixture");
    TaskDocument::new(claim, None, Some(Duration::from_secs(600)))
}

/// A `request` message about `run-1` from peer `peer-7` on `chan-1`.
pub fn message(id: &str, text: &str) -> ChannelMessage {
    serde_json::from_value(json!({
        "message_id": id,
        "channel_id": "chan-1",
        "from_session_id": "peer-7",
        "body": {"text": text},
        "metadata": {
            "task_id": "task-1",
            "run_id": "run-1",
            "coordination_channel_id": "chan-1",
            "message_kind": "request",
            "correlation_id": "corr-1"
        }
    }))
    .expect("message fixture")
}
