//! A fake Agentuity (Catalyst discovery + Coder Hub + Sessions API) on 127.0.0.1, plain HTTP.
//!
//! Sessions follow a script: each `GET /api/hub/session/{id}` moves the session one step on
//! (the last step repeats), and a step can add events and set the loop state, so a test drives
//! the handler's polling deterministically.
//!
//! Every other Hub endpoint of the seeds answers from in-memory state with the documented shapes:
//! session update and delete, builder sessions, participants, users, custom agents, workspaces,
//! saved skills, skill buckets and GitHub. Fault helpers script lost create answers, slow
//! provisioning and the error answers the client has rules for (401, 409/429 with waits, 502
//! bursts, 421), answers repeated for every call, requests that are never answered, and an
//! event history that ignores `beforeId`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod admin;
mod routes;
mod stream;

use routes::{answer, created, error, number, percent};

use admin::{more, new_agent};
// The answer shapes are the dev Hub's: one definition of what the SDK accepts.
use agh_worker::dev::hub::shapes::session_item;
pub(super) use agh_worker::dev::hub::shapes::{NOW, merge};

/// One request the fake saw.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub org: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: Value,
}

/// A canned answer for the next request matching `method` and `path`.
#[derive(Clone, Debug)]
pub(crate) struct Canned {
    pub method: &'static str,
    pub path: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Matching requests to let through to the normal answer before this one is used.
    pub skip: usize,
}

/// One step of a session's script.
#[derive(Clone, Debug, Default)]
pub(crate) struct Step {
    pub detail: Value,
    pub events: Vec<Value>,
    pub loop_state: Option<Value>,
}

impl Step {
    pub(crate) fn detail(detail: Value) -> Self {
        Step {
            detail,
            ..Default::default()
        }
    }
    pub(crate) fn with_events(mut self, events: Vec<Value>) -> Self {
        self.events = events;
        self
    }
    pub(crate) fn with_loop(mut self, state: Value) -> Self {
        self.loop_state = Some(state);
        self
    }
    /// The session detail of this step carries `usage` as the Hub reports cost.
    pub(crate) fn with_usage(
        mut self,
        cost_usd: f64,
        input: u64,
        output: u64,
        reasoning: u64,
    ) -> Self {
        if !self.detail.is_object() {
            self.detail = json!({});
        }
        self.detail["usage"] = json!({
            "costUsd": cost_usd,
            "inputTokens": input,
            "outputTokens": output,
            "reasoningTokens": reasoning,
            "updatedAt": "2026-01-05T10:00:00Z",
        });
        self
    }
    /// A sandbox that is still starting: not reachable, nothing to wake.
    pub(crate) fn provisioning() -> Self {
        Step::detail(json!({
            "status": "provisioning",
            "bucket": "provisioning",
            "mode": "sandbox",
            "runtimeAvailable": false,
            "wakeAvailable": false,
        }))
    }
    /// A live sandbox session.
    pub(crate) fn active() -> Self {
        Step::detail(json!({
            "status": "active",
            "bucket": "running",
            "mode": "sandbox",
            "runtimeAvailable": true,
            "wakeAvailable": false,
            "historyOnly": false,
        }))
    }
    /// A paused sandbox that `/resume` can wake.
    pub(crate) fn paused() -> Self {
        Step::detail(json!({
            "status": "paused",
            "bucket": "paused",
            "mode": "sandbox",
            "runtimeAvailable": false,
            "wakeAvailable": true,
            "historyOnly": false,
        }))
    }
    /// An archived session: history only.
    pub(crate) fn history() -> Self {
        Step::detail(json!({
            "status": "archived",
            "bucket": "history",
            "mode": "sandbox",
            "runtimeAvailable": false,
            "wakeAvailable": false,
            "historyOnly": true,
        }))
    }
}

/// A script that stays provisioning for `reads` reads of the session, then ends on `then`.
pub(crate) fn provisioning_for(reads: usize, then: Step) -> Vec<Step> {
    let mut steps = vec![Step::provisioning(); reads];
    steps.push(then);
    steps
}

/// How the answer to a create is lost after the fake has made the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LostAnswer {
    /// A gateway answers 502 in the Hub's place.
    BadGateway,
    /// The connection breaks in the middle of the answer's body.
    Cut,
}

#[derive(Default)]
pub(crate) struct State {
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
    /// Sessions deleted with `DELETE /api/hub/session/{id}`.
    pub deleted: Vec<String>,
    /// How the next `POST /api/hub/session` (or `/builder`) loses its answer, if it does.
    pub lose_create: Option<LostAnswer>,
    /// Participants by session id; a session without an entry gets a lead and a gone observer.
    pub participants: BTreeMap<String, Vec<Value>>,
    /// Known users (`GET /api/hub/users`).
    pub users: Vec<Value>,
    /// Custom agents by id.
    pub agents: BTreeMap<String, Value>,
    /// Published versions by agent id.
    pub agent_versions: BTreeMap<String, Vec<Value>>,
    pub workspaces: BTreeMap<String, Value>,
    /// Saved skills by library record id.
    pub skills: BTreeMap<String, Value>,
    pub buckets: BTreeMap<String, Value>,
    /// What `GET /api/hub/github/accounts` answers.
    pub github_accounts: Value,
    /// Repositories by GitHub account id.
    pub github_repos: BTreeMap<String, Vec<Value>>,
    /// Counter behind the ids of agents, workspaces, skills and buckets.
    pub next_object: u64,
    /// Answers given to every matching request, after any one-off canned answer.
    pub always: Vec<Canned>,
    /// Requests that are recorded and then never answered.
    pub held: Vec<Held>,
    /// The event history answers the newest page whatever `beforeId` asks for.
    pub ignore_before_id: bool,
    /// Open event streams by session id.
    pub streams: BTreeMap<String, Vec<tokio::sync::mpsc::UnboundedSender<Bytes>>>,
    /// Woken whenever a stream opens.
    pub stream_opened: Arc<tokio::sync::Notify>,
    /// `GET /api/hub/users` answers a bare array, as the SDK also accepts.
    pub users_bare: bool,
}

/// Requests to `method` `path` after the first `skip` are held: seen, never answered.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub method: &'static str,
    pub path: String,
    pub skip: usize,
}

#[derive(Clone)]
pub(crate) struct FakeAgentuity {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeAgentuity {
    pub(crate) async fn start() -> FakeAgentuity {
        let state = Arc::new(Mutex::new(State {
            users: vec![
                json!({"userId": "user_jane", "displayName": "Jane Doe", "email": "jane@example.com", "provider": "github", "lastLoginAt": "2026-01-05T09:00:00Z", "lastSeenAt": "2026-01-05T10:00:00Z", "createdAt": "2025-11-01T08:00:00Z"}),
                json!({"userId": "user_joe", "displayName": "Joe Bloggs", "email": "joe@example.com", "provider": "google", "lastLoginAt": "2026-01-04T09:00:00Z", "lastSeenAt": "2026-01-04T10:00:00Z", "createdAt": "2025-11-02T08:00:00Z"}),
                json!({"userId": "user_janet", "displayName": "Janet Roe", "email": "janet@example.com", "provider": "github", "lastLoginAt": "2026-01-03T09:00:00Z", "lastSeenAt": "2026-01-03T10:00:00Z", "createdAt": "2025-11-03T08:00:00Z"}),
            ],
            github_accounts: json!({
                "connected": true,
                "username": "octocat",
                "accounts": [
                    {"installationId": "5100", "integrationId": "int_1", "accountId": "12345", "accountName": "acme", "accountType": "Organization"},
                    {"installationId": "5101", "integrationId": "int_2", "accountId": "583231", "accountName": "octocat", "accountType": "User"},
                ],
            }),
            github_repos: [(
                "12345".to_string(),
                vec![
                    json!({"id": 9001, "name": "app", "fullName": "acme/app", "private": true, "defaultBranch": "main", "cloneUrl": "https://github.com/acme/app.git", "htmlUrl": "https://github.com/acme/app", "archived": false, "disabled": false, "owner": {"login": "acme"}}),
                    json!({"id": 9002, "name": "docs", "fullName": "acme/docs", "private": false, "defaultBranch": "main", "cloneUrl": "https://github.com/acme/docs.git", "htmlUrl": "https://github.com/acme/docs", "archived": true, "disabled": false, "owner": {"login": "acme"}}),
                ],
            )]
            .into(),
            ..State::default()
        }));
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
                async move {
                    if held(&state, &method, &uri) {
                        std::future::pending::<()>().await;
                    }
                    answer(&state, &own_url, method, uri, headers, body)
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAgentuity { url, state }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn can(
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
            skip: 0,
        });
    }

    /// Like [`FakeAgentuity::can`], for the matching request after the next `skip` ones.
    pub(crate) fn can_later(
        &self,
        method: &'static str,
        path: &str,
        skip: usize,
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
            skip,
        });
    }

    /// Every call to `method` `path` from now on answers `status` with `body`.
    pub(crate) fn answer_always(&self, method: &'static str, path: &str, status: u16, body: &str) {
        self.lock().always.push(Canned {
            method,
            path: path.into(),
            status,
            headers: vec![],
            body: body.into(),
            skip: 0,
        });
    }

    /// Calls to `method` `path` after the next `skip` ones are seen but never answered, as by a
    /// Hub that stalls.
    pub(crate) fn hold_after(&self, method: &'static str, path: &str, skip: usize) {
        self.lock().held.push(Held {
            method,
            path: path.into(),
            skip,
        });
    }

    /// Adds an existing session with its script.
    pub(crate) fn add_session(&self, id: &str, steps: Vec<Step>) {
        let mut state = self.lock();
        let first = steps.first().map(|s| s.detail.clone()).unwrap_or(json!({}));
        state.current.insert(id.into(), with_id(first, id));
        state.scripts.insert(id.into(), steps.into());
    }

    /// Session `id`'s loop is in `state` from now on (later script steps included).
    pub(crate) fn set_loop(&self, id: &str, state: Value) {
        let mut fake = self.lock();
        if let Some(script) = fake.scripts.get_mut(id) {
            for step in script.iter_mut() {
                step.loop_state = Some(state.clone());
            }
        }
        fake.loops.insert(id.into(), state);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The requests made to `method` `path` (the path as sent, still percent-encoded).
    pub(crate) fn requests(&self, method: &str, path: &str) -> Vec<Seen> {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }

    /// The next create makes its session, then the client gets no usable answer.
    pub(crate) fn lose_next_create(&self, how: LostAnswer) {
        self.lock().lose_create = Some(how);
    }

    /// Sessions made from now on stay provisioning for `reads` reads, then are active.
    pub(crate) fn provision_slowly(&self, reads: usize) {
        self.lock().on_create = provisioning_for(reads, Step::active());
    }

    /// The next call to `method` `path` is refused as unauthorised.
    pub(crate) fn refuse_key(&self, method: &'static str, path: &str) {
        self.can(method, path, 401, vec![], r#"{"message":"Unauthorized"}"#);
    }

    /// The next call answers 409 with a rate-limit wait of `seconds`.
    pub(crate) fn rate_limit_409(&self, method: &'static str, path: &str, seconds: u64) {
        self.can(
            method,
            path,
            409,
            vec![("x-ratelimit-retry-after", seconds.to_string())],
            r#"{"message":"rate limited"}"#,
        );
    }

    /// The next call answers 429 with `Retry-After: seconds`.
    pub(crate) fn too_many_requests(&self, method: &'static str, path: &str, seconds: u64) {
        self.can(
            method,
            path,
            429,
            vec![("retry-after", seconds.to_string())],
            r#"{"message":"Too many requests"}"#,
        );
    }

    /// The next `times` calls answer 502, as while the Hub restarts.
    pub(crate) fn bad_gateway_burst(&self, method: &'static str, path: &str, times: usize) {
        for _ in 0..times {
            self.can(method, path, 502, vec![], "Bad Gateway");
        }
    }

    /// The next call answers 421 naming `region`.
    pub(crate) fn wrong_region(&self, method: &'static str, path: &str, region: &str) {
        self.can(
            method,
            path,
            421,
            vec![("x-agentuity-region", region.to_string())],
            "Misdirected Request",
        );
    }

    /// Adds a custom agent record (merged over plausible defaults); answers its id.
    pub(crate) fn add_agent(&self, slug: &str, fields: Value) -> String {
        let mut state = self.lock();
        state.next_object += 1;
        let id = format!("agent_{}", state.next_object);
        let mut agent = new_agent(&id, &json!({"slug": slug, "displayName": slug}));
        merge(&mut agent, &fields);
        state.agents.insert(id.clone(), agent);
        id
    }

    pub(crate) fn count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

/// Whether the request is one to hold; a held request is recorded as seen.
fn held(state: &Mutex<State>, method: &Method, uri: &Uri) -> bool {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let path = uri.path();
    let Some(hold) = state
        .held
        .iter_mut()
        .find(|h| h.method == method.as_str() && h.path == path)
    else {
        return false;
    };
    if hold.skip > 0 {
        hold.skip -= 1;
        return false;
    }
    state.seen.push(Seen {
        method: method.to_string(),
        path: path.to_string(),
        query: uri.query().unwrap_or("").to_string(),
        authorization: None,
        org: None,
        user_agent: None,
        content_type: None,
        accept: None,
        body: Value::Null,
    });
    true
}

/// Retries as the client's rules say, with pauses short enough for tests.
pub(crate) fn quick_retry() -> agh_worker::agentuity::RetryPolicy {
    agh_worker::agentuity::RetryPolicy {
        retries: 3,
        base_delay: std::time::Duration::from_millis(5),
        unavailable_budget: std::time::Duration::from_secs(2),
        unavailable_delay: std::time::Duration::from_millis(10),
        unavailable_cap: std::time::Duration::from_millis(20),
        max_server_wait: std::time::Duration::from_secs(5),
    }
}

fn with_id(mut detail: Value, id: &str) -> Value {
    if let Some(object) = detail.as_object_mut() {
        object.entry("sessionId").or_insert(json!(id));
    }
    detail
}

pub(super) fn json_response(status: u16, body: Value) -> Response {
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
