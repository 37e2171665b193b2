//! Every Coder Hub, Sessions API and CoderClient endpoint of the seeds against the fake hub: the
//! method, path, query and body sent, the auth header, and the decoded answer. Discovery, session
//! reads, listing by search, loop state, event history and error handling are covered in
//! `agentuity_client.rs`.

mod support;

use std::time::Duration;

use agh_worker::agentuity::{
    AgentuityClient, AgentuityError, Bucket, ClientSettings, Env, ErrorClass, ListAgents,
    ListConnectable, ListParticipants, ListSessions, ListUsers, SessionMode, SessionStatus,
};
use serde_json::{Value, json};
use support::fake_agentuity::{FakeAgentuity, LostAnswer, Seen, Step, quick_retry};

const KEY: &str = "ag_endpoints_key_789";

fn client(fake: &FakeAgentuity) -> AgentuityClient {
    let settings = ClientSettings {
        key: Some(KEY.into()),
        org_id: Some("org_1".into()),
        hub_url: Some(fake.url.clone()),
        catalyst_url: Some(fake.url.clone()),
        api_url: Some(fake.url.clone()),
        ..Default::default()
    };
    AgentuityClient::with_retry(&settings, &Env::new(), quick_retry()).expect("client")
}

/// The one request made to `method` `path`, checked for the key and the org header.
fn the_request(fake: &FakeAgentuity, method: &str, path: &str) -> Seen {
    let mut requests = fake.requests(method, path);
    assert_eq!(
        requests.len(),
        1,
        "{method} {path}: {:?}",
        fake.seen()
            .iter()
            .map(|s| format!("{} {}?{}", s.method, s.path, s.query))
            .collect::<Vec<_>>()
    );
    let request = requests.remove(0);
    assert_eq!(
        request.authorization.as_deref(),
        Some(&*format!("Bearer {KEY}")),
        "{method} {path}"
    );
    assert_eq!(request.org.as_deref(), Some("org_1"), "{method} {path}");
    request
}

// ---- sessions ----

#[tokio::test]
async fn creating_a_session_posts_the_body_as_given_and_decodes_the_new_id() {
    let fake = FakeAgentuity::start().await;
    let body = json!({
        "task": "Fix the login bug",
        "label": "agh:ENG-7",
        "workflowMode": "standard",
        "tags": ["agh-run:run-1"],
        "metadata": {"agh_run_id": "run-1"},
    });
    let created = client(&fake).create_session(&body).await.expect("created");
    assert_eq!(created.session_id, "codesess_1");
    assert_eq!(created.status, Some(SessionStatus::Creating));
    let request = the_request(&fake, "POST", "/api/hub/session");
    assert_eq!(request.body, body);
    assert_eq!(request.query, "");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_to_a_502_is_an_unknown_outcome_and_the_session_exists() {
    let fake = FakeAgentuity::start().await;
    fake.lose_next_create(LostAnswer::BadGateway);
    let client = client(&fake);
    let err = client
        .create_session(&json!({"task": "t", "tags": ["agh-run:lost-1"]}))
        .await
        .expect_err("the answer was lost");
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(err.class(), Some(ErrorClass::Unavailable));
    assert_eq!(fake.count("POST", "/api/hub/session"), 1, "never repeated");
    let found = client
        .list_sessions(&ListSessions {
            search: Some("agh-run:lost-1".into()),
            include_archived: true,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(found.sessions.len(), 1);
    assert_eq!(found.sessions[0].session_id.as_deref(), Some("codesess_1"));
}

#[tokio::test]
async fn a_create_whose_connection_breaks_mid_answer_is_an_unknown_outcome() {
    let fake = FakeAgentuity::start().await;
    fake.lose_next_create(LostAnswer::Cut);
    let err = client(&fake)
        .create_session(&json!({"task": "t"}))
        .await
        .expect_err("the answer was cut");
    assert!(matches!(err, AgentuityError::Transport { .. }), "{err:?}");
    assert!(err.outcome_unknown(), "{err}");
    assert_eq!(fake.count("POST", "/api/hub/session"), 1, "never repeated");
    assert!(fake.lock().current.contains_key("codesess_1"));
    // Only the next create loses its answer.
    let again = client(&fake)
        .create_session(&json!({"task": "t"}))
        .await
        .expect("answered");
    assert_eq!(again.session_id, "codesess_2");
}

#[tokio::test]
async fn a_slowly_provisioned_session_reads_as_provisioning_until_its_script_says_active() {
    let fake = FakeAgentuity::start().await;
    fake.provision_slowly(2);
    let client = client(&fake);
    let id = client
        .create_session(&json!({"task": "t"}))
        .await
        .expect("created")
        .session_id;
    for _ in 0..2 {
        let session = client.get_session(&id).await.expect("read");
        assert!(session.is_provisioning(), "{session:?}");
        assert!(!session.runtime_ready());
    }
    let session = client.get_session(&id).await.expect("read");
    assert_eq!(session.status, Some(SessionStatus::Active));
    assert!(session.runtime_ready());
}

#[tokio::test]
async fn a_session_detail_carries_the_usage_a_script_step_sets() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_u",
        vec![Step::active().with_usage(1.25, 1200, 340, 56)],
    );
    let session = client(&fake).get_session("codesess_u").await.expect("read");
    let usage = session.usage.expect("usage");
    assert_eq!(usage.cost_usd, Some(1.25));
    assert_eq!(usage.input_tokens, Some(1200));
    assert_eq!(usage.output_tokens, Some(340));
    assert_eq!(usage.reasoning_tokens, Some(56));
}

#[tokio::test]
async fn listing_sessions_sends_limit_and_offset() {
    let fake = FakeAgentuity::start().await;
    client(&fake)
        .list_sessions(&ListSessions {
            limit: Some(20),
            offset: Some(40),
            ..Default::default()
        })
        .await
        .expect("list");
    let request = the_request(&fake, "GET", "/api/hub/sessions");
    assert_eq!(request.query, "limit=20&offset=40");
}

#[tokio::test]
async fn updating_a_session_patches_its_fields_and_decodes_what_the_hub_kept() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_p", vec![Step::active()]);
    let body = json!({"label": "Updated Session", "tags": ["auth", "phase-2"]});
    let answer = client(&fake)
        .update_session("codesess_p", &body)
        .await
        .expect("updated");
    assert_eq!(answer["sessionId"], "codesess_p");
    assert_eq!(answer["label"], "Updated Session");
    assert_eq!(answer["tags"], json!(["auth", "phase-2"]));
    let request = the_request(&fake, "PATCH", "/api/hub/session/codesess_p");
    assert_eq!(request.body, body);
    let session = client(&fake).get_session("codesess_p").await.expect("read");
    assert_eq!(session.label.as_deref(), Some("Updated Session"));
}

#[tokio::test]
async fn archiving_a_session_posts_to_its_archive_route_without_a_body() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_a", vec![Step::active()]);
    let answer = client(&fake)
        .archive_session("codesess_a")
        .await
        .expect("archived");
    assert_eq!(
        answer,
        json!({"sessionId": "codesess_a", "status": "archived"})
    );
    let request = the_request(&fake, "POST", "/api/hub/session/codesess_a/archive");
    assert_eq!(request.body, Value::Null);
    assert_eq!(fake.lock().archived, vec!["codesess_a".to_string()]);
}

#[tokio::test]
async fn resuming_a_session_posts_to_its_resume_route_without_a_body() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_r", vec![Step::paused()]);
    let answer = client(&fake)
        .resume_session("codesess_r")
        .await
        .expect("resumed");
    assert_eq!(answer["status"], "resuming");
    let request = the_request(&fake, "POST", "/api/hub/session/codesess_r/resume");
    assert_eq!(request.body, Value::Null);
}

#[tokio::test]
async fn deleting_a_session_removes_it_so_a_later_read_finds_it_gone() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_d", vec![Step::active()]);
    let client = client(&fake);
    let answer = client.delete_session("codesess_d").await.expect("deleted");
    assert_eq!(answer["sessionId"], "codesess_d");
    the_request(&fake, "DELETE", "/api/hub/session/codesess_d");
    let err = client.get_session("codesess_d").await.expect_err("deleted");
    assert!(err.is_gone(), "{err}");
}

#[tokio::test]
async fn a_session_id_with_reserved_characters_is_percent_encoded_in_the_path() {
    let fake = FakeAgentuity::start().await;
    let err = client(&fake)
        .delete_session("odd/id?x=1 #")
        .await
        .expect_err("unknown");
    assert!(err.is_gone(), "{err}");
    the_request(&fake, "DELETE", "/api/hub/session/odd%2Fid%3Fx%3D1%20%23");
}

#[tokio::test]
async fn a_replay_page_sends_limit_and_offset_and_decodes_the_entries() {
    let fake = FakeAgentuity::start().await;
    fake.lock().replay.insert(
        "codesess_t".into(),
        json!({
            "sessionId": "codesess_t",
            "entriesSource": "durable_stream",
            "sourceCounts": {"durableStream": 2, "sessionEntries": 0, "eventHistory": 0},
            "entries": [
                {"type": "user_prompt", "content": "Fix it", "timestamp": 1},
                {"type": "message", "agent": "lead", "content": "Fixed in auth.rs.", "timestamp": 2},
            ],
        }),
    );
    let client = client(&fake);
    let replay = client
        .replay_page("codesess_t", Some(100), Some(200))
        .await
        .expect("replay");
    assert_eq!(replay.entries_source.as_deref(), Some("durable_stream"));
    assert_eq!(replay.entries.len(), 2);
    assert_eq!(replay.final_message().as_deref(), Some("Fixed in auth.rs."));
    let request = the_request(&fake, "GET", "/api/hub/session/codesess_t/replay");
    assert_eq!(request.query, "limit=100&offset=200");
    client.replay("codesess_t").await.expect("whole replay");
    let last = fake.seen().pop().expect("seen");
    assert_eq!(last.query, "", "the whole replay sends no paging");
}

#[tokio::test]
async fn participants_send_limit_include_disconnected_and_offset_and_decode_each_participant() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_q", vec![Step::active()]);
    let client = client(&fake);
    let all = client
        .list_participants(
            "codesess_q",
            &ListParticipants {
                limit: Some(200),
                include_disconnected: true,
                offset: Some(0),
            },
        )
        .await
        .expect("participants");
    let request = the_request(&fake, "GET", "/api/hub/session/codesess_q/participants");
    assert_eq!(request.query, "limit=200&includeDisconnected=true&offset=0");
    assert_eq!(all.session_id.as_deref(), Some("codesess_q"));
    assert_eq!(all.participants.len(), 2);
    assert_eq!(all.participants[0].role.as_deref(), Some("lead"));
    assert_eq!(
        all.participants[1].disconnected_at.as_deref(),
        Some("2026-01-05T09:10:00Z")
    );
    let connected = client
        .list_participants("codesess_q", &ListParticipants::default())
        .await
        .expect("connected only");
    assert_eq!(connected.participants.len(), 1);
    assert_eq!(fake.seen().pop().expect("seen").query, "");
}

#[tokio::test]
async fn users_are_searched_by_display_name_with_limit_and_offset() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let page = client
        .search_users(&ListUsers {
            search: Some("jane".into()),
            limit: Some(10),
            offset: Some(0),
        })
        .await
        .expect("users");
    let request = the_request(&fake, "GET", "/api/hub/users");
    assert_eq!(request.query, "search=jane&limit=10&offset=0");
    let names: Vec<&str> = page
        .users
        .iter()
        .filter_map(|u| u.display_name.as_deref())
        .collect();
    assert_eq!(names, vec!["Jane Doe", "Janet Roe"]);
    assert_eq!(page.total, Some(2));
    assert_eq!(page.users[0].user_id.as_deref(), Some("user_jane"));
    let everyone = client
        .search_users(&ListUsers::default())
        .await
        .expect("all users");
    assert_eq!(everyone.total, Some(3));
    assert_eq!(fake.seen().pop().expect("seen").query, "");
}

#[tokio::test]
async fn an_agent_builder_session_is_created_from_a_source_session() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_src", vec![Step::active()]);
    let body = json!({
        "mode": "from_session",
        "sourceSessionId": "codesess_src",
        "label": "Build from release triage",
        "prompt": "Turn the repeated release-triage workflow into a reusable QA agent",
    });
    let client = client(&fake);
    let created = client.create_builder_session(&body).await.expect("builder");
    assert_eq!(created.session_id, "codesess_1");
    assert_eq!(created.status, Some(SessionStatus::Creating));
    assert_eq!(created.extra["mode"], "sandbox");
    let request = the_request(&fake, "POST", "/api/hub/session/builder");
    assert_eq!(request.body, body);
    let err = client
        .create_builder_session(
            &json!({"mode": "from_session", "sourceSessionId": "codesess_none"}),
        )
        .await
        .expect_err("no such source");
    assert!(err.is_gone(), "{err}");
}

// ---- connectable sessions and remote attach ----

#[tokio::test]
async fn connectable_sessions_are_the_live_or_wakeable_sandbox_sessions_of_a_listing_with_archived()
{
    let fake = FakeAgentuity::start().await;
    let tagged = |step: Step| {
        let mut detail = step.detail;
        detail["tags"] = json!(["team:qa"]);
        Step::detail(detail)
    };
    fake.add_session("a_running", vec![tagged(Step::active())]);
    fake.add_session("b_paused_wakeable", vec![tagged(Step::paused())]);
    let mut paused_up = Step::paused().detail;
    paused_up["wakeAvailable"] = json!(false);
    paused_up["runtimeAvailable"] = json!(true);
    fake.add_session("c_paused_runtime_up", vec![tagged(Step::detail(paused_up))]);
    let mut paused_dead = Step::paused().detail;
    paused_dead["wakeAvailable"] = json!(false);
    fake.add_session("d_paused_dead", vec![tagged(Step::detail(paused_dead))]);
    fake.add_session("e_history", vec![tagged(Step::history())]);
    let mut tui = Step::active().detail;
    tui["mode"] = json!("tui");
    fake.add_session("f_tui", vec![tagged(Step::detail(tui))]);
    let mut running_history = Step::active().detail;
    running_history["historyOnly"] = json!(true);
    fake.add_session(
        "g_history_only",
        vec![tagged(Step::detail(running_history))],
    );
    fake.add_session("h_provisioning", vec![tagged(Step::provisioning())]);
    fake.add_session("i_untagged_running", vec![Step::active()]);

    let client = client(&fake);
    let page = client
        .list_connectable_sessions(&ListConnectable {
            search: Some("team:qa".into()),
            ..Default::default()
        })
        .await
        .expect("connectable");
    let ids: Vec<&str> = page
        .sessions
        .iter()
        .filter_map(|s| s.session_id.as_deref())
        .collect();
    assert_eq!(
        ids,
        vec!["a_running", "b_paused_wakeable", "c_paused_runtime_up"]
    );
    assert_eq!(page.total, Some(3));
    assert!(
        page.sessions
            .iter()
            .all(|s| s.mode == Some(SessionMode::Sandbox))
    );
    let request = the_request(&fake, "GET", "/api/hub/sessions");
    assert_eq!(request.query, "search=team%3Aqa&includeArchived=true");

    let window = client
        .list_connectable_sessions(&ListConnectable {
            search: Some("team:qa".into()),
            limit: Some(1),
            offset: Some(1),
        })
        .await
        .expect("connectable window");
    let ids: Vec<&str> = window
        .sessions
        .iter()
        .filter_map(|s| s.session_id.as_deref())
        .collect();
    assert_eq!(ids, vec!["b_paused_wakeable"]);
    assert_eq!(window.total, Some(3), "total counts every connectable one");
    let last = fake.seen().pop().expect("seen");
    assert_eq!(
        last.query, "search=team%3Aqa&includeArchived=true",
        "paging is applied after the filter, never sent"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_session_is_resumed_and_waited_for_until_its_runtime_is_back() {
    let fake = FakeAgentuity::start().await;
    let mut resuming = Step::paused().detail;
    resuming["status"] = json!("resuming");
    resuming["wakeAvailable"] = json!(false);
    fake.add_session(
        "codesess_w",
        vec![Step::paused(), Step::detail(resuming), Step::active()],
    );
    let started = tokio::time::Instant::now();
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_w",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("attachable");
    assert_eq!(session.status, Some(SessionStatus::Active));
    assert_eq!(session.runtime_available, Some(true));
    let resume = the_request(&fake, "POST", "/api/hub/session/codesess_w/resume");
    assert_eq!(resume.body, Value::Null);
    assert_eq!(fake.count("GET", "/api/hub/session/codesess_w"), 3);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "two polls a second apart: {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_read_while_waking_does_not_end_the_wait() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_f", vec![Step::paused(), Step::active()]);
    let path = "/api/hub/session/codesess_f";
    // The first read answers paused; the one after the resume meets a sandbox that is not
    // back yet.
    fake.can_later(
        "GET",
        path,
        1,
        404,
        vec![],
        r#"{"code":"CODER_SESSION_NOT_FOUND"}"#,
    );
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_f",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("attachable despite the 404");
    assert_eq!(session.status, Some(SessionStatus::Active));
    assert_eq!(fake.count("GET", path), 3, "paused, 404, active");
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_f/resume"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_active_session_is_answered_at_once_without_a_resume() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_live", vec![Step::active()]);
    let started = tokio::time::Instant::now();
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_live",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("attachable");
    assert_eq!(session.bucket, Some(Bucket::Running));
    assert_eq!(
        fake.count("POST", "/api/hub/session/codesess_live/resume"),
        0
    );
    assert_eq!(fake.count("GET", "/api/hub/session/codesess_live"), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_history_only_session_is_answered_at_once_without_a_resume() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_old", vec![Step::history()]);
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_old",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("answered");
    assert!(session.is_over());
    assert_eq!(
        fake.count("POST", "/api/hub/session/codesess_old/resume"),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_that_never_wakes_fails_with_a_timeout_naming_its_last_status() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("codesess_z", vec![Step::paused()]);
    let started = tokio::time::Instant::now();
    let err = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_z",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect_err("never ready");
    assert!(matches!(err, AgentuityError::NotReady { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("codesess_z"), "{text}");
    assert!(text.contains("within 30s"), "{text}");
    assert!(text.contains("status paused"), "{text}");
    assert!(text.contains("runtimeAvailable false"), "{text}");
    assert!(!err.is_fatal());
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_z/resume"), 1);
    let reads = fake.count("GET", "/api/hub/session/codesess_z");
    assert!((30..=32).contains(&reads), "{reads} reads");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hub_that_never_answers_does_not_hold_the_wait_past_its_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a silent hub");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let silent = axum::Router::new().fallback(std::future::pending::<&'static str>);
    tokio::spawn(async move {
        let _ = axum::serve(listener, silent).await;
    });
    let settings = ClientSettings {
        key: Some(KEY.into()),
        hub_url: Some(url.clone()),
        catalyst_url: Some(url),
        ..Default::default()
    };
    let client =
        AgentuityClient::with_retry(&settings, &Env::new(), quick_retry()).expect("client");
    let started = tokio::time::Instant::now();
    let err = client
        .prepare_session_for_remote_attach(
            "codesess_mute",
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .await
        .expect_err("no answer, no session");
    assert!(matches!(err, AgentuityError::NotReady { .. }), "{err:?}");
    assert!(err.to_string().contains("was not read"), "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_resume_is_tried_again_and_does_not_end_the_wait() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_r",
        vec![
            Step::paused(),
            Step::paused(),
            Step::paused(),
            Step::active(),
        ],
    );
    fake.can(
        "POST",
        "/api/hub/session/codesess_r/resume",
        409,
        vec![],
        r#"{"code": "CODER_SESSION_CONFLICT", "message": "already resuming"}"#,
    );
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_r",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("ready after all");
    assert!(session.runtime_ready(), "{session:?}");
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_r/resume"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_becomes_wakeable_while_starting_is_resumed_once_then() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "codesess_s",
        vec![
            Step::provisioning(),
            Step::paused(),
            Step::paused(),
            Step::active(),
        ],
    );
    let session = client(&fake)
        .prepare_session_for_remote_attach(
            "codesess_s",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .expect("attachable");
    assert!(session.runtime_ready());
    assert_eq!(fake.count("GET", "/api/hub/session/codesess_s"), 4);
    assert_eq!(fake.count("POST", "/api/hub/session/codesess_s/resume"), 1);
    let order: Vec<String> = fake
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        order[..3],
        [
            "GET /api/hub/session/codesess_s",
            "GET /api/hub/session/codesess_s",
            "POST /api/hub/session/codesess_s/resume",
        ],
        "no resume before the Hub offers one"
    );
}

// ---- custom agents ----

#[tokio::test]
async fn listing_agents_sends_include_archived_only_when_asked() {
    let fake = FakeAgentuity::start().await;
    fake.add_agent("code-review", json!({}));
    fake.add_agent("old-helper", json!({"lifecycle": "archived"}));
    let client = client(&fake);
    let live = client
        .list_agents(&ListAgents::default())
        .await
        .expect("agents");
    assert_eq!(live["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(the_request(&fake, "GET", "/api/hub/agents").query, "");
    let all = client
        .list_agents(&ListAgents {
            include_archived: true,
        })
        .await
        .expect("all agents");
    assert_eq!(all["agents"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        fake.seen().pop().expect("seen").query,
        "includeArchived=true"
    );
}

#[tokio::test]
async fn creating_an_agent_posts_the_draft_and_answers_the_record() {
    let fake = FakeAgentuity::start().await;
    let body = json!({
        "slug": "code-review",
        "displayName": "Code Review",
        "instructions": "Focus on correctness, regressions, and missing tests.",
        "tools": ["read", "grep", "ls"],
        "serviceTools": ["session_todo_list", "session_todo_update"],
    });
    let agent = client(&fake).create_agent(&body).await.expect("created");
    assert_eq!(agent["slug"], "code-review");
    assert_eq!(agent["lifecycle"], "draft");
    assert_eq!(agent["draft"]["tools"], json!(["read", "grep", "ls"]));
    let request = the_request(&fake, "POST", "/api/hub/agents");
    assert_eq!(request.body, body);
}

#[tokio::test]
async fn an_agent_is_fetched_by_slug_with_the_slug_percent_encoded() {
    let fake = FakeAgentuity::start().await;
    let id = fake.add_agent("team/review", json!({"displayName": "Team Review"}));
    let client = client(&fake);
    let agent = client.get_agent("team/review").await.expect("by slug");
    assert_eq!(agent["id"], json!(id));
    assert_eq!(agent["displayName"], "Team Review");
    the_request(&fake, "GET", "/api/hub/agents/team%2Freview");
    let err = client.get_agent("nobody").await.expect_err("unknown");
    assert!(err.is_gone(), "{err}");
    assert!(err.to_string().contains("custom agent not found"), "{err}");
}

#[tokio::test]
async fn updating_an_agent_patches_its_draft() {
    let fake = FakeAgentuity::start().await;
    fake.add_agent("code-review", json!({}));
    let body = json!({"displayName": "Code Review Draft"});
    let agent = client(&fake)
        .update_agent("code-review", &body)
        .await
        .expect("updated");
    assert_eq!(agent["displayName"], "Code Review Draft");
    assert_eq!(agent["draft"]["displayName"], "Code Review Draft");
    let request = the_request(&fake, "PATCH", "/api/hub/agents/code-review");
    assert_eq!(request.body, body);
}

#[tokio::test]
async fn publishing_an_agent_posts_without_a_body_and_answers_the_published_record() {
    let fake = FakeAgentuity::start().await;
    fake.add_agent("code-review", json!({}));
    let agent = client(&fake)
        .publish_agent("code-review")
        .await
        .expect("published");
    assert_eq!(agent["lifecycle"], "published");
    assert_eq!(agent["latestPublishedVersion"], 1);
    assert_eq!(agent["published"]["version"], 1);
    let request = the_request(&fake, "POST", "/api/hub/agents/code-review/publish");
    assert_eq!(request.body, Value::Null);
}

#[tokio::test]
async fn archiving_an_agent_posts_to_its_archive_route() {
    let fake = FakeAgentuity::start().await;
    let id = fake.add_agent("code-review", json!({}));
    let agent = client(&fake).archive_agent(&id).await.expect("archived");
    assert_eq!(agent["lifecycle"], "archived");
    let request = the_request(&fake, "POST", &format!("/api/hub/agents/{id}/archive"));
    assert_eq!(request.body, Value::Null);
}

#[tokio::test]
async fn an_agents_versions_are_listed_newest_published_last() {
    let fake = FakeAgentuity::start().await;
    fake.add_agent("code-review", json!({}));
    let client = client(&fake);
    client.publish_agent("code-review").await.expect("v1");
    client
        .update_agent("code-review", &json!({"instructions": "Be brief."}))
        .await
        .expect("edit");
    client.publish_agent("code-review").await.expect("v2");
    let versions = client
        .agent_versions("code-review")
        .await
        .expect("versions");
    let numbers: Vec<&Value> = versions["versions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(numbers, vec![&json!(1), &json!(2)]);
    assert_eq!(versions["versions"][1]["instructions"], "Be brief.");
    the_request(&fake, "GET", "/api/hub/agents/code-review/versions");
}

// ---- workspaces ----

#[tokio::test]
async fn creating_a_workspace_posts_its_definition_and_unwraps_the_answer() {
    let fake = FakeAgentuity::start().await;
    let body = json!({
        "name": "Auth System",
        "description": "OAuth and session management",
        "scope": "org",
        "repos": [{"url": "https://github.com/acme/app", "branch": "main"}],
    });
    let workspace = client(&fake)
        .create_workspace(&body)
        .await
        .expect("created");
    assert_eq!(workspace.id.as_deref(), Some("ws_1"));
    assert_eq!(workspace.name.as_deref(), Some("Auth System"));
    assert_eq!(workspace.scope.as_deref(), Some("org"));
    assert_eq!(workspace.repos.len(), 1);
    assert_eq!(workspace.extra["repoCount"], 1);
    let request = the_request(&fake, "POST", "/api/hub/workspaces");
    assert_eq!(request.body, body);
}

#[tokio::test]
async fn listing_workspaces_decodes_every_workspace() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    for name in ["One", "Two"] {
        client
            .create_workspace(&json!({"name": name}))
            .await
            .expect("created");
    }
    let list = client.list_workspaces().await.expect("list");
    let names: Vec<&str> = list
        .workspaces
        .iter()
        .filter_map(|w| w.name.as_deref())
        .collect();
    assert_eq!(names, vec!["One", "Two"]);
    assert_eq!(the_request(&fake, "GET", "/api/hub/workspaces").query, "");
}

#[tokio::test]
async fn a_workspace_is_fetched_by_id_and_a_missing_one_is_gone() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let id = client
        .create_workspace(&json!({"name": "Auth System", "savedSkillIds": ["skill_9"]}))
        .await
        .expect("created")
        .id
        .expect("an id");
    let workspace = client.get_workspace(&id).await.expect("fetched");
    assert_eq!(workspace.id.as_deref(), Some(id.as_str()));
    assert_eq!(workspace.saved_skill_ids, vec!["skill_9".to_string()]);
    the_request(&fake, "GET", &format!("/api/hub/workspaces/{id}"));
    let err = client.get_workspace("ws/missing").await.expect_err("gone");
    assert!(err.is_gone(), "{err}");
    the_request(&fake, "GET", "/api/hub/workspaces/ws%2Fmissing");
}

#[tokio::test]
async fn deleting_a_workspace_sends_a_delete_and_it_is_gone_afterwards() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let id = client
        .create_workspace(&json!({"name": "Scratch"}))
        .await
        .expect("created")
        .id
        .expect("an id");
    let answer = client.delete_workspace(&id).await.expect("deleted");
    assert_eq!(answer, json!({"ok": true}));
    the_request(&fake, "DELETE", &format!("/api/hub/workspaces/{id}"));
    assert!(client.get_workspace(&id).await.expect_err("gone").is_gone());
}

// ---- saved skills and skill buckets ----

#[tokio::test]
async fn saving_a_skill_posts_it_to_the_library_and_unwraps_the_answer() {
    let fake = FakeAgentuity::start().await;
    let body = json!({
        "repo": "my-org/my-skills",
        "skillId": "code-review",
        "name": "code-review",
        "description": "Review code for security issues",
        "content": "Review the changes for OWASP top 10 vulnerabilities...",
    });
    let skill = client(&fake).save_skill(&body).await.expect("saved");
    assert_eq!(skill.id.as_deref(), Some("skill_1"));
    assert_eq!(skill.skill_id.as_deref(), Some("code-review"));
    assert_eq!(skill.source.as_deref(), Some("registry"));
    assert_eq!(skill.extra["content"], body["content"]);
    let request = the_request(&fake, "POST", "/api/hub/skills/library");
    assert_eq!(request.body, body);
}

#[tokio::test]
async fn listing_saved_skills_decodes_the_library() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    client
        .save_skill(&json!({"repo": "r", "skillId": "a", "name": "A"}))
        .await
        .expect("saved");
    let list = client.list_saved_skills().await.expect("list");
    assert_eq!(list.skills.len(), 1);
    assert_eq!(list.skills[0].name.as_deref(), Some("A"));
    the_request(&fake, "GET", "/api/hub/skills/library");
}

#[tokio::test]
async fn deleting_a_saved_skill_sends_a_delete_for_its_record_id() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let id = client
        .save_skill(&json!({"repo": "r", "skillId": "a", "name": "A"}))
        .await
        .expect("saved")
        .id
        .expect("an id");
    assert_eq!(
        client.delete_saved_skill(&id).await.expect("deleted"),
        json!({"ok": true})
    );
    the_request(&fake, "DELETE", &format!("/api/hub/skills/library/{id}"));
    assert!(
        client
            .list_saved_skills()
            .await
            .expect("list")
            .skills
            .is_empty()
    );
}

#[tokio::test]
async fn creating_a_skill_bucket_groups_saved_skills_and_refuses_unknown_ones() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let skill = client
        .save_skill(&json!({"repo": "r", "skillId": "a", "name": "A"}))
        .await
        .expect("saved")
        .id
        .expect("an id");
    let body = json!({"name": "Reviews", "description": "Review skills", "savedSkillIds": [skill]});
    let bucket = client.create_skill_bucket(&body).await.expect("created");
    assert_eq!(bucket.name.as_deref(), Some("Reviews"));
    assert_eq!(bucket.skill_count, Some(1));
    assert_eq!(bucket.skills[0].id.as_deref(), Some(skill.as_str()));
    let request = the_request(&fake, "POST", "/api/hub/skills/buckets");
    assert_eq!(request.body, body);
    let err = client
        .create_skill_bucket(&json!({"name": "Bad", "savedSkillIds": ["skill_none"]}))
        .await
        .expect_err("unknown skill");
    assert_eq!(err.class(), Some(ErrorClass::Invalid));
    assert!(
        err.to_string().contains("saved skills do not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn listing_skill_buckets_decodes_each_bucket() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    client
        .create_skill_bucket(&json!({"name": "Empty"}))
        .await
        .expect("created");
    let list = client.list_skill_buckets().await.expect("list");
    assert_eq!(list.buckets.len(), 1);
    assert_eq!(list.buckets[0].skill_count, Some(0));
    the_request(&fake, "GET", "/api/hub/skills/buckets");
}

#[tokio::test]
async fn deleting_a_skill_bucket_sends_a_delete_for_its_id() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let id = client
        .create_skill_bucket(&json!({"name": "Empty"}))
        .await
        .expect("created")
        .id
        .expect("an id");
    assert_eq!(
        client.delete_skill_bucket(&id).await.expect("deleted"),
        json!({"ok": true})
    );
    the_request(&fake, "DELETE", &format!("/api/hub/skills/buckets/{id}"));
    let err = client.delete_skill_bucket(&id).await.expect_err("again");
    assert!(err.is_gone(), "{err}");
}

// ---- GitHub ----

#[tokio::test]
async fn github_accounts_say_whether_github_is_connected_and_which_accounts_are_reachable() {
    let fake = FakeAgentuity::start().await;
    let list = client(&fake)
        .list_github_accounts()
        .await
        .expect("accounts");
    assert_eq!(list.connected, Some(true));
    assert_eq!(list.username.as_deref(), Some("octocat"));
    let names: Vec<&str> = list
        .accounts
        .iter()
        .filter_map(|a| a.account_name.as_deref())
        .collect();
    assert_eq!(names, vec!["acme", "octocat"]);
    assert_eq!(list.accounts[0].account_id.as_deref(), Some("12345"));
    assert_eq!(
        list.accounts[0].account_type.as_deref(),
        Some("Organization")
    );
    assert_eq!(
        the_request(&fake, "GET", "/api/hub/github/accounts").query,
        ""
    );
}

#[tokio::test]
async fn github_repos_are_listed_for_one_account_id() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let list = client.list_github_repos("12345").await.expect("repos");
    assert_eq!(list.account_id.as_deref(), Some("12345"));
    assert_eq!(list.total_count, Some(2));
    assert_eq!(list.repositories[0].full_name.as_deref(), Some("acme/app"));
    assert_eq!(list.repositories[0].id.as_deref(), Some("9001"));
    assert_eq!(list.repositories[1].archived, Some(true));
    let request = the_request(&fake, "GET", "/api/hub/github/repos");
    assert_eq!(request.query, "accountId=12345");
    let err = client
        .list_github_repos("a b&c")
        .await
        .expect_err("unknown account");
    assert!(err.is_gone(), "{err}");
    assert_eq!(fake.seen().pop().expect("seen").query, "accountId=a+b%26c");
}

// ---- retry rules on the endpoints added here ----

#[tokio::test]
async fn reads_of_workspaces_skills_and_github_ride_over_502_bursts_and_rate_limits() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    fake.bad_gateway_burst("GET", "/api/hub/workspaces", 2);
    client.list_workspaces().await.expect("after the restart");
    assert_eq!(fake.count("GET", "/api/hub/workspaces"), 3);
    fake.rate_limit_409("GET", "/api/hub/skills/library", 0);
    client.list_saved_skills().await.expect("after the 409");
    assert_eq!(fake.count("GET", "/api/hub/skills/library"), 2);
    fake.too_many_requests("GET", "/api/hub/github/accounts", 0);
    client.list_github_accounts().await.expect("after the 429");
    assert_eq!(fake.count("GET", "/api/hub/github/accounts"), 2);
}

#[tokio::test]
async fn creates_of_builder_sessions_workspaces_skills_and_buckets_are_never_repeated_after_a_502()
{
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    fake.bad_gateway_burst("POST", "/api/hub/session/builder", 1);
    let err = client
        .create_builder_session(&json!({"mode": "new"}))
        .await
        .expect_err("502");
    assert!(err.outcome_unknown(), "{err}");
    fake.bad_gateway_burst("POST", "/api/hub/workspaces", 1);
    let err = client
        .create_workspace(&json!({"name": "W"}))
        .await
        .expect_err("502");
    assert!(err.outcome_unknown(), "{err}");
    fake.bad_gateway_burst("POST", "/api/hub/skills/library", 1);
    let err = client
        .save_skill(&json!({"repo": "r", "skillId": "a", "name": "A"}))
        .await
        .expect_err("502");
    assert!(err.outcome_unknown(), "{err}");
    fake.bad_gateway_burst("POST", "/api/hub/skills/buckets", 1);
    let err = client
        .create_skill_bucket(&json!({"name": "B"}))
        .await
        .expect_err("502");
    assert!(err.outcome_unknown(), "{err}");
    for path in [
        "/api/hub/session/builder",
        "/api/hub/workspaces",
        "/api/hub/skills/library",
        "/api/hub/skills/buckets",
    ] {
        assert_eq!(fake.count("POST", path), 1, "{path}");
    }
}

#[tokio::test]
async fn a_refused_key_or_a_wrong_region_on_the_hub_fails_at_once() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    fake.refuse_key("GET", "/api/hub/skills/buckets");
    let err = client.list_skill_buckets().await.expect_err("401");
    assert_eq!(err.class(), Some(ErrorClass::Unauthorized));
    assert!(err.is_fatal());
    // Only Catalyst gets a regional retry; here the Hub is not Catalyst.
    let hub_only = AgentuityClient::with_retry(
        &ClientSettings {
            key: Some(KEY.into()),
            org_id: Some("org_1".into()),
            hub_url: Some(fake.url.clone()),
            catalyst_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
        &Env::new(),
        quick_retry(),
    )
    .expect("client");
    fake.wrong_region("GET", "/api/hub/github/repos", "use");
    let err = hub_only.list_github_repos("12345").await.expect_err("421");
    assert_eq!(err.class(), Some(ErrorClass::WrongRegion));
    assert_eq!(fake.count("GET", "/api/hub/github/repos"), 1);
    assert_eq!(fake.count("GET", "/api/hub/skills/buckets"), 1);
}

// ---- Sessions API (agent executions) ----

#[tokio::test]
async fn an_agent_session_is_read_from_catalyst_and_unwrapped() {
    let fake = FakeAgentuity::start().await;
    let data = client(&fake)
        .get_agent_session("sess_42")
        .await
        .expect("session");
    assert_eq!(data["session"]["id"], "sess_42");
    assert_eq!(data["agents"][0]["identifier"], "agent_triage");
    the_request(&fake, "GET", "/session/sess_42");
}

#[tokio::test]
async fn an_agent_sessions_logs_are_read_from_the_app_api_and_unwrapped() {
    let fake = FakeAgentuity::start().await;
    let logs = client(&fake)
        .agent_session_logs("sess_42")
        .await
        .expect("logs");
    assert_eq!(logs[0]["body"], "sess_42 started");
    assert_eq!(logs.as_array().map(Vec::len), Some(2));
    the_request(&fake, "GET", "/cli/session/sess_42/logs");
}

#[tokio::test]
async fn listing_agent_sessions_sends_paging_and_filters() {
    let fake = FakeAgentuity::start().await;
    let params = agh_worker::agentuity::ListAgentSessions {
        limit: Some(10),
        offset: Some(5),
        filters: [("trigger".to_string(), "api".to_string())].into(),
    };
    client(&fake)
        .list_agent_sessions(&params)
        .await
        .expect("list");
    let request = the_request(&fake, "GET", "/session");
    assert_eq!(request.query, "limit=10&offset=5&trigger=api");
}
