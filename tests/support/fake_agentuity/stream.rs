//! The fake Hub's live event stream, `GET /api/hub/session/{id}/events`, in the shapes of the
//! SDK's `ObserverSseMessageSchema` (`@agentuity/core` `services/coder/protocol.ts`): a `snapshot`
//! frame on open, then `broadcast` frames a test sends with [`FakeAgentuity::broadcast`]; the
//! frames are the dev Hub's (`agh_worker::dev::hub`).

use agh_worker::dev::hub::shapes::{broadcast_message, history_entry, sse_frame};
use agh_worker::dev::hub::stream as hub_stream;
use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Value, json};

use super::{FakeAgentuity, State, json_response};

/// Opens a stream of session `id` (404 when the Hub does not know it).
pub(super) fn open(state: &mut State, id: &str) -> Response {
    let Some(detail) = state.current.get(id) else {
        return json_response(404, json!({"code": "CODER_SESSION_NOT_FOUND"}));
    };
    let (sender, response) = hub_stream::open(id, detail);
    state
        .streams
        .entry(id.to_string())
        .or_default()
        .push(sender);
    state.stream_opened.notify_waiters();
    response
}

impl FakeAgentuity {
    /// Sends broadcast `event` with `data` to every open stream of session `id`, and adds it to
    /// the session's event history (where a poll finds it).
    pub(crate) fn broadcast(&self, id: &str, event: &str, data: Value) {
        let mut state = self.lock();
        let history = state.events.entry(id.to_string()).or_default();
        history.push(history_entry(history.len() as i64 + 1, event, &data));
        let frame = Bytes::from(sse_frame("broadcast", &broadcast_message(id, event, &data)));
        if let Some(streams) = state.streams.get_mut(id) {
            streams.retain(|sender| sender.send(frame.clone()).is_ok());
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
