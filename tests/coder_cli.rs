//! `agh-worker coder …` and `agh-worker agentuity …` against a fake hub: JSON out, exit codes.

mod fake_agentuity;

use fake_agentuity::{FakeAgentuity, Step};
use serde_json::{Value, json};

async fn agh_worker(fake: &FakeAgentuity, args: &[&str]) -> (i32, Value, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agh-worker"))
        .args(["--config", "/nonexistent/agh-worker.toml"])
        .args(args)
        .env_clear()
        .env("AGENTUITY_SDK_KEY", "ag_cli_key")
        .env("AGENTUITY_CODER_URL", &fake.url)
        .env("AGENTUITY_CATALYST_URL", &fake.url)
        .output()
        .await
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        value,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn coder_show_and_sessions_print_the_hub_answer_as_json() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_9",
        vec![Step::detail(
            json!({"status": "active", "tags": ["agh-run:r9"]}),
        )],
    );
    let (code, value, stderr) = agh_worker(&fake, &["coder", "show", "codesess_9"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value["sessionId"], "codesess_9");
    assert_eq!(value["status"], "active");
    let (code, value, stderr) = agh_worker(
        &fake,
        &["coder", "sessions", "--search", "agh-run:r9", "--archived"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value["sessions"][0]["sessionId"], "codesess_9");
    let (code, value, stderr) = agh_worker(&fake, &["coder", "archive", "codesess_9"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value["status"], "archived");
}

#[tokio::test]
async fn a_missing_session_exits_with_not_found_and_names_the_trace_id() {
    let fake = FakeAgentuity::start().await;
    let (code, _, stderr) = agh_worker(&fake, &["coder", "show", "codesess_nope"]).await;
    assert_eq!(code, 44, "{stderr}");
    assert!(stderr.contains("CODER_SESSION_NOT_FOUND"), "{stderr}");
    assert!(stderr.contains("trace-123"), "{stderr}");
    assert!(!stderr.contains("ag_cli_key"), "{stderr}");
}

#[tokio::test]
async fn agentuity_sessions_list_unwraps_the_envelope() {
    let fake = FakeAgentuity::start().await;
    let (code, value, stderr) = agh_worker(&fake, &["agentuity", "sessions", "list"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value[0]["id"], "sess_1");
}
