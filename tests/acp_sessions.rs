//! Sessions the simulator starts as AGH does, running the real binary as `agh-worker acp`: for a
//! pool-owned run (AGH's task-role runtime), through `POST /api/sessions`, and woken by the
//! scheduler about a queued run.

mod support;

use std::time::{Duration, Instant};

use agh_worker::dev::sim::acp::STOP_GRACE;
use agh_worker::dev::sim::{Route, SimConfig, TaskSpec};
use serde_json::{Value, json};
use support::acp_rig::{AGENT, NOOP, Rig, assert_only_json_rpc, completed};
use support::client_rig::Transport;

fn pool_task(title: &str) -> TaskSpec {
    TaskSpec {
        owner: Some(format!("pool:{AGENT}")),
        workspace_id: Some("ws-default".into()),
        ..TaskSpec::titled(title)
    }
}

#[tokio::test]
async fn a_pool_owned_run_gets_a_session_started_by_the_simulator_and_acp_completes_it() {
    let rig = Rig::start(Transport::Tcp, SimConfig::default(), NOOP).await;
    assert!(rig.sim.agent_sessions().is_empty());
    let run = rig.sim.enqueue_task(pool_task("pooled")).run_id;
    rig.until("the pool-owned run to complete", |sim| completed(sim) >= 1)
        .await;
    let sessions = rig.sim.agent_sessions();
    assert_eq!(sessions.len(), 1, "one session for one run: {sessions:?}");
    let session = &sessions[0];
    assert_eq!(session.agent_name, AGENT);
    let run = rig.sim.run(&run).expect("the run");
    assert_eq!(run.status, "completed");
    assert_eq!(run.session_id.as_deref(), Some(session.session_id.as_str()));
    // AGH's task-role session: on the run's own coordination channel, named after it.
    assert_eq!(session.channel, run.coordination_channel_id);
    let listed = reqwest_json(&rig, "GET", "/api/sessions", None).await.1;
    let named = listed["sessions"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|entry| entry["id"] == session.session_id.as_str())
        })
        .map(|entry| entry["name"].clone());
    assert_eq!(
        named,
        Some(json!(format!(
            "task-role:{AGENT}:{}",
            run.coordination_channel_id.as_deref().unwrap_or("default")
        )))
    );
    assert!(
        rig.sim.agent_errors().is_empty(),
        "{:?}",
        rig.sim.agent_errors()
    );
    let stop = rig
        .sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(stop.exited_by_itself, "{stop:?}");
    assert_only_json_rpc(&rig.sim.agent_stdout(&session.session_id));
    assert_eq!(rig.sim.ledger().violations_total, 0);
}

#[tokio::test]
async fn the_simulator_wakes_an_idle_session_about_a_run_queued_for_it() {
    // The daemon re-checks an open long-poll only every poll interval (an hour here, and the
    // simulator's own ticks with it): only the wake sent at enqueue brings the run in time.
    let config = SimConfig {
        poll_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    };
    let rig = Rig::start(Transport::Tcp, config, NOOP).await;
    let session = rig.session().await;
    rig.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let run = rig.enqueue("woken");
    rig.until("the woken run to complete", |sim| completed(sim) >= 1)
        .await;
    assert_eq!(
        rig.sim.run(&run).expect("the run").session_id.as_deref(),
        Some(session.session_id.as_str())
    );
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
}

/// One operator request to the simulator over TCP: the status and the JSON body (or null).
async fn reqwest_json(rig: &Rig, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let base = rig.base_url.as_deref().expect("a tcp simulator");
    let client = reqwest::Client::new();
    let url = format!("{base}{path}");
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(body.to_string()),
        None => request,
    };
    let response = request.send().await.expect("the simulator answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn post_api_sessions_launches_the_agent_and_stop_ends_it_before_agh_would_signal_it() {
    let rig = Rig::start(Transport::Tcp, SimConfig::default(), NOOP).await;
    let (status, created) = reqwest_json(
        &rig,
        "POST",
        "/api/sessions",
        Some(json!({"agent_name": AGENT, "workspace": "ws-default", "name": "by-hand"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let session = &created["session"];
    let id = session["id"].as_str().expect("a session id").to_owned();
    assert_eq!(session["agent_name"], AGENT);
    assert_eq!(session["name"], "by-hand");
    assert_eq!(
        session["channel"], "default",
        "an empty channel is the default one"
    );
    assert_eq!(
        session["state"], "active",
        "after initialize and session/new"
    );
    // The launched worker claims with this session's identity: a run on its channel.
    let run = rig
        .sim
        .enqueue_task(TaskSpec {
            channel: Some("default".into()),
            workspace_id: Some("ws-default".into()),
            ..TaskSpec::titled("for the new session")
        })
        .run_id;
    rig.until("the run to complete", |sim| completed(sim) >= 1)
        .await;
    assert_eq!(
        rig.sim.run(&run).expect("the run").session_id.as_deref(),
        Some(id.as_str())
    );
    let started = Instant::now();
    let (status, _) = reqwest_json(
        &rig,
        "POST",
        &format!("/api/workspaces/ws-default/sessions/{id}/stop"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        started.elapsed() < STOP_GRACE,
        "the worker exited by itself, before the SIGTERM: {:?}",
        started.elapsed()
    );
    assert!(rig.sim.agent_exited(&id));
    let listed = reqwest_json(&rig, "GET", "/api/sessions", None).await.1;
    let state = listed["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|entry| entry["id"] == id.as_str()))
        .map(|entry| entry["state"].clone());
    assert_eq!(state, Some(json!("stopped")));
}

#[tokio::test]
async fn post_api_sessions_refuses_what_agh_refuses_and_agents_no_provider_runs() {
    let rig = Rig::start(Transport::Tcp, SimConfig::default(), NOOP).await;
    let cases = [
        (
            json!({"agent_name": AGENT}),
            400,
            "workspace or workspace_path is required",
        ),
        (
            json!({"agent_name": AGENT, "workspace": "ws-default", "workspace_path": "/tmp"}),
            400,
            "mutually exclusive",
        ),
        (
            json!({"agent_name": AGENT, "workspace_path": "relative"}),
            400,
            "must be an absolute path",
        ),
        (
            json!({"agent_name": "someone-else", "workspace": "ws-default"}),
            404,
            "someone-else",
        ),
    ];
    for (body, status, says) in cases {
        let (got, answer) = reqwest_json(&rig, "POST", "/api/sessions", Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body} -> {error}");
    }
    assert!(rig.sim.agent_sessions().is_empty());
}
