//! The coder handler against a fake Agentuity hub: create or adopt, follow, complete, fail,
//! cancel and deadline, with short cadences so each test takes well under a second.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agh_worker::agentuity::{AgentuityClient, ClientSettings, Env, RetryPolicy};
use agh_worker::api::types::{Claim, TaskBundle, TaskView};
use agh_worker::handler::coder::{
    CoderConfig, FollowMode, StopPolicy, run_with_client, run_with_health,
};
use agh_worker::handler::{HandlerEvent, Outcome, TaskContext, TaskDocument};
use agh_worker::worker::HandlerHealth;
use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, Step};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const KEY: &str = "ag_handler_key_456";

fn config(fake: &FakeAgentuity) -> CoderConfig {
    CoderConfig {
        client: ClientSettings {
            key: Some(KEY.into()),
            hub_url: Some(fake.url.clone()),
            ..ClientSettings::default()
        },
        // These tests script the session's reads; the live stream has tests of its own.
        follow: FollowMode::Poll,
        poll_seconds: 0.01,
        progress_interval_seconds: 0.0,
        blocked_grace_seconds: 0.1,
        quiet_seconds: 0.05,
        provisioning_timeout_seconds: 5.0,
        deadline_margin_seconds: 0.0,
        repo_url: Some("https://github.com/acme/app".into()),
        ..CoderConfig::default()
    }
}

fn client(config: &CoderConfig) -> AgentuityClient {
    let retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        unavailable_delay: Duration::from_millis(5),
        unavailable_cap: Duration::from_millis(10),
        unavailable_budget: Duration::from_millis(100),
        ..RetryPolicy::default()
    };
    AgentuityClient::with_retry(&config.client, &Env::new(), retry).expect("client")
}

struct Harness {
    context: TaskContext,
    events: mpsc::Receiver<HandlerEvent>,
    cancel: CancellationToken,
}

fn harness(time_limit: Option<Duration>) -> Harness {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "identifier": "ENG-7", "title": "Fix the login bug"},
        "run": {"id": "run-1", "attempt": 2},
    }))
    .expect("claim");
    // The description is the task view's: AGH's claim carries none.
    let view: TaskView = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": "Fix the login bug", "description": "Users cannot log in."},
    }))
    .expect("task view");
    let bundle: TaskBundle =
        serde_json::from_value(json!({"handoff_summary": "Attempt 1 found the bug in auth.rs."}))
            .expect("bundle");
    let document = TaskDocument::new(claim, Some(bundle), time_limit).with_task_view(&view);
    // The inbox's sender is dropped: no messages come for this run.
    let (context, ends) = support::handler_fixtures::context(document, time_limit);
    Harness {
        context,
        events: ends.events,
        cancel: ends.cancel,
    }
}

fn progress_lines(events: &mut mpsc::Receiver<HandlerEvent>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let HandlerEvent::Progress(line) = event {
            lines.push(line);
        }
    }
    lines
}

fn result(outcome: &Outcome) -> &Value {
    match outcome {
        Outcome::Complete(result) => result,
        other => panic!("expected a completed run, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_is_created_as_a_session_followed_to_completion_and_reported_with_its_cost() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "provisioning", "bucket": "provisioning"})),
        Step::detail(json!({"status": "active", "bucket": "running"}))
            .with_events(vec![json!({"event": "task_start", "agent": "scout", "taskId": "t1"})]),
        Step::detail(json!({"status": "active", "bucket": "running",
            "usage": {"costUsd": 0.42, "inputTokens": 1200, "outputTokens": 300, "reasoningTokens": 50}}))
        .with_events(vec![
            json!({"event": "task_complete", "agent": "scout", "taskId": "t1"}),
            json!({"event": "session_complete", "category": "session"}),
        ]),
    ];
    fake.lock().replay.insert(
        "codesess_1".into(),
        json!({"entries": [
            {"type": "message", "content": "sub-agent note", "taskId": "t1"},
            {"type": "message", "content": "Fixed the login bug in auth.rs."}
        ]}),
    );
    let config = config(&fake);
    let mut harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let result = result(&outcome);
    assert_eq!(result["summary"], "Fixed the login bug in auth.rs.");
    assert_eq!(result["coder_session_id"], "codesess_1");
    assert_eq!(result["status"], "session_complete");
    assert_eq!(result["usage"]["cost_usd"], 0.42);
    assert_eq!(result["usage"]["input_tokens"], 1200);
    assert_eq!(result["usage"]["output_tokens"], 300);
    assert!(result["duration_ms"].is_u64());
    assert_eq!(fake.lock().archived, vec!["codesess_1".to_string()]);

    let created = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path == "/api/hub/session")
        .expect("a create");
    let body = created.body;
    assert!(
        body["tags"]
            .as_array()
            .expect("tags")
            .contains(&json!("agh-run:run-1"))
    );
    assert_eq!(body["metadata"]["agh_run_id"], "run-1");
    assert_eq!(body["metadata"]["agh_attempt"], "2");
    assert_eq!(body["label"], "agh:ENG-7");
    // The web URL and the clone URL, as the SDK's repository reference has them.
    assert_eq!(body["repo"]["url"], "https://github.com/acme/app");
    assert_eq!(body["repo"]["cloneUrl"], "https://github.com/acme/app.git");
    assert_eq!(body["repo"]["fullName"], "acme/app");
    assert!(body.get("repos").is_none(), "one repository: `repo` only");
    assert_eq!(body["timeout"]["idle"], "30m");
    let task = body["task"].as_str().expect("task text");
    assert!(
        task.starts_with("Fix the login bug\n\nUsers cannot log in."),
        "{task}"
    );
    assert!(
        task.contains("Attempt 1 found the bug in auth.rs."),
        "{task}"
    );
    assert!(body.get("loop").is_none());

    let lines = progress_lines(&mut harness.events);
    let all = lines.join("\n");
    assert!(all.contains("session codesess_1 created"), "{all}");
    assert!(all.contains("scout started a task"), "{all}");
    assert!(all.contains("session complete"), "{all}");
    assert!(all.contains("$0.42 so far"), "{all}");
}

#[tokio::test]
async fn a_standard_session_is_done_after_the_leads_turn_and_a_quiet_period_and_unknown_cost_is_null()
 {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "agent_start"})]),
        Step::detail(json!({"status": "active"})).with_events(vec![json!({"event": "agent_end"})]),
        Step::detail(json!({"status": "active"})),
    ];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let result = result(&outcome);
    assert_eq!(result["status"], "idle");
    assert!(result["usage"]["cost_usd"].is_null(), "{result}");
    assert!(result["usage"]["input_tokens"].is_null(), "{result}");
}

#[tokio::test]
async fn a_session_already_tagged_with_the_run_is_adopted_instead_of_creating_another() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_old",
        vec![
            Step::detail(json!({"status": "active", "tags": ["agh-run:run-1"]})),
            Step::detail(json!({"status": "active"})).with_events(vec![
                json!({"event": "session_complete", "payload": {"summary": "done earlier"}}),
            ]),
        ],
    );
    let config = config(&fake);
    let mut harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let result = result(&outcome);
    assert_eq!(result["coder_session_id"], "codesess_old");
    assert_eq!(result["summary"], "done earlier");
    assert_eq!(fake.count("POST", "/api/hub/session"), 0);
    let all = progress_lines(&mut harness.events).join("\n");
    assert!(all.contains("adopted session codesess_old"), "{all}");
}

#[tokio::test]
async fn a_create_with_an_unknown_outcome_is_looked_up_before_it_is_repeated() {
    let fake = FakeAgentuity::start().await;
    fake.can("POST", "/api/hub/session", 503, vec![], "restarting");
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "session_complete"})]),
    ];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    result(&outcome);
    assert_eq!(fake.count("POST", "/api/hub/session"), 2);
    // Each lookup searches by the run's tag once: list items carry tags, not metadata.
    assert_eq!(fake.count("GET", "/api/hub/sessions"), 2);
}

#[tokio::test]
async fn a_completed_loop_completes_with_its_summary_and_asks_for_detached_running() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active", "workflowMode": "loop"}))
            .with_loop(json!({"status": "running", "iteration": 1})),
        Step::detail(json!({"status": "active", "workflowMode": "loop"})).with_loop(
            json!({"status": "completed", "iteration": 3, "summary": "All tests pass."}),
        ),
    ];
    let mut config = config(&fake);
    config.workflow_mode = "loop".into();
    config.loop_max_iterations = Some(5);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let result = result(&outcome);
    assert_eq!(result["summary"], "All tests pass.");
    assert_eq!(result["status"], "completed");
    let body = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .expect("a create")
        .body;
    assert_eq!(body["workflowMode"], "loop");
    assert_eq!(body["loop"]["allowDetached"], true);
    assert_eq!(body["loop"]["autoContinue"], true);
    assert_eq!(body["loop"]["maxIterations"], 5);
}

#[tokio::test]
async fn a_blocked_loop_fails_after_the_grace_and_is_archived() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "active", "workflowMode": "loop"}))
        .with_loop(json!({"status": "blocked", "summary": "Needs a database password.", "blockers": ["DB_PASSWORD unset"]}))];
    let mut config = config(&fake);
    config.workflow_mode = "loop".into();
    let harness = harness(None);
    let started = std::time::Instant::now();
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the grace was not waited"
    );
    match outcome {
        Outcome::Fail { error, metadata } => {
            assert!(error.contains("blocked"), "{error}");
            assert!(error.contains("DB_PASSWORD unset"), "{error}");
            assert_eq!(
                metadata.expect("metadata")["coder_session_id"],
                "codesess_1"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(fake.lock().archived, vec!["codesess_1".to_string()]);
}

#[tokio::test]
async fn a_cancelled_run_archives_its_session_and_gives_the_run_back() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let config = config(&fake);
    let mut harness = harness(None);
    let client = client(&config);
    let cancel = harness.cancel.clone();
    let run = run_with_client(&config, harness.context, &client);
    let stop = async {
        // Wait until the session exists, then stop the run as a lost lease would.
        while let Some(event) = harness.events.recv().await {
            if matches!(&event, HandlerEvent::Progress(line) if line.contains("created")) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, stop);
    assert!(
        matches!(&outcome, Outcome::Release(reason) if reason.contains("archived")),
        "{outcome:?}"
    );
    assert_eq!(fake.lock().archived, vec!["codesess_1".to_string()]);
}

#[tokio::test]
async fn with_leave_running_a_stopped_run_names_the_live_session_for_the_next_claim() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let mut config = config(&fake);
    config.on_stop = StopPolicy::LeaveRunning;
    let harness = harness(None);
    let cancel = harness.cancel.clone();
    let client = client(&config);
    let run = run_with_client(&config, harness.context, &client);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, stop);
    assert!(
        matches!(&outcome, Outcome::Release(reason) if reason.contains("codesess_1 left running") && reason.contains("agh-run:run-1")),
        "{outcome:?}"
    );
    assert!(fake.lock().archived.is_empty());
}

#[tokio::test]
async fn the_time_limit_fails_the_run_and_archives_the_session() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(
        json!({"status": "active", "usage": {"costUsd": 0.1}}),
    )];
    let config = config(&fake);
    let harness = harness(Some(Duration::from_millis(200)));
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    match outcome {
        Outcome::Fail { error, metadata } => {
            assert!(error.contains("time limit"), "{error}");
            let metadata = metadata.expect("metadata");
            assert_eq!(metadata["archived"], true);
            assert_eq!(metadata["usage"]["cost_usd"], 0.1);
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(fake.lock().archived, vec!["codesess_1".to_string()]);
}

#[tokio::test]
async fn a_session_error_fails_the_run() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "active"})).with_events(vec![
        json!({"event": "session_error", "payload": {"error": "sandbox crashed"}}),
    ])];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("sandbox crashed")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_session_stuck_provisioning_fails_after_the_provisioning_timeout() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "creating"}))];
    let mut config = config(&fake);
    config.provisioning_timeout_seconds = 0.1;
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("still creating")),
        "{outcome:?}"
    );
    assert_eq!(fake.lock().archived, vec!["codesess_1".to_string()]);
}

#[tokio::test]
async fn a_paused_session_that_can_be_woken_is_resumed_and_then_followed_to_the_end() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::detail(
            json!({"status": "paused", "bucket": "paused", "wakeAvailable": true, "runtimeAvailable": false}),
        ),
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "session_complete"})]),
    ];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    result(&outcome);
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_1/resume"), 1);
}

#[tokio::test]
async fn a_session_recorded_in_the_run_metadata_is_adopted_first() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_recorded",
        vec![
            Step::detail(json!({"status": "active"}))
                .with_events(vec![json!({"event": "session_complete"})]),
        ],
    );
    let config = config(&fake);
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": "t"},
        "run": {"id": "run-1", "metadata": {"coder_session_id": "codesess_recorded"}},
    }))
    .expect("claim");
    let mut harness = harness(None);
    harness.context.document = Arc::new(TaskDocument::new(claim, None, None));
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert_eq!(result(&outcome)["coder_session_id"], "codesess_recorded");
    assert_eq!(fake.count("POST", "/api/hub/session"), 0);
    assert_eq!(fake.count("GET", "/api/hub/sessions"), 0);
}

#[tokio::test]
async fn an_archived_session_of_the_run_is_not_adopted_and_a_new_one_is_created() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_done",
        vec![Step::detail(
            json!({"status": "archived", "bucket": "history", "tags": ["agh-run:run-1"]}),
        )],
    );
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "session_complete"})]),
    ];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert_eq!(result(&outcome)["coder_session_id"], "codesess_1");
}

#[tokio::test]
async fn a_new_session_not_yet_readable_is_waited_for_rather_than_failed() {
    let fake = FakeAgentuity::start().await;
    fake.can(
        "GET",
        "/api/hub/session/codesess_1",
        404,
        vec![],
        r#"{"code":"CODER_SESSION_NOT_FOUND"}"#,
    );
    fake.lock().on_create = vec![
        Step::detail(json!({"status": "active"}))
            .with_events(vec![json!({"event": "session_complete"})]),
    ];
    let config = config(&fake);
    let harness = harness(None);
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    assert_eq!(result(&outcome)["coder_session_id"], "codesess_1");
}

#[tokio::test]
async fn a_session_that_disappears_while_followed_fails_the_run() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::detail(json!({"status": "active"}))];
    let config = config(&fake);
    let harness = harness(None);
    let client = client(&config);
    let run = run_with_client(&config, harness.context, &client);
    let remove = async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        fake.can(
            "GET",
            "/api/hub/session/codesess_1",
            410,
            vec![],
            "Session has shut down",
        );
    };
    let (outcome, ()) = tokio::join!(run, remove);
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("disappeared")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refused_key_fails_the_run_and_a_hub_that_keeps_failing_gives_it_back() {
    let fake = FakeAgentuity::start().await;
    fake.can(
        "GET",
        "/api/hub/sessions",
        401,
        vec![],
        r#"{"message":"bad key"}"#,
    );
    let config = config(&fake);
    let first = harness(None);
    let outcome = run_with_client(&config, first.context, &client(&config)).await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("bad key")),
        "{outcome:?}"
    );
    for _ in 0..3 {
        fake.can("POST", "/api/hub/session", 503, vec![], "restarting");
    }
    let second = harness(None);
    let outcome = run_with_client(&config, second.context, &client(&config)).await;
    assert!(
        matches!(&outcome, Outcome::Release(reason) if reason.contains("kept failing")),
        "{outcome:?}"
    );
    assert_eq!(fake.count("GET", "/api/hub/sessions"), 1 + 4);
}

#[test]
fn the_config_rejects_unknown_keys_and_never_prints_the_key_or_env_values() {
    let parsed: Result<CoderConfig, _> =
        serde_json::from_value(json!({"key": "k", "pol_seconds": 3}));
    assert!(parsed.is_err());
    let config: CoderConfig = serde_json::from_value(json!({
        "key": "secret-do-not-print",
        "env": {"GITHUB_TOKEN": "ghp-do-not-print"},
        "workflow_mode": "loop",
    }))
    .expect("config");
    let text = format!("{config:?}");
    assert!(!text.contains("do-not-print"), "{text}");
    assert!(config.problems("handlers[0].coder").is_empty());
    let bad = CoderConfig {
        workflow_mode: "yolo".into(),
        poll_seconds: 0.0,
        ..CoderConfig::default()
    };
    let problems = bad.problems("handlers[0].coder");
    assert!(
        problems.iter().any(|p| p.contains("workflow_mode")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("poll_seconds")),
        "{problems:?}"
    );
}

/// The history reads of each poll: a read without `beforeId` starts a poll; the reads with it
/// that follow page back within the same poll.
fn history_reads_per_poll(fake: &FakeAgentuity, id: &str) -> Vec<usize> {
    let mut polls: Vec<usize> = Vec::new();
    for read in fake.requests("GET", &format!("/api/hub/session/{id}/events/history")) {
        match polls.last_mut() {
            Some(reads) if read.query.contains("beforeId") => *reads += 1,
            _ => polls.push(1),
        }
    }
    polls
}

/// Events for one step of a script: `count` tool calls, then whatever `last` is.
fn busy_events(count: usize, last: Option<Value>) -> Vec<Value> {
    let mut events: Vec<Value> = (0..count)
        .map(|_| json!({"event": "tool_execution_start", "agent": "lead"}))
        .collect();
    events.extend(last);
    events
}

#[tokio::test]
async fn a_hub_that_ignores_before_id_does_not_make_a_poll_page_back_forever() {
    let fake = FakeAgentuity::start().await;
    fake.lock().ignore_before_id = true;
    fake.lock().on_create = vec![
        Step::active().with_events(busy_events(3, None)),
        // Far more new events than a page holds arrive between two polls.
        Step::active().with_events(busy_events(150, None)),
        Step::active().with_events(busy_events(30, Some(json!({"event": "session_complete"})))),
    ];
    let mut config = config(&fake);
    config.event_page_size = 20;
    let harness = harness(None);
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        run_with_client(&config, harness.context, &client(&config)),
    )
    .await
    .expect("the run finishes although every page back brings the same page");
    assert_eq!(result(&outcome)["status"], "session_complete");
    let polls = history_reads_per_poll(&fake, "codesess_1");
    assert!(
        polls.iter().all(|&reads| reads <= 2),
        "a page that did not move back ends the poll's reading: {polls:?}"
    );
}

#[tokio::test]
async fn a_poll_pages_back_through_at_most_ten_pages_of_new_events() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![
        Step::active().with_events(busy_events(3, None)),
        Step::active().with_events(busy_events(400, None)),
        Step::active().with_events(vec![json!({"event": "session_complete"})]),
    ];
    let mut config = config(&fake);
    config.event_page_size = 10;
    let harness = harness(None);
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        run_with_client(&config, harness.context, &client(&config)),
    )
    .await
    .expect("the run finishes");
    assert_eq!(result(&outcome)["status"], "session_complete");
    let polls = history_reads_per_poll(&fake, "codesess_1");
    assert_eq!(
        polls.iter().max(),
        Some(&10),
        "40 pages of new events are read at most 10 pages a poll: {polls:?}"
    );
}

/// A context whose run metadata names `session` as the run's coder session.
fn remembering(session: &str) -> Harness {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "title": "t"},
        "run": {"id": "run-1", "metadata": {"coder_session_id": session}},
    }))
    .expect("claim");
    let mut harness = harness(None);
    harness.context.document = Arc::new(TaskDocument::new(claim, None, None));
    harness
}

fn health_record() -> HandlerHealth {
    let health = HandlerHealth::default();
    health.configure([("coder", true)]);
    health
}

#[tokio::test]
async fn a_403_on_one_sessions_call_fails_nothing_but_its_run_and_leaves_the_handler_healthy() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_theirs", vec![Step::active()]);
    let denied = r#"{"message":"not your session"}"#;
    fake.can(
        "GET",
        "/api/hub/session/codesess_theirs",
        403,
        vec![],
        denied,
    );
    let config = config(&fake);
    let health = health_record();
    let outcome = run_with_health(
        &config,
        remembering("codesess_theirs").context,
        &client(&config),
        &health.reporter("coder"),
    )
    .await;
    assert!(
        matches!(&outcome, Outcome::Fail { error, .. } if error.contains("403")),
        "{outcome:?}"
    );
    assert!(health.unhealthy().is_empty(), "{:?}", health.unhealthy());

    // The last call of a stopped run is the archive: its 403 is not the key's either.
    fake.lock().on_create = vec![Step::active()];
    fake.answer_always("POST", "/api/hub/session/codesess_1/archive", 403, denied);
    let mut stopped = harness(None);
    let cancel = stopped.cancel.clone();
    let client = client(&config);
    let reporter = health.reporter("coder");
    let run = run_with_health(&config, stopped.context, &client, &reporter);
    let stop = async {
        while let Some(event) = stopped.events.recv().await {
            if matches!(&event, HandlerEvent::Progress(line) if line.contains("created")) {
                break;
            }
        }
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, stop);
    assert!(matches!(&outcome, Outcome::Release(_)), "{outcome:?}");
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_1/archive"), 1);
    assert!(health.unhealthy().is_empty(), "{:?}", health.unhealthy());
}

#[tokio::test]
async fn a_401_on_a_session_read_or_a_403_on_listing_marks_the_handler_unhealthy() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_mine", vec![Step::active()]);
    fake.refuse_key("GET", "/api/hub/session/codesess_mine");
    let config = config(&fake);
    let health = health_record();
    let outcome = run_with_health(
        &config,
        remembering("codesess_mine").context,
        &client(&config),
        &health.reporter("coder"),
    )
    .await;
    assert!(matches!(&outcome, Outcome::Fail { .. }), "{outcome:?}");
    let unhealthy = health.unhealthy();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:?}");
    assert!(
        unhealthy[0]
            .reason
            .starts_with("Agentuity refused the key (401)"),
        "{unhealthy:?}"
    );

    let health = health_record();
    fake.can(
        "GET",
        "/api/hub/sessions",
        403,
        vec![],
        r#"{"message":"forbidden"}"#,
    );
    let outcome = run_with_health(
        &config,
        harness(None).context,
        &client(&config),
        &health.reporter("coder"),
    )
    .await;
    assert!(matches!(&outcome, Outcome::Fail { .. }), "{outcome:?}");
    let unhealthy = health.unhealthy();
    assert!(
        unhealthy.len() == 1
            && unhealthy[0]
                .reason
                .starts_with("Agentuity denied the key access (403)"),
        "{unhealthy:?}"
    );
}

/// A session that completes on its second read with no summary of its own; its last task result
/// is the answer known before the final reads.
fn completing_with_a_task_result() -> Vec<Step> {
    vec![
        Step::detail(json!({"status": "active",
            "tasks": [{"taskId": "t1", "agent": "lead", "status": "running"}]})),
        Step::detail(json!({"status": "active",
            "tasks": [{"taskId": "t1", "agent": "lead", "status": "completed", "result": "Fixed it in auth.rs."}]}))
        .with_usage(0.25, 900, 100, 0)
        .with_events(vec![json!({"event": "session_complete"})]),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_finish_whose_final_reads_stall_reports_within_its_budget_with_the_summary_known() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = completing_with_a_task_result();
    // The two polls' reads are answered; everything read after the session completed stalls.
    fake.hold_after("GET", "/api/hub/session/codesess_1", 2);
    fake.hold_after("GET", "/api/hub/session/codesess_1/replay", 0);
    let config = config(&fake);
    let time_limit = Duration::from_secs(8);
    let harness = harness(Some(time_limit));
    let started = tokio::time::Instant::now();
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let took = started.elapsed();
    assert!(
        took <= time_limit,
        "finishing is bounded by the time left to the deadline: {took:?}"
    );
    let result = result(&outcome);
    assert_eq!(result["summary"], "Fixed it in auth.rs.");
    assert_eq!(result["usage"]["cost_usd"], 0.25);
    assert_eq!(result["archived"], true);
    assert_eq!(fake.count("GET", "/api/hub/session/codesess_1/replay"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_while_finishing_still_reports_the_completion_it_decided() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = completing_with_a_task_result();
    fake.hold_after("GET", "/api/hub/session/codesess_1", 2);
    fake.hold_after("GET", "/api/hub/session/codesess_1/replay", 0);
    let mut config = config(&fake);
    config.progress_interval_seconds = 3600.0;
    let mut harness = harness(None);
    let cancel = harness.cancel.clone();
    let client = client(&config);
    let run = run_with_client(&config, harness.context, &client);
    let stop = async {
        // The worker's time limit arrives while the final reads stall.
        while fake.count("GET", "/api/hub/session/codesess_1/replay") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        tokio::time::Instant::now()
    };
    let (outcome, cancelled_at) = tokio::join!(run, stop);
    let after_cancel = cancelled_at.elapsed();
    assert!(
        after_cancel < Duration::from_secs(1),
        "the outcome comes back at once: {after_cancel:?}"
    );
    let result = result(&outcome);
    assert_eq!(result["summary"], "Fixed it in auth.rs.");
    assert_eq!(result["archived"], true);
    let all = progress_lines(&mut harness.events).join("\n");
    assert!(
        all.contains("session complete"),
        "the last milestones still go out: {all}"
    );
}

#[tokio::test]
async fn an_archive_the_hub_refuses_is_reported_as_not_archived() {
    let error = r#"{"message":"internal error"}"#;
    let archive = "/api/hub/session/codesess_1/archive";

    let completed = FakeAgentuity::start().await;
    completed.answer_always("POST", archive, 500, error);
    completed.lock().on_create =
        vec![Step::active().with_events(vec![json!({"event": "session_complete"})])];
    let settings = config(&completed);
    let outcome = run_with_client(&settings, harness(None).context, &client(&settings)).await;
    assert_eq!(result(&outcome)["archived"], false, "{outcome:?}");
    assert_eq!(completed.count("POST", archive), 1);

    let timed_out = FakeAgentuity::start().await;
    timed_out.answer_always("POST", archive, 500, error);
    timed_out.lock().on_create = vec![Step::active()];
    let settings = config(&timed_out);
    let limited = harness(Some(Duration::from_millis(200)));
    let outcome = run_with_client(&settings, limited.context, &client(&settings)).await;
    match &outcome {
        Outcome::Fail { error, metadata } => {
            assert!(error.contains("time limit"), "{error}");
            assert!(error.contains("archiving the session failed"), "{error}");
            assert!(!error.contains("was archived"), "{error}");
            assert_eq!(metadata.as_ref().expect("metadata")["archived"], false);
        }
        other => panic!("expected a failure, got {other:?}"),
    }

    let stopped = FakeAgentuity::start().await;
    stopped.answer_always("POST", archive, 500, error);
    stopped.lock().on_create = vec![Step::active()];
    let config = config(&stopped);
    let mut harness = harness(None);
    let cancel = harness.cancel.clone();
    let client = client(&config);
    let run = run_with_client(&config, harness.context, &client);
    let stop = async {
        while let Some(event) = harness.events.recv().await {
            if matches!(&event, HandlerEvent::Progress(line) if line.contains("created")) {
                break;
            }
        }
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, stop);
    match &outcome {
        Outcome::Release(reason) => {
            assert!(
                reason.contains("archiving coder session codesess_1 failed"),
                "{reason}"
            );
            assert!(!reason.contains("was archived"), "{reason}");
        }
        other => panic!("expected a release, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn at_the_time_limit_the_archive_goes_first_and_the_stop_fits_in_the_cancel_grace() {
    let fake = FakeAgentuity::start().await;
    fake.lock().on_create = vec![Step::active().with_usage(0.5, 10, 10, 0)];
    // The archive never answers.
    fake.hold_after("POST", "/api/hub/session/codesess_1/archive", 0);
    let mut config = config(&fake);
    config.poll_seconds = 0.5;
    let time_limit = Duration::from_secs(2);
    let harness = harness(Some(time_limit));
    let started = tokio::time::Instant::now();
    let outcome = run_with_client(&config, harness.context, &client(&config)).await;
    let stopping = started.elapsed() - time_limit;
    assert!(
        stopping <= Duration::from_secs(8),
        "the stop fits in the worker's 10 s grace with room to report: {stopping:?}"
    );
    match &outcome {
        Outcome::Fail { error, metadata } => {
            assert!(error.contains("time limit"), "{error}");
            assert!(!error.contains("was archived"), "{error}");
            let metadata = metadata.as_ref().expect("metadata");
            assert_eq!(metadata["archived"], false);
            assert_eq!(metadata["usage"]["cost_usd"], 0.5, "the last poll's usage");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let seen = fake.seen();
    let archive = seen
        .iter()
        .position(|s| s.method == "POST" && s.path.ends_with("/archive"))
        .expect("an archive");
    assert!(
        seen[archive - 1].path.ends_with("/events/history"),
        "the stop archives before it reads anything: {:?}",
        &seen[archive - 1]
    );
}
