//! The coder handler following its session over the Hub's live event stream: a run ends on the
//! deciding broadcast without waiting for a poll (`poll_seconds` stays at its default 5 s, and the
//! request counts show no poll was made), and falls back to polling when the stream is refused.

mod support;

use std::time::Duration;

use agh_worker::agentuity::{AgentuityClient, ClientSettings, Env};
use agh_worker::api::types::Claim;
use agh_worker::handler::coder::{CoderConfig, FollowMode, run_with_client};
use agh_worker::handler::{Outcome, TaskContext, TaskDocument};
use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, Step, quick_retry};
use tokio::task::JoinHandle;

const KEY: &str = "ag_stream_key_789";
const SESSION: &str = "codesess_1";

fn config(fake: &FakeAgentuity) -> CoderConfig {
    CoderConfig {
        client: ClientSettings {
            key: Some(KEY.into()),
            hub_url: Some(fake.url.clone()),
            ..ClientSettings::default()
        },
        progress_interval_seconds: 0.0,
        deadline_margin_seconds: 0.0,
        ..CoderConfig::default()
    }
}

fn context() -> (TaskContext, support::handler_fixtures::Ends) {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "identifier": "ENG-9", "title": "Fix the build"},
        "run": {"id": "run-9", "attempt": 1},
    }))
    .expect("claim");
    let document = TaskDocument::new(claim, None, None);
    support::handler_fixtures::context(document, None)
}

/// Starts a run of one task against `fake` and waits until its session's stream is open.
async fn start(fake: &FakeAgentuity, config: CoderConfig) -> JoinHandle<Outcome> {
    let client =
        AgentuityClient::with_retry(&config.client, &Env::new(), quick_retry()).expect("client");
    let run = tokio::spawn(async move {
        let (context, _ends) = context();
        run_with_client(&config, context, &client).await
    });
    fake.until_streaming(SESSION).await;
    run
}

/// The run's outcome; a run that waited for a 5 s poll instead of the broadcast fails here.
async fn outcome(run: JoinHandle<Outcome>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(4), run)
        .await
        .expect("the run ended on the broadcast, not on a poll")
        .expect("the run did not panic")
}

fn result(outcome: &Outcome) -> &Value {
    match outcome {
        Outcome::Complete(result) => result,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

/// Reads of the session and of its event history the run made.
fn reads(fake: &FakeAgentuity) -> (usize, usize) {
    (
        fake.count("GET", &format!("/api/hub/session/{SESSION}")),
        fake.count("GET", &format!("/api/hub/session/{SESSION}/events/history")),
    )
}

#[tokio::test]
async fn a_standard_run_ends_on_the_session_complete_broadcast_without_a_poll() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::active()];
    let run = start(&fake, config(&fake)).await;
    fake.broadcast(
        SESSION,
        "task_start",
        json!({"taskId": "t1", "agent": "scout"}),
    );
    fake.broadcast(
        SESSION,
        "session_complete",
        json!({"summary": "Fixed the build."}),
    );
    let outcome = outcome(run).await;
    let result = result(&outcome);
    assert_eq!(result["status"], "session_complete");
    assert_eq!(result["summary"], "Fixed the build.");
    // One catch-up read when the stream opened, one final read after archiving; no poll.
    assert_eq!(reads(&fake), (2, 1));
    let stream = fake.requests("GET", &format!("/api/hub/session/{SESSION}/events"));
    assert_eq!(stream.len(), 1);
    assert!(
        stream[0].query.contains("subscribe=session_*%2Cagent_*"),
        "{}",
        stream[0].query
    );
    assert_eq!(stream[0].accept.as_deref(), Some("text/event-stream"));
    // Every other call carries the headers the SDK sends, GETs and body-less POSTs included.
    for seen in fake.seen().iter().filter(|s| !s.path.ends_with("/events")) {
        assert_eq!(
            seen.content_type.as_deref(),
            Some("application/json"),
            "{seen:?}"
        );
        assert_eq!(seen.accept.as_deref(), Some("application/json"), "{seen:?}");
        let agent = seen.user_agent.as_deref().unwrap_or_default();
        assert!(agent.starts_with("agh-worker/"), "{seen:?}");
    }
}

#[tokio::test]
async fn the_leads_agent_end_with_no_task_running_ends_a_standard_run_without_the_quiet_period() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::active()];
    fake.lock().replay.insert(
        SESSION.into(),
        json!({"sessionId": SESSION, "entries": [{"type": "message", "content": "All green."}]}),
    );
    // quiet_seconds stays at 45: only the broadcast can end the run in time.
    let run = start(&fake, config(&fake)).await;
    fake.broadcast(SESSION, "agent_start", json!({"agentName": "lead"}));
    fake.broadcast(SESSION, "agent_end", json!({"agentName": "lead"}));
    let outcome = outcome(run).await;
    let result = result(&outcome);
    assert_eq!(result["status"], "idle");
    assert_eq!(result["summary"], "All green.");
    // The catch-up read, the read confirming the session is idle, the final read.
    assert_eq!(reads(&fake), (3, 1));
}

#[tokio::test]
async fn a_session_error_broadcast_fails_the_run_at_once() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::active()];
    let run = start(&fake, config(&fake)).await;
    fake.broadcast(
        SESSION,
        "session_error",
        json!({"error": "sandbox crashed"}),
    );
    let outcome = outcome(run).await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("sandbox crashed")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_loop_completed_broadcast_completes_a_loop_run_with_its_summary() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::active()
            .with_loop(json!({"status": "running", "iteration": 1, "nextAction": "test"})),
    ];
    let run = start(
        &fake,
        CoderConfig {
            workflow_mode: "loop".into(),
            ..config(&fake)
        },
    )
    .await;
    // A finished loop has no next action, as the Hub answers it.
    fake.set_loop(
        SESSION,
        json!({"status": "completed", "iteration": 3, "summary": "Shipped it.", "completedAt": 1_767_607_200_000u64}),
    );
    fake.broadcast(SESSION, "loop_completed", json!({"iteration": 3}));
    let outcome = outcome(run).await;
    let result = result(&outcome);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["summary"], "Shipped it.");
}

#[tokio::test]
async fn a_loop_blocked_broadcast_fails_the_run_once_its_grace_has_passed() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create =
        vec![Step::active().with_loop(json!({"status": "running", "iteration": 1}))];
    let run = start(
        &fake,
        CoderConfig {
            workflow_mode: "loop".into(),
            blocked_grace_seconds: 0.2,
            ..config(&fake)
        },
    )
    .await;
    fake.set_loop(
        SESSION,
        json!({"status": "blocked", "iteration": 2, "blockers": ["needs a deploy key"]}),
    );
    fake.broadcast(SESSION, "loop_blocked", json!({"iteration": 2}));
    let outcome = outcome(run).await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("needs a deploy key")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_stream_the_hub_closes_is_reopened_and_followed_again() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::active()];
    let run = start(&fake, config(&fake)).await;
    fake.close_streams(SESSION);
    fake.until_streaming(SESSION).await;
    fake.broadcast(SESSION, "session_complete", json!({}));
    result(&outcome(run).await);
    assert_eq!(fake.stream_opens(SESSION), 2);
}

#[tokio::test]
async fn a_refused_stream_falls_back_to_polling_the_session_and_its_history() {
    let fake = FakeAgentuity::start().await;
    fake.answer_always(
        "GET",
        &format!("/api/hub/session/{SESSION}/events"),
        404,
        "Not Found",
    );
    fake.lock().on_create = vec![
        Step::active(),
        Step::active().with_events(vec![json!({"event": "session_complete"})]),
    ];
    let config = CoderConfig {
        poll_seconds: 0.01,
        ..config(&fake)
    };
    let client =
        AgentuityClient::with_retry(&config.client, &Env::new(), quick_retry()).expect("client");
    let (context, _ends) = context();
    let outcome = run_with_client(&config, context, &client).await;
    assert_eq!(result(&outcome)["status"], "session_complete");
    assert!(fake.stream_opens(SESSION) >= 1);
    assert!(reads(&fake).1 >= 2, "{:?}", reads(&fake));
}

#[tokio::test]
async fn following_by_polling_never_opens_the_stream() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create =
        vec![Step::active().with_events(vec![json!({"event": "session_complete"})])];
    let config = CoderConfig {
        follow: FollowMode::Poll,
        poll_seconds: 0.01,
        ..config(&fake)
    };
    let client =
        AgentuityClient::with_retry(&config.client, &Env::new(), quick_retry()).expect("client");
    let (context, _ends) = context();
    result(&run_with_client(&config, context, &client).await);
    assert_eq!(fake.stream_opens(SESSION), 0);
}

/// The stream request carries the key in its query, as the SDK's SSE client does; neither the
/// open stream's `Debug`, nor a refusal echoing the key, nor a transport failure (whose message
/// would name the URL) shows it.
#[tokio::test]
async fn the_key_in_a_stream_query_never_shows_in_debug_output_or_errors() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(SESSION, vec![Step::detail(json!({"status": "active"}))]);
    let client = AgentuityClient::with_retry(&config(&fake).client, &Env::new(), quick_retry())
        .expect("client");
    let stream = client
        .session_events(SESSION, &[])
        .await
        .expect("the stream opens");
    let opened = fake.requests("GET", &format!("/api/hub/session/{SESSION}/events"));
    assert!(
        opened[0].query.contains(&format!("api_key={KEY}")),
        "the key went in the query: {}",
        opened[0].query
    );
    let text = format!("{stream:?}");
    assert!(!text.contains(KEY), "{text}");
    drop(stream);

    fake.can(
        "GET",
        "/api/hub/session/codesess_echo/events",
        401,
        vec![],
        r#"{"message":"bad key {auth}"}"#,
    );
    let err = client
        .session_events("codesess_echo", &[])
        .await
        .expect_err("refused");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("<redacted>"), "{text}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", closed.local_addr().expect("its address"));
    drop(closed);
    let settings = ClientSettings {
        key: Some(KEY.into()),
        hub_url: Some(url),
        ..ClientSettings::default()
    };
    let client =
        AgentuityClient::with_retry(&settings, &Env::new(), quick_retry()).expect("client");
    let err = client
        .session_events(SESSION, &[])
        .await
        .expect_err("nothing listens");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY), "{text}");
}
