//! The Coder Hub's answer shapes as the official SDK (`@agentuity/core`, `services/coder/`)
//! validates them: a session list item, the stream's snapshot and broadcast frames, an entry of
//! the event history. Pure functions, shared by the dev Hub and the tests' fake Hub (whose answers
//! the SDK contract test checks against the SDK's own zod schemas).

use serde_json::{Value, json};

/// The one moment every made-up timestamp carries.
pub const NOW: &str = "2026-01-05T10:00:00Z";
/// [`NOW`] in epoch milliseconds, as the stream's `timestamp` has it.
const NOW_MS: u64 = 1_767_607_200_000;

/// A session as the Hub answers it: the fields the SDK's `CoderSessionListItemSchema` requires
/// (`services/coder/types.ts`) filled in from its status where `detail` leaves them out; what
/// `detail` sets wins.
pub fn session_item(detail: &Value) -> Value {
    let status = detail["status"].as_str().unwrap_or("active").to_string();
    let bucket = match status.as_str() {
        "archived" | "shutdown" | "stopped" | "ended" => "history",
        "creating" | "provisioning" => "provisioning",
        "paused" | "resuming" => "paused",
        _ => "running",
    };
    let mut full = json!({
        "label": "agh",
        "status": status,
        "mode": "sandbox",
        "visibility": "private",
        "workflowMode": "standard",
        "createdAt": NOW,
        "lastActivityAt": NOW,
        "taskCount": 0,
        "subAgentCount": 0,
        "observerCount": 0,
        "participantCount": 0,
        "tags": [],
        "skills": [],
        "bucket": bucket,
        "runtimeAvailable": bucket == "running",
        "controlAvailable": bucket == "running",
        "wakeAvailable": bucket == "paused",
        "historyOnly": bucket == "history",
        "liveExpected": bucket != "history",
    });
    merge(&mut full, detail);
    full
}

/// `fields`' keys written over `target`'s (both objects).
pub fn merge(target: &mut Value, fields: &Value) {
    if let (Some(target), Some(fields)) = (target.as_object_mut(), fields.as_object()) {
        for (key, value) in fields {
            target.insert(key.clone(), value.clone());
        }
    }
}

/// The first frame of a session's stream, as the SDK's `SseSessionSnapshotMessageSchema`
/// (`services/coder/protocol.ts`) has it.
pub fn snapshot(id: &str, detail: &Value) -> Value {
    let text = |key: &str, fallback: &str| {
        detail
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(fallback)
            .to_string()
    };
    json!({
        "sessionId": id,
        "label": text("label", "agh"),
        "status": text("status", "active"),
        "createdAt": text("createdAt", NOW),
        "mode": "sandbox",
        "participants": [],
        "taskCount": detail.get("taskCount").and_then(Value::as_u64).unwrap_or(0),
        "agentActivity": {},
    })
}

/// One Server-Sent Events frame.
pub fn sse_frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The category the Hub files an event under: the first word of its name.
fn category(event: &str) -> &str {
    event.split('_').next().unwrap_or("session")
}

/// Broadcast `event` with `data` as the event history keeps it (the SDK's
/// `CoderSessionEventSchema`, which requires `occurredAt`), numbered `id`.
pub fn history_entry(id: i64, event: &str, data: &Value) -> Value {
    let mut entry = json!({
        "id": id,
        "event": event,
        "category": category(event),
        "payload": data,
        "occurredAt": NOW,
    });
    for key in ["agent", "taskId"] {
        if let Some(value) = data.get(key) {
            entry[key] = value.clone();
        }
    }
    entry
}

/// Broadcast `event` with `data` of session `id` as the stream sends it (the `broadcast` frame's
/// data in the SDK's `ObserverSseMessageSchema`).
pub fn broadcast_message(id: &str, event: &str, data: &Value) -> Value {
    json!({
        "event": event,
        "data": data,
        "category": category(event),
        "sessionId": id,
        "timestamp": NOW_MS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_item_fills_what_its_status_implies_and_keeps_what_was_set() {
        let item = session_item(&json!({"status": "paused", "label": "mine"}));
        assert_eq!(item["bucket"], "paused");
        assert_eq!(item["wakeAvailable"], true);
        assert_eq!(item["runtimeAvailable"], false);
        assert_eq!(item["label"], "mine");
        assert_eq!(session_item(&json!({}))["bucket"], "running");
    }

    #[test]
    fn a_broadcast_keeps_its_agent_and_task_in_the_history_entry() {
        let data = json!({"taskId": "t1", "agent": "scout"});
        let entry = history_entry(3, "task_start", &data);
        assert_eq!(entry["id"], 3);
        assert_eq!(entry["category"], "task");
        assert_eq!(entry["taskId"], "t1");
        assert_eq!(entry["agent"], "scout");
        let message = broadcast_message("codesess_1", "session_complete", &json!({}));
        assert_eq!(message["category"], "session");
        assert_eq!(message["sessionId"], "codesess_1");
    }

    #[test]
    fn a_frame_is_named_and_ends_with_a_blank_line() {
        assert_eq!(
            sse_frame("snapshot", &json!({"a": 1})),
            "event: snapshot\ndata: {\"a\":1}\n\n"
        );
    }
}
