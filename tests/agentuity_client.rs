//! The Agentuity client against a fake hub: discovery, headers, error shapes, retry rules and
//! tolerant DTOs.

mod support;

use std::time::Duration;

use agh_worker::agentuity::{
    AgentuityClient, AgentuityError, ClientSettings, Env, ErrorClass, ListSessions, LoopStatus,
    SessionStatus,
};
use serde_json::json;
use support::fake_agentuity::{FakeAgentuity, Step, quick_retry};

const KEY: &str = "ag_secret_key_123";

fn client(fake: &FakeAgentuity) -> AgentuityClient {
    let settings = ClientSettings {
        key: Some(KEY.into()),
        org_id: Some("org_1".into()),
        hub_url: Some(fake.url.clone()),
        catalyst_url: Some(fake.url.clone()),
        ..Default::default()
    };
    AgentuityClient::with_retry(&settings, &Env::new(), quick_retry()).expect("client")
}

#[tokio::test]
async fn the_hub_url_is_discovered_from_catalyst_with_the_key_and_org_headers() {
    let fake = FakeAgentuity::start().await;
    let env: Env = [
        ("AGENTUITY_SDK_KEY".to_string(), KEY.to_string()),
        ("AGENTUITY_CATALYST_URL".to_string(), fake.url.clone()),
    ]
    .into();
    let settings = ClientSettings {
        org_id: Some("org_1".into()),
        ..Default::default()
    };
    let client = AgentuityClient::with_retry(&settings, &env, quick_retry()).expect("client");
    assert_eq!(client.hub_url().await.expect("discovered"), fake.url);
    fake.add_session(
        "codesess_a",
        vec![Step::detail(json!({"status": "active"}))],
    );
    let session = client.get_session("codesess_a").await.expect("session");
    assert_eq!(session.status, Some(SessionStatus::Active));
    let seen = fake.seen();
    assert_eq!(seen[0].path, "/coder");
    assert_eq!(seen[1].path, "/api/hub/session/codesess_a");
    for request in &seen {
        assert_eq!(
            request.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        assert_eq!(request.org.as_deref(), Some("org_1"));
        assert!(
            request
                .user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with("agh-worker/"))
        );
    }
    // Discovery happens once per client.
    client.get_session("codesess_a").await.expect("session");
    assert_eq!(fake.count("GET", "/coder"), 1);
}

#[tokio::test]
async fn an_explicit_hub_url_beats_the_environment_and_discovery() {
    let fake = FakeAgentuity::start().await;
    let env: Env = [
        ("AGENTUITY_SDK_KEY".to_string(), KEY.to_string()),
        (
            "AGENTUITY_CODER_URL".to_string(),
            "https://from-env.example/".to_string(),
        ),
    ]
    .into();
    let explicit = ClientSettings {
        hub_url: Some(format!("{}/", fake.url)),
        ..Default::default()
    };
    let client = AgentuityClient::new(&explicit, &env).expect("client");
    assert_eq!(client.hub_url().await.expect("url"), fake.url);
    let from_env = AgentuityClient::new(&ClientSettings::default(), &env).expect("client");
    assert_eq!(
        from_env.hub_url().await.expect("url"),
        "https://from-env.example"
    );
    assert_eq!(
        from_env.catalyst_url(),
        "https://catalyst-usc.agentuity.cloud"
    );
    let regional = AgentuityClient::new(
        &ClientSettings {
            region: Some("usw".into()),
            ..Default::default()
        },
        &env,
    )
    .expect("client");
    assert_eq!(
        regional.catalyst_url(),
        "https://catalyst-usw.agentuity.cloud"
    );
}

#[tokio::test]
async fn a_hub_url_that_is_neither_http_nor_https_is_refused() {
    let settings = ClientSettings {
        key: Some(KEY.into()),
        hub_url: Some("ftp://hub.example".into()),
        ..Default::default()
    };
    let err = AgentuityClient::new(&settings, &Env::new()).expect_err("bad scheme");
    assert!(err.to_string().contains("https://"), "{err}");
}

#[tokio::test]
async fn a_hub_url_with_credentials_in_it_is_refused_without_showing_them() {
    for field in ["hub", "catalyst"] {
        let url = Some("https://ops:hunter2@hub.example".to_string());
        let settings = ClientSettings {
            key: Some(KEY.into()),
            hub_url: if field == "hub" { url.clone() } else { None },
            catalyst_url: if field == "catalyst" { url } else { None },
            ..Default::default()
        };
        let err = AgentuityClient::new(&settings, &Env::new()).expect_err("credentials in a url");
        let text = err.to_string();
        assert!(text.contains("must not carry credentials"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[tokio::test]
async fn a_missing_key_is_a_clear_error_and_the_key_never_shows_in_debug() {
    let err = AgentuityClient::new(&ClientSettings::default(), &Env::new()).expect_err("no key");
    assert!(matches!(err, AgentuityError::MissingKey));
    assert!(err.to_string().contains("AGENTUITY_SDK_KEY"));
    let settings = ClientSettings {
        key: Some(KEY.into()),
        hub_url: Some("http://127.0.0.1:9".into()),
        ..Default::default()
    };
    assert!(!format!("{settings:?}").contains(KEY));
    let client = AgentuityClient::new(&settings, &Env::new()).expect("client");
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test]
async fn a_key_echoed_in_an_error_body_is_scrubbed_from_the_error() {
    let fake = FakeAgentuity::start().await;
    fake.can(
        "GET",
        "/api/hub/session/x",
        401,
        vec![],
        r#"{"message":"bad key {auth}"}"#,
    );
    let err = client(&fake).get_session("x").await.expect_err("401");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert_eq!(err.class(), Some(ErrorClass::Unauthorized));
    assert!(err.is_fatal());
}

#[tokio::test]
async fn every_known_error_shape_is_parsed_and_classified() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let cases: Vec<(u16, &str, Option<&str>, &str, ErrorClass)> = vec![
        (
            400,
            r#"{"error":"One or more selected saved skills do not exist."}"#,
            None,
            "saved skills",
            ErrorClass::Invalid,
        ),
        (
            404,
            r#"{"code":"CODER_SESSION_NOT_FOUND"}"#,
            Some("CODER_SESSION_NOT_FOUND"),
            "CODER_SESSION_NOT_FOUND",
            ErrorClass::Gone,
        ),
        (
            409,
            r#"{"code":"CODER_SESSION_ARCHIVED","message":"archived"}"#,
            Some("CODER_SESSION_ARCHIVED"),
            "archived",
            ErrorClass::Gone,
        ),
        (
            409,
            r#"{"code":"CODER_SESSION_CONFLICT","message":"busy"}"#,
            Some("CODER_SESSION_CONFLICT"),
            "busy",
            ErrorClass::Conflict,
        ),
        (
            400,
            r#"{"success":false,"code":"CODER_INVALID_REQUEST","message":"task is required"}"#,
            Some("CODER_INVALID_REQUEST"),
            "task is required",
            ErrorClass::Invalid,
        ),
        (
            400,
            r#"{"success":false,"error":{"name":"ZodError","issues":[{"code":"invalid_type","path":["loop","goal"],"message":"Required"}]}}"#,
            None,
            "loop.goal: Required",
            ErrorClass::Invalid,
        ),
        (
            410,
            "Session has shut down",
            None,
            "Session has shut down",
            ErrorClass::Gone,
        ),
        (
            402,
            r#"{"message":"Payment required"}"#,
            None,
            "Payment required",
            ErrorClass::PaymentRequired,
        ),
        (
            426,
            r#"{"message":"Upgrade required"}"#,
            None,
            "Upgrade required",
            ErrorClass::UpgradeRequired,
        ),
        (
            500,
            "<html>oops</html>",
            None,
            "<html>oops</html>",
            ErrorClass::Server,
        ),
    ];
    for (status, body, code, message, class) in cases {
        fake.can("GET", "/api/hub/session/s", status, vec![], body);
        let err = client.get_session("s").await.expect_err("an error");
        let failure = err.failure().expect("an HTTP failure");
        assert_eq!(failure.status, status, "{body}");
        assert_eq!(failure.code.as_deref(), code, "{body}");
        assert!(err.to_string().contains(message), "{err} / {body}");
        assert_eq!(err.class(), Some(class), "{body}");
        assert_eq!(err.trace_id(), Some("trace-123"));
        assert!(err.to_string().contains("x-session-id trace-123"), "{err}");
    }
}

#[tokio::test]
async fn a_503_is_retried_until_the_hub_answers() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("s", vec![Step::detail(json!({"status": "active"}))]);
    fake.can("GET", "/api/hub/session/s", 503, vec![], "restarting");
    fake.can("GET", "/api/hub/session/s", 502, vec![], "restarting");
    let session = client(&fake)
        .get_session("s")
        .await
        .expect("answered after the restart");
    assert_eq!(session.status, Some(SessionStatus::Active));
    assert_eq!(fake.count("GET", "/api/hub/session/s"), 3);
}

#[tokio::test]
async fn a_429_waits_as_long_as_retry_after_says() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("s", vec![Step::detail(json!({"status": "active"}))]);
    fake.can(
        "GET",
        "/api/hub/session/s",
        429,
        vec![("retry-after", "1".into())],
        "slow down",
    );
    let started = std::time::Instant::now();
    client(&fake)
        .get_session("s")
        .await
        .expect("answered after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.count("GET", "/api/hub/session/s"), 2);
}

#[tokio::test]
async fn a_402_is_fatal_and_never_retried() {
    let fake = FakeAgentuity::start().await;
    fake.can(
        "GET",
        "/api/hub/session/s",
        402,
        vec![("x-upgrade-url", "https://pay.example".into())],
        r#"{"message":"pay"}"#,
    );
    let err = client(&fake).get_session("s").await.expect_err("402");
    assert!(err.is_fatal());
    assert!(err.to_string().contains("https://pay.example"), "{err}");
    assert_eq!(fake.count("GET", "/api/hub/session/s"), 1);
}

#[tokio::test]
async fn a_409_is_retried_only_when_it_carries_rate_limit_headers() {
    let fake = FakeAgentuity::start().await;
    fake.add_session("s", vec![Step::detail(json!({"status": "active"}))]);
    fake.can(
        "GET",
        "/api/hub/session/s",
        409,
        vec![],
        r#"{"message":"conflict"}"#,
    );
    let err = client(&fake)
        .get_session("s")
        .await
        .expect_err("a real conflict");
    assert_eq!(err.class(), Some(ErrorClass::Conflict));
    assert_eq!(fake.count("GET", "/api/hub/session/s"), 1);
    fake.can(
        "GET",
        "/api/hub/session/s",
        409,
        vec![("x-ratelimit-retry-after", "0".into())],
        r#"{"message":"slow"}"#,
    );
    client(&fake)
        .get_session("s")
        .await
        .expect("retried after the rate limit");
    assert_eq!(fake.count("GET", "/api/hub/session/s"), 3);
}

#[tokio::test]
async fn a_create_is_not_repeated_after_a_503() {
    let fake = FakeAgentuity::start().await;
    fake.can("POST", "/api/hub/session", 503, vec![], "restarting");
    let err = client(&fake)
        .create_session(&json!({"task": "t"}))
        .await
        .expect_err("503");
    assert!(err.outcome_unknown());
    assert_eq!(fake.count("POST", "/api/hub/session"), 1);
}

#[tokio::test]
async fn unknown_statuses_are_kept_and_odd_fields_do_not_break_the_answer() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "s",
        vec![Step::detail(json!({
            "status": "hibernating",
            "bucket": "cold",
            "loopStatus": "thinking_hard",
            "loopIteration": "3",
            "tags": null,
            "usage": {"costUsd": "0.25", "inputTokens": 10, "outputTokens": 2.0, "brandNew": true},
            "tasks": [{"taskId": "t1", "status": "running"}, 42],
            "somethingNew": {"x": 1}
        }))],
    );
    fake.lock().loops.insert(
        "s".into(),
        json!({"status": "negotiating", "iteration": 2, "blockers": "not a list"}),
    );
    let client = client(&fake);
    let session = client.get_session("s").await.expect("tolerated");
    assert_eq!(
        session.status,
        Some(SessionStatus::Other("hibernating".into()))
    );
    assert_eq!(
        session.loop_status,
        Some(LoopStatus::Other("thinking_hard".into()))
    );
    assert_eq!(session.loop_iteration, Some(3));
    let usage = session.usage.expect("usage");
    assert_eq!(usage.cost_usd, Some(0.25));
    assert_eq!(usage.output_tokens, Some(2));
    assert_eq!(session.tasks.len(), 1);
    assert!(session.extra.contains_key("somethingNew"));
    let state = client
        .loop_state("s")
        .await
        .expect("loop")
        .loop_state
        .expect("state");
    assert_eq!(state.status, Some(LoopStatus::Other("negotiating".into())));
    assert!(state.blockers.is_empty());
}

#[tokio::test]
async fn listing_sessions_flattens_the_groups_and_sends_search_and_include_archived() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "a",
        vec![Step::detail(
            json!({"status": "active", "tags": ["agh-run:r1"]}),
        )],
    );
    fake.add_session(
        "b",
        vec![Step::detail(
            json!({"status": "active", "tags": ["agh-run:r2"]}),
        )],
    );
    let page = client(&fake)
        .list_sessions(&ListSessions {
            search: Some("agh-run:r1".into()),
            include_archived: true,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].session_id.as_deref(), Some("a"));
    let seen = fake.seen();
    assert!(
        seen[0].query.contains("includeArchived=true"),
        "{}",
        seen[0].query
    );
    assert!(
        seen[0].query.contains("search=agh-run%3Ar1"),
        "{}",
        seen[0].query
    );
}

#[tokio::test]
async fn event_history_pages_with_before_id() {
    let fake = FakeAgentuity::start().await;
    fake.add_session(
        "s",
        vec![Step::detail(json!({})).with_events(vec![
            json!({"event": "a"}),
            json!({"event": "b"}),
            json!({"event": "c"}),
        ])],
    );
    let client = client(&fake);
    client.get_session("s").await.expect("step");
    let history = client
        .event_history("s", Some(10), Some(3))
        .await
        .expect("history");
    let names: Vec<&str> = history.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, vec!["b", "a"]);
    assert!(
        fake.seen()
            .last()
            .expect("seen")
            .query
            .contains("beforeId=3")
    );
}

#[tokio::test]
async fn the_sessions_api_envelope_is_unwrapped_and_its_failures_are_errors() {
    let fake = FakeAgentuity::start().await;
    let client = client(&fake);
    let data = client
        .list_agent_sessions(&Default::default())
        .await
        .expect("list");
    assert_eq!(data[0]["id"], "sess_1");
    let err = client
        .get_agent_session("sess_missing")
        .await
        .expect_err("envelope failure");
    assert!(err.to_string().contains("session not found"), "{err}");
    assert_eq!(
        err.failure().and_then(|f| f.code.as_deref()),
        Some("NOT_FOUND")
    );
}

#[tokio::test]
async fn a_421_is_retried_once_in_the_region_catalyst_names() {
    let fake = FakeAgentuity::start().await;
    let region = vec![("x-agentuity-region", "use".to_string())];
    fake.can("GET", "/session", 421, region.clone(), "misdirected");
    fake.can(
        "GET",
        "/use/session",
        200,
        vec![],
        r#"{"success":true,"data":["from use"]}"#,
    );
    let client = client(&fake).with_regional_catalyst(&format!("{}/{{region}}", fake.url));
    let data = client
        .list_agent_sessions(&Default::default())
        .await
        .expect("retried");
    assert_eq!(data[0], "from use");

    fake.can("GET", "/session", 421, region.clone(), "misdirected");
    fake.can("GET", "/use/session", 421, region, "misdirected again");
    let err = client
        .list_agent_sessions(&Default::default())
        .await
        .expect_err("a second 421");
    assert_eq!(err.class(), Some(ErrorClass::WrongRegion));
    assert_eq!(fake.count("GET", "/use/session"), 2);
}
