//! The fake's routes: one answer per request, from the script and the in-memory state.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;

pub(super) fn answer(
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
        content_type: header("content-type"),
        accept: header("accept"),
        body: body.clone(),
    });
    let matching = state
        .canned
        .iter()
        .position(|c| c.method == method.as_str() && c.path == path);
    if let Some(index) = matching
        && state.canned[index].skip > 0
    {
        state.canned[index].skip -= 1;
    } else if let Some(index) = matching {
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
    if let Some(always) = state
        .always
        .iter()
        .find(|c| c.method == method.as_str() && c.path == path)
    {
        return (
            StatusCode::from_u16(always.status).unwrap_or(StatusCode::OK),
            always.body.clone(),
        )
            .into_response();
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
            created(
                &mut state,
                json!({"sessionId": id, "status": "creating", "mode": "sandbox"}),
            )
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
            // Paged by the SDK's `limit` and `offset`.
            let offset = number(&params, "offset").unwrap_or(0);
            let limit = number(&params, "limit").unwrap_or(usize::MAX);
            let page: Vec<Value> = matching
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|s| session_item(&s))
                .collect();
            json_response(
                200,
                json!({"sessions": {"websocket": page, "sandbox": []}, "total": total}),
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
                    // The SDK's `CoderSessionEventSchema` requires when it happened.
                    if event.get("occurredAt").is_none() {
                        event["occurredAt"] = json!(NOW);
                    }
                    list.push(event);
                }
                if let Some(loop_state) = step.loop_state {
                    state.loops.insert(id.clone(), loop_state);
                }
            }
            json_response(
                200,
                session_item(&state.current.get(&id).cloned().unwrap_or(json!({}))),
            )
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
        ("GET", ["api", "hub", "session", id, "events"]) => stream::open(&mut state, id),
        ("GET", ["api", "hub", "session", id, "events", "history"]) => {
            let limit: usize = params
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let before: Option<i64> = params
                .get("beforeId")
                .and_then(|b| b.parse().ok())
                .filter(|_| !state.ignore_before_id);
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
        ("GET", ["session", id]) => json_response(
            200,
            json!({"success": true, "data": {
                "session": {"id": id, "trigger": "api", "success": true, "duration": 1_500_000_000u64, "llm_cost": 0.01, "total_cost": 0.02},
                "agents": [{"name": "triage", "identifier": "agent_triage"}],
                "eval_runs": [],
                "route": {"method": "POST", "path": "/agent/triage"},
            }}),
        ),
        ("GET", ["cli", "session", id, "logs"]) => json_response(
            200,
            json!({"success": true, "data": [
                {"body": format!("{id} started"), "severity": "INFO", "timestamp": "2026-01-05T10:00:00Z"},
                {"body": "done", "severity": "INFO", "timestamp": "2026-01-05T10:00:01Z"},
            ]}),
        ),
        _ => more(&mut state, method.as_str(), &parts, &params, body),
    }
}

/// The create's answer, or the loss of it that a test asked for.
pub(super) fn created(state: &mut State, answer: Value) -> Response {
    match state.lose_create.take() {
        None => json_response(201, answer),
        Some(LostAnswer::BadGateway) => (StatusCode::BAD_GATEWAY, "Bad Gateway").into_response(),
        Some(LostAnswer::Cut) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"sessionId\":")),
                Err(std::io::Error::other("connection cut")),
            ];
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        }
    }
}

pub(super) fn error(status: u16, message: &str) -> Response {
    json_response(status, json!({"error": message}))
}

pub(super) fn number(params: &BTreeMap<String, String>, name: &str) -> Option<usize> {
    params.get(name).and_then(|v| v.parse().ok())
}

pub(super) fn percent(value: &str) -> String {
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
