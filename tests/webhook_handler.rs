//! The webhook handler against real HTTP servers in the test: answers, signatures, deadlines,
//! cancellation, retries before a response, caps, message forwarding, and the example sidecar.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod support;

use agh_worker::api::types::ChannelMessage;
use agh_worker::config::{ConfigSources, load};
use agh_worker::handler::webhook::{self, WebhookConfig};
use agh_worker::handler::{
    HandlerConfig, HandlerEvent, HandlerKind, MatchRule, Outcome, TaskDocument,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::handler_fixtures::{document, message};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound so a broken handler fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

fn document_titled(title: &str) -> TaskDocument {
    document("run-1", title)
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        ..WebhookConfig::default()
    }
}

fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

// ---------------------------------------------------------------------------------------------
// A recording test server.

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How the server answers a request.
enum Reply {
    Answer(u16, Body),
    /// Never answers; signals `dropped` when the request is abandoned.
    Never,
    /// Answers once `release` is notified.
    After(Arc<Notify>, u16, Body),
}

fn json_reply(status: u16, value: Value) -> Reply {
    Reply::Answer(status, Body::from(value.to_string()))
}

type Decide = dyn Fn(&Seen) -> Reply + Send + Sync;

struct ServerState {
    requests: Mutex<Vec<Seen>>,
    seen: mpsc::UnboundedSender<Seen>,
    dropped: mpsc::UnboundedSender<String>,
    decide: Box<Decide>,
}

struct TestServer {
    state: Arc<ServerState>,
    seen: mpsc::UnboundedReceiver<Seen>,
    dropped: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

/// Signals when the handler future holding it is dropped: the server gave up on the request,
/// which hyper does when the client closes the connection.
struct DropSignal(mpsc::UnboundedSender<String>, String);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1.clone());
    }
}

async fn record(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert_eq!(method, Method::POST);
    let seen = Seen {
        path: uri.path().to_string(),
        headers,
        body,
    };
    state
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(seen.clone());
    let _ = state.seen.send(seen.clone());
    let respond = |status: u16, body: Body| {
        (
            StatusCode::from_u16(status).expect("a status code"),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    };
    match (state.decide)(&seen) {
        Reply::Answer(status, body) => respond(status, body),
        Reply::Never => {
            let _guard = DropSignal(state.dropped.clone(), seen.path.clone());
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::After(release, status, body) => {
            release.notified().await;
            respond(status, body)
        }
    }
}

fn router(decide: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> (Router, TestServerParts) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = mpsc::unbounded_channel();
    let state = Arc::new(ServerState {
        requests: Mutex::new(Vec::new()),
        seen: seen_tx,
        dropped: dropped_tx,
        decide: Box::new(decide),
    });
    let router = Router::new().fallback(record).with_state(state.clone());
    (
        router,
        TestServerParts {
            state,
            seen,
            dropped,
        },
    )
}

struct TestServerParts {
    state: Arc<ServerState>,
    seen: mpsc::UnboundedReceiver<Seen>,
    dropped: mpsc::UnboundedReceiver<String>,
}

impl TestServerParts {
    fn serving(self, task: JoinHandle<()>) -> TestServer {
        TestServer {
            state: self.state,
            seen: self.seen,
            dropped: self.dropped,
            task,
        }
    }
}

/// A server on 127.0.0.1 at `port` (0: any free port); returns it and its base URL.
async fn serve_tcp(
    port: u16,
    decide: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> (TestServer, String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind 127.0.0.1");
    let address = listener.local_addr().expect("local address");
    let (router, parts) = router(decide);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (parts.serving(task), format!("http://{address}"))
}

/// A server on a Unix socket at `path`.
async fn serve_unix(
    path: &Path,
    decide: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> TestServer {
    let listener = tokio::net::UnixListener::bind(path).expect("bind the socket");
    let (router, parts) = router(decide);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    parts.serving(task)
}

impl TestServer {
    fn requests(&self) -> Vec<Seen> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("a request in time")
            .expect("the server is running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Running the handler.

struct Running {
    events: mpsc::Receiver<HandlerEvent>,
    inbound: mpsc::Sender<ChannelMessage>,
    cancel: CancellationToken,
    outcome: JoinHandle<Outcome>,
}

fn start(config: WebhookConfig, title: &str, time_limit: Option<Duration>) -> Running {
    start_with_credentials(config, document_titled(title), time_limit, None)
}

fn start_with_credentials(
    config: WebhookConfig,
    document: TaskDocument,
    time_limit: Option<Duration>,
    credentials_dir: Option<PathBuf>,
) -> Running {
    let (ctx, ends) = support::handler_fixtures::context(document, time_limit);
    let outcome = tokio::spawn(async move {
        webhook::run_with_credentials(&config, ctx, credentials_dir.as_deref()).await
    });
    Running {
        events: ends.events,
        inbound: ends.inbound,
        cancel: ends.cancel,
        outcome,
    }
}

impl Running {
    async fn outcome(self) -> Outcome {
        tokio::time::timeout(PATIENCE, self.outcome)
            .await
            .expect("the handler finished in time")
            .expect("the handler did not panic")
    }
}

async fn outcome_of(config: WebhookConfig, title: &str) -> Outcome {
    start(config, title, None).outcome().await
}

fn fail_error(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Fail { error, .. } => error,
        other => panic!("expected a fail, got {other:?}"),
    }
}

fn release_reason(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Release(reason) => reason,
        other => panic!("expected a release, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Answers.

#[tokio::test]
async fn a_complete_answer_completes_with_its_result_and_the_request_carries_the_run_headers() {
    let (server, base) = serve_tcp(0, |_| {
        json_reply(
            200,
            json!({"outcome": "complete", "result": {"summary": "done"}}),
        )
    })
    .await;
    let outcome = outcome_of(config(&format!("{base}/task")), "Write the report").await;
    assert_eq!(outcome, Outcome::Complete(json!({"summary": "done"})));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert_eq!(seen.path, "/task");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("idempotency-key"), Some("run-1:2"));
    assert_eq!(seen.header("x-agh-worker-run-id"), Some("run-1"));
    assert_eq!(seen.header("x-agh-worker-task-id"), Some("task-1"));
    assert_eq!(seen.header("x-agh-worker-attempt"), Some("2"));
    assert_eq!(seen.header("x-agh-worker-signature"), None);
    let body = seen.json();
    assert_eq!(body["type"], "task");
    assert_eq!(body["run_id"], "run-1");
    assert_eq!(body["title"], "Write the report");
    assert_eq!(
        serde_json::to_vec(&document_titled("Write the report")).expect("encode"),
        seen.body.to_vec(),
        "the body is exactly the serialised task document"
    );
}

#[tokio::test]
async fn a_fail_answer_fails_with_its_error_and_metadata() {
    let (_server, base) = serve_tcp(0, |_| {
        json_reply(
            200,
            json!({"outcome": "fail", "error": "the input is broken", "metadata": {"line": 3}}),
        )
    })
    .await;
    let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
    assert_eq!(
        outcome,
        Outcome::Fail {
            error: "the input is broken".into(),
            metadata: Some(json!({"line": 3}))
        }
    );
}

#[tokio::test]
async fn a_release_answer_releases_with_its_reason() {
    let (_server, base) = serve_tcp(0, |_| {
        json_reply(200, json!({"outcome": "release", "reason": "needs a GPU"}))
    })
    .await;
    let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
    assert_eq!(outcome, Outcome::Release("needs a GPU".into()));
}

#[tokio::test]
async fn a_configured_secret_signs_the_exact_body_and_extra_headers_are_sent() {
    let (server, base) = serve_tcp(0, |seen| {
        let expected = signature(b"s3cret", &seen.body);
        if seen.header("x-agh-worker-signature") == Some(expected.as_str()) {
            json_reply(200, json!({"outcome": "complete", "result": "verified"}))
        } else {
            json_reply(401, json!({"error": "bad signature"}))
        }
    })
    .await;
    let mut config = config(&format!("{base}/task"));
    config.secret = Some("s3cret".into());
    config
        .headers
        .insert("Authorization".into(), "Bearer sidecar-token".into());
    let outcome = outcome_of(config, "x").await;
    assert_eq!(outcome, Outcome::Complete(json!("verified")));
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer sidecar-token")
    );
}

#[tokio::test]
async fn a_secret_file_relative_to_the_credentials_directory_is_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.key"), "file-secret\n").expect("write the key");
    let (_server, base) = serve_tcp(0, |seen| {
        let expected = signature(b"file-secret", &seen.body);
        if seen.header("x-agh-worker-signature") == Some(expected.as_str()) {
            json_reply(200, json!({"outcome": "complete", "result": "verified"}))
        } else {
            json_reply(401, json!({"error": "bad signature"}))
        }
    })
    .await;
    let mut config = config(&format!("{base}/task"));
    config.secret_file = Some("hook.key".into());

    assert_eq!(
        config.secret_file_path(Some(dir.path())),
        Some(dir.path().join("hook.key"))
    );
    assert!(
        config
            .problems_with_credentials("w", Some(dir.path()))
            .is_empty()
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let problems = config.problems_with_credentials("w", Some(elsewhere.path()));
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("w.secret_file") && p.contains("cannot be read")),
        "{problems:?}"
    );

    let outcome = start_with_credentials(
        config,
        document_titled("x"),
        None,
        Some(dir.path().to_path_buf()),
    )
    .outcome()
    .await;
    assert_eq!(outcome, Outcome::Complete(json!("verified")));
}

#[tokio::test]
async fn a_unix_socket_sidecar_gets_the_task_on_the_configured_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let server = serve_unix(&socket, |seen| {
        if seen.path == "/task" {
            json_reply(
                200,
                json!({"outcome": "complete", "result": "over the socket"}),
            )
        } else {
            json_reply(404, json!({}))
        }
    })
    .await;
    let mut config = config(&format!("unix:{}", socket.display()));
    config.path = Some("/task".into());
    assert!(
        config.problems("w").is_empty(),
        "{:?}",
        config.problems("w")
    );
    let outcome = outcome_of(config, "x").await;
    assert_eq!(outcome, Outcome::Complete(json!("over the socket")));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        server.requests()[0].header("idempotency-key"),
        Some("run-1:2")
    );
}

// ---------------------------------------------------------------------------------------------
// Answers that are not outcomes.

#[tokio::test]
async fn a_server_error_fails_after_exactly_one_request() {
    let (server, base) =
        serve_tcp(0, |_| Reply::Answer(500, Body::from("database is on fire"))).await;
    let mut config = config(&format!("{base}/task"));
    config.connect_retry_budget_ms = 10_000;
    let outcome = outcome_of(config, "x").await;
    let error = fail_error(&outcome);
    assert!(error.contains("HTTP 500"), "{error}");
    assert!(error.contains("database is on fire"), "{error}");
    assert_eq!(server.requests().len(), 1, "no retry after a response");
    let Outcome::Fail { metadata, .. } = &outcome else {
        unreachable!()
    };
    assert_eq!(
        metadata.as_ref().map(|m| m["status"].clone()),
        Some(json!(500))
    );
}

#[tokio::test]
async fn a_client_error_fails_with_its_status_and_body() {
    let (_server, base) = serve_tcp(0, |_| Reply::Answer(422, Body::from("missing field x"))).await;
    let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
    let error = fail_error(&outcome);
    assert!(error.contains("HTTP 422"), "{error}");
    assert!(error.contains("missing field x"), "{error}");
}

#[tokio::test]
async fn service_unavailable_and_too_many_requests_release_the_run() {
    for status in [503, 429] {
        let (server, base) = serve_tcp(0, move |_| Reply::Answer(status, Body::from("busy"))).await;
        let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
        let reason = release_reason(&outcome);
        assert!(reason.contains("busy/unavailable"), "{reason}");
        assert!(reason.contains(&status.to_string()), "{reason}");
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_success_that_is_not_an_outcome_fails_with_an_excerpt() {
    let (_server, base) = serve_tcp(0, |_| {
        Reply::Answer(200, Body::from("<html>hello from a proxy</html>"))
    })
    .await;
    let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
    let error = fail_error(&outcome);
    assert!(error.contains("not with an outcome"), "{error}");
    assert!(error.contains("<html>hello from a proxy</html>"), "{error}");

    let (_server, base) = serve_tcp(0, |_| json_reply(200, json!({"outcome": "done"}))).await;
    let outcome = outcome_of(config(&format!("{base}/task")), "x").await;
    let error = fail_error(&outcome);
    assert!(error.contains("{\"outcome\":\"done\"}"), "{error}");
}

#[tokio::test]
async fn an_answer_larger_than_the_cap_fails() {
    let big = json!({"outcome": "complete", "result": "x".repeat(4096)}).to_string();
    let (_server, base) = serve_tcp(0, move |_| Reply::Answer(200, Body::from(big.clone()))).await;
    let mut small = config(&format!("{base}/task"));
    small.max_response_bytes = 1024;
    let error = fail_error(&outcome_of(small, "x").await).to_string();
    assert!(
        error.contains("larger than max_response_bytes (1024 bytes)"),
        "{error}"
    );

    // Without a Content-Length the cap holds while reading.
    let (_server, base) = serve_tcp(0, |_| {
        let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 256])));
        Reply::Answer(200, Body::from_stream(futures_util::stream::iter(chunks)))
    })
    .await;
    let mut small = config(&format!("{base}/task"));
    small.max_response_bytes = 1024;
    let error = fail_error(&outcome_of(small, "x").await).to_string();
    assert!(error.contains("larger than max_response_bytes"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Deadlines, cancellation, retries.

#[tokio::test]
async fn a_webhook_that_never_answers_fails_at_the_time_limit() {
    let (mut server, base) = serve_tcp(0, |_| Reply::Never).await;
    let running = start(
        config(&format!("{base}/task")),
        "x",
        Some(Duration::from_millis(300)),
    );
    let outcome = running.outcome().await;
    assert_eq!(
        fail_error(&outcome),
        "the webhook did not answer within 0.3 s"
    );
    assert_eq!(server.next_seen().await.path, "/task");
}

#[tokio::test]
async fn cancelling_mid_request_releases_and_aborts_the_request() {
    let (mut server, base) = serve_tcp(0, |_| Reply::Never).await;
    let running = start(config(&format!("{base}/task")), "x", None);
    // The server has the request in hand before the run is cancelled.
    server.next_seen().await;
    running.cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(5), running.outcome)
        .await
        .expect("the handler returns promptly after cancellation")
        .expect("no panic");
    let reason = release_reason(&outcome);
    assert!(reason.starts_with("cancelled"), "{reason}");
    // The connection was closed, so the server abandoned the request.
    let dropped = tokio::time::timeout(PATIENCE, server.dropped.recv())
        .await
        .expect("the server sees the request abandoned");
    assert_eq!(dropped.as_deref(), Some("/task"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_sidecar_comes_up_and_delivered_once() {
    // A port nothing listens on (yet).
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().expect("address").port()
    };
    let mut config = config(&format!("http://127.0.0.1:{port}/task"));
    config.connect_retry_budget_ms = 15_000;
    let mut running = start(config, "x", None);
    // The handler reports the first refusal; only then does the sidecar come up.
    let event = tokio::time::timeout(PATIENCE, running.events.recv())
        .await
        .expect("a progress event in time")
        .expect("the handler is running");
    match event {
        HandlerEvent::Progress(text) => assert!(text.contains("waiting for the webhook"), "{text}"),
        other => panic!("expected a progress event, got {other:?}"),
    }
    let (server, _) = serve_tcp(port, |_| {
        json_reply(
            200,
            json!({"outcome": "complete", "result": "late but fine"}),
        )
    })
    .await;
    let outcome = running.outcome().await;
    assert_eq!(outcome, Outcome::Complete(json!("late but fine")));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_sidecar_that_stays_down_past_the_budget_releases_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&format!(
        "unix:{}",
        dir.path().join("absent.sock").display()
    ));
    config.connect_retry_budget_ms = 200;
    let outcome = outcome_of(config, "x").await;
    let reason = release_reason(&outcome);
    assert!(reason.contains("could not be reached"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// Messages.

#[tokio::test]
async fn inbound_messages_are_posted_to_messages_url_while_the_task_runs() {
    let finish = Arc::new(Notify::new());
    let task_done = finish.clone();
    let (mut server, base) = serve_tcp(0, move |seen| match seen.path.as_str() {
        "/task" => Reply::After(
            task_done.clone(),
            200,
            Body::from(json!({"outcome": "complete", "result": "ok"}).to_string()),
        ),
        _ => {
            // The task answers once its message has arrived.
            task_done.notify_one();
            json_reply(200, json!({}))
        }
    })
    .await;
    let mut config = config(&format!("{base}/task"));
    config.messages_url = Some("/messages".into());
    config.secret = Some("s3cret".into());
    let running = start(config, "x", None);
    assert_eq!(server.next_seen().await.path, "/task");
    running
        .inbound
        .send(message("msg-7", "please include the appendix"))
        .await
        .expect("the handler takes messages");
    let forwarded = server.next_seen().await;
    assert_eq!(running.outcome().await, Outcome::Complete(json!("ok")));

    assert_eq!(forwarded.path, "/messages");
    assert_eq!(forwarded.header("x-agh-worker-run-id"), Some("run-1"));
    assert_eq!(forwarded.header("x-agh-worker-message-id"), Some("msg-7"));
    assert_eq!(
        forwarded.header("x-agh-worker-signature"),
        Some(signature(b"s3cret", &forwarded.body).as_str())
    );
    let body = forwarded.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["message_id"], "msg-7");
    assert_eq!(body["text"], "please include the appendix");
    assert_eq!(body["kind"], "request");
    assert_eq!(body["from"], "peer-7");
}

#[tokio::test]
async fn without_messages_url_inbound_messages_are_drained_and_not_posted() {
    let finish = Arc::new(Notify::new());
    let (mut server, base) = serve_tcp(0, {
        let finish = finish.clone();
        move |_| {
            Reply::After(
                finish.clone(),
                200,
                Body::from(json!({"outcome": "complete", "result": null}).to_string()),
            )
        }
    })
    .await;
    let running = start(config(&format!("{base}/task")), "x", None);
    server.next_seen().await;
    for index in 0..20 {
        running
            .inbound
            .send(message(&format!("msg-{index}"), "hello"))
            .await
            .expect("the handler keeps draining messages");
    }
    finish.notify_one();
    assert_eq!(running.outcome().await, Outcome::Complete(Value::Null));
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn debug_output_of_a_handler_never_shows_the_secret() {
    let handler = HandlerConfig {
        name: "sidecar".into(),
        kind: HandlerKind::Webhook,
        matches: MatchRule::default(),
        exec: None,
        webhook: Some(WebhookConfig {
            secret: Some("hunter2-do-not-print".into()),
            headers: BTreeMap::from([("Authorization".into(), "Bearer abc-do-not-print".into())]),
            ..config("http://127.0.0.1:1/task")
        }),
        coder: None,
    };
    let text = format!("{handler:?} {handler:#?}");
    assert!(!text.contains("do-not-print"), "{text}");
    assert!(text.contains("secret: <redacted>"), "{text}");
}

fn load_handlers(table: Value) -> Result<agh_worker::config::LoadedConfig, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = ConfigSources {
        file: None,
        default_file: dir.path().join("absent.toml"),
        env: [
            ("AGH_SESSION_ID", "sess-0123456789abcdef"),
            ("AGH_AGENT", "coder"),
            ("HOME", "/home/op"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("AGH_WORKER__HANDLERS".to_string(), table.to_string())])
        .collect(),
        overrides: Vec::new(),
    };
    load(&sources).map_err(|err| err.to_string())
}

#[test]
fn the_handler_table_takes_webhook_entries_and_names_their_mistakes() {
    let loaded = load_handlers(json!([{
        "name": "sidecar", "kind": "webhook",
        "webhook": {"url": "http://127.0.0.1:8787/task", "timeout_seconds": 60}
    }]))
    .expect("a valid webhook handler");
    let webhook = loaded.config.handlers[0]
        .webhook
        .clone()
        .expect("webhook settings");
    assert_eq!(webhook.timeout_seconds, 60);
    assert_eq!(webhook.connect_retry_budget_ms, 5000);
    assert_eq!(webhook.max_response_bytes, 1024 * 1024);

    let error = load_handlers(json!([{
        "name": "sidecar", "kind": "webhook", "webhook": {"urll": "http://127.0.0.1:1/"}
    }]))
    .expect_err("an unknown key");
    assert!(error.contains("handlers[0].webhook.urll"), "{error}");

    let error = load_handlers(json!([
        {"name": "a", "kind": "webhook"},
        {"name": "b", "kind": "exec", "exec": {"program": "/bin/sh"}, "webhook": {"url": "http://127.0.0.1:1/"}},
        {"name": "c", "kind": "webhook", "webhook": {"url": "https://agent.example/task"}}
    ]))
    .expect_err("table problems");
    assert!(error.contains("handlers[0].webhook is missing"), "{error}");
    assert!(
        error.contains("handlers[1].webhook is set on a handler of kind \"exec\""),
        "{error}"
    );
    assert!(error.contains("handlers[2].webhook.url"), "{error}");
    assert!(error.contains("sidecar on this host"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// The example sidecar.

/// Starts `examples/webhook-sidecar.py` on a free port; `None` when there is no python3.
async fn start_example_sidecar(secret: &str) -> Option<(tokio::process::Child, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhook-sidecar.py");
    let spawned = tokio::process::Command::new("python3")
        .arg(&script)
        .arg("0")
        .env("AGH_WEBHOOK_SECRET", secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!("note: python3 is not installed; the example sidecar is not exercised");
            return None;
        }
        Err(err) => panic!("cannot start python3: {err}"),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the sidecar starts in time")
        .expect("read its stdout")
        .expect("it prints where it listens");
    let base = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    Some((child, base))
}

#[tokio::test]
async fn the_example_sidecar_verifies_the_signature_and_decides_by_title() {
    let Some((mut child, base)) = start_example_sidecar("py-secret").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("webhook.key"), "py-secret\n").expect("write the key");
    let mut signed = config(&format!("{base}/task"));
    signed.secret_file = Some("webhook.key".into());
    signed.messages_url = Some("/messages".into());

    let outcome = start_with_credentials(
        signed.clone(),
        document("run-1", "Summarise the report"),
        None,
        Some(dir.path().to_path_buf()),
    )
    .outcome()
    .await;
    assert_eq!(
        outcome,
        Outcome::Complete(json!({"summary": "handled: Summarise the report", "run_id": "run-1"}))
    );

    let outcome = start_with_credentials(
        signed.clone(),
        document("run-2", "please fail"),
        None,
        Some(dir.path().to_path_buf()),
    )
    .outcome()
    .await;
    assert_eq!(fail_error(&outcome), "the title asks for a failure");

    let outcome = start_with_credentials(
        signed,
        document("run-3", "release me"),
        None,
        Some(dir.path().to_path_buf()),
    )
    .outcome()
    .await;
    assert!(release_reason(&outcome).starts_with("not now"));

    let mut wrong = config(&format!("{base}/task"));
    wrong.secret = Some("not-the-key".into());
    let outcome = outcome_of(wrong, "Summarise the report").await;
    assert!(fail_error(&outcome).contains("HTTP 401"), "{outcome:?}");

    let _ = child.kill().await;
}
