//! Behaviour tests of the AGH simulator over real HTTP, one per case of agh-protocol.md §10,
//! plus transport, fault, sweep, spawn-reaper, recv-queue and restart behaviour.

mod support;

use std::path::Path;
use std::time::Duration;

use agh_worker::dev::sim::{
    Fault, FaultKind, MessageSpec, Priority, Route, SessionInfo, SessionSpec, SessionState,
    SimConfig, SimServer, Simulator, TaskSpec,
};
use reqwest::Method;
use serde_json::{Value, json};
use support::sim::message;

struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    fn diagnostic_code(&self) -> String {
        self.json()["diagnostic"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

struct Harness {
    sim: Simulator,
    server: SimServer,
    client: reqwest::Client,
    base: String,
}

impl Harness {
    async fn tcp() -> Harness {
        Harness::tcp_with(SimConfig::default()).await
    }

    async fn tcp_with(config: SimConfig) -> Harness {
        let sim = Simulator::new(config);
        let server = sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve over tcp");
        Harness {
            client: reqwest::Client::new(),
            base: server.base_url(),
            sim,
            server,
        }
    }

    async fn unix(path: &Path) -> Harness {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_unix(path)
            .await
            .expect("serve over a unix socket");
        Harness {
            client: reqwest::Client::builder()
                .unix_socket(path)
                .build()
                .expect("unix socket client"),
            base: server.base_url(),
            sim,
            server,
        }
    }

    fn worker(&self) -> SessionInfo {
        self.sim.default_session().expect("default session")
    }

    fn session_on(&self, agent: &str, channel: &str) -> SessionInfo {
        self.sim.create_session(SessionSpec {
            agent_name: agent.to_owned(),
            workspace_id: Some("ws-default".to_owned()),
            channel: Some(channel.to_owned()),
            ..SessionSpec::default()
        })
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        who: Option<&SessionInfo>,
        body: Option<&str>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            request = request
                .header("X-AGH-Session-ID", &who.session_id)
                .header("X-AGH-Agent", &who.agent_name);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request reaches the simulator");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        Reply { status, text }
    }

    async fn get(&self, path: &str, who: &SessionInfo) -> Reply {
        self.request(Method::GET, path, Some(who), None).await
    }

    async fn post(&self, path: &str, who: &SessionInfo, body: &str) -> Reply {
        self.request(Method::POST, path, Some(who), Some(body))
            .await
    }

    async fn claim(&self, who: &SessionInfo, body: &str) -> Reply {
        self.post("/api/agent/tasks/claim-next", who, body).await
    }

    /// Enqueues a task and claims it as `who`; returns the run id.
    async fn claimed_run(&self, who: &SessionInfo, claim_body: &str) -> String {
        let run = self.sim.enqueue_task(TaskSpec::titled("work"));
        let reply = self.claim(who, claim_body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["claim"]["run"]["id"], run.run_id);
        run.run_id
    }
}

fn coordination(kind: &str) -> Value {
    json!({
        "task_id": "task-1",
        "run_id": "run-1",
        "coordination_channel_id": "builders",
        "message_kind": kind,
        "correlation_id": "run-1",
    })
}

// ---- §10 behaviours ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_identity_headers_are_rejected_with_401_identity_required() {
    let harness = Harness::tcp().await;
    let reply = harness
        .request(Method::GET, "/api/agent/me", None, None)
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.diagnostic_code(), "identity_required");
    assert_eq!(reply.json()["diagnostic"]["category"], "session");
    assert_eq!(
        reply.json()["diagnostic"]["id"],
        "agentidentity.identity_required"
    );
    assert!(reply.error().starts_with("AGH_SESSION_ID is required"));
}

#[tokio::test]
async fn an_agent_name_that_differs_from_the_session_is_identity_mismatch() {
    let harness = Harness::tcp().await;
    let coder = harness
        .sim
        .create_session(SessionSpec::for_agent("coder", Some("ws-1")));
    let impostor = SessionInfo {
        agent_name: "reviewer".to_owned(),
        ..coder
    };
    let reply = harness.get("/api/agent/me", &impostor).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.diagnostic_code(), "identity_mismatch");
}

#[tokio::test]
async fn a_stopped_session_is_identity_stale_on_any_agent_call() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    assert!(
        harness
            .sim
            .set_session_state(&worker.session_id, SessionState::Stopped)
    );
    for reply in [
        harness.get("/api/agent/me", &worker).await,
        harness.claim(&worker, "{}").await,
        harness.get("/api/agent/channels", &worker).await,
    ] {
        assert_eq!(reply.status, 401);
        assert_eq!(reply.diagnostic_code(), "identity_stale");
    }
    assert!(
        harness
            .sim
            .set_session_state(&worker.session_id, SessionState::Active)
    );
    assert_eq!(harness.get("/api/agent/me", &worker).await.status, 200);
}

#[tokio::test]
async fn a_workspace_header_naming_another_workspace_is_identity_unauthorized() {
    let harness = Harness::tcp().await;
    let session = harness
        .sim
        .create_session(SessionSpec::for_agent("coder", Some("ws-1")));
    let response = harness
        .client
        .get(format!("{}/api/agent/me", harness.base))
        .header("X-AGH-Session-ID", &session.session_id)
        .header("X-AGH-Agent", "coder")
        .header("X-AGH-Workspace-ID", "ws-2")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("json");
    assert_eq!(body["diagnostic"]["code"], "identity_unauthorized");
}

#[tokio::test]
async fn claim_next_without_work_answers_204_with_an_empty_body() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    for body in ["{}", ""] {
        let reply = harness.claim(&worker, body).await;
        assert_eq!(reply.status, 204);
        assert!(reply.text.is_empty());
    }
}

#[tokio::test]
async fn a_successful_claim_returns_the_lease_and_never_the_raw_claim_token() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run = harness.sim.enqueue_task(TaskSpec::titled("build"));
    let reply = harness.claim(&worker, "{}").await;
    assert_eq!(reply.status, 200);
    let claim = &reply.json()["claim"];
    assert_eq!(claim["lease"]["status"], "claimed");
    assert_eq!(claim["run"]["id"], run.run_id);
    assert_eq!(claim["task"]["id"], run.task_id);
    assert_eq!(
        claim["run"]["claimed_by"],
        json!({"kind": "agent_session", "ref": worker.session_id})
    );
    let hash = claim["lease"]["claim_token_hash"]
        .as_str()
        .unwrap_or_default();
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    assert!(claim["lease"]["coordination_channel"].is_object());
    assert!(!reply.text.contains("claim_token\""));
    assert!(!reply.text.contains("agh_claim_"));
    let snapshot = harness.sim.run(&run.run_id).expect("run snapshot");
    let lease_until = snapshot.lease_until.expect("lease_until");
    let claimed_at = snapshot.claimed_at.expect("claimed_at");
    // 300 s later than the claim, to the second.
    assert_ne!(lease_until, claimed_at);
    assert_eq!(claim["lease"]["lease_until"], lease_until);
}

#[tokio::test]
async fn lease_seconds_above_a_day_or_negative_are_rejected_with_422() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness.sim.enqueue_task(TaskSpec::titled("work"));
    let reply = harness.claim(&worker, r#"{"lease_seconds":86401}"#).await;
    assert_eq!(reply.status, 422);
    assert!(reply.error().contains("lease_seconds exceeds 86400"));
    assert_eq!(
        harness
            .claim(&worker, r#"{"lease_seconds":-1}"#)
            .await
            .status,
        422
    );
}

#[tokio::test]
async fn claim_next_while_holding_a_lease_is_an_immediate_409_even_with_wait() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness.claimed_run(&worker, "{}").await;
    harness.sim.enqueue_task(TaskSpec::titled("more"));
    for body in ["{}", r#"{"wait":true}"#] {
        let reply = harness.claim(&worker, body).await;
        assert_eq!(reply.status, 409);
        assert!(
            reply.error().contains("active run lease exists"),
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn a_waiting_claim_returns_the_run_enqueued_while_it_waits() {
    let harness = Harness::tcp_with(SimConfig {
        poll_interval: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let worker = harness.worker();
    let request = harness
        .client
        .post(format!("{}/api/agent/tasks/claim-next", harness.base))
        .header("X-AGH-Session-ID", &worker.session_id)
        .header("X-AGH-Agent", &worker.agent_name)
        .body(r#"{"wait":true}"#)
        .send();
    let waiting = tokio::spawn(request);
    harness.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let run = harness.sim.enqueue_task(TaskSpec::titled("late work"));
    let response = waiting.await.expect("join").expect("response");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("json");
    assert_eq!(body["claim"]["run"]["id"], run.run_id);
}

#[tokio::test]
async fn heartbeat_without_a_body_is_rejected_with_400_and_with_an_empty_object_extends_the_lease()
{
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness
        .claimed_run(&worker, r#"{"lease_seconds":60}"#)
        .await;
    let path = format!("/api/agent/tasks/{run_id}/heartbeat");
    let empty = harness
        .request(Method::POST, &path, Some(&worker), None)
        .await;
    assert_eq!(empty.status, 400);
    assert!(
        empty
            .error()
            .contains("decode agent task heartbeat request")
    );
    let before = harness.sim.run(&run_id).and_then(|run| run.lease_until);
    harness.sim.advance_clock(Duration::from_secs(10));
    let reply = harness.post(&path, &worker, "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let lease = &reply.json()["lease"];
    assert_eq!(lease["status"], "claimed");
    assert!(lease.get("coordination_channel").is_none());
    let after = harness.sim.run(&run_id).and_then(|run| run.lease_until);
    assert_ne!(before, after);
    assert_eq!(lease["lease_until"].as_str(), after.as_deref());
    assert_eq!(
        lease["heartbeat_at"].as_str(),
        harness
            .sim
            .run(&run_id)
            .and_then(|run| run.heartbeat_at)
            .as_deref()
    );
}

#[tokio::test]
async fn a_stale_holder_before_the_sweep_gets_409_lease_expired() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, r#"{"lease_seconds":1}"#).await;
    harness.sim.advance_clock(Duration::from_secs(2));
    let heartbeat = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/heartbeat"),
            &worker,
            "{}",
        )
        .await;
    assert_eq!(heartbeat.status, 409);
    assert!(heartbeat.error().contains("AUTONOMY_LEASE_EXPIRED"));
    assert!(heartbeat.error().contains("lease expired"));
    let fail = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/fail"),
            &worker,
            r#"{"error":"late"}"#,
        )
        .await;
    assert_eq!(fail.status, 409);
    assert!(fail.error().contains("AUTONOMY_LEASE_EXPIRED"));
}

#[tokio::test]
async fn a_stale_holder_after_the_sweep_gets_409_no_active_lease_and_the_run_is_claimable_again() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, r#"{"lease_seconds":1}"#).await;
    harness.sim.advance_clock(Duration::from_secs(2));
    assert_eq!(harness.sim.sweep_now(), 1);
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("queued".to_owned())
    );
    let reply = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/heartbeat"),
            &worker,
            "{}",
        )
        .await;
    assert_eq!(reply.status, 409);
    assert!(reply.error().contains("AUTONOMY_NO_ACTIVE_LEASE"));
    let other = harness
        .sim
        .create_session(SessionSpec::for_agent("worker", Some("ws-default")));
    let claim = harness.claim(&other, "{}").await;
    assert_eq!(claim.status, 200);
    assert_eq!(claim.json()["claim"]["run"]["id"], run_id);
}

#[tokio::test]
async fn completing_a_run_twice_is_409_lease_expired() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, "{}").await;
    let path = format!("/api/agent/tasks/{run_id}/complete");
    let first = harness
        .post(&path, &worker, r#"{"result":{"ok":true}}"#)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json()["lease"]["status"], "completed");
    assert!(first.json()["lease"].get("lease_until").is_none());
    let second = harness
        .post(&path, &worker, r#"{"result":{"ok":true}}"#)
        .await;
    assert_eq!(second.status, 409);
    assert!(second.error().contains("AUTONOMY_LEASE_EXPIRED"));
    assert!(second.error().contains("not an active lease"));
}

#[tokio::test]
async fn heartbeat_on_another_run_is_403_foreign_run_or_409_without_a_lease() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let unknown = harness
        .post("/api/agent/tasks/run-unknown/heartbeat", &worker, "{}")
        .await;
    assert_eq!(unknown.status, 409);
    assert!(unknown.error().contains("AUTONOMY_NO_ACTIVE_LEASE"));
    assert!(unknown.error().contains("task: invalid claim token"));
    harness.claimed_run(&worker, "{}").await;
    let foreign = harness
        .post("/api/agent/tasks/run-unknown/heartbeat", &worker, "{}")
        .await;
    assert_eq!(foreign.status, 403);
    assert!(foreign.error().contains("AUTONOMY_FOREIGN_RUN"));
    assert!(foreign.error().contains("task: permission denied"));
}

#[tokio::test]
async fn release_requeues_the_same_run_for_any_session() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, "{}").await;
    let reply = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/release"),
            &worker,
            r#"{"reason":"handoff"}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    let lease = &reply.json()["lease"];
    assert_eq!(lease["status"], "queued");
    for field in [
        "session_id",
        "claimed_by",
        "claim_token_hash",
        "lease_until",
    ] {
        assert!(lease.get(field).is_none(), "{field} should be cleared");
    }
    let complete = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/complete"),
            &worker,
            "{}",
        )
        .await;
    assert_eq!(complete.status, 409);
    assert!(complete.error().contains("AUTONOMY_NO_ACTIVE_LEASE"));
    let other = harness
        .sim
        .create_session(SessionSpec::for_agent("helper", Some("ws-default")));
    let claim = harness.claim(&other, "{}").await;
    assert_eq!(claim.json()["claim"]["run"]["id"], run_id);
    assert_eq!(claim.json()["claim"]["run"]["attempt"], 1);
}

#[tokio::test]
async fn the_run_detail_serves_the_operator_without_identity_and_checks_an_identity_given() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, "{}").await;
    let path = format!("/api/task-runs/{run_id}");
    let operator = harness.request(Method::GET, &path, None, None).await;
    assert_eq!(operator.status, 200, "{}", operator.text);
    let detail = &operator.json()["run"];
    assert_eq!(detail["run"]["id"], run_id);
    assert_eq!(detail["run"]["status"], "claimed");
    assert_eq!(detail["run"]["session_id"], worker.session_id);
    assert_eq!(detail["task"]["id"], detail["run"]["task_id"]);
    assert_eq!(detail["session"]["session_id"], worker.session_id);
    assert_eq!(detail["session"]["agent_name"], worker.agent_name);
    assert_eq!(detail["session"]["state"], "active");
    assert_eq!(detail["summary"]["last_event_type"], "task.run_claimed");
    assert!(!operator.text.contains("agh_claim_"), "{}", operator.text);

    let agent = harness.get(&path, &worker).await;
    assert_eq!(agent.status, 200, "{}", agent.text);
    assert_eq!(agent.json(), operator.json());
    let unknown = harness
        .request(Method::GET, "/api/task-runs/run-unknown", None, None)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error(), "task: task run not found");
    let posted = harness.post(&path, &worker, "{}").await;
    assert_eq!(posted.status, 404);
    assert_eq!(posted.text, "404 page not found");
    harness
        .sim
        .set_session_state(&worker.session_id, SessionState::Stopped);
    let stale = harness.get(&path, &worker).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.diagnostic_code(), "identity_stale");
}

#[tokio::test]
async fn results_with_a_claim_token_oversized_results_and_blank_failures_are_rejected() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, "{}").await;
    let complete = format!("/api/agent/tasks/{run_id}/complete");
    let token = harness
        .post(&complete, &worker, r#"{"result":{"claim_token":"x"}}"#)
        .await;
    assert_eq!(token.status, 422);
    assert!(token.error().contains("task: validation failed"));
    let big = json!({ "result": { "blob": "x".repeat(70_000) } }).to_string();
    let oversized = harness.post(&complete, &worker, &big).await;
    assert_eq!(oversized.status, 413);
    assert!(oversized.error().contains("payload too large"));
    let blank = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/fail"),
            &worker,
            r#"{"error":"  "}"#,
        )
        .await;
    assert_eq!(blank.status, 422);
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("claimed".to_owned())
    );
}

#[tokio::test]
async fn recv_is_non_destructive_and_shows_only_coordination_messages_of_the_channel() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    harness.sim.inject_message(
        &me.session_id,
        message(
            "builders",
            "reviewer.sess-peer",
            "with metadata",
            Some(coordination("status")),
        ),
    );
    harness.sim.inject_message(
        &me.session_id,
        message("builders", "reviewer.sess-peer", "bare", None),
    );
    harness.sim.inject_message(
        &me.session_id,
        message(
            "other",
            "reviewer.sess-peer",
            "elsewhere",
            Some(coordination("status")),
        ),
    );
    let first = harness.get("/api/agent/channels/builders/recv", &me).await;
    let second = harness.get("/api/agent/channels/builders/recv", &me).await;
    assert_eq!(first.status, 200);
    let messages = first.json()["messages"].clone();
    assert_eq!(messages.as_array().map(Vec::len), Some(1));
    assert_eq!(messages[0]["body"]["text"], "with metadata");
    assert_eq!(messages[0]["from_session_id"], "reviewer.sess-peer");
    assert_eq!(first.json(), second.json());
}

#[tokio::test]
async fn recv_parameters_are_validated_and_limit_returns_the_oldest() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    for query in ["limit=0", "limit=abc", "wait=maybe"] {
        let reply = harness
            .get(&format!("/api/agent/channels/builders/recv?{query}"), &me)
            .await;
        assert_eq!(reply.status, 400, "{query}");
    }
    assert_eq!(
        harness
            .get("/api/agent/channels/Builders/recv", &me)
            .await
            .status,
        400
    );
    for id in ["msg-c", "msg-a", "msg-b"] {
        harness.sim.inject_message(
            &me.session_id,
            MessageSpec {
                message_id: Some(id.to_owned()),
                ..message(
                    "builders",
                    "reviewer.sess-peer",
                    id,
                    Some(coordination("status")),
                )
            },
        );
    }
    harness.sim.advance_clock(Duration::from_secs(5));
    harness.sim.inject_message(
        &me.session_id,
        MessageSpec {
            message_id: Some("msg-0-later".to_owned()),
            ..message(
                "builders",
                "reviewer.sess-peer",
                "later",
                Some(coordination("status")),
            )
        },
    );
    let all = harness
        .get("/api/agent/channels/builders/recv", &me)
        .await
        .json();
    let ids: Vec<&str> = all["messages"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|m| m["message_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, vec!["msg-a", "msg-b", "msg-c", "msg-0-later"]);
    let one = harness
        .get("/api/agent/channels/builders/recv?limit=1", &me)
        .await
        .json();
    assert_eq!(one["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["messages"][0]["message_id"], "msg-a");
    let timestamp = one["messages"][0]["timestamp"].as_str().unwrap_or_default();
    assert!(!timestamp.contains('.'), "1-second resolution: {timestamp}");
}

#[tokio::test]
async fn recv_wait_blocks_until_a_message_arrives_and_may_return_an_empty_list() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    let request = harness
        .client
        .get(format!(
            "{}/api/agent/channels/builders/recv?wait=true",
            harness.base
        ))
        .header("X-AGH-Session-ID", &me.session_id)
        .header("X-AGH-Agent", &me.agent_name)
        .send();
    let waiting = tokio::spawn(request);
    harness.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    harness.sim.inject_message(
        &me.session_id,
        message("builders", "reviewer.sess-peer", "bare", None),
    );
    let response = waiting.await.expect("join").expect("response");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = serde_json::from_str(&response.text().await.expect("body")).expect("json");
    assert_eq!(body, json!({ "messages": [] }));
    // While anything is queued on the channel, a wait returns at once.
    let again = harness
        .get("/api/agent/channels/builders/recv?wait=true", &me)
        .await;
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn send_validates_body_and_metadata_and_answers_202() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    let path = "/api/agent/channels/builders/send";
    let no_text = json!({ "body": { "status": "x" }, "metadata": coordination("status") });
    assert_eq!(
        harness.post(path, &me, &no_text.to_string()).await.status,
        400
    );
    let mut missing = coordination("status");
    missing["correlation_id"] = json!("");
    let no_correlation = json!({ "body": { "text": "hi" }, "metadata": missing });
    assert_eq!(
        harness
            .post(path, &me, &no_correlation.to_string())
            .await
            .status,
        400
    );
    let chat = json!({ "body": { "text": "hi" }, "metadata": coordination("chat") });
    assert_eq!(harness.post(path, &me, &chat.to_string()).await.status, 400);
    let mut with_token = coordination("status");
    with_token["ext"] = json!({ "claim_token": "x" });
    let token = json!({ "body": { "text": "hi" }, "metadata": with_token });
    assert_eq!(
        harness.post(path, &me, &token.to_string()).await.status,
        400
    );
    let valid = json!({ "body": { "text": "progress" }, "metadata": coordination("status") });
    let reply = harness.post(path, &me, &valid.to_string()).await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let sent = &reply.json()["message"];
    let id = sent["message_id"].as_str().unwrap_or_default();
    assert!(id.starts_with("msg-") && id.len() == 20, "{id}");
    assert_eq!(sent["from_session_id"], me.session_id);
}

#[tokio::test]
async fn send_works_only_on_the_own_channel_and_dedupes_idempotency_keys() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    let peer = harness.session_on("reviewer", "builders");
    let body = json!({ "body": { "text": "hi" }, "metadata": coordination("status"), "idempotency_key": "k1" })
        .to_string();
    let elsewhere = harness
        .post("/api/agent/channels/reviewers/send", &me, &body)
        .await;
    assert_eq!(elsewhere.status, 404);
    assert!(elsewhere.error().contains("local peer not found"));
    for _ in 0..2 {
        let reply = harness
            .post("/api/agent/channels/builders/send", &me, &body)
            .await;
        assert_eq!(reply.status, 202);
        assert_eq!(reply.json()["message"]["message_id"], "k1");
    }
    let received = harness
        .get("/api/agent/channels/builders/recv", &peer)
        .await
        .json();
    assert_eq!(received["messages"].as_array().map(Vec::len), Some(1));
    // The sender never receives its own broadcast.
    let own = harness
        .get("/api/agent/channels/builders/recv", &me)
        .await
        .json();
    assert_eq!(own["messages"], json!([]));
}

#[tokio::test]
async fn reply_goes_to_the_source_sender_and_inherits_metadata() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    harness.sim.inject_message(
        &me.session_id,
        MessageSpec {
            message_id: Some("msg-source".to_owned()),
            ..message(
                "builders",
                "reviewer.sess-peer",
                "please look",
                Some(coordination("status")),
            )
        },
    );
    let reply = harness
        .post(
            "/api/agent/channels/reply",
            &me,
            r#"{"reply_to_message_id":"msg-source","body":{"text":"ack"}}"#,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let sent = &reply.json()["message"];
    assert_eq!(sent["to_session_id"], "reviewer.sess-peer");
    assert_eq!(sent["metadata"]["message_kind"], "reply");
    assert_eq!(sent["metadata"]["task_id"], "task-1");
    assert_eq!(sent["metadata"]["run_id"], "run-1");
    let unknown = harness
        .post(
            "/api/agent/channels/reply",
            &me,
            r#"{"reply_to_message_id":"msg-nope","body":{"text":"ack"}}"#,
        )
        .await;
    assert_eq!(unknown.status, 404);
    let explicit = json!({
        "reply_to_message_id": "msg-source",
        "body": { "text": "ack" },
        "metadata": coordination("status"),
    });
    let wrong_kind = harness
        .post("/api/agent/channels/reply", &me, &explicit.to_string())
        .await;
    assert_eq!(wrong_kind.status, 400);
}

#[tokio::test]
async fn spawn_validates_strictly_enforces_limits_and_defaults_auto_stop_on_parent() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    for body in [
        r#"{"agent_name":"coder","ttl_seconds":0}"#,
        r#"{"agent_name":"coder","ttl_seconds":60,"permissions":{"filesystem":["/"]}}"#,
        r#"{"agent_name":"coder","ttl_seconds":60,"spawn_role":"Coordinator"}"#,
    ] {
        assert_eq!(
            harness.post("/api/agent/spawn", &worker, body).await.status,
            422,
            "{body}"
        );
    }
    let wider = harness
        .post(
            "/api/agent/spawn",
            &worker,
            r#"{"agent_name":"coder","ttl_seconds":60,"permissions":{"tools":["shell"]}}"#,
        )
        .await;
    assert_eq!(wider.status, 403);
    assert!(wider.error().contains("session: spawn permission denied"));
    let minimal = r#"{"agent_name":"coder","ttl_seconds":60}"#;
    let created = harness.post("/api/agent/spawn", &worker, minimal).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let spawn = &created.json()["spawn"];
    assert_eq!(spawn["lineage"]["auto_stop_on_parent"], true);
    assert_eq!(spawn["lineage"]["spawn_depth"], 1);
    assert_eq!(spawn["lineage"]["spawn_role"], "worker");
    assert_eq!(spawn["session"]["type"], "spawned");
    let child = SessionInfo {
        session_id: spawn["session"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        agent_name: "coder".to_owned(),
        workspace_id: Some("ws-default".to_owned()),
        channel: None,
        peer_id: String::new(),
    };
    let grandchild = harness.post("/api/agent/spawn", &child, minimal).await;
    assert_eq!(grandchild.status, 409);
    assert!(grandchild.error().contains("session: spawn limit exceeded"));
    for _ in 0..4 {
        assert_eq!(
            harness
                .post("/api/agent/spawn", &worker, minimal)
                .await
                .status,
            201
        );
    }
    let sixth = harness.post("/api/agent/spawn", &worker, minimal).await;
    assert_eq!(sixth.status, 409);
}

#[tokio::test]
async fn coordinator_config_ignores_the_workspace_parameter() {
    let harness = Harness::tcp().await;
    let session = harness
        .sim
        .create_session(SessionSpec::for_agent("coder", Some("ws-1")));
    let reply = harness
        .get("/api/agent/coordinator/config?workspace=ws-9", &session)
        .await;
    assert_eq!(reply.status, 200);
    let coordinator = &reply.json()["coordinator"];
    assert_eq!(coordinator["source"], "workspace");
    assert_eq!(coordinator["workspace_id"], "ws-1");
    assert_eq!(coordinator["enabled"], false);
    assert_eq!(coordinator["agent_name"], "coordinator");
    assert_eq!(coordinator["default_ttl_seconds"], 7200);
    assert_eq!(coordinator["max_children"], 5);
    assert_eq!(coordinator["max_active_sessions_per_workspace"], 5);
}

#[tokio::test]
async fn over_tcp_server_errors_are_masked_and_bodies_over_4_mib_are_413() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness.sim.inject_fault(Fault::new(
        Route::Me,
        FaultKind::Status {
            status: 500,
            error: "store: database is locked".to_owned(),
        },
        1,
    ));
    let masked = harness.get("/api/agent/me", &worker).await;
    assert_eq!(masked.status, 500);
    assert_eq!(masked.json(), json!({ "error": "Internal Server Error" }));
    let huge = "x".repeat(4 * 1024 * 1024 + 1);
    let reply = harness
        .post("/api/agent/tasks/claim-next", &worker, &huge)
        .await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error(), "request body too large");
}

// ---- transports ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_unix_socket_serves_identity_and_a_claim_complete_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let harness = Harness::unix(&dir.path().join("daemon.sock")).await;
    let worker = harness.worker();
    assert_eq!(harness.base, "http://unix");
    let me = harness.get("/api/agent/me", &worker).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["me"]["self"]["session_id"], worker.session_id);
    assert_eq!(me.json()["me"]["active_task_leases"], json!([]));
    let run_id = harness.claimed_run(&worker, "{}").await;
    let me = harness.get("/api/agent/me", &worker).await;
    assert_eq!(me.json()["me"]["active_task_leases"][0]["run_id"], run_id);
    assert_eq!(me.json()["me"]["channels"][0]["run_id"], run_id);
    let done = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/complete"),
            &worker,
            r#"{"result":"ok"}"#,
        )
        .await;
    assert_eq!(done.status, 200);
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("completed".to_owned())
    );
    harness.server.shutdown().await;
    assert!(!dir.path().join("daemon.sock").exists());
}

#[tokio::test]
async fn an_injected_500_is_raw_over_the_unix_socket_but_masked_over_tcp() {
    let dir = tempfile::tempdir().expect("temp dir");
    let unix = Harness::unix(&dir.path().join("daemon.sock")).await;
    let worker = unix.worker();
    unix.sim.inject_fault(Fault::new(
        Route::Context,
        FaultKind::Status {
            status: 500,
            error: "situation: assembler failed".to_owned(),
        },
        1,
    ));
    let raw = unix.get("/api/agent/context", &worker).await;
    assert_eq!(raw.status, 500);
    assert_eq!(raw.error(), "situation: assembler failed");
    let tcp = Harness::tcp().await;
    tcp.sim.inject_fault(Fault::new(
        Route::Context,
        FaultKind::Status {
            status: 503,
            error: "api: agent context service is not configured".to_owned(),
        },
        1,
    ));
    let masked = tcp.get("/api/agent/context", &tcp.worker()).await;
    assert_eq!(masked.status, 503);
    assert_eq!(masked.error(), "Service Unavailable");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_a_plain_text_404() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let unknown = harness.get("/api/agent/nope", &worker).await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (404, "404 page not found")
    );
    let wrong_method = harness.get("/api/agent/tasks/claim-next", &worker).await;
    assert_eq!(wrong_method.status, 404);
}

#[tokio::test]
async fn a_foreign_origin_header_is_refused_over_tcp() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let response = harness
        .client
        .get(format!("{}/api/agent/me", harness.base))
        .header("X-AGH-Session-ID", &worker.session_id)
        .header("X-AGH-Agent", &worker.agent_name)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 403);
    assert_eq!(
        response.text().await.expect("body"),
        r#"{"error":"origin not allowed"}"#
    );
}

#[tokio::test]
async fn run_standalone_serves_both_transports_until_the_shutdown_future_resolves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("daemon.sock");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(agh_worker::dev::sim::run_standalone(
        Some("127.0.0.1:0".parse().expect("address")),
        Some(socket.clone()),
        SimConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let _ = stop.send(());
    serving.await.expect("join").expect("standalone simulator");
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

// ---- faults -------------------------------------------------------------------------------------

#[tokio::test]
async fn a_status_fault_answers_once_without_performing_the_operation() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run = harness.sim.enqueue_task(TaskSpec::titled("work"));
    harness.sim.inject_fault(Fault::new(
        Route::ClaimNext,
        FaultKind::Status {
            status: 409,
            error: "task: invalid status transition".to_owned(),
        },
        1,
    ));
    let faulted = harness.claim(&worker, "{}").await;
    assert_eq!(faulted.status, 409);
    assert_eq!(
        harness.sim.run(&run.run_id).map(|r| r.status),
        Some("queued".to_owned())
    );
    assert_eq!(harness.claim(&worker, "{}").await.status, 200);
}

#[tokio::test]
async fn a_delay_fault_holds_the_answer_past_a_client_deadline() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness.sim.inject_fault(Fault::new(
        Route::Me,
        FaultKind::Delay(Duration::from_secs(30)),
        1,
    ));
    let outcome = harness
        .client
        .get(format!("{}/api/agent/me", harness.base))
        .header("X-AGH-Session-ID", &worker.session_id)
        .header("X-AGH-Agent", &worker.agent_name)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(outcome.is_err_and(|error| error.is_timeout()));
}

#[tokio::test]
async fn drop_after_commit_leaves_the_run_claimed_by_the_session_while_the_client_sees_an_error() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run = harness.sim.enqueue_task(TaskSpec::titled("work"));
    harness
        .sim
        .inject_fault(Fault::new(Route::ClaimNext, FaultKind::DropAfterCommit, 1));
    let outcome = async {
        let response = harness
            .client
            .post(format!("{}/api/agent/tasks/claim-next", harness.base))
            .header("X-AGH-Session-ID", &worker.session_id)
            .header("X-AGH-Agent", &worker.agent_name)
            .body("{}")
            .send()
            .await?;
        response.bytes().await
    }
    .await;
    assert!(outcome.is_err(), "the client must not get a valid answer");
    let snapshot = harness.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "claimed");
    assert_eq!(
        snapshot.session_id.as_deref(),
        Some(worker.session_id.as_str())
    );
    let me = harness.get("/api/agent/me", &worker).await.json();
    assert_eq!(me["me"]["active_task_leases"][0]["run_id"], run.run_id);
}

#[tokio::test]
async fn garbage_and_truncated_faults_answer_200_with_bodies_that_are_not_json() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness
        .sim
        .inject_fault(Fault::new(Route::Me, FaultKind::Garbage, 1));
    harness
        .sim
        .inject_fault(Fault::new(Route::Me, FaultKind::Truncated, 1));
    for _ in 0..2 {
        let reply = harness.get("/api/agent/me", &worker).await;
        assert_eq!(reply.status, 200);
        assert!(
            serde_json::from_str::<Value>(&reply.text).is_err(),
            "{}",
            reply.text
        );
    }
    assert_eq!(
        harness.get("/api/agent/me", &worker).await.json()["me"]["self"]["session_id"],
        worker.session_id
    );
}

#[tokio::test]
async fn an_oversize_fault_streams_a_body_of_the_requested_size() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    harness.sim.inject_fault(Fault::new(
        Route::Me,
        FaultKind::Oversize {
            bytes: 8 * 1024 * 1024,
        },
        1,
    ));
    let reply = harness.get("/api/agent/me", &worker).await;
    assert_eq!(reply.text.len(), 8 * 1024 * 1024);
}

// ---- leases, sweep and clock --------------------------------------------------------------------

#[tokio::test]
async fn an_expired_but_unswept_lease_does_not_block_a_new_claim() {
    // No background sweep during the test: on a loaded machine one could requeue the expired
    // run before the claim, which would then (rightly) get that older run.
    let harness = Harness::tcp_with(SimConfig {
        sweep_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await;
    let worker = harness.worker();
    let first = harness.claimed_run(&worker, "{}").await;
    assert!(harness.sim.expire_lease(&first));
    let second = harness.sim.enqueue_task(TaskSpec::titled("next"));
    let claim = harness.claim(&worker, "{}").await;
    assert_eq!(claim.status, 200);
    assert_eq!(claim.json()["claim"]["run"]["id"], second.run_id);
    assert_eq!(harness.sim.sweep_now(), 1);
    assert_eq!(
        harness.sim.run(&first).map(|run| run.status),
        Some("queued".to_owned())
    );
}

#[tokio::test]
async fn the_background_sweep_requeues_expired_leases_on_the_sim_clock() {
    let harness = Harness::tcp_with(SimConfig {
        sweep_interval: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await;
    let worker = harness.worker();
    let run_id = harness
        .claimed_run(&worker, r#"{"lease_seconds":30}"#)
        .await;
    harness.sim.wait_for_background_sweeps(2).await;
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("claimed".to_owned())
    );
    harness.sim.advance_clock(Duration::from_secs(31));
    // The second sweep certainly read the clock after it was advanced.
    harness.sim.wait_for_background_sweeps(2).await;
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("queued".to_owned())
    );
    let ledger = harness.sim.ledger();
    assert_eq!(
        ledger.transitions_of(agh_worker::dev::sim::TransitionKind::RequeuedBySweep),
        1
    );
    assert_eq!(ledger.violations_total, 0);
}

#[tokio::test]
async fn a_streamed_body_over_4_mib_is_413_over_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let address = harness.server.local_addr().expect("tcp address");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/agent/tasks/claim-next HTTP/1.1\r\nHost: {address}\r\nX-AGH-Session-ID: {}\r\nX-AGH-Agent: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        worker.session_id, worker.agent_name
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 1024 * 1024];
    for _ in 0..5 {
        let sent = async {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        }
        .await;
        if sent.is_err() {
            break; // the server may answer and close before the whole body is sent
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body too large"));
}

#[tokio::test]
async fn the_unix_socket_has_no_4_mib_body_cap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let harness = Harness::unix(&dir.path().join("daemon.sock")).await;
    let worker = harness.worker();
    let padded = format!("{{\"wait\":false{}}}", " ".repeat(5 * 1024 * 1024));
    let reply = harness.claim(&worker, &padded).await;
    assert_eq!(reply.status, 204, "{}", reply.text);
}

#[tokio::test]
async fn claims_follow_priority_then_queue_order() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let low = harness.sim.enqueue_task(TaskSpec {
        priority: Priority::Low,
        ..TaskSpec::titled("low")
    });
    let urgent = harness.sim.enqueue_task(TaskSpec {
        priority: Priority::Urgent,
        ..TaskSpec::titled("urgent")
    });
    let filtered = harness.claim(&worker, r#"{"priority_min":50}"#).await;
    assert_eq!(filtered.status, 204);
    for expected in [&urgent.run_id, &low.run_id] {
        let claim = harness.claim(&worker, "{}").await.json();
        let run_id = claim["claim"]["run"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(&run_id, expected);
        harness
            .post(
                &format!("/api/agent/tasks/{run_id}/complete"),
                &worker,
                "{}",
            )
            .await;
    }
}

#[tokio::test]
async fn a_channel_bound_session_claims_only_runs_of_its_channel_and_workspace_sessions_never_see_global_tasks()
 {
    let harness = Harness::tcp().await;
    let bound = harness.session_on("coder", "builders");
    harness
        .sim
        .enqueue_task(TaskSpec::titled("derived channel"));
    assert_eq!(harness.claim(&bound, "{}").await.status, 204);
    let on_channel = harness.sim.enqueue_task(TaskSpec {
        channel: Some("builders".to_owned()),
        ..TaskSpec::titled("builders work")
    });
    let claim = harness.claim(&bound, "{}").await.json();
    assert_eq!(claim["claim"]["run"]["id"], on_channel.run_id);
    assert_eq!(claim["claim"]["run"]["coordination_channel_id"], "builders");
    let global = harness.sim.enqueue_task(TaskSpec {
        workspace_id: Some(String::new()),
        ..TaskSpec::titled("global")
    });
    let other = harness
        .sim
        .create_session(SessionSpec::for_agent("worker", Some("ws-default")));
    let claim = harness.claim(&other, "{}").await.json();
    assert_ne!(claim["claim"]["run"]["id"], global.run_id);
    let global_session = harness
        .sim
        .create_session(SessionSpec::for_agent("worker", None));
    let claim = harness.claim(&global_session, "{}").await.json();
    assert_eq!(claim["claim"]["run"]["id"], global.run_id);
    assert!(claim["claim"].get("coordination_channel").is_none());
}

#[tokio::test]
async fn the_context_bundle_describes_the_claimed_run() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run = harness.sim.enqueue_task(TaskSpec {
        handoff_summary: Some("pick up where alice left off".to_owned()),
        max_runtime_seconds: 600,
        metadata: json!({ "repo": "agh" }),
        ..TaskSpec::titled("context")
    });
    let claim = harness.claim(&worker, "{}").await.json();
    assert_eq!(claim["claim"]["run"]["metadata"]["repo"], "agh");
    let context = harness.get("/api/agent/context", &worker).await.json();
    let task = &context["context"]["task"];
    assert_eq!(task["available"], true);
    assert_eq!(task["bundle"]["current_run"]["id"], run.run_id);
    assert_eq!(
        task["bundle"]["handoff_summary"],
        "pick up where alice left off"
    );
    assert_eq!(task["bundle"]["limits"]["max_runtime_seconds"], 600);
    assert_eq!(task["bundle"]["limits"]["summary_max_bytes"], 4096);
    assert_eq!(task["bundle"]["prior_attempts"], json!([]));
    assert_eq!(
        task["lease"]["coordination_channel"]["purpose"],
        "task_run_coordination"
    );
    assert_eq!(context["context"]["limits"]["max_children"], 5);
    assert_eq!(context["context"]["limits"]["max_spawn_depth"], 1);
    assert_eq!(context["context"]["limits"]["context_section_limit"], 8);
}

#[tokio::test]
async fn a_missing_soul_is_valid_and_an_invalid_soul_answers_422_with_the_soul_object() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let missing = harness.get("/api/agent/soul", &worker).await;
    assert_eq!(missing.status, 200);
    assert_eq!(missing.json()["present"], false);
    assert_eq!(missing.json()["validation_status"], "missing");
    harness
        .sim
        .set_soul("worker", Some("# Soul\nThis is INVALID".to_owned()));
    let invalid = harness.get("/api/agent/soul", &worker).await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.json()["validation_status"], "invalid");
    let validated = harness
        .post(
            "/api/agent/soul/validate",
            &worker,
            r##"{"body":"# Soul\nbe kind"}"##,
        )
        .await;
    assert_eq!(validated.status, 200);
    assert_eq!(validated.json()["valid"], true);
}

// ---- spawn reaper, channel queues, restart ------------------------------------------------------

#[tokio::test]
async fn a_spawned_child_becomes_identity_stale_once_its_ttl_passes() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let created = harness
        .post(
            "/api/agent/spawn",
            &worker,
            r#"{"agent_name":"coder","ttl_seconds":60}"#,
        )
        .await
        .json();
    let child = SessionInfo {
        session_id: created["spawn"]["session"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        agent_name: "coder".to_owned(),
        workspace_id: Some("ws-default".to_owned()),
        channel: None,
        peer_id: String::new(),
    };
    let run_id = harness.claimed_run(&child, "{}").await;
    harness.sim.advance_clock(Duration::from_secs(61));
    assert_eq!(harness.sim.reap_now(), 1);
    let reply = harness.get("/api/agent/me", &child).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.diagnostic_code(), "identity_stale");
    assert_eq!(
        harness.sim.run(&run_id).map(|run| run.status),
        Some("queued".to_owned())
    );
}

#[tokio::test]
async fn the_recv_queue_keeps_the_newest_100_messages_and_dequeued_messages_vanish() {
    let harness = Harness::tcp().await;
    let me = harness.session_on("coder", "builders");
    for index in 0..105 {
        harness.sim.inject_message(
            &me.session_id,
            MessageSpec {
                message_id: Some(format!("msg-{index:04}")),
                ..message(
                    "builders",
                    "reviewer.sess-peer",
                    "n",
                    Some(coordination("status")),
                )
            },
        );
    }
    let all = harness
        .get("/api/agent/channels/builders/recv", &me)
        .await
        .json();
    let messages = all["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 100);
    assert_eq!(messages[0]["message_id"], "msg-0005");
    assert_eq!(harness.sim.dequeue_messages(&me.session_id), 100);
    let after = harness
        .get("/api/agent/channels/builders/recv", &me)
        .await
        .json();
    assert_eq!(after["messages"], json!([]));
}

#[tokio::test]
async fn a_restart_keeps_runs_but_loses_channel_queues_and_serves_on_the_same_address() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let me = harness.session_on("coder", "builders");
    harness.sim.inject_message(
        &me.session_id,
        message(
            "builders",
            "reviewer.sess-peer",
            "before",
            Some(coordination("status")),
        ),
    );
    let run_id = harness.claimed_run(&worker, "{}").await;
    let address = harness.server.local_addr();
    let Harness {
        sim,
        server,
        client,
        base,
    } = harness;
    let server = server.restart().await.expect("restart");
    assert_eq!(server.local_addr(), address);
    let harness = Harness {
        sim,
        server,
        client,
        base,
    };
    let inbox = harness
        .get("/api/agent/channels/builders/recv", &me)
        .await
        .json();
    assert_eq!(inbox["messages"], json!([]));
    let heartbeat = harness
        .post(
            &format!("/api/agent/tasks/{run_id}/heartbeat"),
            &worker,
            "{}",
        )
        .await;
    assert_eq!(heartbeat.status, 200);
}

#[tokio::test]
async fn a_restart_cuts_a_waiting_long_poll() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let request = harness
        .client
        .post(format!("{}/api/agent/tasks/claim-next", harness.base))
        .header("X-AGH-Session-ID", &worker.session_id)
        .header("X-AGH-Agent", &worker.agent_name)
        .body(r#"{"wait":true}"#)
        .send();
    let waiting = tokio::spawn(async move {
        match request.await {
            Ok(response) => response.bytes().await.map(|_| ()),
            Err(error) => Err(error),
        }
    });
    harness.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let server = harness.server.restart().await.expect("restart");
    assert!(waiting.await.expect("join").is_err());
    server.shutdown().await;
}

// ---- ledger and admin surface -------------------------------------------------------------------

#[tokio::test]
async fn the_ledger_counts_requests_and_transitions_of_a_normal_cycle_without_violations() {
    let harness = Harness::tcp().await;
    let worker = harness.worker();
    let run_id = harness.claimed_run(&worker, "{}").await;
    harness
        .post(
            &format!("/api/agent/tasks/{run_id}/heartbeat"),
            &worker,
            "{}",
        )
        .await;
    harness
        .post(
            &format!("/api/agent/tasks/{run_id}/complete"),
            &worker,
            "{}",
        )
        .await;
    harness.claim(&worker, "{}").await;
    let ledger = harness.sim.ledger();
    assert_eq!(ledger.violations_total, 0, "{:?}", ledger.violations);
    assert_eq!(ledger.requests_for(Route::ClaimNext, 200), 1);
    assert_eq!(ledger.requests_for(Route::ClaimNext, 204), 1);
    assert_eq!(ledger.requests_for(Route::Complete, 200), 1);
    assert_eq!(ledger.runs_in_status("completed"), 1);
    assert_eq!(
        ledger.transitions_of(agh_worker::dev::sim::TransitionKind::Claimed),
        1
    );
    assert_eq!(
        ledger.transitions_of(agh_worker::dev::sim::TransitionKind::Heartbeat),
        1
    );
}

#[tokio::test]
async fn the_admin_surface_drives_the_simulator_over_http() {
    let harness = Harness::tcp().await;
    let admin = |method: Method, path: &str, body: &str| {
        harness
            .client
            .request(method, format!("{}{path}", harness.base))
            .body(body.to_owned())
            .send()
    };
    let created = admin(
        Method::POST,
        "/sim/sessions",
        r#"{"agent_name":"coder","workspace_id":"ws-default"}"#,
    )
    .await
    .expect("create session");
    assert_eq!(created.status().as_u16(), 201);
    let session: SessionInfo =
        serde_json::from_str(&created.text().await.expect("body")).expect("session info");
    let task = admin(
        Method::POST,
        "/sim/tasks",
        r#"{"title":"from a script","priority":"high"}"#,
    )
    .await
    .expect("enqueue");
    let task: Value = serde_json::from_str(&task.text().await.expect("body")).expect("json");
    let run_id = task["run_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(harness.claim(&session, "{}").await.status, 200);
    admin(Method::POST, &format!("/sim/runs/{run_id}/expire"), "")
        .await
        .expect("expire");
    let swept = admin(Method::POST, "/sim/sweep", "").await.expect("sweep");
    let swept: Value = serde_json::from_str(&swept.text().await.expect("body")).expect("json");
    assert_eq!(swept["requeued"], 1);
    admin(
        Method::POST,
        "/sim/faults",
        r#"{"route":"me","kind":{"type":"status","status":503,"error":"busy"},"times":1}"#,
    )
    .await
    .expect("fault");
    assert_eq!(harness.get("/api/agent/me", &session).await.status, 503);
    let run = admin(Method::GET, &format!("/sim/runs/{run_id}"), "")
        .await
        .expect("run");
    let run: Value = serde_json::from_str(&run.text().await.expect("body")).expect("json");
    assert_eq!(run["status"], "queued");
    let ledger = admin(Method::GET, "/sim/ledger", "").await.expect("ledger");
    let ledger: Value = serde_json::from_str(&ledger.text().await.expect("body")).expect("json");
    assert_eq!(ledger["violations_total"], 0);
    let stopped = admin(
        Method::POST,
        &format!("/sim/sessions/{}/state", session.session_id),
        r#"{"state":"stopped"}"#,
    )
    .await
    .expect("state");
    assert_eq!(stopped.status().as_u16(), 200);
    assert_eq!(harness.get("/api/agent/me", &session).await.status, 401);
}
