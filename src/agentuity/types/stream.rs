//! What a session's event stream (`GET /hub/session/{id}/events`) carries, as the SDK's
//! `ObserverSseMessageSchema` describes it (`@agentuity/core` `services/coder/protocol.ts`): a
//! `snapshot` or `hydration` first, then `presence` and `broadcast` messages. A frame named after
//! one of those four carries its payload without `type`; a frame named `message` carries `type` in
//! its payload. Anything else is kept as [`StreamMessage::Other`] rather than ending the stream.

use serde_json::{Map, Value};

use super::hub::HubEvent;

/// The frame names that say the payload's `type` (the SDK's `TYPED_TRANSPORT_EVENTS`).
const TYPED_FRAMES: [&str; 4] = ["snapshot", "hydration", "presence", "broadcast"];

/// One message of a session's event stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamMessage {
    /// The session as it is now (`status`, `label`, `participants`, `agentActivity`, …).
    Snapshot(Map<String, Value>),
    /// The conversation so far (`entries`, `tasks`, `stream`).
    Hydration(Map<String, Value>),
    /// Someone joined or left (`session_join`, `session_leave`, `presence_update`).
    Presence(Map<String, Value>),
    /// A named event of the session (`CoderHubEventNames`).
    Broadcast(Broadcast),
    /// A frame of a kind this build does not know, kept as sent.
    Other { frame: String, data: Value },
}

/// `{type: "broadcast", event, data, category, sessionId, timestamp}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Broadcast {
    pub event: String,
    pub data: Map<String, Value>,
    pub category: Option<String>,
    pub session_id: Option<String>,
    /// Unix milliseconds.
    pub timestamp: Option<i64>,
}

impl StreamMessage {
    /// Reads one frame: its SSE event name and its `data` (JSON). `None` when the data is not
    /// JSON at all.
    pub fn parse(frame: &str, data: &str) -> Option<StreamMessage> {
        let value: Value = serde_json::from_str(data).ok()?;
        let kind = if TYPED_FRAMES.contains(&frame) {
            Some(frame.to_string())
        } else {
            value
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let Value::Object(mut fields) = value else {
            return Some(StreamMessage::Other {
                frame: frame.to_string(),
                data: value,
            });
        };
        fields.remove("type");
        Some(match kind.as_deref() {
            Some("snapshot") => StreamMessage::Snapshot(fields),
            Some("hydration") => StreamMessage::Hydration(fields),
            Some("presence") => StreamMessage::Presence(fields),
            Some("broadcast") => StreamMessage::Broadcast(Broadcast::from_fields(fields)),
            _ => StreamMessage::Other {
                frame: frame.to_string(),
                data: Value::Object(fields),
            },
        })
    }

    /// The message as the SDK types it: its fields with `type` (a broadcast's `data` nested).
    pub fn to_value(&self) -> Value {
        let (kind, mut fields) = match self {
            StreamMessage::Snapshot(fields) => ("snapshot", fields.clone()),
            StreamMessage::Hydration(fields) => ("hydration", fields.clone()),
            StreamMessage::Presence(fields) => ("presence", fields.clone()),
            StreamMessage::Broadcast(b) => {
                let mut fields = Map::new();
                fields.insert("event".into(), Value::from(b.event.clone()));
                fields.insert("data".into(), Value::Object(b.data.clone()));
                fields.insert("category".into(), Value::from(b.category.clone()));
                fields.insert("sessionId".into(), Value::from(b.session_id.clone()));
                fields.insert("timestamp".into(), Value::from(b.timestamp));
                ("broadcast", fields)
            }
            StreamMessage::Other { frame, data } => {
                return serde_json::json!({"type": frame, "data": data});
            }
        };
        fields.insert("type".into(), Value::from(kind));
        Value::Object(fields)
    }

    /// The name a person reads for it: the broadcast's or presence's event, else the kind.
    pub fn name(&self) -> &str {
        match self {
            StreamMessage::Snapshot(_) => "snapshot",
            StreamMessage::Hydration(_) => "hydration",
            StreamMessage::Presence(fields) => fields
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("presence"),
            StreamMessage::Broadcast(broadcast) => &broadcast.event,
            StreamMessage::Other { frame, .. } => frame,
        }
    }
}

impl Broadcast {
    fn from_fields(mut fields: Map<String, Value>) -> Broadcast {
        let text = |fields: &mut Map<String, Value>, key: &str| match fields.remove(key) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        Broadcast {
            event: text(&mut fields, "event").unwrap_or_default(),
            category: text(&mut fields, "category"),
            session_id: text(&mut fields, "sessionId"),
            timestamp: fields.remove("timestamp").and_then(|t| t.as_i64()),
            data: match fields.remove("data") {
                Some(Value::Object(data)) => data,
                _ => Map::new(),
            },
        }
    }

    /// The agent it is about: `agentName` or `agent` in its data.
    pub fn agent(&self) -> Option<&str> {
        ["agentName", "agent"]
            .iter()
            .find_map(|key| self.data.get(*key).and_then(Value::as_str))
    }

    /// The broadcast as an event-history entry (which has the same names and payloads), so one
    /// reading of events serves both.
    pub fn to_event(&self) -> HubEvent {
        HubEvent {
            id: None,
            event: self.event.clone(),
            category: self.category.clone(),
            agent: self.agent().map(str::to_string),
            task_id: self
                .data
                .get("taskId")
                .and_then(Value::as_str)
                .map(str::to_string),
            payload: Value::Object(self.data.clone()),
            occurred_at: None,
            extra: Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_typed_frame_and_a_message_frame_read_alike() {
        let named = StreamMessage::parse(
            "broadcast",
            r#"{"event":"task_start","data":{"taskId":"t1","agent":"scout"},"category":"task","sessionId":"s","timestamp":5}"#,
        );
        let untyped = StreamMessage::parse(
            "message",
            r#"{"type":"broadcast","event":"task_start","data":{"taskId":"t1","agent":"scout"},"category":"task","sessionId":"s","timestamp":5}"#,
        );
        assert_eq!(named, untyped);
        let Some(StreamMessage::Broadcast(broadcast)) = named else {
            panic!("a broadcast: {named:?}");
        };
        let event = broadcast.to_event();
        assert_eq!(event.event, "task_start");
        assert_eq!(event.agent.as_deref(), Some("scout"));
        assert_eq!(event.task_id.as_deref(), Some("t1"));
        assert_eq!(broadcast.timestamp, Some(5));
    }

    #[test]
    fn frames_of_unknown_kinds_are_kept_and_non_json_is_not_a_message() {
        assert_eq!(
            StreamMessage::parse("ping", r#"{"n":1}"#),
            Some(StreamMessage::Other {
                frame: "ping".into(),
                data: json!({"n": 1})
            })
        );
        assert_eq!(StreamMessage::parse("message", "not json"), None);
        let snapshot = StreamMessage::parse("snapshot", r#"{"sessionId":"s","status":"active"}"#);
        assert!(
            matches!(&snapshot, Some(StreamMessage::Snapshot(f)) if f["status"] == "active"),
            "{snapshot:?}"
        );
    }
}
