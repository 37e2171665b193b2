//! A refused Agentuity key in the operations surfaces: a coder run answered 401 makes `/readyz`
//! not ready with `handler_unhealthy`, naming the handler and what to do; `/status` and `/metrics`
//! say the same; a later run the hub accepts makes the worker ready again; and the key shows up in
//! none of them, nor in the run's error, nor in the logs.

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use agh_worker::agentuity::ClientSettings;
use agh_worker::api::types::Claim;
use agh_worker::config::Config;
use agh_worker::handler::coder::{CoderConfig, FollowMode};
use agh_worker::handler::{
    HandlerConfig, HandlerKind, HandlerSet, MatchRule, Outcome, TaskContext, TaskDocument,
};
use agh_worker::ops::health::HealthTimings;
use agh_worker::ops::server::{self, HealthInfo, HealthListen, HealthState};
use agh_worker::worker::{Shutdown, StatusBoard, WorkerState};
use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, Step};
use support::log_capture::Capture;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

const KEY: &str = "ag_sdk_HealthKey0123456789abcdefXYZ";
const HANDLER: &str = "coder-main";

fn handlers(fake: &FakeAgentuity) -> Vec<HandlerConfig> {
    vec![
        HandlerConfig {
            name: HANDLER.into(),
            kind: HandlerKind::Coder,
            matches: MatchRule::default(),
            exec: None,
            webhook: None,
            coder: Some(CoderConfig {
                client: ClientSettings {
                    key: Some(KEY.into()),
                    hub_url: Some(fake.url.clone()),
                    ..ClientSettings::default()
                },
                // These tests script the session's reads; the live stream has tests of its own.
                follow: FollowMode::Poll,
                poll_seconds: 0.01,
                progress_interval_seconds: 0.0,
                quiet_seconds: 0.05,
                deadline_margin_seconds: 0.0,
                ..CoderConfig::default()
            }),
        },
        HandlerConfig {
            name: "smoke".into(),
            kind: HandlerKind::Noop,
            matches: MatchRule::default(),
            exec: None,
            webhook: None,
            coder: None,
        },
    ]
}

/// A run's context; the receivers are kept so progress can be sent.
fn context(
    run_id: &str,
) -> (
    TaskContext,
    mpsc::Receiver<agh_worker::handler::HandlerEvent>,
) {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": "Fix the login bug"},
        "run": {"id": run_id, "attempt": 1},
    }))
    .expect("claim");
    let (context, ends) =
        support::handler_fixtures::context(TaskDocument::new(claim, None, None), None);
    (context, ends.events)
}

struct Served {
    readyz_code: u16,
    readyz: Value,
    status: Value,
    metrics: String,
    raw: String,
}

async fn serve_read(base: &str) -> Served {
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move {
            let response = request.send().await.expect("GET");
            let code = response.status().as_u16();
            (code, response.text().await.expect("body"))
        }
    };
    let (readyz_code, readyz) = get("/readyz").await;
    let (_, status) = get("/status").await;
    let (_, metrics) = get("/metrics").await;
    Served {
        readyz_code,
        readyz: serde_json::from_str(&readyz).expect("/readyz is JSON"),
        status: serde_json::from_str(&status).expect("/status is JSON"),
        raw: format!("{readyz}\n{status}\n{metrics}"),
        metrics,
    }
}

fn metric_line(metrics: &str, handler: &str) -> String {
    let series = format!("agh_worker_handler_healthy{{handler=\"{handler}\"}} ");
    metrics
        .lines()
        .find(|line| line.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series:?} in\n{metrics}"))
        .to_string()
}

#[tokio::test]
async fn a_refused_key_makes_readyz_name_the_handler_until_a_run_the_hub_accepts() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("debug"))
        .with(agh_worker::ops::logging::json_layer(capture.clone()));
    // This test's runtime runs every task on this thread, so the default subscriber sees them all.
    let _logs = tracing::subscriber::set_default(subscriber);

    let fake = FakeAgentuity::start().await;
    let board = StatusBoard::default();
    board.set_state(WorkerState::Idle);
    board.contact();
    board.identity_confirmed();
    let set = HandlerSet::new(handlers(&fake)).with_health(board.handler_health().clone());
    let config = Config::default();
    let state = HealthState::new(
        board.clone(),
        Shutdown::default(),
        HealthTimings::from_config(&config),
        HealthInfo {
            version: server::VERSION.into(),
            session_id: "sess-1".into(),
            agent: "worker".into(),
            workspace_id: None,
            endpoint: "http://127.0.0.1:2123".into(),
        },
    );
    let server = server::start(
        &HealthListen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        state,
    )
    .await
    .expect("health server");
    let base = format!("http://{}", server.local_addr().expect("address"));

    let before = serve_read(&base).await;
    assert_eq!(before.readyz_code, 200, "{}", before.readyz);
    assert_eq!(
        metric_line(&before.metrics, HANDLER),
        format!("agh_worker_handler_healthy{{handler=\"{HANDLER}\"}} 1")
    );

    // The answer echoes the Authorization header, as a debugging proxy might.
    fake.can(
        "GET",
        "/api/hub/sessions",
        401,
        vec![],
        r#"{"message":"invalid api key: {auth}"}"#,
    );
    let (refused_context, _events) = context("run-refused");
    let refused = run(&set, refused_context).await;
    let error = match &refused {
        Outcome::Fail { error, .. } => error.clone(),
        other => panic!("a refused key fails the run, got {other:?}"),
    };
    assert!(
        error
            .contains("Agentuity refused the key (401): set handlers.coder.key to a valid SDK key"),
        "{error}"
    );

    let down = serve_read(&base).await;
    assert_eq!(down.readyz_code, 503, "{}", down.readyz);
    assert_eq!(down.readyz["reasons"], json!(["handler_unhealthy"]));
    let listed = &down.readyz["unhealthy_handlers"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], HANDLER);
    assert_eq!(
        listed[0]["reason"],
        "Agentuity refused the key (401): set handlers.coder.key to a valid SDK key"
    );
    assert!(
        listed[0]["since_seconds_ago"].as_f64().is_some(),
        "{listed}"
    );
    assert_eq!(down.status["ready"], false);
    assert_eq!(down.status["unhealthy_handlers"][0]["name"], HANDLER);
    assert_eq!(
        metric_line(&down.metrics, HANDLER),
        format!("agh_worker_handler_healthy{{handler=\"{HANDLER}\"}} 0")
    );
    assert_eq!(
        metric_line(&down.metrics, "smoke"),
        "agh_worker_handler_healthy{handler=\"smoke\"} 1"
    );

    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active", "bucket": "running"})).with_events(vec![
            json!({"event": "session_complete", "category": "session"}),
        ]),
    ];
    let (accepted_context, _events) = context("run-accepted");
    let accepted = run(&set, accepted_context).await;
    assert!(matches!(accepted, Outcome::Complete(_)), "{accepted:?}");

    let up = serve_read(&base).await;
    assert_eq!(up.readyz_code, 200, "{}", up.readyz);
    assert_eq!(up.readyz["unhealthy_handlers"], json!([]));
    assert_eq!(up.status["ready"], true);
    assert_eq!(
        metric_line(&up.metrics, HANDLER),
        format!("agh_worker_handler_healthy{{handler=\"{HANDLER}\"}} 1")
    );
    server.stop().await;

    let logs = capture.text();
    assert!(
        logs.contains("handler unhealthy") && logs.contains("handler healthy again"),
        "the change of health is logged both ways: {logs:.3000}"
    );
    for (place, text) in [
        ("the run's error", error.as_str()),
        ("the health endpoints", down.raw.as_str()),
        ("the logs", logs.as_str()),
    ] {
        assert!(
            !text.contains(KEY),
            "the key leaked into {place}: {text:.3000}"
        );
    }
}

/// Runs the coder handler of `set` on `context`.
async fn run(set: &HandlerSet, context: TaskContext) -> Outcome {
    match set.by_name(HANDLER) {
        Some(chosen) => chosen.run(context).await,
        None => panic!("the set has a handler named {HANDLER}"),
    }
}
