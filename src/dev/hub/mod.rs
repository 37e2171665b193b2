//! A minimal Coder Hub on a loopback port, for the bench: exactly what the coder handler calls in
//! a standard run, in the shapes of the official SDK ([`shapes`]). Discovery (`GET /coder`),
//! listing sessions (the run's tag lookup), creating one (active at once), reading it, its event
//! history, its live event stream at `/api/hub/session/{id}/events` (a snapshot, then what
//! [`DevHub::broadcast`] sends), its loop state, replay and archive. Every request is counted.
//!
//! Like the AGH simulator, it uses nothing of the worker but `util`: it must not depend on the
//! client it serves. The tests' fake Hub (`tests/support/fake_agentuity`) scripts far more (faults,
//! admin endpoints); both answer with the same [`shapes`].

pub mod shapes;
pub mod stream;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::util::sync::lock;
use shapes::{broadcast_message, history_entry, session_item, sse_frame};

#[derive(Default)]
struct State {
    /// Session details by id (`codesess_<n>`, numbered from 1).
    sessions: BTreeMap<String, Value>,
    /// Event history by session id, oldest first.
    events: BTreeMap<String, Vec<Value>>,
    /// Open event streams by session id.
    streams: BTreeMap<String, Vec<mpsc::UnboundedSender<Bytes>>>,
    /// Sessions created so far.
    created: u64,
    /// Requests answered so far.
    requests: u64,
}

/// The dev Hub, served until [`DevHub::stop`].
#[derive(Clone)]
pub struct DevHub {
    url: String,
    state: Arc<Mutex<State>>,
    /// Woken when a session is created or a stream opens.
    changed: Arc<Notify>,
    stop: CancellationToken,
}

impl std::fmt::Debug for DevHub {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DevHub")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DevHub {
    /// Serves a Hub with no sessions on a free loopback port.
    pub async fn start() -> std::io::Result<DevHub> {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let hub = DevHub {
            url,
            state: Arc::default(),
            changed: Arc::default(),
            stop: CancellationToken::new(),
        };
        let serving = hub.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let hub = serving.clone();
            async move { hub.answer(&method, &uri, &body) }
        });
        let stop = hub.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(hub)
    }

    /// The Hub's base URL (`handlers.coder.hub_url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered so far, of every kind.
    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }

    /// Waits until `count` sessions have been created, and answers the id of the `count`-th.
    pub async fn session_created(&self, count: u64) -> String {
        self.until(|state| state.created >= count).await;
        session_id(count)
    }

    /// Waits until session `id` has an open event stream.
    pub async fn until_streaming(&self, id: &str) {
        self.until(|state| {
            state
                .streams
                .get(id)
                .is_some_and(|streams| streams.iter().any(|s| !s.is_closed()))
        })
        .await;
    }

    async fn until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&lock(&self.state)) {
                return;
            }
            changed.await;
        }
    }

    /// Sends broadcast `event` with `data` to every open stream of session `id`, and adds it to
    /// the session's event history (where a poll finds it).
    pub fn broadcast(&self, id: &str, event: &str, data: Value) {
        let mut state = lock(&self.state);
        let history = state.events.entry(id.to_string()).or_default();
        history.push(history_entry(history.len() as i64 + 1, event, &data));
        let frame = Bytes::from(sse_frame("broadcast", &broadcast_message(id, event, &data)));
        if let Some(streams) = state.streams.get_mut(id) {
            streams.retain(|sender| sender.send(frame.clone()).is_ok());
        }
    }

    /// Stops serving: open streams end, and no new request is taken.
    pub fn stop(&self) {
        lock(&self.state).streams.clear();
        self.stop.cancel();
    }

    fn answer(&self, method: &Method, uri: &Uri, body: &[u8]) -> Response {
        let mut state = lock(&self.state);
        state.requests += 1;
        let parts: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
        let query = uri.query().unwrap_or("");
        match (method.as_str(), parts.as_slice()) {
            // Catalyst's discovery: this Hub is its own.
            ("GET", ["coder"]) => ok(json!({"url": format!("{}/", self.url)})),
            ("GET", ["api", "hub", "sessions"]) => {
                let search = param(query, "search").unwrap_or_default();
                let items: Vec<Value> = state
                    .sessions
                    .values()
                    .filter(|s| search.is_empty() || s.to_string().contains(&search))
                    .map(session_item)
                    .collect();
                let total = items.len();
                ok(json!({"sessions": {"websocket": items, "sandbox": []}, "total": total}))
            }
            ("POST", ["api", "hub", "session"]) => {
                state.created += 1;
                let id = session_id(state.created);
                let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let mut detail = json!({"sessionId": id, "status": "active"});
                for key in ["tags", "metadata", "label", "task", "workflowMode"] {
                    if let Some(value) = sent.get(key) {
                        detail[key] = value.clone();
                    }
                }
                state.sessions.insert(id.clone(), detail);
                self.changed.notify_waiters();
                answer(
                    StatusCode::CREATED,
                    json!({"sessionId": id, "status": "creating", "mode": "sandbox"}),
                )
            }
            ("GET", ["api", "hub", "session", id]) => match state.sessions.get(*id) {
                Some(detail) => ok(session_item(detail)),
                None => not_found(),
            },
            ("GET", ["api", "hub", "session", id, "events"]) => self.open_stream(&mut state, id),
            ("GET", ["api", "hub", "session", id, "events", "history"]) => {
                let limit = param(query, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(100);
                let before: Option<i64> = param(query, "beforeId").and_then(|b| b.parse().ok());
                // Newest first, as the Hub is believed to answer.
                let events: Vec<Value> = state
                    .events
                    .get(*id)
                    .into_iter()
                    .flatten()
                    .rev()
                    .filter(|e| before.is_none_or(|b| e["id"].as_i64().unwrap_or(0) < b))
                    .take(limit)
                    .cloned()
                    .collect();
                ok(json!({"sessionId": id, "events": events}))
            }
            ("GET", ["api", "hub", "session", id, "loop"]) => {
                ok(json!({"sessionId": id, "workflowMode": "standard", "loop": null}))
            }
            ("GET", ["api", "hub", "session", id, "replay"]) => {
                ok(json!({"sessionId": id, "entries": []}))
            }
            ("POST", ["api", "hub", "session", id, "archive"]) => {
                let Some(detail) = state.sessions.get_mut(*id) else {
                    return not_found();
                };
                detail["status"] = json!("archived");
                ok(json!({"sessionId": id, "status": "archived"}))
            }
            _ => answer(
                StatusCode::NOT_FOUND,
                json!({"error": "the dev Hub serves only what a coder run calls"}),
            ),
        }
    }

    /// Opens a stream of session `id`: its snapshot at once, then every broadcast.
    fn open_stream(&self, state: &mut State, id: &str) -> Response {
        let Some(detail) = state.sessions.get(id) else {
            return not_found();
        };
        let (sender, response) = stream::open(id, detail);
        state
            .streams
            .entry(id.to_string())
            .or_default()
            .push(sender);
        self.changed.notify_waiters();
        response
    }
}

fn session_id(number: u64) -> String {
    format!("codesess_{number}")
}

/// Query parameter `name`, decoded (the run's tag holds a `:`).
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn ok(body: Value) -> Response {
    answer(StatusCode::OK, body)
}

fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"code": "CODER_SESSION_NOT_FOUND"}),
    )
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_by_name_and_decoded() {
        let query = "search=agh-run%3Arun-1&includeArchived=true&limit=50";
        assert_eq!(param(query, "search").as_deref(), Some("agh-run:run-1"));
        assert_eq!(param(query, "limit").as_deref(), Some("50"));
        assert_eq!(param(query, "offset"), None);
    }
}
