//! The `agh-worker` binary's one-shot commands against an in-process simulator, over TCP and a
//! Unix socket: JSON answers, the JSON error object and the exit code of every error class.

mod support;

use std::process::Stdio;

use agh_worker::dev::sim::{
    Fault, FaultKind, MessageSpec, Route, SessionInfo, SessionState, TaskSpec,
};
use serde_json::{Value, json};
use support::client_rig::{Rig, Transport, short_tempdir};
use tempfile::TempDir;

/// What one run of the binary did.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Stdout as JSON (one-shots print JSON when stdout is not a terminal).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }

    fn succeeded(&self) -> Value {
        assert_eq!(self.code, 0, "{self:#?}");
        self.json()
    }

    /// Asserts the exit code and the JSON error object; answers that object.
    fn failed(&self, code: i32, kind: &str) -> Value {
        assert_eq!(self.code, code, "{self:#?}");
        let error = self.json()["error"].clone();
        assert_eq!(error["kind"], json!(kind), "{self:#?}");
        assert!(
            self.stderr.contains("error:"),
            "a line on stderr too: {self:#?}"
        );
        error
    }
}

/// Runs the binary with a clean environment: no `AGH_*`/`AGH_WORKER__*`/`RUST_LOG`, `HOME` in a
/// temporary directory so no real configuration is read.
async fn agh_worker(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let home = TempDir::new().expect("home");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agh-worker"));
    command
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.expect("the binary runs");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs a one-shot as `session` against the rig's endpoint.
async fn as_session(rig: &Rig, session: &SessionInfo, args: &[&str]) -> Outcome {
    let endpoint = rig.endpoint_arg();
    let mut full = vec![
        "--endpoint",
        endpoint.as_str(),
        "--session-id",
        session.session_id.as_str(),
        "--agent",
        session.agent_name.as_str(),
    ];
    full.extend_from_slice(args);
    agh_worker(&full, &[]).await
}

async fn as_worker(rig: &Rig, args: &[&str]) -> Outcome {
    as_session(rig, &rig.worker(), args).await
}

async fn claim_run(rig: &Rig) -> String {
    let run = rig.sim.enqueue_task(TaskSpec::titled("cli")).run_id;
    let answer = as_worker(rig, &["claim"]).await.succeeded();
    assert_eq!(answer["claim"]["run"]["id"], json!(run));
    run
}

// ---- answers ------------------------------------------------------------------------------------

async fn me_prints_json_naming_the_session(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    let me = as_worker(&rig, &["me"]).await.succeeded();
    assert_eq!(me["self"]["session_id"], json!(worker.session_id));
    assert_eq!(me["self"]["agent_name"], json!("worker"));
    assert_eq!(me["limits"]["max_children"], json!(5));
}

async fn the_identity_can_come_from_agh_session_id_and_agh_agent(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    let endpoint = rig.endpoint_arg();
    let me = agh_worker(
        &["--endpoint", &endpoint, "me"],
        &[
            ("AGH_SESSION_ID", &worker.session_id),
            ("AGH_AGENT", "worker"),
        ],
    )
    .await
    .succeeded();
    assert_eq!(me["self"]["session_id"], json!(worker.session_id));
}

async fn claim_then_complete_finishes_the_run_with_the_given_result(transport: Transport) {
    let rig = Rig::start(transport).await;
    let run = claim_run(&rig).await;
    let done = as_worker(&rig, &["complete", &run, "--result", r#"{"ok":true}"#])
        .await
        .succeeded();
    assert_eq!(done["lease"]["run_id"], json!(run));
    assert_eq!(done["lease"]["status"], json!("completed"));
    let stored = rig.sim.run(&run).expect("run");
    assert_eq!(stored.status, "completed");
    assert_eq!(stored.result, Some(json!({"ok": true})));
}

async fn task_run_prints_the_daemons_record_of_a_run(transport: Transport) {
    let rig = Rig::start(transport).await;
    let run = claim_run(&rig).await;
    let record = as_worker(&rig, &["task-run", &run]).await.succeeded();
    assert_eq!(record["run"]["run"]["id"], json!(run));
    assert_eq!(record["run"]["run"]["status"], json!("claimed"));
    assert_eq!(
        record["run"]["session"]["session_id"],
        json!(rig.worker().session_id)
    );
    as_worker(&rig, &["release", &run]).await.succeeded();
    let record = as_worker(&rig, &["task-run", &run]).await.succeeded();
    assert_eq!(record["run"]["run"]["status"], json!("queued"));
    as_worker(&rig, &["task-run", "run-0123456789abcdef"])
        .await
        .failed(44, "not_found");
}

async fn claim_with_nothing_queued_prints_a_null_claim_and_exits_0(transport: Transport) {
    let rig = Rig::start(transport).await;
    let answer = as_worker(&rig, &["claim"]).await.succeeded();
    assert_eq!(answer["claim"], Value::Null);
    assert!(answer["reason"].is_string(), "{answer}");
}

async fn heartbeat_fail_and_release_print_the_lease(transport: Transport) {
    let rig = Rig::start(transport).await;
    let run = claim_run(&rig).await;
    let beat = as_worker(&rig, &["heartbeat", &run, "--lease-seconds", "600"])
        .await
        .succeeded();
    assert_eq!(beat["lease"]["status"], json!("claimed"));
    let released = as_worker(&rig, &["release", &run, "--reason", "handoff"])
        .await
        .succeeded();
    assert_eq!(released["lease"]["status"], json!("queued"));
    let again = as_worker(&rig, &["claim"]).await.succeeded();
    assert_eq!(
        again["claim"]["run"]["id"],
        json!(run),
        "the released run comes back"
    );
    let failed = as_worker(
        &rig,
        &[
            "fail",
            &run,
            "--error",
            "broke",
            "--metadata",
            r#"{"exit":3}"#,
        ],
    )
    .await
    .succeeded();
    assert_eq!(failed["lease"]["status"], json!("failed"));
    assert_eq!(
        rig.sim.run(&run).expect("run").error.as_deref(),
        Some("broke")
    );
}

async fn the_read_one_shots_print_their_answers(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let context = as_session(&rig, &builder, &["context"]).await.succeeded();
    assert_eq!(context["self"]["session_id"], json!(builder.session_id));
    let channels = as_session(&rig, &builder, &["channels"]).await.succeeded();
    assert_eq!(channels["channels"][0]["id"], json!("builders"));
    let coordinator = as_worker(&rig, &["coordinator-config"]).await.succeeded();
    assert_eq!(
        coordinator["coordinator"]["default_ttl_seconds"],
        json!(7200)
    );
    let soul = as_worker(&rig, &["soul"]).await.succeeded();
    assert_eq!(soul["validation_status"], json!("missing"));
}

async fn soul_validate_reads_the_file_and_prints_the_verdict(transport: Transport) {
    let rig = Rig::start(transport).await;
    let dir = short_tempdir();
    let path = dir.path().join("SOUL.md");
    std::fs::write(&path, "# Worker\nCareful.").expect("write soul");
    let path = path.to_string_lossy().into_owned();
    let valid = as_worker(&rig, &["soul", "validate", "--file", &path])
        .await
        .succeeded();
    assert_eq!(valid["validation_status"], json!("valid"));
    assert_eq!(valid["body"], json!("# Worker\nCareful."));
    let missing = as_worker(
        &rig,
        &["soul", "validate", "--file", "/nonexistent/SOUL.md"],
    )
    .await;
    let error = missing.failed(2, "usage");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/SOUL.md")),
        "{error}"
    );
}

async fn an_invalid_soul_is_printed_and_exits_30(transport: Transport) {
    let rig = Rig::start(transport).await;
    let dir = short_tempdir();
    let path = dir.path().join("SOUL.md");
    std::fs::write(&path, "INVALID soul").expect("write soul");
    let path = path.to_string_lossy().into_owned();
    let outcome = as_worker(&rig, &["soul", "validate", "--file", &path]).await;
    assert_eq!(outcome.code, 30, "{outcome:#?}");
    // Stdout is the soul object alone (one JSON document), with its findings.
    let soul = outcome.json();
    assert_eq!(soul["validation_status"], json!("invalid"));
    assert!(soul["diagnostics"][0]["message"].is_string(), "{soul}");
    assert!(
        outcome.stderr.contains("SOUL.md is invalid"),
        "{outcome:#?}"
    );
    rig.sim.set_soul("worker", Some("INVALID current".into()));
    let current = as_worker(&rig, &["soul"]).await;
    assert_eq!(current.code, 30, "{current:#?}");
    assert_eq!(current.json()["valid"], json!(false));
}

async fn send_recv_and_reply_carry_messages_between_sessions(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let reviewer = rig.session_on("reviewer", "builders");
    let sent = as_session(
        &rig,
        &builder,
        &[
            "send",
            "builders",
            "--text",
            "progress",
            "--task-id",
            "task-1",
            "--run-id",
            "run-1",
        ],
    )
    .await
    .succeeded();
    let id = sent["message"]["message_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        sent["message"]["metadata"]["correlation_id"],
        json!("run-1")
    );
    let inbox = as_session(&rig, &reviewer, &["recv", "builders", "--limit", "5"])
        .await
        .succeeded();
    assert_eq!(inbox["messages"][0]["message_id"], json!(id));
    assert_eq!(inbox["messages"][0]["body"]["text"], json!("progress"));
    let replied = as_session(&rig, &reviewer, &["reply", &id, "--text", "ack"])
        .await
        .succeeded();
    assert_eq!(replied["message"]["to_session_id"], json!(builder.peer_id));
    assert_eq!(
        replied["message"]["metadata"]["message_kind"],
        json!("reply")
    );
}

async fn spawn_prints_the_child_and_its_lineage(transport: Transport) {
    let rig = Rig::start(transport).await;
    let spawned = as_worker(
        &rig,
        &[
            "spawn",
            "--agent-name",
            "coder",
            "--ttl",
            "60",
            "--name",
            "helper",
        ],
    )
    .await
    .succeeded();
    assert_eq!(spawned["spawn"]["lineage"]["spawn_depth"], json!(1));
    assert_eq!(spawned["spawn"]["session"]["agent_name"], json!("coder"));
    assert_eq!(spawned["spawn"]["session"]["type"], json!("spawned"));
    assert_eq!(
        spawned["spawn"]["lineage"]["auto_stop_on_parent"],
        json!(true)
    );
    let kept = as_worker(
        &rig,
        &[
            "spawn",
            "--agent-name",
            "coder",
            "--ttl",
            "60",
            "--keep-on-parent-stop",
        ],
    )
    .await
    .succeeded();
    assert_eq!(
        kept["spawn"]["lineage"]["auto_stop_on_parent"],
        json!(false)
    );
    let error = as_worker(
        &rig,
        &[
            "spawn",
            "--agent-name",
            "coder",
            "--ttl",
            "60",
            "--permissions",
            "tools",
        ],
    )
    .await
    .failed(2, "usage");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("--permissions")),
        "{error}"
    );
}

// ---- exit codes per error class -----------------------------------------------------------------

async fn a_stopped_session_exits_11_with_the_json_error_object(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    rig.sim
        .set_session_state(&worker.session_id, SessionState::Stopped);
    let error = as_worker(&rig, &["me"]).await.failed(11, "identity_stale");
    assert_eq!(error["status"], json!(401));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("not active")),
        "{error}"
    );
    assert_eq!(error["diagnostic"]["code"], json!("identity_stale"));
}

async fn a_missing_agent_header_exits_10(transport: Transport) {
    let rig = Rig::start(transport).await;
    let endpoint = rig.endpoint_arg();
    let worker = rig.worker();
    // An agent of another name reaches the daemon and is refused as a mismatch.
    let outcome = agh_worker(
        &[
            "--endpoint",
            &endpoint,
            "--session-id",
            &worker.session_id,
            "--agent",
            "reviewer",
            "me",
        ],
        &[],
    )
    .await;
    outcome.failed(10, "identity_mismatch");
}

async fn completing_an_unknown_run_exits_20(transport: Transport) {
    let rig = Rig::start(transport).await;
    let error = as_worker(
        &rig,
        &["complete", "run-0123456789abcdef", "--result", "{}"],
    )
    .await
    .failed(20, "no_active_lease");
    assert_eq!(error["status"], json!(409));
}

async fn a_second_claim_while_holding_a_lease_exits_21(transport: Transport) {
    let rig = Rig::start(transport).await;
    claim_run(&rig).await;
    rig.sim.enqueue_task(TaskSpec::titled("second"));
    as_worker(&rig, &["claim"])
        .await
        .failed(21, "lease_already_held");
}

async fn a_result_that_is_not_json_exits_2_naming_the_flag(transport: Transport) {
    let rig = Rig::start(transport).await;
    let run = claim_run(&rig).await;
    let outcome = as_worker(&rig, &["complete", &run, "--result", "not json"]).await;
    let error = outcome.failed(2, "usage");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("--result")),
        "{error}"
    );
    assert!(outcome.stderr.contains("--result"), "{outcome:#?}");
    assert_eq!(rig.sim.run(&run).expect("run").status, "claimed");
}

async fn a_blank_failure_error_exits_30(transport: Transport) {
    let rig = Rig::start(transport).await;
    let run = claim_run(&rig).await;
    let error = as_worker(&rig, &["fail", &run, "--error", "  "])
        .await
        .failed(30, "validation");
    assert_eq!(error["status"], json!(422));
}

async fn a_refused_spawn_exits_40(transport: Transport) {
    let rig = Rig::start(transport).await;
    as_worker(&rig, &["spawn", "--agent-name", "coder", "--ttl", "0"])
        .await
        .failed(40, "spawn_validation");
}

async fn sending_on_another_channel_exits_44(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    as_session(
        &rig,
        &builder,
        &[
            "send",
            "reviewers",
            "--text",
            "x",
            "--task-id",
            "t",
            "--run-id",
            "r",
        ],
    )
    .await
    .failed(44, "not_found");
}

async fn a_garbled_answer_exits_76(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim
        .inject_fault(Fault::new(Route::ClaimNext, FaultKind::Garbage, 1));
    as_worker(&rig, &["claim"])
        .await
        .failed(76, "malformed_body");
}

async fn a_server_error_exits_69_after_the_read_budget(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim.inject_fault(Fault::new(
        Route::Me,
        FaultKind::Status {
            status: 503,
            error: "down".into(),
        },
        100,
    ));
    as_worker(&rig, &["--set", "retry.read_budget_ms=0", "me"])
        .await
        .failed(69, "service_unavailable");
}

async fn the_json_flag_prints_the_error_object_too(transport: Transport) {
    let rig = Rig::start(transport).await;
    let error = as_worker(&rig, &["--json", "heartbeat", "run-0123456789abcdef"])
        .await
        .failed(20, "no_active_lease");
    assert_eq!(error["call"], json!("heartbeat"));
    assert_eq!(error["retryable"], json!(false));
}

async fn a_waiting_claim_returns_the_run_enqueued_while_it_waits(transport: Transport) {
    let rig = Rig::start(transport).await;
    let endpoint = rig.endpoint_arg();
    let worker = rig.worker();
    let args = [
        "--endpoint".to_owned(),
        endpoint,
        "--session-id".to_owned(),
        worker.session_id.clone(),
        "--agent".to_owned(),
        "worker".to_owned(),
        "claim".to_owned(),
        "--wait".to_owned(),
    ];
    let child = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agh_worker(&args, &[]).await
    });
    rig.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let run = rig.sim.enqueue_task(TaskSpec::titled("late")).run_id;
    let answer = child.await.expect("join").succeeded();
    assert_eq!(answer["claim"]["run"]["id"], json!(run));
}

async fn a_waiting_claim_that_reaches_the_deadline_prints_a_null_claim_and_exits_0(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let answer = as_worker(
        &rig,
        &["--set", "agh.long_poll_timeout_ms=300", "claim", "--wait"],
    )
    .await
    .succeeded();
    assert_eq!(answer["claim"], Value::Null);
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deadline")),
        "{answer}"
    );
    let builder = rig.session_on("builder", "builders");
    let inbox = as_session(
        &rig,
        &builder,
        &[
            "--set",
            "agh.long_poll_timeout_ms=300",
            "recv",
            "builders",
            "--wait",
        ],
    )
    .await
    .succeeded();
    assert_eq!(inbox["messages"], json!([]));
}

async fn recv_prints_messages_already_queued(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let id = rig.sim.inject_message(
        &builder.session_id,
        MessageSpec {
            channel: "builders".into(),
            from_peer: "reviewer.sess-peer".into(),
            body: json!({"text": "look"}),
            metadata: Some(json!({
                "task_id": "t", "run_id": "r", "coordination_channel_id": "builders",
                "message_kind": "request", "correlation_id": "c",
            })),
            ..MessageSpec::default()
        },
    );
    let inbox = as_session(&rig, &builder, &["recv", "builders", "--wait"])
        .await
        .succeeded();
    assert_eq!(inbox["messages"][0]["message_id"], json!(id));
}

on_both_transports!(
    me_prints_json_naming_the_session,
    the_identity_can_come_from_agh_session_id_and_agh_agent,
    claim_then_complete_finishes_the_run_with_the_given_result,
    claim_with_nothing_queued_prints_a_null_claim_and_exits_0,
    task_run_prints_the_daemons_record_of_a_run,
    heartbeat_fail_and_release_print_the_lease,
    the_read_one_shots_print_their_answers,
    soul_validate_reads_the_file_and_prints_the_verdict,
    an_invalid_soul_is_printed_and_exits_30,
    send_recv_and_reply_carry_messages_between_sessions,
    spawn_prints_the_child_and_its_lineage,
    a_stopped_session_exits_11_with_the_json_error_object,
    a_missing_agent_header_exits_10,
    completing_an_unknown_run_exits_20,
    a_second_claim_while_holding_a_lease_exits_21,
    a_result_that_is_not_json_exits_2_naming_the_flag,
    a_blank_failure_error_exits_30,
    a_refused_spawn_exits_40,
    sending_on_another_channel_exits_44,
    a_garbled_answer_exits_76,
    a_server_error_exits_69_after_the_read_budget,
    the_json_flag_prints_the_error_object_too,
    a_waiting_claim_returns_the_run_enqueued_while_it_waits,
    recv_prints_messages_already_queued,
    a_waiting_claim_that_reaches_the_deadline_prints_a_null_claim_and_exits_0,
);

// ---- without a simulator ------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_endpoint_exits_69_with_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let outcome = agh_worker(
        &[
            "--endpoint",
            &endpoint,
            "--session-id",
            "sess-0000000000000000",
            "--agent",
            "worker",
            "--set",
            "agh.request_timeout_ms=500",
            // The default connect timeout (2 s) may not exceed the request timeout.
            "--set",
            "agh.connect_timeout_ms=500",
            "--set",
            "retry.read_budget_ms=0",
            "me",
        ],
        &[],
    )
    .await;
    let error = outcome.failed(69, "transport");
    assert_eq!(error["retryable"], json!(true));
    assert!(outcome.stderr.contains("agh.endpoint"), "{outcome:#?}");
}

#[tokio::test]
async fn a_missing_socket_exits_69() {
    let dir = short_tempdir();
    let endpoint = format!("unix:{}", dir.path().join("none.sock").display());
    agh_worker(
        &[
            "--endpoint",
            &endpoint,
            "--session-id",
            "sess-0000000000000000",
            "--agent",
            "worker",
            "--set",
            "retry.read_budget_ms=0",
            "me",
        ],
        &[],
    )
    .await
    .failed(69, "transport");
}

#[tokio::test]
async fn a_misspelt_configuration_key_exits_64_naming_it_and_suggesting_the_right_one() {
    let outcome = agh_worker(
        &[
            "--session-id",
            "sess-0000000000000000",
            "--agent",
            "worker",
            "--set",
            "agh.endpiont=http://127.0.0.1:1",
            "me",
        ],
        &[],
    )
    .await;
    assert_eq!(outcome.code, 64, "{outcome:#?}");
    assert!(outcome.stderr.contains("agh.endpiont"), "{outcome:#?}");
    assert!(outcome.stderr.contains("agh.endpoint"), "{outcome:#?}");
}

#[tokio::test]
async fn a_missing_identity_exits_64_naming_the_variables_to_set() {
    let outcome = agh_worker(&["--endpoint", "http://127.0.0.1:1", "me"], &[]).await;
    assert_eq!(outcome.code, 64, "{outcome:#?}");
    assert!(outcome.stderr.contains("AGH_SESSION_ID"), "{outcome:#?}");
    assert!(outcome.stderr.contains("AGH_AGENT"), "{outcome:#?}");
}

#[tokio::test]
async fn an_unknown_flag_exits_2() {
    let outcome = agh_worker(&["me", "--no-such-flag"], &[]).await;
    assert_eq!(outcome.code, 2, "{outcome:#?}");
}

#[tokio::test]
async fn a_set_without_a_value_exits_2_instead_of_emptying_the_key() {
    let outcome = agh_worker(
        &[
            "--endpoint",
            "http://127.0.0.1:1",
            "--session-id",
            "sess-0000000000000000",
            "--agent",
            "worker",
            "--set",
            "agh.workspace_id",
            "me",
        ],
        &[],
    )
    .await;
    assert_eq!(outcome.code, 2, "{outcome:#?}");
    assert!(outcome.stderr.contains("KEY=VALUE"), "{outcome:#?}");
}
