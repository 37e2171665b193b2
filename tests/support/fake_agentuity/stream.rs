//! The fake Hub's live event stream, `GET /api/hub/session/{id}/events`, in the shapes of the
//! SDK's `ObserverSseMessageSchema` (`@agentuity/core` `services/coder/protocol.ts`): a `snapshot`
//! frame on open, then `broadcast` frames a test sends with [`FakeAgentuity::broadcast`].

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{FakeAgentuity, NOW, State, json_response};

/// Opens a stream of session `id` (404 when the Hub does not know it).
pub(super) fn open(state: &mut State, id: &str) -> Response {
    let Some(detail) = state.current.get(id).cloned() else {
        return json_response(404, json!({"code": "CODER_SESSION_NOT_FOUND"}));
    };
    let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
    let _ = sender.send(frame("snapshot", &snapshot(id, &detail)));
    state
        .streams
        .entry(id.to_string())
        .or_default()
        .push(sender);
    state.stream_opened.notify_waiters();
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), receiver))
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The snapshot of a session as the SDK's `SseSessionSnapshotMessageSchema` has it.
fn snapshot(id: &str, detail: &Value) -> Value {
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

fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

impl FakeAgentuity {
    /// Sends broadcast `event` with `data` to every open stream of session `id`, and adds it to
    /// the session's event history (where a poll finds it).
    pub(crate) fn broadcast(&self, id: &str, event: &str, data: Value) {
        let mut state = self.lock();
        let history = state.events.entry(id.to_string()).or_default();
        let mut entry = json!({
            "id": history.len() as i64 + 1,
            "event": event,
            "category": event.split('_').next().unwrap_or("session"),
            "payload": data.clone(),
            "occurredAt": NOW,
        });
        for key in ["agent", "taskId"] {
            if let Some(value) = data.get(key) {
                entry[key] = value.clone();
            }
        }
        history.push(entry);
        let message = json!({
            "event": event,
            "data": data,
            "category": event.split('_').next().unwrap_or("session"),
            "sessionId": id,
            "timestamp": 1_767_607_200_000u64,
        });
        if let Some(streams) = state.streams.get_mut(id) {
            streams.retain(|sender| sender.send(frame("broadcast", &message)).is_ok());
        }
    }

    /// Sends raw bytes to every open stream of session `id` (a comment, a broken frame).
    pub(crate) fn stream_raw(&self, id: &str, bytes: &'static str) {
        if let Some(streams) = self.lock().streams.get_mut(id) {
            streams.retain(|sender| sender.send(Bytes::from_static(bytes.as_bytes())).is_ok());
        }
    }

    /// Closes every open stream of session `id`, as a Hub restart would.
    pub(crate) fn close_streams(&self, id: &str) {
        self.lock().streams.remove(id);
    }

    /// Streams of session `id` opened so far.
    pub(crate) fn stream_opens(&self, id: &str) -> usize {
        self.count("GET", &format!("/api/hub/session/{id}/events"))
    }

    /// Waits until session `id` has an open stream.
    pub(crate) async fn until_streaming(&self, id: &str) {
        let notify = self.lock().stream_opened.clone();
        loop {
            let opened = notify.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            let open = self
                .lock()
                .streams
                .get(id)
                .is_some_and(|streams| streams.iter().any(|s| !s.is_closed()));
            if open {
                return;
            }
            opened.await;
        }
    }
}
