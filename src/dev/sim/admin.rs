//! The simulator's admin surface (`/sim/…`): no identity headers, JSON in and out, mirroring
//! the Rust API of [`Simulator`] so scripts and other processes can drive it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::Simulator;
use super::errors::SimError;
use super::faults::FaultRequest;
use super::http::{HttpState, MAX_API_BODY_BYTES, error_response, json_response, not_found};
use super::requests::is_blank;
use super::types::{MessageSpec, SessionSpec, SessionState, TaskSpec};

#[derive(Deserialize)]
struct StateRequest {
    state: SessionState,
}

#[derive(Deserialize)]
struct MessageRequest {
    to_session_id: String,
    #[serde(flatten)]
    message: MessageSpec,
}

/// A duration in an admin request: `{"seconds":…}` and/or `{"millis":…}`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AdvanceRequest {
    seconds: f64,
    millis: u64,
}

impl AdvanceRequest {
    fn duration(&self) -> Duration {
        let seconds = if self.seconds.is_finite() && self.seconds > 0.0 {
            Duration::from_secs_f64(self.seconds.min(1e9))
        } else {
            Duration::ZERO
        };
        seconds + Duration::from_millis(self.millis)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OperatorRequest {
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SoulRequest {
    body: Option<String>,
}

/// Decodes an admin request body (empty = `{}`); the error is the text of a 400 answer.
fn decode_admin<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, String> {
    let source: &[u8] = if is_blank(body) { b"{}" } else { body };
    serde_json::from_slice(source).map_err(|error| format!("decode admin request: {error}"))
}

pub(super) async fn admin(state: &HttpState, method: &Method, path: &str, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_API_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return error_response(&SimError::body_too_large(), state.transport),
    };
    admin_route(state, method, path, &body)
        .unwrap_or_else(|error| json_response(400, &json!({ "error": error })))
}

fn admin_route(
    state: &HttpState,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Result<Response, String> {
    let simulator = Simulator {
        inner: state.inner.clone(),
    };
    let segments: Vec<&str> = path.trim_start_matches("/sim/").split('/').collect();
    let response = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["session"]) => json_response(200, &json!(simulator.default_session())),
        (Method::POST, ["sessions"]) => {
            let spec: SessionSpec = decode_admin(body)?;
            json_response(201, &json!(simulator.create_session(spec)))
        }
        (Method::POST, ["sessions", id, "state"]) => {
            let request: StateRequest = decode_admin(body)?;
            json_response(
                200,
                &json!({ "ok": simulator.set_session_state(id, request.state) }),
            )
        }
        (Method::POST, ["sessions", id, "dequeue"]) => {
            json_response(200, &json!({ "dequeued": simulator.dequeue_messages(id) }))
        }
        (Method::POST, ["tasks"]) => {
            let spec: TaskSpec = decode_admin(body)?;
            json_response(201, &json!(simulator.enqueue_task(spec)))
        }
        (Method::POST, ["tasks", id, "runs"]) => match simulator.enqueue_run(id) {
            Some(run) => json_response(201, &json!(run)),
            None => json_response(
                404,
                &json!({ "error": "task not found or attempts exhausted" }),
            ),
        },
        (Method::POST, ["messages"]) => {
            let request: MessageRequest = decode_admin(body)?;
            let id = simulator.inject_message(&request.to_session_id, request.message);
            json_response(201, &json!({ "message_id": id }))
        }
        (Method::POST, ["faults"]) => {
            let request: FaultRequest = decode_admin(body)?;
            simulator.inject_fault(request.into());
            json_response(200, &json!({ "ok": true }))
        }
        (Method::DELETE, ["faults"]) => {
            simulator.clear_faults();
            json_response(200, &json!({ "ok": true }))
        }
        (Method::POST, ["spawn-delay"]) => {
            let request: AdvanceRequest = decode_admin(body)?;
            simulator.set_spawn_delay(request.duration());
            json_response(200, &json!({ "ok": true }))
        }
        (Method::POST, ["clock", "advance"]) => {
            let request: AdvanceRequest = decode_admin(body)?;
            simulator.advance_clock(request.duration());
            json_response(200, &json!({ "now": simulator.now().to_rfc3339() }))
        }
        (Method::POST, ["tasks", id, action @ ("cancel" | "pause" | "resume")]) => {
            let request: OperatorRequest = decode_admin(body)?;
            match simulator.operate(id, action, request.reason.as_deref()) {
                Ok(task) => json_response(200, &task),
                Err(error) => error_response(&error, state.transport),
            }
        }
        (Method::POST, ["tasks", id, "streams", "drop"]) => {
            json_response(200, &json!({ "dropped": simulator.drop_task_streams(id) }))
        }
        (Method::POST, ["runs", id, "expire"]) => {
            json_response(200, &json!({ "expired": simulator.expire_lease(id) }))
        }
        (Method::GET, ["runs", id]) => match simulator.run(id) {
            Some(run) => json_response(200, &json!(run)),
            None => json_response(404, &json!({ "error": format!("run {id:?} not found") })),
        },
        (Method::POST, ["sweep"]) => {
            json_response(200, &json!({ "requeued": simulator.sweep_now() }))
        }
        (Method::POST, ["reap"]) => json_response(200, &json!({ "stopped": simulator.reap_now() })),
        (Method::POST | Method::PUT, ["souls", agent]) => {
            let request: SoulRequest = decode_admin(body)?;
            simulator.set_soul(agent, request.body);
            json_response(200, &json!({ "ok": true }))
        }
        (Method::GET, ["ledger"]) => json_response(200, &json!(simulator.ledger())),
        _ => not_found(),
    };
    Ok(response)
}
