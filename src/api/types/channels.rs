//! Coordination channels and their messages: list, recv, send and reply.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::null_as_empty;

open_enum!(
    /// Coordination message kind.
    MessageKind {
        Status => "status",
        Request => "request",
        Reply => "reply",
        Blocker => "blocker",
        Handoff => "handoff",
        Result => "result",
        ReviewRequest => "review_request",
    }
);

/// A coordination channel as the agent API describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinationChannel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed_message_kinds: Vec<MessageKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<String>,
}

/// `{"channels": […]}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelsResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub channels: Vec<CoordinationChannel>,
}

/// Coordination metadata carried by every agent-channel message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMetadata {
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub coordination_channel_id: String,
    pub message_kind: MessageKind,
    #[serde(default)]
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<Map<String, Value>>,
}

// Declared by hand: the enum comes from `open_enum!`, which cannot mark a default variant.
#[allow(clippy::derivable_impls)]
impl Default for MessageKind {
    fn default() -> Self {
        MessageKind::Status
    }
}

/// One message as `recv`, `send` and `reply` return it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessage {
    #[serde(default)]
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// In `recv` this is the sender's peer id; in send/reply answers the caller's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_session_id: Option<String>,
    #[serde(default)]
    pub body: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl ChannelMessage {
    /// The `text` of a say body, when there is one.
    pub fn text(&self) -> Option<&str> {
        self.body.get("text").and_then(Value::as_str)
    }
}

/// `{"messages": […]}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecvResponse {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub messages: Vec<ChannelMessage>,
}

/// `{"message": …}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    #[serde(default)]
    pub message: ChannelMessage,
}

/// Body of `POST /api/agent/channels/{channel}/send`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SendRequest {
    /// A say body: an object with a non-empty `text`.
    pub body: Value,
    pub metadata: MessageMetadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Body of `POST /api/agent/channels/reply`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplyRequest {
    pub reply_to_message_id: String,
    pub body: Value,
    /// Omitted: the reply inherits the source's metadata with `message_kind: reply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MessageMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}
