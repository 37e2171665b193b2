//! `agh-worker coder …` and `agh-worker agentuity …` against a fake hub: the requests made, JSON
//! and table output, exit codes.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, Step};

/// What one run of the binary printed.
struct Ran {
    code: i32,
    json: Value,
    stdout: String,
    stderr: String,
}

async fn run(fake: &FakeAgentuity, args: &[&str], stdin: Option<&str>) -> Ran {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agh-worker"))
        .args(["--config", "/nonexistent/agh-worker.toml"])
        .args(args)
        .env_clear()
        .env("AGENTUITY_SDK_KEY", "ag_cli_key")
        .env("AGENTUITY_CODER_URL", &fake.url)
        .env("AGENTUITY_CATALYST_URL", &fake.url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the binary finishes")
        .expect("the binary's output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Ran {
        code: output.status.code().unwrap_or(-1),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn agh_worker(fake: &FakeAgentuity, args: &[&str]) -> (i32, Value, String) {
    let ran = run(fake, args, None).await;
    (ran.code, ran.json, ran.stderr)
}

/// The requests the fake saw, as `METHOD path?query`, in order.
fn requests(fake: &FakeAgentuity) -> Vec<String> {
    fake.seen()
        .iter()
        .map(|s| match s.query.as_str() {
            "" => format!("{} {}", s.method, s.path),
            query => format!("{} {}?{query}", s.method, s.path),
        })
        .collect()
}

fn canned_json(fake: &FakeAgentuity, method: &'static str, path: &str, body: Value) {
    fake.can(
        method,
        path,
        200,
        vec![("content-type", "application/json".to_string())],
        &body.to_string(),
    );
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

#[tokio::test]
async fn coder_replay_prints_the_transcript_of_the_session() {
    let fake = FakeAgentuity::start().await;
    fake.lock().replay.insert(
        "codesess_9".into(),
        json!({"sessionId": "codesess_9", "entries": [
            {"type": "message", "agent": "lead", "content": "all done"}
        ]}),
    );
    let ran = run(&fake, &["coder", "replay", "codesess_9"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(requests(&fake), ["GET /api/hub/session/codesess_9/replay"]);
    assert_eq!(ran.json["sessionId"], "codesess_9");
    assert_eq!(ran.json["entries"][0]["content"], "all done");
}

#[tokio::test]
async fn coder_participants_sends_the_limit_and_include_disconnected() {
    let fake = FakeAgentuity::start().await;
    canned_json(
        &fake,
        "GET",
        "/api/hub/session/codesess_9/participants",
        json!({"sessionId": "codesess_9", "participants": [
            {"id": "p1", "role": "observer", "transport": "ws", "connectedAt": "2025-01-01T00:00:00Z"}
        ]}),
    );
    let ran = run(
        &fake,
        &[
            "coder",
            "participants",
            "codesess_9",
            "--limit",
            "5",
            "--include-disconnected",
        ],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        requests(&fake),
        ["GET /api/hub/session/codesess_9/participants?limit=5&includeDisconnected=true"]
    );
    assert_eq!(ran.json["participants"][0]["id"], "p1");
    let ran = run(&fake, &["coder", "participants", "codesess_9"], None).await;
    assert_eq!(ran.code, 44, "{}", ran.stderr);
    assert_eq!(
        requests(&fake)[1],
        "GET /api/hub/session/codesess_9/participants",
        "no query without the flags"
    );
}

#[tokio::test]
async fn coder_users_sends_search_and_limit_to_the_hub_and_prints_its_answer() {
    let fake = FakeAgentuity::start().await;
    canned_json(
        &fake,
        "GET",
        "/api/hub/users",
        json!({"users": [
            {"userId": "u1", "displayName": "Jane Roe", "email": "jane@example.com"}
        ], "total": 2, "limit": 1, "offset": 0}),
    );
    let ran = run(
        &fake,
        &["coder", "users", "--search", "Jan", "--limit", "1"],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(requests(&fake), ["GET /api/hub/users?search=Jan&limit=1"]);
    assert_eq!(ran.json["users"][0]["userId"], "u1");
    assert_eq!(ran.json["total"], 2);
}

#[tokio::test]
async fn coder_users_accepts_a_bare_array_of_users_as_the_sdk_does() {
    let fake = FakeAgentuity::start().await;
    fake.lock().users_bare = true;
    let ran = run(&fake, &["coder", "users", "--search", "Jan"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json["users"][0]["displayName"], "Jane Doe");
    assert_eq!(ran.json["total"], 2);
}

#[tokio::test]
async fn coder_agents_commands_call_their_hub_endpoints_and_print_the_answer() {
    let fake = FakeAgentuity::start().await;
    canned_json(
        &fake,
        "GET",
        "/api/hub/agents",
        json!({"agents": [{"id": "ag_1", "slug": "reviewer"}]}),
    );
    canned_json(
        &fake,
        "GET",
        "/api/hub/agents/reviewer",
        json!({"id": "ag_1", "slug": "reviewer", "lifecycle": "draft"}),
    );
    canned_json(
        &fake,
        "POST",
        "/api/hub/agents/reviewer/publish",
        json!({"slug": "reviewer", "latestPublishedVersion": 2}),
    );
    canned_json(
        &fake,
        "POST",
        "/api/hub/agents/reviewer/archive",
        json!({"slug": "reviewer", "lifecycle": "archived"}),
    );
    canned_json(
        &fake,
        "GET",
        "/api/hub/agents/reviewer/versions",
        json!({"versions": [{"version": 2}, {"version": 1}]}),
    );
    let cases: [(&[&str], &str, &str, Value); 5] = [
        (
            &["list"],
            "GET /api/hub/agents",
            "/agents/0/slug",
            json!("reviewer"),
        ),
        (
            &["show", "reviewer"],
            "GET /api/hub/agents/reviewer",
            "/lifecycle",
            json!("draft"),
        ),
        (
            &["publish", "reviewer"],
            "POST /api/hub/agents/reviewer/publish",
            "/latestPublishedVersion",
            json!(2),
        ),
        (
            &["archive", "reviewer"],
            "POST /api/hub/agents/reviewer/archive",
            "/lifecycle",
            json!("archived"),
        ),
        (
            &["versions", "reviewer"],
            "GET /api/hub/agents/reviewer/versions",
            "/versions/1/version",
            json!(1),
        ),
    ];
    for (index, (args, request, pointer, expected)) in cases.into_iter().enumerate() {
        let args: Vec<&str> = ["coder", "agents"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let ran = run(&fake, &args, None).await;
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert_eq!(requests(&fake)[index], request, "{args:?}");
        assert_eq!(
            ran.json.pointer(pointer),
            Some(&expected),
            "{args:?}: {}",
            ran.stdout
        );
    }
    assert_eq!(fake.seen().len(), 5, "one request per command");
}

#[tokio::test]
async fn coder_agents_list_with_archived_asks_the_hub_for_archived_agents_too() {
    let fake = FakeAgentuity::start().await;
    fake.add_agent("reviewer", json!({}));
    fake.add_agent("old-helper", json!({"lifecycle": "archived"}));
    let live = run(&fake, &["coder", "agents", "list"], None).await;
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_eq!(live.json["agents"].as_array().map(Vec::len), Some(1));
    let all = run(&fake, &["coder", "agents", "list", "--archived"], None).await;
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(all.json["agents"].as_array().map(Vec::len), Some(2));
    let queries: Vec<String> = fake.seen().into_iter().map(|s| s.query).collect();
    assert_eq!(queries, ["", "includeArchived=true"]);
}

#[tokio::test]
async fn coder_agents_create_sends_the_object_in_the_file() {
    let fake = FakeAgentuity::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("reviewer.json");
    std::fs::write(
        &file,
        r#"{"slug": "reviewer", "instructions": "Review the diff."}"#,
    )
    .expect("write the definition");
    fake.can(
        "POST",
        "/api/hub/agents",
        201,
        vec![("content-type", "application/json".to_string())],
        r#"{"id": "ag_1", "slug": "reviewer", "lifecycle": "draft"}"#,
    );
    let path = file.to_string_lossy().into_owned();
    let ran = run(&fake, &["coder", "agents", "create", "--file", &path], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let seen = fake.seen();
    assert_eq!(requests(&fake), ["POST /api/hub/agents"]);
    assert_eq!(
        seen[0].body,
        json!({"slug": "reviewer", "instructions": "Review the diff."})
    );
    assert_eq!(ran.json["id"], "ag_1");
}

#[tokio::test]
async fn coder_agents_update_reads_the_object_from_stdin_with_a_dash() {
    let fake = FakeAgentuity::start().await;
    canned_json(
        &fake,
        "PATCH",
        "/api/hub/agents/reviewer",
        json!({"slug": "reviewer", "model": "fast"}),
    );
    let ran = run(
        &fake,
        &["coder", "agents", "update", "reviewer", "--file", "-"],
        Some(r#"{"model": "fast"}"#),
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(requests(&fake), ["PATCH /api/hub/agents/reviewer"]);
    assert_eq!(fake.seen()[0].body, json!({"model": "fast"}));
    assert_eq!(ran.json["model"], "fast");
}

#[tokio::test]
async fn a_missing_or_invalid_agent_file_exits_64_naming_the_file_and_sends_nothing() {
    let fake = FakeAgentuity::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir
        .path()
        .join("nowhere.json")
        .to_string_lossy()
        .into_owned();
    let ran = run(
        &fake,
        &["coder", "agents", "create", "--file", &missing],
        None,
    )
    .await;
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(ran.stderr.contains("nowhere.json"), "{}", ran.stderr);
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"slug\": \"reviewer\",").expect("write");
    let broken = broken.to_string_lossy().into_owned();
    let ran = run(
        &fake,
        &["coder", "agents", "update", "reviewer", "--file", &broken],
        None,
    )
    .await;
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("broken.json") && ran.stderr.contains("valid JSON"),
        "{}",
        ran.stderr
    );
    let ran = run(
        &fake,
        &["coder", "agents", "create", "--file", "-"],
        Some("[]"),
    )
    .await;
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(ran.stderr.contains("stdin"), "{}", ran.stderr);
    assert!(fake.seen().is_empty(), "{:?}", requests(&fake));
}

#[tokio::test]
async fn an_agent_the_hub_does_not_know_exits_with_not_found() {
    let fake = FakeAgentuity::start().await;
    fake.can(
        "GET",
        "/api/hub/agents/ghost",
        404,
        vec![],
        r#"{"error": "agent not found"}"#,
    );
    let ran = run(&fake, &["coder", "agents", "show", "ghost"], None).await;
    assert_eq!(ran.code, 44, "{}", ran.stderr);
    assert!(ran.stderr.contains("agent not found"), "{}", ran.stderr);
    fake.can(
        "POST",
        "/api/hub/agents",
        400,
        vec![],
        r#"{"error": "slug is required"}"#,
    );
    let ran = run(
        &fake,
        &["coder", "agents", "create", "--file", "-"],
        Some("{}"),
    )
    .await;
    assert_eq!(ran.code, 69, "{}", ran.stderr);
    assert!(ran.stderr.contains("slug is required"), "{}", ran.stderr);
}

#[tokio::test]
async fn table_prints_the_most_useful_columns_aligned() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_9",
        vec![Step::detail(json!({
            "status": "active",
            "workflowMode": "loop",
            "label": "agh:a label far too long to fit in its column",
            "lastActivityAt": "2025-01-02T03:04:05Z"
        }))],
    );
    let ran = run(&fake, &["coder", "sessions", "--table"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "ID          STATUS  MODE  LABEL                             UPDATED\n\
         codesess_9  active  loop  agh:a label far too long to fit…  2025-01-02T03:04:05Z\n"
    );
    let ran = run(&fake, &["agentuity", "sessions", "list", "--table"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "ID      TRIGGER  SUCCESS  COST  STARTED\nsess_1  -        -        0.5   -\n"
    );
    canned_json(
        &fake,
        "GET",
        "/api/hub/agents/reviewer/versions",
        json!({"versions": [{"version": 2, "slug": "reviewer", "createdAt": "2025-01-01"}]}),
    );
    let ran = run(
        &fake,
        &["coder", "agents", "versions", "reviewer", "--table"],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines[0], "VERSION  SLUG      CREATED     BY  ID");
    assert_eq!(lines[1], "2        reviewer  2025-01-01  -   -");
}

#[tokio::test]
async fn json_is_printed_off_a_terminal_and_forced_with_json() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_9",
        vec![Step::detail(json!({"status": "active"}))],
    );
    for args in [
        &["coder", "sessions"][..],
        &["coder", "sessions", "--json"],
        &["--json", "coder", "sessions"],
    ] {
        let ran = run(&fake, args, None).await;
        assert_eq!(ran.code, 0, "{args:?}: {}", ran.stderr);
        assert_eq!(
            ran.json["sessions"][0]["sessionId"], "codesess_9",
            "{args:?}: {}",
            ran.stdout
        );
    }
}

#[tokio::test]
async fn json_and_table_together_are_refused_before_any_request() {
    let fake = FakeAgentuity::start().await;
    for args in [
        &["coder", "sessions", "--json", "--table"][..],
        &["--json", "coder", "users", "--table"],
        &["--json", "agentuity", "sessions", "list", "--table"],
        &["--json", "coder", "workspaces", "list", "--table"],
        &["--json", "coder", "skills", "buckets", "list", "--table"],
        &["--json", "coder", "github", "repos", "12345", "--table"],
    ] {
        let ran = run(&fake, args, None).await;
        assert_eq!(ran.code, 2, "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains("--table"), "{args:?}: {}", ran.stderr);
    }
    assert!(fake.seen().is_empty(), "{:?}", requests(&fake));
}

#[tokio::test]
async fn coder_workspaces_create_list_show_and_delete_call_the_hub_workspace_routes() {
    let fake = FakeAgentuity::start().await;
    let created = run(
        &fake,
        &["coder", "workspaces", "create", "--file", "-"],
        Some(r#"{"name": "app", "scope": "org", "repos": [{"url": "https://github.com/acme/app.git"}]}"#),
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(
        fake.seen()[0].body,
        json!({"name": "app", "scope": "org", "repos": [{"url": "https://github.com/acme/app.git"}]})
    );
    let id = created.json["id"]
        .as_str()
        .expect("the workspace's id")
        .to_string();
    assert_eq!(created.json["name"], "app", "unwrapped from {{workspace}}");
    let listed = run(&fake, &["coder", "workspaces", "list"], None).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["workspaces"][0]["id"], id.as_str());
    assert_eq!(listed.json["workspaces"][0]["scope"], "org");
    let shown = run(&fake, &["coder", "workspaces", "show", &id], None).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(
        shown.json["repos"][0]["url"],
        "https://github.com/acme/app.git"
    );
    let deleted = run(&fake, &["coder", "workspaces", "delete", &id], None).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(deleted.json, json!({"ok": true}));
    assert_eq!(
        requests(&fake),
        [
            "POST /api/hub/workspaces".to_string(),
            "GET /api/hub/workspaces".to_string(),
            format!("GET /api/hub/workspaces/{id}"),
            format!("DELETE /api/hub/workspaces/{id}"),
        ]
    );
    let gone = run(&fake, &["coder", "workspaces", "show", &id], None).await;
    assert_eq!(gone.code, 44, "{}", gone.stderr);
    assert!(
        gone.stderr.contains("workspace not found"),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn coder_workspaces_list_table_shows_the_id_coder_workspace_id_takes() {
    let fake = FakeAgentuity::start().await;
    let created = run(
        &fake,
        &["coder", "workspaces", "create", "--file", "-"],
        Some(r#"{"name": "app", "description": "the app and its docs"}"#),
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    let ran = run(&fake, &["coder", "workspaces", "list", "--table"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "ID    NAME  SCOPE  DESCRIPTION           CREATED\n\
         ws_1  app   user   the app and its docs  2026-01-05T10:00:00Z\n"
    );
}

#[tokio::test]
async fn a_workspace_file_that_is_not_an_object_exits_64_and_sends_nothing() {
    let fake = FakeAgentuity::start().await;
    let ran = run(
        &fake,
        &["coder", "workspaces", "create", "--file", "-"],
        Some(r#""app""#),
    )
    .await;
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("stdin") && ran.stderr.contains("a string"),
        "{}",
        ran.stderr
    );
    assert!(fake.seen().is_empty(), "{:?}", requests(&fake));
}

#[tokio::test]
async fn coder_skills_save_list_and_delete_call_the_skills_library() {
    let fake = FakeAgentuity::start().await;
    let body = json!({"repo": "acme/skills", "skillId": "review", "name": "Review", "description": "Reviews diffs"});
    let saved = run(
        &fake,
        &["coder", "skills", "save", "--file", "-"],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    assert_eq!(fake.seen()[0].body, body);
    let id = saved.json["id"]
        .as_str()
        .expect("the saved skill's id")
        .to_string();
    assert_eq!(saved.json["skillId"], "review", "unwrapped from {{skill}}");
    let listed = run(&fake, &["coder", "skills", "list"], None).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["skills"][0]["id"], id.as_str());
    assert_eq!(listed.json["skills"][0]["repo"], "acme/skills");
    let table = run(&fake, &["coder", "skills", "list", "--table"], None).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert_eq!(
        table.stdout,
        format!(
            "ID       NAME    REPO         SKILL ID  SOURCE\n\
             {id}  Review  acme/skills  review    registry\n"
        )
    );
    let deleted = run(&fake, &["coder", "skills", "delete", &id], None).await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(deleted.json, json!({"ok": true}));
    assert_eq!(
        requests(&fake),
        [
            "POST /api/hub/skills/library".to_string(),
            "GET /api/hub/skills/library".to_string(),
            "GET /api/hub/skills/library".to_string(),
            format!("DELETE /api/hub/skills/library/{id}"),
        ]
    );
    let again = run(&fake, &["coder", "skills", "delete", &id], None).await;
    assert_eq!(again.code, 44, "{}", again.stderr);
}

#[tokio::test]
async fn coder_skills_buckets_create_list_and_delete_call_the_skill_bucket_routes() {
    let fake = FakeAgentuity::start().await;
    let saved = run(
        &fake,
        &["coder", "skills", "save", "--file", "-"],
        Some(r#"{"repo": "acme/skills", "skillId": "review", "name": "Review"}"#),
    )
    .await;
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    let skill = saved.json["id"].as_str().expect("skill id").to_string();
    let body = json!({"name": "reviewing", "description": "for reviews", "savedSkillIds": [skill]});
    let created = run(
        &fake,
        &["coder", "skills", "buckets", "create", "--file", "-"],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(fake.seen()[1].body, body);
    let bucket = created.json["id"].as_str().expect("bucket id").to_string();
    assert_eq!(created.json["skillCount"], 1, "unwrapped from {{bucket}}");
    let listed = run(&fake, &["coder", "skills", "buckets", "list"], None).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.json["buckets"][0]["id"], bucket.as_str());
    assert_eq!(listed.json["buckets"][0]["skills"][0]["id"], skill.as_str());
    let deleted = run(
        &fake,
        &["coder", "skills", "buckets", "delete", &bucket],
        None,
    )
    .await;
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    assert_eq!(deleted.json, json!({"ok": true}));
    assert_eq!(
        requests(&fake)[1..],
        [
            "POST /api/hub/skills/buckets".to_string(),
            "GET /api/hub/skills/buckets".to_string(),
            format!("DELETE /api/hub/skills/buckets/{bucket}"),
        ]
    );
    let refused = run(
        &fake,
        &["coder", "skills", "buckets", "create", "--file", "-"],
        Some(r#"{"name": "x", "savedSkillIds": ["skill_nope"]}"#),
    )
    .await;
    assert_eq!(refused.code, 69, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("do not exist"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn coder_github_accounts_and_repos_show_the_clone_urls_coder_repo_url_takes() {
    let fake = FakeAgentuity::start().await;
    let accounts = run(&fake, &["coder", "github", "accounts"], None).await;
    assert_eq!(accounts.code, 0, "{}", accounts.stderr);
    assert_eq!(accounts.json["connected"], true);
    assert_eq!(accounts.json["accounts"][0]["accountId"], "12345");
    let table = run(&fake, &["coder", "github", "accounts", "--table"], None).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert_eq!(
        table.stdout,
        "ID      NAME     TYPE          INSTALLATION\n\
         12345   acme     Organization  5100\n\
         583231  octocat  User          5101\n"
    );
    let repos = run(&fake, &["coder", "github", "repos", "12345"], None).await;
    assert_eq!(repos.code, 0, "{}", repos.stderr);
    assert_eq!(
        repos.json["repositories"][0]["cloneUrl"],
        "https://github.com/acme/app.git"
    );
    assert_eq!(repos.json["totalCount"], 2);
    let table = run(
        &fake,
        &["coder", "github", "repos", "12345", "--table"],
        None,
    )
    .await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert_eq!(
        table.stdout,
        "NAME       CLONE URL                         BRANCH  PRIVATE  ARCHIVED\n\
         acme/app   https://github.com/acme/app.git   main    true     false\n\
         acme/docs  https://github.com/acme/docs.git  main    false    true\n"
    );
    assert_eq!(
        requests(&fake),
        [
            "GET /api/hub/github/accounts",
            "GET /api/hub/github/accounts",
            "GET /api/hub/github/repos?accountId=12345",
            "GET /api/hub/github/repos?accountId=12345",
        ]
    );
    let unknown = run(&fake, &["coder", "github", "repos", "999"], None).await;
    assert_eq!(unknown.code, 44, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("GitHub account not found"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn coder_github_accounts_says_so_when_github_is_not_connected() {
    let fake = FakeAgentuity::start().await;
    fake.lock().github_accounts = json!({"connected": false, "accounts": []});
    let ran = run(&fake, &["coder", "github", "accounts"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json["connected"], false);
    assert!(ran.stderr.contains("not connected"), "{}", ran.stderr);
}

#[tokio::test]
async fn coder_sessions_connectable_lists_only_live_or_wakeable_sandbox_sessions() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_live", vec![Step::active()]);
    fake.add_session("codesess_asleep", vec![Step::paused()]);
    fake.add_session("codesess_done", vec![Step::history()]);
    fake.add_session("codesess_starting", vec![Step::provisioning()]);
    let ran = run(
        &fake,
        &["coder", "sessions", "--connectable", "--search", "codesess"],
        None,
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        requests(&fake),
        ["GET /api/hub/sessions?search=codesess&includeArchived=true"]
    );
    let ids: Vec<&str> = ran.json["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["sessionId"].as_str())
        .collect();
    assert_eq!(ids, ["codesess_asleep", "codesess_live"], "{}", ran.stdout);
    assert_eq!(ran.json["total"], 2);
    let limited = run(
        &fake,
        &["coder", "sessions", "--connectable", "--limit", "1"],
        None,
    )
    .await;
    assert_eq!(limited.code, 0, "{}", limited.stderr);
    assert_eq!(
        requests(&fake)[1],
        "GET /api/hub/sessions?includeArchived=true",
        "the limit applies to the connectable sessions, not the Hub's page"
    );
    assert_eq!(limited.json["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(limited.json["total"], 2);
    let clash = run(
        &fake,
        &["coder", "sessions", "--connectable", "--archived"],
        None,
    )
    .await;
    assert_eq!(clash.code, 2, "{}", clash.stderr);
    assert_eq!(fake.seen().len(), 2, "{:?}", requests(&fake));
}

#[tokio::test]
async fn coder_wake_resumes_a_paused_session_and_prints_it_once_ready() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_9", vec![Step::paused(), Step::active()]);
    let ran = run(&fake, &["coder", "wake", "codesess_9"], None).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        requests(&fake),
        [
            "GET /api/hub/session/codesess_9",
            "POST /api/hub/session/codesess_9/resume",
            "GET /api/hub/session/codesess_9",
        ]
    );
    assert_eq!(ran.json["sessionId"], "codesess_9");
    assert_eq!(ran.json["runtimeAvailable"], true);
    assert_eq!(ran.json["status"], "active");
}

#[tokio::test]
async fn coder_wake_past_its_timeout_exits_75_naming_the_last_status() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_9", vec![Step::paused()]);
    let ran = run(
        &fake,
        &["coder", "wake", "codesess_9", "--timeout", "1"],
        None,
    )
    .await;
    assert_eq!(ran.code, 75, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("codesess_9") && ran.stderr.contains("status paused"),
        "{}",
        ran.stderr
    );
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_9/resume"), 1);
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
}

#[tokio::test]
async fn coder_wake_of_an_archived_session_prints_it_and_exits_44_without_resuming() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_9", vec![Step::history()]);
    let ran = run(&fake, &["coder", "wake", "codesess_9"], None).await;
    assert_eq!(ran.code, 44, "{}", ran.stderr);
    assert_eq!(ran.json["status"], "archived");
    assert!(ran.stderr.contains("nothing to wake"), "{}", ran.stderr);
    assert_eq!(requests(&fake), ["GET /api/hub/session/codesess_9"]);
    let missing = run(&fake, &["coder", "wake", "codesess_nope"], None).await;
    assert_eq!(missing.code, 44, "{}", missing.stderr);
    let zero = run(
        &fake,
        &["coder", "wake", "codesess_9", "--timeout", "0"],
        None,
    )
    .await;
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}

#[tokio::test]
async fn coder_follow_prints_the_sessions_events_live_until_it_completes() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_9", vec![Step::active()]);
    let hub = fake.clone();
    let broadcaster = tokio::spawn(async move {
        hub.until_streaming("codesess_9").await;
        hub.broadcast(
            "codesess_9",
            "tool_execution_start",
            json!({"agentName": "lead", "toolName": "bash"}),
        );
        hub.broadcast("codesess_9", "session_complete", json!({}));
    });
    let ran = run(&fake, &["coder", "follow", "codesess_9"], None).await;
    broadcaster.await.expect("broadcast");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    // Not a terminal: one SDK-shaped message per line.
    let lines: Vec<Value> = ran
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["type"], "snapshot");
    assert_eq!(lines[1]["event"], "tool_execution_start");
    assert_eq!(lines[1]["data"]["toolName"], "bash");
    assert_eq!(lines[2]["event"], "session_complete");
    let stream = fake.requests("GET", "/api/hub/session/codesess_9/events");
    assert!(
        stream[0].query.starts_with("subscribe=*"),
        "{}",
        stream[0].query
    );

    let table = run(
        &fake,
        &["coder", "follow", "codesess_missing", "--table"],
        None,
    )
    .await;
    assert_ne!(table.code, 0);
    assert!(table.stderr.contains("404"), "{}", table.stderr);
}
