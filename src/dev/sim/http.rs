//! HTTP routing and the agent API's handlers (`/api/agent/…`, and the operator routes a worker
//! reads); the admin surface (`/sim/…`) is in `admin.rs`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::errors::{SimError, Transport};
use super::faults::{FaultKind, Route};
use super::requests::{
    CancelTaskRequest, ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest,
    PauseTaskRequest, RecvParams, ReleaseRequest, ReplyRequest, SendRequest, SoulValidateRequest,
    SpawnRequest, StreamCursor, decode_required, lease_duration, validate_channel_name,
    validate_payload,
};
use super::state::{Credentials, Finish};
use super::{Inner, acp, task_stream};

/// The HTTP transport's body cap for `/api/` paths.
pub(super) const MAX_API_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub(super) struct HttpState {
    pub(super) inner: Arc<Inner>,
    pub(super) transport: Transport,
    /// Cancelled when the server cuts its connections; ends long polls.
    kill: CancellationToken,
}

pub(crate) fn router(inner: Arc<Inner>, transport: Transport, kill: CancellationToken) -> Router {
    Router::new().fallback(dispatch).with_state(HttpState {
        inner,
        transport,
        kill,
    })
}

/// A matched agent route with its path parameter (channel or run id).
struct Matched {
    route: Route,
    param: String,
}

fn match_route(method: &Method, path: &str) -> Option<Matched> {
    let matched = |route: Route, param: &str| {
        Some(Matched {
            route,
            param: param.to_owned(),
        })
    };
    if path == "/api/sessions" {
        return (method == Method::GET).then_some(Matched {
            route: Route::Sessions,
            param: String::new(),
        });
    }
    if let Some(run) = path.strip_prefix("/api/task-runs/") {
        return match (
            method.clone(),
            run.split('/').collect::<Vec<_>>().as_slice(),
        ) {
            (Method::GET, [run]) if !run.is_empty() => matched(Route::TaskRun, run),
            _ => None,
        };
    }
    if let Some(task) = path.strip_prefix("/api/tasks/") {
        return match (
            method.clone(),
            task.split('/').collect::<Vec<_>>().as_slice(),
        ) {
            (Method::GET, [task]) if !task.is_empty() => matched(Route::Task, task),
            (Method::GET, [task, "stream"]) if !task.is_empty() => matched(Route::TaskStream, task),
            (Method::POST, [task, "cancel"]) if !task.is_empty() => {
                matched(Route::TaskCancel, task)
            }
            (Method::POST, [task, "pause"]) if !task.is_empty() => matched(Route::TaskPause, task),
            (Method::POST, [task, "resume"]) if !task.is_empty() => {
                matched(Route::TaskResume, task)
            }
            _ => None,
        };
    }
    let rest = path.strip_prefix("/api/agent/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["me"]) => matched(Route::Me, ""),
        (Method::GET, ["context"]) => matched(Route::Context, ""),
        (Method::GET, ["channels"]) => matched(Route::Channels, ""),
        (Method::POST, ["channels", "reply"]) => matched(Route::ChannelReply, ""),
        (Method::GET, ["channels", channel, "recv"]) => matched(Route::ChannelRecv, channel),
        (Method::POST, ["channels", channel, "send"]) => matched(Route::ChannelSend, channel),
        (Method::POST, ["tasks", "claim-next"]) => matched(Route::ClaimNext, ""),
        (Method::POST, ["tasks", run, "heartbeat"]) => matched(Route::Heartbeat, run),
        (Method::POST, ["tasks", run, "complete"]) => matched(Route::Complete, run),
        (Method::POST, ["tasks", run, "fail"]) => matched(Route::Fail, run),
        (Method::POST, ["tasks", run, "release"]) => matched(Route::Release, run),
        (Method::POST, ["spawn"]) => matched(Route::Spawn, ""),
        (Method::GET, ["soul"]) => matched(Route::Soul, ""),
        (Method::POST, ["soul", "validate"]) => matched(Route::SoulValidate, ""),
        (Method::GET, ["coordinator", "config"]) => matched(Route::CoordinatorConfig, ""),
        _ => None,
    }
}

async fn dispatch(State(state): State<HttpState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if path == "/sim" || path.starts_with("/sim/") {
        return super::admin::admin(&state, &parts.method, &path, body).await;
    }
    if (path == "/api/sessions" && parts.method == Method::POST)
        || path.starts_with("/api/workspaces/")
    {
        return sessions_api(&state, &parts.method, &path, body).await;
    }
    let Some(matched) = match_route(&parts.method, &path) else {
        return not_found();
    };
    let route = matched.route;
    let response = agent(&state, matched, &parts.headers, parts.uri.query(), body).await;
    state
        .inner
        .state()
        .ledger
        .record_request(route, response.status().as_u16());
    state.inner.requests_seen.notify_waiters();
    response
}

pub(super) fn not_found() -> Response {
    plain(404, "text/plain", Body::from("404 page not found"))
}

fn plain(status: u16, content_type: &str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// JSON like gin's `c.JSON`.
pub(super) fn json_response(status: u16, value: &Value) -> Response {
    plain(
        status,
        "application/json; charset=utf-8",
        Body::from(go_json_text(value)),
    )
}

/// JSON as Go's encoder writes it: `<`, `>` and `&` inside strings are escaped.
pub(super) fn go_json_text(value: &Value) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".to_owned())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub(super) fn error_response(error: &SimError, transport: Transport) -> Response {
    json_response(error.status, &error.envelope(transport))
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    Credentials {
        session_id: read("x-agh-session-id"),
        agent: read("x-agh-agent"),
        workspace_id: read("x-agh-workspace-id"),
    }
}

/// HTTP only: an `Origin` header must name the request's own host.
fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

/// A reader that fails at once: streaming it as a body makes hyper abort the connection.
struct FailingReader;

impl AsyncRead for FailingReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "simulated connection drop",
        )))
    }
}

fn dropped_connection() -> Response {
    plain(
        200,
        "application/json; charset=utf-8",
        Body::from_stream(ReaderStream::new(FailingReader)),
    )
}

/// The answer of an agent handler: a status and a JSON body (`None` = empty body, e.g. 204).
type Answer = Result<(u16, Option<Value>), SimError>;

async fn agent(
    state: &HttpState,
    matched: Matched,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
) -> Response {
    let transport = state.transport;
    let body_limit = match transport {
        Transport::Tcp => MAX_API_BODY_BYTES,
        Transport::Unix => usize::MAX,
    };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > body_limit as u64) {
        return error_response(&SimError::body_too_large(), transport);
    }
    if transport == Transport::Tcp && !origin_allowed(headers) {
        return json_response(403, &json!({ "error": "origin not allowed" }));
    }
    let credentials = credentials(headers);
    // Before any fault: a call from a stopping session counts whatever it is answered.
    state
        .inner
        .agents
        .stops
        .note_call(credentials.session_id.as_deref(), matched.route);
    let fault = state.inner.faults().take(matched.route);
    let mut drop_after_commit = false;
    match fault {
        None => {}
        Some(FaultKind::Status { status, error }) => {
            return error_response(&SimError::new(status, error), transport);
        }
        Some(FaultKind::Delay(delay)) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = state.kill.cancelled() => return dropped_connection(),
            }
        }
        Some(FaultKind::DropAfterCommit) => drop_after_commit = true,
        Some(FaultKind::Garbage) => {
            return plain(
                200,
                "text/html",
                Body::from("<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"),
            );
        }
        Some(FaultKind::Truncated) => {
            return plain(
                200,
                "application/json; charset=utf-8",
                Body::from(r#"{"claim":{"task":{"id":"task-0000000000000000","title":"trunc"#),
            );
        }
        Some(FaultKind::Oversize { bytes }) => {
            return plain(
                200,
                "application/json; charset=utf-8",
                Body::from_stream(ReaderStream::new(tokio::io::repeat(b' ').take(bytes))),
            );
        }
    }
    // Identity is checked before the body is read, as in the daemon's handlers; a streamed body
    // over the HTTP cap only fails when it is read. The run detail and the task view are not
    // agent endpoints: without either identity header the caller is the operator; with one, both
    // are checked like an agent call (AGH `internal/api/core/tasks.go` ~106-131).
    // AGH's session list reads no identity header at all (core/handlers.go ~326-363).
    let identity = if (matched.route.accepts_operator() && credentials.is_empty())
        || matched.route == Route::Sessions
    {
        Ok(String::new())
    } else {
        state.inner.state().resolve_identity(&credentials)
    };
    if matched.route == Route::TaskStream && identity.is_ok() {
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok());
        let opened = StreamCursor::parse(query, last_event_id).and_then(|cursor| {
            task_stream::respond(&state.inner, &matched.param, cursor, state.kill.clone())
        });
        return opened.unwrap_or_else(|error| error_response(&error, transport));
    }
    let answer = match identity {
        Ok(session_id) => match axum::body::to_bytes(body, body_limit).await {
            Ok(body) => handle(state, &matched, &session_id, query, &body).await,
            Err(_) if transport == Transport::Tcp => Err(SimError::body_too_large()),
            Err(error) => Err(SimError::bad_request(format!("read request body: {error}"))),
        },
        Err(error) => Err(error),
    };
    if drop_after_commit {
        return dropped_connection();
    }
    answer_response(answer, transport)
}

fn answer_response(answer: Answer, transport: Transport) -> Response {
    match answer {
        Ok((status, Some(value))) => json_response(status, &value),
        Ok((status, None)) => plain(status, "text/plain", Body::empty()),
        Err(error) => error_response(&error, transport),
    }
}

/// The operator routes that start and stop agent sessions (see [`super::acp`]).
async fn sessions_api(state: &HttpState, method: &Method, path: &str, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_API_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return error_response(&SimError::body_too_large(), state.transport),
    };
    match acp::serve_sessions_api(&state.inner, method, path, &body, state.transport).await {
        Some(answer) => answer_response(answer, state.transport),
        None => not_found(),
    }
}

async fn handle(
    state: &HttpState,
    matched: &Matched,
    session_id: &str,
    query: Option<&str>,
    body: &Bytes,
) -> Answer {
    let inner = &state.inner;
    let transport = state.transport;
    let session_id = session_id.to_owned();
    let run_id = matched.param.as_str();
    match matched.route {
        Route::Me => Ok((200, Some(inner.state().me(&session_id)?))),
        Route::Context => {
            let now = inner.now();
            Ok((200, Some(inner.state().context(&session_id, now)?)))
        }
        Route::Channels => Ok((200, Some(inner.state().channels(&session_id)?))),
        Route::CoordinatorConfig => Ok((200, Some(inner.state().coordinator_config(&session_id)?))),
        Route::Soul => {
            let now = inner.now();
            let (status, soul) = inner.state().soul(&session_id, None, None, now)?;
            Ok((status, Some(soul)))
        }
        Route::SoulValidate => {
            let request = SoulValidateRequest::parse(body)?;
            let now = inner.now();
            let body_override = request
                .body
                .as_deref()
                .filter(|text| !text.trim().is_empty());
            let agent_override = request
                .agent_name
                .as_deref()
                .filter(|name| !name.trim().is_empty());
            let (status, soul) =
                inner
                    .state()
                    .soul(&session_id, agent_override, body_override, now)?;
            Ok((status, Some(soul)))
        }
        Route::ClaimNext => claim_next(state, &session_id, body).await,
        Route::Heartbeat => {
            let request: HeartbeatRequest = decode_required(body, "heartbeat", transport)?;
            let lease = lease_duration(request.lease_seconds, inner.config.default_lease)?;
            let now = inner.now();
            Ok((
                200,
                Some(inner.state().heartbeat(&session_id, run_id, lease, now)?),
            ))
        }
        Route::Complete => {
            let request: CompleteRequest = decode_required(body, "complete", transport)?;
            validate_payload("result", request.result.as_ref())?;
            let now = inner.now();
            let outcome = Finish::Complete {
                result: request.result,
            };
            Ok((
                200,
                Some(inner.state().finish(&session_id, run_id, outcome, now)?),
            ))
        }
        Route::Fail => {
            let request: FailRequest = decode_required(body, "fail", transport)?;
            let error = request.error.unwrap_or_default();
            if error.trim().is_empty() {
                return Err(SimError::task_validation("error is required"));
            }
            validate_payload("metadata", request.metadata.as_ref())?;
            let now = inner.now();
            let outcome = Finish::Fail {
                error: error.trim().to_owned(),
                metadata: request.metadata,
            };
            Ok((
                200,
                Some(inner.state().finish(&session_id, run_id, outcome, now)?),
            ))
        }
        Route::Release => {
            let request: ReleaseRequest = decode_required(body, "release", transport)?;
            let now = inner.now();
            let reason = request.reason.as_deref();
            Ok((
                200,
                Some(inner.state().release(&session_id, run_id, reason, now)?),
            ))
        }
        Route::ChannelRecv => recv(state, &session_id, matched.param.trim(), query).await,
        Route::ChannelSend => {
            let channel = matched.param.trim();
            validate_channel_name(channel)?;
            let request = SendRequest::parse(body)?;
            let now = inner.now();
            let sent = inner.state().send(&session_id, channel, request, now)?;
            inner.messages.notify_waiters();
            Ok((202, Some(sent)))
        }
        Route::ChannelReply => {
            let request = ReplyRequest::parse(body)?;
            let now = inner.now();
            let sent = inner.state().reply(&session_id, request, now)?;
            inner.messages.notify_waiters();
            Ok((202, Some(sent)))
        }
        Route::Spawn => {
            let request = SpawnRequest::parse(body)?;
            // AGH starts the child's agent and its handshake inside the request; a client that
            // gives up drops this future, so no child is made (session/spawn.go Spawn → Create).
            let delay = inner.spawn_delay();
            if !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = state.kill.cancelled() => {
                        return Err(SimError::new(500, "session: spawn canceled: context canceled"));
                    }
                }
            }
            let now = inner.now();
            Ok((201, Some(inner.state().spawn(&session_id, request, now)?)))
        }
        Route::Sessions => Ok((200, Some(inner.state().sessions_list()))),
        Route::TaskRun => Ok((200, Some(inner.state().task_run_detail(run_id)?))),
        Route::Task => Ok((200, Some(inner.state().task_view(matched.param.trim())?))),
        Route::TaskCancel => {
            let request = CancelTaskRequest::parse(body, "cancel", transport)?;
            let reason = request.reason.as_deref().filter(|r| !r.trim().is_empty());
            let now = inner.now();
            Ok((
                200,
                Some(inner.state().cancel_task(&matched.param, reason, now)?),
            ))
        }
        Route::TaskPause => {
            let request = PauseTaskRequest::parse(body, transport)?;
            let now = inner.now();
            let answer = inner
                .state()
                .pause_task(&matched.param, &request.reason, now)?;
            Ok((200, Some(answer)))
        }
        Route::TaskResume => {
            CancelTaskRequest::parse(body, "resume", transport)?;
            let now = inner.now();
            Ok((200, Some(inner.state().resume_task(&matched.param, now)?)))
        }
        // Served as a stream before the body is read (`agent`).
        Route::TaskStream => Err(SimError::new(404, "404 page not found")),
        Route::Any => Err(SimError::new(404, "404 page not found")),
    }
}

/// `claim-next`: one attempt, or with `wait` a poll every `poll_interval` with no server timeout.
async fn claim_next(state: &HttpState, session_id: &str, body: &Bytes) -> Answer {
    let request = ClaimRequest::parse(body, state.transport)?;
    let mut waiting_guard = None;
    loop {
        let now = state.inner.now();
        let claimed = state
            .inner
            .state()
            .claim_next(session_id, &request, state.transport, now)?;
        match claimed {
            Some(claim) => return Ok((200, Some(claim))),
            None if !request.wait => return Ok((204, None)),
            None => {
                if waiting_guard.is_none() {
                    waiting_guard = Some(state.inner.waiter(Route::ClaimNext));
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(state.inner.config.poll_interval) => {}
            () = state.kill.cancelled() => {
                return Err(SimError::new(408, "task: claim wait ended: context canceled"));
            }
        }
    }
}

/// `recv`: a non-destructive snapshot; with `wait` it blocks until an envelope on the channel is
/// queued (which may still yield `[]` after filtering).
async fn recv(state: &HttpState, session_id: &str, channel: &str, query: Option<&str>) -> Answer {
    validate_channel_name(channel)?;
    let params = RecvParams::parse(query)?;
    let mut waiting_guard = None;
    loop {
        let notified = state.inner.messages.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let snapshot = state
            .inner
            .state()
            .recv(session_id, channel, params.limit)?;
        if !params.wait || snapshot.any_on_channel {
            return Ok((200, Some(json!({ "messages": snapshot.messages }))));
        }
        if waiting_guard.is_none() {
            waiting_guard = Some(state.inner.waiter(Route::ChannelRecv));
        }
        tokio::select! {
            () = notified => {}
            () = state.kill.cancelled() => return Err(SimError::new(500, "context canceled")),
        }
    }
}

// ---- admin surface ----------------------------------------------------------------------------
