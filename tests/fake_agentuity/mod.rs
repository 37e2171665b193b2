//! A fake Agentuity (Catalyst discovery + Coder Hub + Sessions API) on 127.0.0.1, plain HTTP.
//!
//! Sessions follow a script: each `GET /api/hub/session/{id}` moves the session one step on
//! (the last step repeats), and a step can add events and set the loop state, so a test drives
//! the handler's polling deterministically.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the fake saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub org: Option<String>,
    pub user_agent: Option<String>,
    pub body: Value,
}

/// A canned answer for the next request matching `method` and `path`.
#[derive(Clone, Debug)]
pub struct Canned {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// One step of a session's script.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub detail: Value,
    pub events: Vec<Value>,
    pub loop_state: Option<Value>,
}

impl Step {
    pub fn detail(detail: Value) -> Self {
        Step {
            detail,
            ..Default::default()
        }
    }
    pub fn with_events(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }
    pub fn with_loop(mut self, state: Value) -> Self {
        self.loop_state = Some(state);
        self
    }
}

#[derive(Default)]
pub struct State {
    pub seen: Vec<Seen>,
    pub canned: VecDeque<Canned>,
    pub scripts: BTreeMap<String, VecDeque<Step>>,
    pub current: BTreeMap<String, Value>,
    pub loops: BTreeMap<String, Value>,
    pub events: BTreeMap<String, Vec<Value>>,
    pub replay: BTreeMap<String, Value>,
    /// Script given to the next created session.
    pub on_create: Vec<Step>,
    pub next_id: u64,
    /// What `GET /coder` answers as `url` (defaults to the fake itself).
    pub discovery_url: Option<String>,
    pub archived: Vec<String>,
}

#[derive(Clone)]
pub struct FakeAgentuity {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeAgentuity {
    pub async fn start() -> FakeAgentuity {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = state.clone();
        let own_url = url.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                let own_url = own_url.clone();
                async move { answer(&state, &own_url, method, uri, headers, body) }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAgentuity { url, state }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn can(
        &self,
        method: &'static str,
        path: &str,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: &str,
    ) {
        self.lock().canned.push_back(Canned {
            method,
            path: path.into(),
            status,
            headers,
            body: body.into(),
        });
    }

    /// Adds an existing session with its script.
    pub fn add_session(&self, id: &str, steps: Vec<Step>) {
        let mut state = self.lock();
        let first = steps.first().map(|s| s.detail.clone()).unwrap_or(json!({}));
        state.current.insert(id.into(), with_id(first, id));
        state.scripts.insert(id.into(), steps.into());
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

fn with_id(mut detail: Value, id: &str) -> Value {
    if let Some(object) = detail.as_object_mut() {
        object.entry("sessionId").or_insert(json!(id));
    }
    detail
}

fn json_response(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [
            ("content-type", "application/json"),
            ("x-session-id", "trace-123"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn answer(
    state: &Mutex<State>,
    own_url: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: header("authorization"),
        org: header("x-agentuity-orgid"),
        user_agent: header("user-agent"),
        body: body.clone(),
    });
    if let Some(index) = state
        .canned
        .iter()
        .position(|c| c.method == method.as_str() && c.path == path)
    {
        let canned = state.canned.remove(index).expect("index");
        let mut response = (
            StatusCode::from_u16(canned.status).unwrap_or(StatusCode::OK),
            canned
                .body
                .replace("{auth}", &header("authorization").unwrap_or_default()),
        )
            .into_response();
        response
            .headers_mut()
            .insert("x-session-id", "trace-123".parse().expect("header"));
        for (name, value) in canned.headers {
            response
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        return response;
    }
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), percent(v)))
        .collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = || json_response(404, json!({"code": "CODER_SESSION_NOT_FOUND"}));
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["coder"]) => json_response(
            200,
            json!({"url": state.discovery_url.clone().unwrap_or(format!("{own_url}/"))}),
        ),
        ("POST", ["api", "hub", "session"]) => {
            state.next_id += 1;
            let id = format!("codesess_{}", state.next_id);
            let mut steps: VecDeque<Step> = state.on_create.clone().into();
            if steps.is_empty() {
                steps.push_back(Step::detail(json!({"status": "active"})));
            }
            let mut first = steps[0].detail.clone();
            if let (Some(object), Some(sent)) = (first.as_object_mut(), body.as_object()) {
                for key in ["tags", "metadata", "label", "task", "workflowMode"] {
                    if let Some(value) = sent.get(key) {
                        object.entry(key).or_insert(value.clone());
                    }
                }
            }
            state.current.insert(id.clone(), with_id(first, &id));
            state.scripts.insert(id.clone(), steps);
            json_response(201, json!({"sessionId": id, "status": "creating"}))
        }
        ("GET", ["api", "hub", "sessions"]) => {
            let search = params.get("search").cloned().unwrap_or_default();
            let matching: Vec<Value> = state
                .current
                .values()
                .filter(|s| search.is_empty() || s.to_string().contains(&search))
                .cloned()
                .collect();
            let total = matching.len();
            json_response(
                200,
                json!({"sessions": {"websocket": matching, "sandbox": []}, "total": total}),
            )
        }
        ("GET", ["api", "hub", "session", id]) => {
            let id = id.to_string();
            let Some(script) = state.scripts.get_mut(&id) else {
                return not_found();
            };
            let step = if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            };
            if let Some(step) = step {
                let archived = state.archived.contains(&id);
                let mut detail = with_id(step.detail.clone(), &id);
                if archived {
                    detail["status"] = json!("archived");
                    detail["bucket"] = json!("history");
                }
                let previous = state.current.get(&id).cloned().unwrap_or(json!({}));
                for key in ["tags", "metadata", "label"] {
                    if detail.get(key).is_none()
                        && let Some(value) = previous.get(key)
                    {
                        detail[key] = value.clone();
                    }
                }
                state.current.insert(id.clone(), detail);
                let list = state.events.entry(id.clone()).or_default();
                let first = list.len() as i64 + 1;
                for (id, mut event) in (first..).zip(step.events) {
                    event["id"] = json!(id);
                    list.push(event);
                }
                if let Some(loop_state) = step.loop_state {
                    state.loops.insert(id.clone(), loop_state);
                }
            }
            json_response(200, state.current.get(&id).cloned().unwrap_or(json!({})))
        }
        ("POST", ["api", "hub", "session", id, "archive"]) => {
            if !state.current.contains_key(*id) {
                return not_found();
            }
            state.archived.push(id.to_string());
            json_response(200, json!({"sessionId": id, "status": "archived"}))
        }
        ("POST", ["api", "hub", "session", id, "resume"]) => {
            if !state.current.contains_key(*id) {
                return not_found();
            }
            json_response(200, json!({"sessionId": id, "status": "resuming"}))
        }
        ("GET", ["api", "hub", "session", id, "loop"]) => {
            let state_value = state.loops.get(*id).cloned();
            json_response(
                200,
                json!({"sessionId": id, "workflowMode": if state_value.is_some() {"loop"} else {"standard"}, "loop": state_value}),
            )
        }
        ("GET", ["api", "hub", "session", id, "events", "history"]) => {
            let limit: usize = params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let before: Option<i64> = params.get("beforeId").and_then(|b| b.parse().ok());
            let mut events: Vec<Value> = state
                .events
                .get(*id)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| before.is_none_or(|b| e["id"].as_i64().unwrap_or(0) < b))
                .collect();
            // Newest first, as the Hub is believed to answer.
            events.reverse();
            events.truncate(limit);
            json_response(200, json!({"sessionId": id, "events": events}))
        }
        ("GET", ["api", "hub", "session", id, "replay"]) => json_response(
            200,
            state
                .replay
                .get(*id)
                .cloned()
                .unwrap_or(json!({"sessionId": id, "entries": []})),
        ),
        ("GET", ["session"]) => json_response(
            200,
            json!({"success": true, "data": [{"id": "sess_1", "total_cost": 0.5}]}),
        ),
        ("GET", ["session", "sess_missing"]) => json_response(
            200,
            json!({"success": false, "message": "session not found", "code": "NOT_FOUND"}),
        ),
        _ => not_found(),
    }
}

fn percent(value: &str) -> String {
    let bytes = value.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Ok(byte) = u8::from_str_radix(
                &String::from_utf8_lossy(&bytes[i + 1..(i + 3).min(bytes.len())]),
                16,
            )
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
