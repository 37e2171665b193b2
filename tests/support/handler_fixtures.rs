//! Task documents, channel messages and run contexts for handler tests, the same for every
//! handler kind.

use std::sync::Arc;
use std::time::Duration;

use agh_worker::api::types::{ChannelMessage, Claim};
use agh_worker::handler::{HandlerEvent, TaskContext, TaskDocument};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The test's ends of a handler's [`TaskContext`]: what the handler reports, the way in for its
/// channel messages, and its cancel token. Dropping `inbound` closes the handler's inbox.
pub(crate) struct Ends {
    pub events: mpsc::Receiver<HandlerEvent>,
    pub inbound: mpsc::Sender<ChannelMessage>,
    pub cancel: CancellationToken,
}

/// The context of a handler run of `document` that may take `time_limit`, and the test's ends of
/// it. The event channel holds far more than any test reports, so a handler never waits on it.
pub(crate) fn context(document: TaskDocument, time_limit: Option<Duration>) -> (TaskContext, Ends) {
    let (events_tx, events) = mpsc::channel(1024);
    let (inbound, inbound_rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let context = TaskContext {
        document: Arc::new(document),
        cancel: cancel.clone(),
        time_limit,
        events: events_tx,
        inbound: inbound_rx,
    };
    let ends = Ends {
        events,
        inbound,
        cancel,
    };
    (context, ends)
}

/// A claimed run `run_id` of task `task-1` titled `title`, attempt 2, on channel `chan-1`,
/// with ten minutes to run.
pub(crate) fn document(run_id: &str, title: &str) -> TaskDocument {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": title},
        "run": {"id": run_id, "task_id": "task-1", "attempt": 2, "coordination_channel_id": "chan-1"},
        "lease": {"run_id": run_id}
    }))
    .expect("claim fixture");
    TaskDocument::new(claim, None, Some(Duration::from_secs(600)))
}

/// A `request` message about `run-1` from peer `peer-7` on `chan-1`.
pub(crate) fn message(id: &str, text: &str) -> ChannelMessage {
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
