//! The `coder` handler end to end: the worker loop claims runs from the AGH simulator over HTTP
//! and runs a configured `coder` handler against the fake Agentuity Coder Hub: results and cost,
//! loop states, lease loss, shutdown policies, lost create answers, a refused key, rate limits
//! and restarts of the Hub, and session milestones on the run's coordination channel.
//!
//! The worker reaches the simulator over TCP, and over a Unix socket for the standard-mode run.
//! Real sockets on both sides rule out paused tokio time, so the handler's cadences (poll, quiet
//! period, grace) are tiny and every wait is bounded by a generous timeout.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agh_worker::agentuity::{AgentuityClient, ClientSettings, Env, RetryPolicy};
use agh_worker::api::types::{ChannelMessage, MessageKind};
use agh_worker::api::{AghClient, Endpoint, RecvOptions};
use agh_worker::coordination::spawner::SpawnSettings;
use agh_worker::coordination::{Coordination, CoordinationSettings};
use agh_worker::dev::sim::{
    DEFAULT_WORKSPACE, EnqueuedRun, Route, SessionInfo, SessionSpec, SimConfig, SimServer,
    Simulator, TaskSpec, TransitionKind,
};
use agh_worker::handler::coder::{CoderConfig, FollowMode, StopPolicy, run_with_client};
use agh_worker::handler::{Handler, SharedHandlers};
use agh_worker::handler::{
    HandlerConfig, HandlerEvent, HandlerKind, HandlerSet, MatchRule, Outcome, TaskContext,
    TaskDocument,
};
use agh_worker::worker::{
    ClaimLoop, EventSink, LogEvents, Shutdown, StatusBoard, WorkerExit, WorkerSettings,
};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use support::client_rig::Transport;
use support::fake_agentuity::{FakeAgentuity, Step};
use support::recorder::Recorder;
use support::sim;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const KEY: &str = "ag_e2e_secret_key_8731";
const CHANNEL: &str = "builders";
/// Every run of a test ends well within this.
const RUN_WITHIN: Duration = Duration::from_secs(20);

// ----- the rig ----------------------------------------------------------------------------------

struct Rig {
    sim: Simulator,
    /// Kept so the simulator keeps serving for the rig's life.
    _server: SimServer,
    endpoint: Endpoint,
    fake: FakeAgentuity,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Rig {
        Rig::via(Transport::Tcp).await
    }

    async fn via(via: Transport) -> Rig {
        support::log_capture::show_in_test_output();
        let dir = tempfile::tempdir().expect("temporary directory");
        let sim = Simulator::new(SimConfig::default());
        let (server, endpoint) = sim::serve(&sim, via, dir.path()).await;
        let fake = FakeAgentuity::start().await;
        Rig {
            sim,
            _server: server,
            endpoint,
            fake,
            _dir: dir,
        }
    }

    fn default_session(&self) -> SessionInfo {
        self.sim.default_session().expect("default session")
    }

    /// Another worker session in the default workspace, on `channel` when given.
    fn session(&self, agent: &str, channel: Option<&str>) -> SessionInfo {
        self.sim.create_session(SessionSpec {
            agent_name: agent.into(),
            workspace_id: Some(DEFAULT_WORKSPACE.into()),
            channel: channel.map(str::to_string),
            ..SessionSpec::default()
        })
    }

    fn client(&self, who: &SessionInfo) -> AghClient {
        sim::worker_client(&self.endpoint, who)
    }

    /// A worker of session `who` running `handlers`, its events going to `events`.
    fn worker<E: EventSink>(
        &self,
        who: &SessionInfo,
        handlers: impl Into<HandlerSet>,
        events: Arc<E>,
        settings: WorkerSettings,
    ) -> Rigged<E> {
        Arc::new(ClaimLoop {
            api: Arc::new(Recorder::new(self.client(who))),
            handlers: Arc::new(SharedHandlers::from(handlers.into())),
            events: Arc::new(Watched::new(events)),
            settings: settings.into(),
            status: StatusBoard::default(),
            shutdown: Shutdown::default(),
            wake: Default::default(),
        })
    }

    /// A worker of the default session running the coder handler `config`.
    fn coder_worker(&self, config: CoderConfig) -> Rigged<LogEvents> {
        self.worker(
            &self.default_session(),
            coder_handlers(config),
            Arc::new(LogEvents),
            settings(),
        )
    }

    fn enqueue(&self, title: &str) -> EnqueuedRun {
        self.sim.enqueue_task(TaskSpec::titled(title))
    }

    fn stored_result(&self, run: &EnqueuedRun) -> Value {
        let snapshot = self.sim.run(&run.run_id).expect("the run is known");
        assert_eq!(snapshot.status, "completed", "{snapshot:?}");
        snapshot.result.expect("a stored result")
    }

    fn stored_error(&self, run: &EnqueuedRun) -> String {
        let snapshot = self.sim.run(&run.run_id).expect("the run is known");
        assert_eq!(snapshot.status, "failed", "{snapshot:?}");
        snapshot.error.expect("a stored error")
    }

    /// Requests of `route` the simulator answered, whatever the status.
    fn requests(&self, route: Route) -> u64 {
        sim::requests(&self.sim, route)
    }

    /// No lease invariant broken and no run left claimed.
    fn check_ledger(&self) {
        sim::assert_no_violation_and_no_claimed_run(&self.sim);
    }
}

type Rigged<E> = Arc<ClaimLoop<Recorder, Watched<E>>>;

/// One run, with a heartbeat and a drain timeout on the scale of the handler's tiny cadences.
fn settings() -> WorkerSettings {
    WorkerSettings {
        heartbeat_every: Duration::from_millis(300),
        drain_timeout: Duration::from_millis(300),
        max_runs: Some(1),
        cancel_grace: Duration::from_secs(5),
        ..sim::worker_settings()
    }
}

/// The handler's settings with tiny cadences; the key is in the config, never in the environment.
fn coder_config(hub_url: &str) -> CoderConfig {
    CoderConfig {
        client: ClientSettings {
            key: Some(KEY.into()),
            hub_url: Some(hub_url.into()),
            ..ClientSettings::default()
        },
        // These tests script the session's reads; the live stream has tests of its own.
        follow: FollowMode::Poll,
        poll_seconds: 0.02,
        progress_interval_seconds: 0.0,
        blocked_grace_seconds: 0.1,
        quiet_seconds: 0.05,
        provisioning_timeout_seconds: 5.0,
        deadline_margin_seconds: 0.0,
        ..CoderConfig::default()
    }
}

fn coder_handlers(config: CoderConfig) -> HandlerSet {
    HandlerSet::new(vec![HandlerConfig {
        name: "coder".into(),
        kind: HandlerKind::Coder,
        matches: MatchRule::default(),
        exec: None,
        webhook: None,
        coder: Some(config),
    }])
}

fn start<E: EventSink>(worker: &Rigged<E>) -> JoinHandle<WorkerExit> {
    let worker = worker.clone();
    tokio::spawn(async move { worker.run().await })
}

async fn ends(handle: JoinHandle<WorkerExit>) -> WorkerExit {
    timeout(RUN_WITHIN, handle)
        .await
        .expect("the worker stops in time")
        .expect("the worker task does not panic")
}

/// A session that finishes at its first read.
fn finishing_at_once() -> Vec<Step> {
    vec![
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "session_complete"})]),
    ]
}

// ----- what the handler reports: progress lines, watchable ---------------------------------------

/// Passes every event on to `inner` and keeps the progress lines, so a test can wait for one.
struct Watched<E> {
    inner: Arc<E>,
    progress: watch::Sender<Vec<String>>,
}

impl<E> Watched<E> {
    fn new(inner: Arc<E>) -> Watched<E> {
        Watched {
            inner,
            progress: watch::Sender::new(Vec::new()),
        }
    }

    fn lines(&self) -> String {
        self.progress.borrow().join("\n")
    }

    /// Resolves once a progress line contains `needle`.
    async fn until_progress(&self, needle: &str) {
        let mut lines = self.progress.subscribe();
        timeout(
            RUN_WITHIN,
            lines.wait_for(|lines| lines.iter().any(|line| line.contains(needle))),
        )
        .await
        .unwrap_or_else(|_| panic!("no progress line with {needle:?}: {}", self.lines()))
        .expect("the sink lives as long as the test");
    }
}

impl<E: EventSink> EventSink for Watched<E> {
    fn run_started(&self, document: &TaskDocument, inbound: mpsc::Sender<ChannelMessage>) {
        self.inner.run_started(document, inbound);
    }

    fn run_ended(&self, run_id: &str) {
        self.inner.run_ended(run_id);
    }

    async fn handle(&self, document: &TaskDocument, event: HandlerEvent) {
        if let HandlerEvent::Progress(line) = &event {
            let line = line.clone();
            self.progress.send_modify(|lines| lines.push(line));
        }
        self.inner.handle(document, event).await;
    }
}

// ----- a pass-through proxy that loses answers ----------------------------------------------------

/// Stands in front of the fake hub. A request whose answer is to be lost still reaches the fake
/// (and takes effect there), but the client is told `status` instead: a create that happened
/// although its caller saw a 502.
struct LossyProxy {
    url: String,
    losses: Arc<Mutex<Vec<(Method, String, u16)>>>,
}

impl LossyProxy {
    async fn start(target: &str) -> LossyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let losses: Arc<Mutex<Vec<(Method, String, u16)>>> = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::new();
        let target = target.to_string();
        let shared = losses.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (http, target, losses) = (http.clone(), target.clone(), shared.clone());
                async move { forward(&http, &target, &losses, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LossyProxy { url, losses }
    }

    /// The next answer to `method path` is replaced by `status`.
    fn lose(&self, method: Method, path: &str, status: u16) {
        self.losses
            .lock()
            .expect("losses")
            .push((method, path.into(), status));
    }
}

async fn forward(
    http: &reqwest::Client,
    target: &str,
    losses: &Mutex<Vec<(Method, String, u16)>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http
        .request(method.clone(), format!("{target}{path_and_query}"))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await;
    let lost = {
        let mut losses = losses.lock().expect("losses");
        losses
            .iter()
            .position(|(m, p, _)| *m == method && p == uri.path())
            .map(|index| losses.remove(index).2)
    };
    if let Some(status) = lost {
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            "the upstream answer was lost",
        )
            .into_response();
    }
    match answer {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(_) => (StatusCode::BAD_GATEWAY, "the fake hub is unreachable").into_response(),
    }
}

// ----- results and cost ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_task_completes_with_the_leads_last_message_its_cost_and_its_duration() {
    a_standard_task_completes_with_its_result(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_task_claimed_over_a_unix_socket_completes_with_the_leads_last_message_and_cost()
{
    a_standard_task_completes_with_its_result(Transport::Unix).await;
}

async fn a_standard_task_completes_with_its_result(via: Transport) {
    let rig = Rig::via(via).await;
    let usage =
        json!({"costUsd": 0.42, "inputTokens": 1200, "outputTokens": 300, "reasoningTokens": 50});
    rig.fake.lock().on_create = vec![
        Step::detail(json!({"status": "provisioning", "bucket": "provisioning"})),
        Step::detail(json!({"status": "active", "bucket": "running"})).with_events(vec![
            json!({"event": "agent_start"}),
            json!({"event": "task_start", "agent": "scout", "taskId": "t1"}),
        ]),
        Step::detail(json!({"status": "active", "bucket": "running", "usage": usage})).with_events(
            vec![
                json!({"event": "task_complete", "agent": "scout", "taskId": "t1"}),
                json!({"event": "agent_end"}),
            ],
        ),
        Step::detail(json!({"status": "active", "bucket": "running", "usage": usage})),
    ];
    rig.fake.lock().replay.insert(
        "codesess_1".into(),
        json!({"entries": [
            {"type": "message", "content": "Fixed the login bug in auth.rs."},
            {"type": "message", "content": "scout: the bug is in auth.rs", "taskId": "t1"},
        ]}),
    );
    // The description is only in the task view: AGH's claim carries none.
    let run = rig.sim.enqueue_task(TaskSpec {
        description: Some("Users cannot log in since the upgrade.".into()),
        ..TaskSpec::titled("Fix the login bug")
    });
    let worker = rig.coder_worker(coder_config(&rig.fake.url));
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let result = rig.stored_result(&run);
    assert_eq!(result["summary"], "Fixed the login bug in auth.rs.");
    assert_eq!(result["status"], "idle", "the lead's turn ended quietly");
    assert_eq!(result["coder_session_id"], "codesess_1");
    assert_eq!(result["usage"]["cost_usd"], 0.42);
    assert_eq!(result["usage"]["input_tokens"], 1200);
    assert_eq!(result["usage"]["output_tokens"], 300);
    assert_eq!(result["usage"]["reasoning_tokens"], 50);
    assert!(result["duration_ms"].is_u64(), "{result}");
    assert_eq!(result["archived"], true);
    assert_eq!(rig.fake.lock().archived, vec!["codesess_1".to_string()]);

    // The session was made from the claimed run: its task text and its tag.
    let created = rig
        .fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path == "/api/hub/session")
        .expect("a create");
    assert_eq!(created.authorization, Some(format!("Bearer {KEY}")));
    assert!(
        created.body["tags"]
            .as_array()
            .expect("tags")
            .contains(&json!(format!("agh-run:{}", run.run_id))),
        "{}",
        created.body
    );
    assert_eq!(created.body["metadata"]["agh_run_id"], json!(run.run_id));
    assert_eq!(
        created.body["task"], "Fix the login bug\n\nUsers cannot log in since the upgrade.",
        "the title and the task view's description"
    );
    assert_eq!(worker.api.terminal_calls().len(), 1);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_task_completes_with_the_loop_summary_and_an_unreported_cost_is_null() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![
        Step::detail(json!({"status": "active", "workflowMode": "loop"}))
            .with_loop(json!({"status": "running", "iteration": 1})),
        Step::detail(json!({"status": "active", "workflowMode": "loop"}))
            .with_loop(json!({"status": "running", "iteration": 2})),
        Step::detail(json!({"status": "active", "workflowMode": "loop"})).with_loop(
            json!({"status": "completed", "iteration": 3, "summary": "All 212 tests pass."}),
        ),
    ];
    let run = rig.enqueue("Make the test suite green");
    let config = CoderConfig {
        workflow_mode: "loop".into(),
        ..coder_config(&rig.fake.url)
    };
    let worker = rig.coder_worker(config);
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let result = rig.stored_result(&run);
    assert_eq!(result["summary"], "All 212 tests pass.");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["coder_session_id"], "codesess_1");
    // The hub reported no usage: unknown, never zero.
    assert!(result["usage"]["cost_usd"].is_null(), "{result}");
    assert!(result["usage"]["input_tokens"].is_null(), "{result}");
    let created = rig
        .fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path == "/api/hub/session")
        .expect("a create");
    assert_eq!(created.body["workflowMode"], "loop");
    assert_eq!(created.body["loop"]["allowDetached"], true);
    assert!(rig.fake.count("GET", "/api/hub/session/codesess_1/loop") >= 1);
    rig.check_ledger();
}

// ----- loops that need a person -------------------------------------------------------------------

async fn a_loop_needing_a_person_fails_the_run_with_its_blockers(status: &str) {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![
        Step::detail(json!({"status": "active", "workflowMode": "loop"}))
            .with_loop(json!({"status": "running", "iteration": 1})),
        Step::detail(json!({"status": "active", "workflowMode": "loop"})).with_loop(json!({
            "status": status,
            "iteration": 2,
            "summary": "Cannot reach the staging database.",
            "blockers": ["DB_PASSWORD is unset", "the staging VPN is down"],
            "lastError": "connection refused",
        })),
    ];
    let run = rig.enqueue("Migrate the staging schema");
    let config = CoderConfig {
        workflow_mode: "loop".into(),
        ..coder_config(&rig.fake.url)
    };
    let worker = rig.coder_worker(config);
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let error = rig.stored_error(&run);
    for part in [
        status,
        "DB_PASSWORD is unset",
        "the staging VPN is down",
        "Cannot reach the staging database.",
        "codesess_1",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error:?}");
    }
    let terminal = worker.api.terminal_calls();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].verb, "fail");
    assert_eq!(rig.fake.lock().archived, vec!["codesess_1".to_string()]);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_loop_fails_the_run_with_its_blockers_in_the_error() {
    a_loop_needing_a_person_fails_the_run_with_its_blockers("blocked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_awaiting_input_fails_the_run_with_its_blockers_in_the_error() {
    a_loop_needing_a_person_fails_the_run_with_its_blockers("awaiting_input").await;
}

// ----- the worker stops the run ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_archives_the_session_and_no_terminal_call_is_made() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let run = rig.enqueue("A long refactor");
    let worker = rig.coder_worker(coder_config(&rig.fake.url));
    let running = start(&worker);
    worker
        .events
        .until_progress("session codesess_1 created")
        .await;
    // The lease passes to the sweep: the next heartbeat is refused.
    assert!(rig.sim.expire_lease(&run.run_id));
    assert_eq!(rig.sim.sweep_now(), 1);
    assert_eq!(ends(running).await, WorkerExit::MaxRuns);

    assert_eq!(
        rig.fake
            .count("POST", "/api/hub/session/codesess_1/archive"),
        1
    );
    assert_eq!(rig.fake.lock().archived, vec!["codesess_1".to_string()]);
    let terminal = worker.api.terminal_calls();
    assert!(terminal.is_empty(), "{terminal:?}");
    for route in [Route::Complete, Route::Fail, Route::Release] {
        assert_eq!(rig.requests(route), 0, "{route:?}");
    }
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.transitions_of(TransitionKind::RequeuedBySweep), 1);
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "queued");
    assert_eq!(worker.status.snapshot().counters.leases_lost, 1);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_archives_the_session_and_releases_the_run_by_default() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let run = rig.enqueue("A long refactor");
    let config = coder_config(&rig.fake.url);
    assert_eq!(config.on_stop, StopPolicy::Archive, "the default policy");
    let worker = rig.coder_worker(config);
    let running = start(&worker);
    worker
        .events
        .until_progress("session codesess_1 created")
        .await;
    // What the first SIGTERM does: stop claiming, let the run drain, then stop it.
    worker.shutdown.drain.cancel();
    assert_eq!(ends(running).await, WorkerExit::Shutdown);

    assert_eq!(
        rig.fake
            .count("POST", "/api/hub/session/codesess_1/archive"),
        1
    );
    let terminal = worker.api.terminal_calls();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].verb, "release");
    assert_eq!(terminal[0].run_id, run.run_id);
    let reason = terminal[0].body.as_str().unwrap_or_default();
    assert!(reason.contains("shutting down"), "{reason}");
    assert!(reason.contains("codesess_1 was archived"), "{reason}");
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "queued");
    assert_eq!(rig.sim.ledger().transitions_of(TransitionKind::Released), 1);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leave_running_a_shutdown_releases_the_run_naming_the_session_and_the_next_claim_adopts_it()
 {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let run = rig.enqueue("A long refactor");
    let config = CoderConfig {
        on_stop: StopPolicy::LeaveRunning,
        ..coder_config(&rig.fake.url)
    };
    let first = rig.coder_worker(config.clone());
    let running = start(&first);
    first
        .events
        .until_progress("session codesess_1 created")
        .await;
    first.shutdown.drain.cancel();
    assert_eq!(ends(running).await, WorkerExit::Shutdown);

    let terminal = first.api.terminal_calls();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].verb, "release");
    let reason = terminal[0].body.as_str().unwrap_or_default();
    assert!(reason.contains("codesess_1 left running"), "{reason}");
    assert!(
        reason.contains(&format!("agh-run:{}", run.run_id)),
        "{reason}"
    );
    assert!(rig.fake.lock().archived.is_empty(), "left running");
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "queued");

    // The session goes on without a worker and finishes; another worker claims the run.
    rig.fake.lock().scripts.insert(
        "codesess_1".into(),
        VecDeque::from(vec![Step::detail(json!({"status": "active"})).with_events(
            vec![json!({"event": "session_complete", "payload": {"summary": "Refactor done."}})],
        )]),
    );
    let second = rig.worker(
        &rig.session("worker", None),
        coder_handlers(config),
        Arc::new(LogEvents),
        settings(),
    );
    assert_eq!(ends(start(&second)).await, WorkerExit::MaxRuns);

    let result = rig.stored_result(&run);
    assert_eq!(result["coder_session_id"], "codesess_1");
    assert_eq!(result["summary"], "Refactor done.");
    assert!(
        second.events.lines().contains("adopted session codesess_1"),
        "{}",
        second.events.lines()
    );
    assert_eq!(rig.fake.count("POST", "/api/hub/session"), 1, "one create");
    assert_eq!(rig.fake.lock().current.len(), 1, "one session");
    assert_eq!(rig.sim.run(&run.run_id).expect("run").claims, 2);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_time_limit_fails_it_and_archives_the_session_whatever_the_stop_policy() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![Step::detail(
        json!({"status": "active", "usage": {"costUsd": 0.1}}),
    )];
    let run = rig.sim.enqueue_task(TaskSpec {
        max_runtime_seconds: 1,
        ..TaskSpec::titled("A refactor that never ends")
    });
    // A margin as long as the limit leaves the limit itself: the worker's and the handler's
    // clocks then run out together.
    let config = CoderConfig {
        on_stop: StopPolicy::LeaveRunning,
        deadline_margin_seconds: 15.0,
        ..coder_config(&rig.fake.url)
    };
    let worker = rig.coder_worker(config);
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let error = rig.stored_error(&run);
    assert!(error.contains("time limit"), "{error}");
    assert_eq!(
        rig.fake.lock().archived,
        vec!["codesess_1".to_string()],
        "a run that failed on its time limit is never adopted again: its session must not run on"
    );
    let terminal = worker.api.terminal_calls();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].verb, "fail");
    assert_eq!(
        terminal[0].body["metadata"]["usage"]["cost_usd"], 0.1,
        "{terminal:?}"
    );
    rig.check_ledger();
}

// ----- creating the session --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_is_lost_is_adopted_not_duplicated() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = finishing_at_once();
    let proxy = LossyProxy::start(&rig.fake.url).await;
    proxy.lose(Method::POST, "/api/hub/session", 502);
    let run = rig.enqueue("Fix the flaky test");
    let worker = rig.coder_worker(coder_config(&proxy.url));
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let result = rig.stored_result(&run);
    assert_eq!(result["coder_session_id"], "codesess_1");
    assert_eq!(rig.fake.count("POST", "/api/hub/session"), 1, "one create");
    assert_eq!(rig.fake.lock().current.len(), 1, "one session");
    let lines = worker.events.lines();
    assert!(lines.contains("adopted session codesess_1"), "{lines}");
    assert!(!lines.contains("created"), "{lines}");
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_fails_the_run_with_an_error_that_says_what_to_fix_and_never_shows_the_key() {
    let rig = Rig::new().await;
    // The answer echoes the Authorization header, as a debugging proxy might.
    rig.fake.can(
        "GET",
        "/api/hub/sessions",
        401,
        vec![],
        r#"{"error": "invalid credentials: {auth}"}"#,
    );
    let run = rig.enqueue("Fix the login bug");
    let worker = rig.coder_worker(coder_config(&rig.fake.url));
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let error = rig.stored_error(&run);
    assert!(!error.contains(KEY), "the key leaked: {error}");
    assert!(error.contains("401"), "{error}");
    // What to fix, by the name the operator configured the key with.
    assert!(
        error.contains("set handlers.coder.key to a valid SDK key"),
        "{error}"
    );
    assert_eq!(rig.fake.count("POST", "/api/hub/session"), 0);
    let terminal = worker.api.terminal_calls();
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!(terminal[0].verb, "fail", "a refused key is not retried");
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_the_session_runs_fails_the_run_with_the_same_advice() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    rig.fake.can(
        "GET",
        "/api/hub/session/codesess_1",
        403,
        vec![],
        r#"{"message": "key revoked"}"#,
    );
    let run = rig.enqueue("Fix the login bug");
    let worker = rig.coder_worker(coder_config(&rig.fake.url));
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let error = rig.stored_error(&run);
    assert!(error.contains("codesess_1"), "{error}");
    assert!(error.contains("key revoked"), "{error}");
    assert!(error.contains("denied the key access (403)"), "{error}");
    assert!(!error.contains(KEY), "the key leaked: {error}");
    rig.check_ledger();
}

// ----- an unsteady hub --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_restarts_of_the_hub_are_waited_out_and_the_run_completes() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = finishing_at_once();
    // The run's first lookup meets all of them in turn: without the waits, the run would be
    // given back before a session existed.
    rig.fake.can(
        "GET",
        "/api/hub/sessions",
        429,
        vec![("retry-after", "0.2".into())],
        r#"{"message": "Too many requests"}"#,
    );
    rig.fake.can(
        "GET",
        "/api/hub/sessions",
        409,
        vec![("x-ratelimit-retry-after", "0.2".into())],
        r#"{"message": "Too many requests"}"#,
    );
    for _ in 0..2 {
        rig.fake
            .can("GET", "/api/hub/sessions", 502, vec![], "hot-swapping");
    }
    rig.fake.can(
        "GET",
        "/api/hub/session/codesess_1",
        503,
        vec![],
        "hot-swapping",
    );
    let run = rig.enqueue("Fix the login bug");
    let worker = rig.coder_worker(coder_config(&rig.fake.url));
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    let result = rig.stored_result(&run);
    assert_eq!(result["coder_session_id"], "codesess_1");
    assert!(rig.fake.lock().canned.is_empty(), "every fault was met");
    // Four refused answers and the real one (by the run's tag).
    assert_eq!(rig.fake.count("GET", "/api/hub/sessions"), 5);
    assert_eq!(rig.fake.count("POST", "/api/hub/session"), 1);
    rig.check_ledger();
}

/// The coder handler run with a client of the test's making: a 421's regional retry must not
/// leave the machine, so it is pointed at a second fake.
struct CoderThrough {
    config: CoderConfig,
    client: AgentuityClient,
}

impl Handler for CoderThrough {
    async fn run(&self, context: TaskContext) -> Outcome {
        run_with_client(&self.config, context, &self.client).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misdirected_hub_discovery_is_retried_once_in_the_region_named_and_the_run_completes() {
    let rig = Rig::new().await;
    rig.fake.lock().on_create = finishing_at_once();
    rig.fake.can(
        "GET",
        "/coder",
        421,
        vec![("x-agentuity-region", "usw".into())],
        r#"{"message": "wrong region"}"#,
    );
    let regional = FakeAgentuity::start().await;
    regional.lock().discovery_url = Some(rig.fake.url.clone());
    let mut config = coder_config(&rig.fake.url);
    config.client.hub_url = None;
    config.client.catalyst_url = Some(rig.fake.url.clone());
    let retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        unavailable_delay: Duration::from_millis(5),
        unavailable_cap: Duration::from_millis(10),
        unavailable_budget: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let client = AgentuityClient::with_retry(&config.client, &Env::new(), retry)
        .expect("client")
        .with_regional_catalyst(&regional.url);
    let run = rig.enqueue("Fix the login bug");
    let worker = rig.worker(
        &rig.default_session(),
        CoderThrough { config, client },
        Arc::new(LogEvents),
        settings(),
    );
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);

    assert_eq!(rig.stored_result(&run)["coder_session_id"], "codesess_1");
    assert_eq!(rig.fake.count("GET", "/coder"), 1, "the misdirected one");
    assert_eq!(regional.count("GET", "/coder"), 1, "the regional retry");
    assert_eq!(rig.fake.count("POST", "/api/hub/session"), 1);
    rig.check_ledger();
}

// ----- progress on the run's channel ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_milestones_reach_the_runs_channel_as_throttled_valid_status_messages() {
    let rig = Rig::new().await;
    let builder = rig.session("builder", Some(CHANNEL));
    let reviewer = rig.session("reviewer", Some(CHANNEL));
    let huge_tool = "t".repeat(5000);
    let active = || Step::detail(json!({"status": "active"}));
    let mut steps = vec![active().with_events(vec![
        json!({"event": "agent_start"}),
        json!({"event": "task_start", "agent": "scout", "taskId": "t1"}),
    ])];
    // A busy stretch: a tool call at every poll, more than the throttle lets through one by one.
    for n in 1..=20 {
        steps.push(active().with_events(vec![json!({
            "event": "agent_progress",
            "payload": {"agentName": "scout", "status": "tool_start", "currentTool": format!("tool-{n}")},
        })]));
    }
    steps.push(active().with_events(vec![json!({
        "event": "agent_progress",
        "payload": {"agentName": "scout", "status": "tool_start", "currentTool": huge_tool},
    })]));
    steps.extend((0..10).map(|_| active()));
    steps.push(
        Step::detail(json!({"status": "active", "usage": {"costUsd": 0.42}})).with_events(vec![
            json!({"event": "task_complete", "agent": "scout", "taskId": "t1"}),
            json!({"event": "session_complete"}),
        ]),
    );
    let milestone_polls = 23;
    rig.fake.lock().on_create = steps;
    let run = rig.sim.enqueue_task(TaskSpec {
        channel: Some(CHANNEL.into()),
        ..TaskSpec::titled("Fix the login bug")
    });
    let coordination = Arc::new(Coordination::new(
        Arc::new(rig.client(&builder)),
        StatusBoard::default(),
        CoordinationSettings {
            progress_interval: Duration::from_millis(50),
            spawn: SpawnSettings::default(),
        },
    ));
    let config = CoderConfig {
        progress_interval_seconds: 0.2,
        ..coder_config(&rig.fake.url)
    };
    let worker = rig.worker(
        &builder,
        coder_handlers(config),
        coordination.clone(),
        settings(),
    );
    assert_eq!(ends(start(&worker)).await, WorkerExit::MaxRuns);
    assert!(coordination.flush(Duration::from_secs(10)).await);
    assert_eq!(rig.stored_result(&run)["usage"]["cost_usd"], 0.42);

    let seen = rig
        .client(&reviewer)
        .recv(
            CHANNEL,
            RecvOptions {
                wait: false,
                limit: None,
            },
        )
        .await
        .expect("the peer reads the channel");
    assert!(!seen.is_empty());
    // The daemon orders a second's messages by id; the ids end in the send's sequence number.
    let mut seen = seen;
    seen.sort_by_key(|message| {
        message
            .message_id
            .rsplit('-')
            .next()
            .and_then(|seq| seq.parse::<u64>().ok())
    });
    for message in &seen {
        let metadata = message.metadata.as_ref().expect("coordination metadata");
        assert_eq!(metadata.message_kind, MessageKind::Status, "{message:?}");
        assert_eq!(metadata.run_id, run.run_id);
        assert_eq!(metadata.task_id, run.task_id);
        assert_eq!(metadata.coordination_channel_id, CHANNEL);
        assert_eq!(metadata.correlation_id, run.run_id);
        let text = message.text().expect("a text");
        assert!(text.starts_with("coder: "), "{text}");
        assert!(
            text.chars().count() <= 700,
            "a status line of {} characters",
            text.chars().count()
        );
    }
    let texts: Vec<&str> = seen.iter().filter_map(ChannelMessage::text).collect();
    let all = texts.join("\n");
    assert!(texts[0].contains("session codesess_1 created"), "{all}");
    assert!(
        texts.last().is_some_and(|t| t.contains("session complete")),
        "the final status reaches the peers: {all}"
    );
    for milestone in ["scout started a task", "scout: tool-1", "scout: tool-20"] {
        assert!(all.contains(milestone), "{milestone:?} missing: {all}");
    }
    assert!(all.contains("ttttt…"), "the long tool name is cut: {all}");
    assert!(
        texts.len() < milestone_polls,
        "{} status messages for {milestone_polls} polls with milestones: {all}",
        texts.len()
    );
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.requests_for(Route::ChannelSend, 400), 0);
    assert_eq!(
        ledger.requests_for(Route::ChannelSend, 202),
        texts.len() as u64
    );
    rig.check_ledger();
}
