//! The contract with the official Agentuity SDK: the request bodies this project sends and the
//! answers of the fake Hub its tests use, checked by `tests/contract/agentuity/contract.mjs`
//! against `@agentuity/core`'s own zod schemas and `CoderClient`. It needs `node` and the pinned
//! SDK installed there (`npm ci` in that directory; `.ci/run` does it when node is present);
//! without them it says so in one line and passes, unless `AGH_CONTRACT_REQUIRED=1` (which
//! `.ci/run` sets when it installed the SDK).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use agh_worker::api::types::Claim;
use agh_worker::handler::TaskDocument;
use agh_worker::handler::coder::{CoderConfig, RepoConfig};
use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, Step};

const SESSION: &str = "codesess_contract";

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract/agentuity")
}

/// Whether the contract can run here; when it cannot, why (and a required run fails instead).
fn ready() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let sdk = contract_dir().join("node_modules/@agentuity/core").is_dir();
    let why = match (node, sdk) {
        (true, true) => return true,
        (false, _) => "node is not installed",
        (true, false) => "the SDK is not installed (run `npm ci` in tests/contract/agentuity)",
    };
    if std::env::var("AGH_CONTRACT_REQUIRED").as_deref() == Ok("1") {
        panic!("the SDK contract cannot run: {why}");
    }
    eprintln!("agentuity contract skipped: {why}");
    false
}

/// The bodies of `POST /hub/session` the handler sends, standard and loop, with repositories.
fn session_bodies() -> Vec<Value> {
    let claim: Claim = serde_json::from_value(json!({
        "task": {"id": "task-1", "identifier": "ENG-7", "title": "Fix the login bug", "description": "Users cannot log in."},
        "run": {"id": "run-1", "attempt": 2},
    }))
    .expect("claim");
    let document = TaskDocument::new(claim, None, None);
    let standard = CoderConfig {
        repo_url: Some("https://github.com/acme/app".into()),
        repo_branch: Some("main".into()),
        agent: Some("lead".into()),
        env: [("CI".to_string(), "1".to_string())].into(),
        ..CoderConfig::default()
    };
    let looped = CoderConfig {
        workflow_mode: "loop".into(),
        loop_max_iterations: Some(5),
        workspace_id: Some("ws_1".into()),
        repos: vec![RepoConfig {
            url: Some("https://git.example.com/team/lib".into()),
            clone_url: Some("ssh://git@git.example.com/team/lib.git".into()),
            branch: None,
        }],
        sandbox_execution_timeout: Some("2h".into()),
        ..standard.clone()
    };
    vec![
        standard.session_body(&document),
        looped.session_body(&document),
    ]
}

/// Runs the contract script against a fake Hub with `bodies`.
async fn contract(bodies: Vec<Value>) -> Output {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        SESSION,
        vec![Step::active().with_events(vec![
            json!({"event": "task_start", "agent": "scout", "taskId": "t1"}),
        ])],
    );
    fake.set_loop(
        SESSION,
        json!({"status": "completed", "iteration": 2, "summary": "done"}),
    );
    fake.lock().replay.insert(
        SESSION.into(),
        json!({"sessionId": SESSION, "entriesSource": "session_entries", "entries": [{"type": "message", "content": "Fixed.", "timestamp": 1}]}),
    );
    let broadcaster = {
        let fake = fake.clone();
        tokio::spawn(async move {
            fake.until_streaming(SESSION).await;
            fake.broadcast(SESSION, "session_complete", json!({}));
        })
    };
    let cases = tempfile::NamedTempFile::new().expect("a temporary file");
    let named: Vec<Value> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| json!({"name": format!("session body {i}"), "schema": "CoderCreateSessionRequestSchema", "body": body}))
        .collect();
    std::fs::write(
        cases.path(),
        json!({"bodies": named, "session": SESSION}).to_string(),
    )
    .expect("write the cases");
    let output = tokio::process::Command::new("node")
        .arg("contract.mjs")
        .arg(&fake.url)
        .arg(cases.path())
        .current_dir(contract_dir())
        .output()
        .await
        .expect("node runs");
    broadcaster.abort();
    output
}

#[tokio::test]
async fn the_request_bodies_and_the_fake_hubs_answers_agree_with_the_sdk() {
    if !ready() {
        return;
    }
    let output = contract(session_bodies()).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("agree with @agentuity/core"), "{stdout}");
}

#[tokio::test]
async fn a_request_body_bent_out_of_the_sdks_schema_fails_the_contract() {
    if !ready() {
        return;
    }
    let mut bodies = session_bodies();
    bodies[0]["tags"] = json!("agh-run:run-1");
    bodies[1]["repository"] = json!({"url": "https://github.com/acme/app"});
    let output = contract(bodies).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("session body 0") && stderr.contains("tags"),
        "{stderr}"
    );
    assert!(
        stderr.contains("session body 1") && stderr.contains("repository"),
        "{stderr}"
    );
}
