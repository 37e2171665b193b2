//! The handler contract: what a handler is given for one run, and the outcome it returns.
//!
//! A handler never holds the AGH client. It receives a [`TaskContext`] (the task document, a
//! cancellation token, a deadline, a way to report, and the inbound channel messages of its run)
//! and returns an [`Outcome`]; the lease task turns that outcome into exactly one terminal call.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::types::{ChannelMessage, Claim, MessageKind, Permissions, TaskBundle, TaskView};

pub mod coder;
pub mod exec;
pub mod health;
pub mod matching;
pub mod process_groups;
pub mod select;
pub mod table;
pub mod webhook;

pub use matching::MatchRule;
pub use select::{ChosenHandler, HandlerSet, SharedHandlers};
pub use table::{HandlerConfig, HandlerKind};

/// How long a cancelled handler gets to return before it is abandoned.
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The most a handler gets to return after a forced stop (a second `SIGTERM`).
pub const FORCED_STOP_GRACE: Duration = Duration::from_secs(3);

/// A handler that runs in this process: the way a Rust program that embeds the worker does its
/// own work. It gets the same [`TaskContext`] as the built-in kinds and returns an [`Outcome`];
/// the worker keeps the lease alive meanwhile and makes the one terminal call.
///
/// A handler must return soon after `context.cancel` fires (lease lost, time limit, shutdown):
/// after [`CANCEL_GRACE`] the run is given up without it.
pub trait Handler: Send + Sync + 'static {
    /// Works on one run to its outcome.
    fn run(&self, context: TaskContext) -> impl Future<Output = Outcome> + Send;
}

/// Whether the task view (`GET /api/tasks/{id}`) was read for a run: it alone carries the task's
/// description and its own metadata (the claim and the context bundle hold a task reference
/// without either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskDetails {
    /// Read: `description` and `task_metadata` are the task's (absent when it has none).
    Read,
    /// Not read (an error, or no answer within the bound): the document holds only what the
    /// claim and the bundle gave, so `description` and `task_metadata` are unknown, not empty.
    Unavailable,
}

/// Everything known about the run when the handler starts: the claim, the task view and the
/// context bundle. Serialised, it is the first stdin line of an exec handler and the body a
/// webhook receives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskDocument {
    /// Always `"task"`, so a program reading stdin lines can tell it from messages.
    #[serde(rename = "type")]
    pub doc_type: &'static str,
    pub run_id: String,
    pub task_id: String,
    pub attempt: i64,
    pub title: String,
    /// The task's description, from the task view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The task's own metadata (given when the task was created), from the task view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_metadata: Option<Value>,
    /// The run's own metadata: what the run was enqueued with, plus the `soul` entry AGH adds at
    /// the claim. From the claim; for an adopted run, from the task view's entry for the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_metadata: Option<Value>,
    /// Whether the task view was read (`"read"`) or not (`"unavailable"`).
    pub task_details: TaskDetails,
    /// The claim as the daemon answered it (task, run, lease, coordination channel); for an
    /// adopted run, rebuilt from the lease and the context bundle.
    pub claim: Claim,
    /// The context bundle (handoff summary, prior attempts, limits, profile), when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<TaskBundle>,
    /// The time the handler has, in seconds (the smaller of the bundle's limit and the ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
}

impl TaskDocument {
    /// Builds the document from a claim and the bundle read after it; the task view is not
    /// read yet (`task_details: "unavailable"`) until [`TaskDocument::with_task_view`].
    pub fn new(claim: Claim, bundle: Option<TaskBundle>, deadline: Option<Duration>) -> Self {
        let task_id = if claim.task.id.is_empty() {
            claim.run.task_id.clone().unwrap_or_default()
        } else {
            claim.task.id.clone()
        };
        TaskDocument {
            doc_type: "task",
            run_id: claim.run.id.clone(),
            task_id,
            attempt: claim.run.attempt.unwrap_or(1),
            title: claim.task.title.clone().unwrap_or_default(),
            description: None,
            task_metadata: None,
            run_metadata: present(claim.run.metadata.as_ref()),
            task_details: TaskDetails::Unavailable,
            claim,
            bundle,
            deadline_seconds: deadline.map(|d| d.as_secs()),
        }
    }

    /// Adds what the task view tells: the description and the task's metadata, and the run's
    /// metadata when the claim had none (an adopted run's claim is rebuilt without it).
    pub fn with_task_view(mut self, view: &TaskView) -> Self {
        self.description = view
            .task
            .description
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        self.task_metadata = present(view.task.metadata.as_ref());
        if self.run_metadata.is_none()
            && let Some(metadata) = view
                .run(&self.run_id)
                .and_then(|run| present(run.metadata.as_ref()))
        {
            self.claim.run.metadata = Some(metadata.clone());
            self.run_metadata = Some(metadata);
        }
        if self.title.is_empty() {
            self.title = view.task.title.clone().unwrap_or_default();
        }
        self.task_details = TaskDetails::Read;
        self
    }

    /// The run's coordination channel id, when it has one.
    pub fn coordination_channel_id(&self) -> Option<&str> {
        self.claim
            .run
            .coordination_channel_id
            .as_deref()
            .or(self.claim.lease.coordination_channel_id.as_deref())
            .or(self
                .claim
                .coordination_channel
                .as_ref()
                .and_then(|c| c.id.as_deref()))
            .filter(|id| !id.is_empty())
    }
}

/// Metadata worth passing on: `null` and `{}` say nothing.
fn present(metadata: Option<&Value>) -> Option<Value> {
    metadata
        .filter(|m| !m.is_null() && m.as_object().is_none_or(|o| !o.is_empty()))
        .cloned()
}

/// An inbound channel message as a handler's program reads it: a stdin line for an exec program,
/// the body of the POST to a webhook's `messages_url`. One shape for both, so a program and a
/// sidecar read messages alike (`"type": "message"` tells it from the task document).
pub(crate) fn message_json(message: &ChannelMessage) -> Value {
    serde_json::json!({
        "type": "message",
        "message_id": message.message_id,
        "channel_id": message.channel_id,
        "from": message.from_session_id,
        "kind": message.metadata.as_ref().map(|m| m.message_kind.as_str()),
        "text": message.text(),
        "body": message.body,
        "metadata": message.metadata,
    })
}

/// How a handler ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The work is done; `result` is stored on the run (capped to 64 KiB by the lease task).
    Complete(Value),
    /// The work failed; `error` is a non-empty summary, `metadata` optional detail.
    Fail {
        error: String,
        metadata: Option<Value>,
    },
    /// The handler gives the run back to the queue (the same run, same attempt).
    Release(String),
}

/// A request for a child session, answered by the spawner.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpawnAsk {
    pub agent_name: String,
    pub ttl_seconds: Option<i64>,
    pub spawn_role: Option<String>,
    pub permissions: Option<Permissions>,
    pub name: Option<String>,
    pub prompt_overlay: Option<String>,
}

/// The spawner's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum SpawnAnswer {
    /// A child session exists now.
    Spawned {
        session_id: String,
        agent_name: String,
        ttl_seconds: i64,
        /// The spawn's answer was lost (transport error, timeout) and the child was then found
        /// among this session's children: created once, not twice.
        found_after_lost_answer: bool,
    },
    /// Not created: refused locally (budget) or by the daemon, or no child came of a spawn whose
    /// answer was lost; `reason` says which and why.
    Refused { reason: String },
}

/// What a handler tells the worker while it runs.
#[derive(Debug)]
pub enum HandlerEvent {
    /// A progress line (becomes a throttled `status` message and a log line).
    Progress(String),
    /// A coordination message of another kind on the run's channel.
    Message { kind: MessageKind, text: String },
    /// A reply to a received message.
    Reply { to_message_id: String, text: String },
    /// A request for a child session; the answer comes back on `answer`.
    Spawn {
        ask: Box<SpawnAsk>,
        answer: oneshot::Sender<SpawnAnswer>,
    },
}

/// What a handler gets for one run.
#[derive(Debug)]
pub struct TaskContext {
    /// The task document.
    pub document: Arc<TaskDocument>,
    /// Cancelled when the run must stop: lease lost, deadline, shutdown drain passed.
    pub cancel: CancellationToken,
    /// How long the handler may run (the smaller of the bundle's `max_runtime_seconds` and the ceiling).
    pub time_limit: Option<Duration>,
    /// Reports to the worker (progress, messages, spawn requests). Sending never blocks the handler
    /// for long: the channel is bounded and the worker drains it continuously.
    pub events: mpsc::Sender<HandlerEvent>,
    /// Channel messages addressed to this run.
    pub inbound: mpsc::Receiver<ChannelMessage>,
}

impl TaskContext {
    /// Reports progress; a closed worker side is ignored (the run is ending anyway).
    pub async fn progress(&self, text: impl Into<String>) {
        let _ = self.events.send(HandlerEvent::Progress(text.into())).await;
    }

    /// Asks for a child session and waits for the answer.
    pub async fn spawn(&self, ask: SpawnAsk) -> SpawnAnswer {
        let (answer, receive) = oneshot::channel();
        if self
            .events
            .send(HandlerEvent::Spawn {
                ask: Box::new(ask),
                answer,
            })
            .await
            .is_err()
        {
            return SpawnAnswer::Refused {
                reason: "the run is ending".into(),
            };
        }
        receive.await.unwrap_or(SpawnAnswer::Refused {
            reason: "the spawner is not running".into(),
        })
    }
}
