//! The typed AGH client against the simulator, every endpoint over TCP and over a Unix socket:
//! typed payloads, classified errors, the SPEC≠CODE cases of agh-protocol.md §9, long polls.

mod support;

use std::time::Duration;

use agh_worker::api::types::*;
// The wire enum of session states, named apart from the simulator's.
use agh_worker::api::types::SessionState as SessionState_;
use agh_worker::api::{AghClient, ApiError, ClaimOutcome, ErrorKind, Identity, RecvOptions};
use agh_worker::dev::sim::{
    Fault, FaultKind, Route, SessionInfo, SessionSpec, SessionState, TaskSpec,
};
use serde_json::{Value, json};
use support::client_rig::{CannedServer, Rig, Transport, quick_options};
use support::sim::{SPAWN_TIMEOUT, message};

// ---- helpers ------------------------------------------------------------------------------------

fn coordination(kind: &str, channel: &str) -> Value {
    json!({
        "task_id": "task-1",
        "run_id": "run-1",
        "coordination_channel_id": channel,
        "message_kind": kind,
        "correlation_id": "corr-1",
    })
}

fn metadata(kind: MessageKind, channel: &str) -> MessageMetadata {
    MessageMetadata {
        task_id: "task-1".into(),
        run_id: "run-1".into(),
        workflow_id: None,
        coordination_channel_id: channel.into(),
        message_kind: kind,
        correlation_id: "corr-1".into(),
        ext: None,
    }
}

fn say(channel: &str, text: &str) -> SendRequest {
    SendRequest {
        body: json!({ "text": text }),
        metadata: metadata(MessageKind::Status, channel),
        idempotency_key: None,
    }
}

async fn claim(client: &AghClient) -> Claim {
    match client
        .claim_next(&ClaimRequest::default())
        .await
        .expect("claim-next answers")
    {
        ClaimOutcome::Claimed(claim) => *claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// Enqueues one task and claims its run as the default session.
async fn claimed_run(rig: &Rig) -> (AghClient, String) {
    let run = rig.sim.enqueue_task(TaskSpec::titled("work")).run_id;
    let client = rig.client();
    let claimed = claim(&client).await;
    assert_eq!(claimed.run.id, run);
    (client, run)
}

fn assert_error(
    result: Result<impl std::fmt::Debug, ApiError>,
    kind: ErrorKind,
    status: u16,
) -> ApiError {
    let err = result.expect_err("the call must fail");
    assert_eq!(err.kind, kind, "{err}");
    assert_eq!(err.status, Some(status), "{err}");
    err
}

fn stale_identity(session: &SessionInfo) -> Identity {
    Rig::identity_of(session)
}

// ---- the 15 endpoints ---------------------------------------------------------------------------

async fn me_names_the_session_its_workspace_limits_and_held_lease(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    let client = rig.client();
    let me = client.me().await.expect("me");
    assert_eq!(me.self_info.session_id, worker.session_id);
    assert_eq!(me.self_info.agent_name, "worker");
    assert_eq!(
        me.workspace.as_ref().and_then(|w| w.id.as_deref()),
        Some("ws-default")
    );
    let session = me.session.as_ref().expect("session section");
    assert_eq!(session.id, worker.session_id);
    assert_eq!(session.state, Some(SessionState_::Active));
    assert!(me.active_task_leases.is_empty());
    let limits = me.limits.as_ref().expect("limits");
    assert_eq!(limits.max_children, 5);
    assert_eq!(limits.max_spawn_depth, 1);
    assert_eq!(limits.max_active_task_leases, 1);
    assert_eq!(limits.context_section_limit, 8);
    let coordinator = me.coordinator.as_ref().expect("coordinator");
    assert_eq!(coordinator.agent_name.as_deref(), Some("coordinator"));

    let run = rig.sim.enqueue_task(TaskSpec::titled("held")).run_id;
    claim(&client).await;
    let me = client.me().await.expect("me after a claim");
    assert_eq!(me.active_task_leases.len(), 1);
    assert_eq!(me.active_task_leases[0].run_id, run);
    assert_eq!(me.active_task_leases[0].status, Some(RunStatus::Claimed));
}

async fn context_describes_the_claimed_run_and_its_bundle(transport: Transport) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    let idle = client.context().await.expect("context without a run");
    assert!(!idle.task.as_ref().expect("task section").available);

    let run = rig
        .sim
        .enqueue_task(TaskSpec {
            title: "bundle".into(),
            handoff_summary: Some("pick up where run 1 stopped".into()),
            max_runtime_seconds: 120,
            ..TaskSpec::default()
        })
        .run_id;
    claim(&client).await;
    let context = client.context().await.expect("context");
    let task = context.task.as_ref().expect("task section");
    assert!(task.available);
    assert_eq!(
        task.lease.as_ref().map(|l| l.run_id.as_str()),
        Some(run.as_str())
    );
    let bundle = task.bundle.as_ref().expect("bundle");
    assert_eq!(
        bundle.current_run.as_ref().map(|r| r.id.as_str()),
        Some(run.as_str())
    );
    assert_eq!(
        bundle.handoff_summary.as_deref(),
        Some("pick up where run 1 stopped")
    );
    let limits = bundle.limits.as_ref().expect("bundle limits");
    assert_eq!(limits.max_runtime_seconds, 120);
    assert_eq!(limits.summary_max_bytes, 4096);
    assert_eq!(limits.context_body_max_bytes, 8192);
    assert_eq!(
        context.limits.as_ref().map(|l| l.max_active_task_leases),
        Some(1)
    );
    assert_eq!(
        context.self_info.as_ref().map(|s| s.session_id.as_str()),
        Some(rig.worker().session_id.as_str())
    );
}

async fn channels_lists_the_session_channel_with_every_message_kind(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let channels = rig.client_as(&builder).channels().await.expect("channels");
    let own = channels
        .iter()
        .find(|c| c.id.as_deref() == Some("builders"))
        .expect("the session channel is listed");
    assert_eq!(own.purpose.as_deref(), Some("network_channel"));
    assert_eq!(own.workspace_id.as_deref(), Some("ws-default"));
    assert_eq!(own.allowed_message_kinds.len(), 7);
    assert!(
        own.allowed_message_kinds
            .contains(&MessageKind::ReviewRequest)
    );
}

async fn recv_returns_coordination_messages_oldest_first_without_consuming_them(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let first = rig.sim.inject_message(
        &builder.session_id,
        message(
            "builders",
            "reviewer.sess-peer",
            "first",
            Some(coordination("status", "builders")),
        ),
    );
    rig.sim.advance_clock(Duration::from_secs(2));
    let second = rig.sim.inject_message(
        &builder.session_id,
        message(
            "builders",
            "reviewer.sess-peer",
            "second",
            Some(coordination("request", "builders")),
        ),
    );
    rig.sim.inject_message(
        &builder.session_id,
        message("builders", "reviewer.sess-peer", "no metadata", None),
    );
    let client = rig.client_as(&builder);
    let messages = client
        .recv("builders", RecvOptions::default())
        .await
        .expect("recv");
    let ids: Vec<&str> = messages.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(messages[0].text(), Some("first"));
    assert_eq!(
        messages[1].metadata.as_ref().map(|m| &m.message_kind),
        Some(&MessageKind::Request)
    );
    assert_eq!(messages[0].channel_id.as_deref(), Some("builders"));
    let again = client
        .recv("builders", RecvOptions::default())
        .await
        .expect("recv again");
    assert_eq!(again, messages, "recv is a peek");
    let oldest = client
        .recv(
            "builders",
            RecvOptions {
                wait: false,
                limit: Some(1),
            },
        )
        .await
        .expect("recv with a limit");
    assert_eq!(oldest.len(), 1);
    assert_eq!(oldest[0].message_id, first);
}

async fn send_answers_with_a_message_id_and_reaches_the_peers_on_the_channel(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let reviewer = rig.session_on("reviewer", "builders");
    let sent = rig
        .client_as(&builder)
        .send("builders", &say("builders", "progress"))
        .await
        .expect("send");
    assert!(sent.message_id.starts_with("msg-"), "{}", sent.message_id);
    assert_eq!(sent.channel_id.as_deref(), Some("builders"));
    assert_eq!(sent.text(), Some("progress"));
    assert_eq!(
        sent.from_session_id.as_deref(),
        Some(builder.session_id.as_str())
    );
    let seen = rig
        .client_as(&reviewer)
        .recv("builders", RecvOptions::default())
        .await
        .expect("recv by the peer");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].message_id, sent.message_id);

    let keyed = SendRequest {
        idempotency_key: Some("k1".into()),
        ..say("builders", "once")
    };
    let client = rig.client_as(&builder);
    assert_eq!(
        client
            .send("builders", &keyed)
            .await
            .expect("send k1")
            .message_id,
        "k1"
    );
    assert_eq!(
        client
            .send("builders", &keyed)
            .await
            .expect("send k1 again")
            .message_id,
        "k1"
    );
    let seen = rig
        .client_as(&reviewer)
        .recv("builders", RecvOptions::default())
        .await
        .expect("recv by the peer");
    assert_eq!(seen.iter().filter(|m| m.message_id == "k1").count(), 1);
}

async fn reply_goes_to_the_sender_and_inherits_the_metadata_as_a_reply(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let reviewer = rig.session_on("reviewer", "builders");
    let source = rig.sim.inject_message(
        &builder.session_id,
        message(
            "builders",
            &reviewer.peer_id,
            "please look",
            Some(coordination("request", "builders")),
        ),
    );
    let replied = rig
        .client_as(&builder)
        .reply(&ReplyRequest {
            reply_to_message_id: source,
            body: json!({ "text": "ack" }),
            metadata: None,
            idempotency_key: None,
        })
        .await
        .expect("reply");
    assert_eq!(
        replied.to_session_id.as_deref(),
        Some(reviewer.peer_id.as_str())
    );
    assert_eq!(
        replied.from_session_id.as_deref(),
        Some(builder.session_id.as_str())
    );
    let metadata = replied.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.message_kind, MessageKind::Reply);
    assert_eq!(metadata.task_id, "task-1");
    assert_eq!(metadata.run_id, "run-1");
    let inbox = rig
        .client_as(&reviewer)
        .recv("builders", RecvOptions::default())
        .await
        .expect("the sender sees the reply");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].message_id, replied.message_id);
}

async fn coordinator_config_reports_the_daemon_defaults_for_the_session_workspace(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let coordinator = rig
        .client()
        .coordinator_config()
        .await
        .expect("coordinator config");
    assert!(!coordinator.enabled);
    assert_eq!(coordinator.agent_name.as_deref(), Some("coordinator"));
    assert_eq!(coordinator.default_ttl_seconds, 7200);
    assert_eq!(coordinator.max_children, 5);
    assert_eq!(coordinator.max_active_sessions_per_workspace, 5);
    assert_eq!(coordinator.source.as_deref(), Some("workspace"));
    assert_eq!(coordinator.workspace_id.as_deref(), Some("ws-default"));
}

async fn soul_reports_a_missing_soul_as_valid_and_a_present_one_with_its_body(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    let missing = client.soul().await.expect("soul");
    assert_eq!(missing.http_status, 200);
    assert!(!missing.soul.present);
    assert!(missing.soul.valid);
    assert_eq!(
        missing.soul.validation_status,
        Some(SoulValidationStatus::Missing)
    );

    rig.sim
        .set_soul("worker", Some("# Worker\nBe careful.".into()));
    let present = client.soul().await.expect("soul");
    assert_eq!(present.http_status, 200);
    assert!(present.soul.present);
    assert_eq!(
        present.soul.validation_status,
        Some(SoulValidationStatus::Valid)
    );
    assert_eq!(present.soul.body.as_deref(), Some("# Worker\nBe careful."));
    assert_eq!(present.soul.agent_name.as_deref(), Some("worker"));
}

async fn validate_soul_answers_200_for_a_valid_body_and_422_with_diagnostics_for_an_invalid_one(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    let valid = client
        .validate_soul(&SoulValidateRequest {
            body: Some("# Fine".into()),
            ..Default::default()
        })
        .await
        .expect("validate a valid body");
    assert_eq!(valid.http_status, 200);
    assert_eq!(
        valid.soul.validation_status,
        Some(SoulValidationStatus::Valid)
    );

    let invalid = client
        .validate_soul(&SoulValidateRequest {
            body: Some("INVALID soul".into()),
            ..Default::default()
        })
        .await
        .expect("an invalid soul is an answer, not an error");
    assert_eq!(invalid.http_status, 422);
    assert!(!invalid.soul.valid);
    assert_eq!(
        invalid.soul.validation_status,
        Some(SoulValidationStatus::Invalid)
    );
    assert!(!invalid.soul.diagnostics.is_empty());

    let current = client
        .validate_soul(&SoulValidateRequest::default())
        .await
        .expect("validate the current (missing) soul");
    assert_eq!(current.http_status, 200);
    assert_eq!(
        current.soul.validation_status,
        Some(SoulValidationStatus::Missing)
    );
}

async fn spawn_creates_a_depth_one_worker_child_of_the_caller(transport: Transport) {
    let rig = Rig::start(transport).await;
    let parent = rig.worker();
    let spawned = rig
        .client()
        .spawn(
            &SpawnRequest {
                agent_name: "coder".into(),
                ttl_seconds: 60,
                name: Some("helper".into()),
                ..Default::default()
            },
            SPAWN_TIMEOUT,
        )
        .await
        .expect("spawn");
    assert!(
        spawned.session.id.starts_with("sess-"),
        "{}",
        spawned.session.id
    );
    assert_eq!(spawned.session.agent_name.as_deref(), Some("coder"));
    assert_eq!(spawned.session.session_type.as_deref(), Some("spawned"));
    assert_eq!(spawned.session.name.as_deref(), Some("helper"));
    let lineage = spawned.lineage.as_ref().expect("lineage");
    assert_eq!(lineage.spawn_depth, 1);
    assert_eq!(lineage.spawn_role.as_deref(), Some("worker"));
    assert_eq!(lineage.auto_stop_on_parent, Some(true));
    assert_eq!(
        lineage.parent_session_id.as_deref(),
        Some(parent.session_id.as_str())
    );
    assert_eq!(
        lineage.root_session_id.as_deref(),
        Some(parent.session_id.as_str())
    );
    assert!(lineage.ttl_expires_at.is_some());
    assert!(rig.sim.session(&spawned.session.id).is_some());
}

async fn claim_next_leases_the_queued_run_to_the_session(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    let enqueued = rig.sim.enqueue_task(TaskSpec::titled("claim me"));
    let claimed = claim(&rig.client()).await;
    assert_eq!(claimed.run.id, enqueued.run_id);
    assert_eq!(claimed.task.id, enqueued.task_id);
    assert_eq!(claimed.task.title.as_deref(), Some("claim me"));
    assert_eq!(claimed.run.status, Some(RunStatus::Claimed));
    assert_eq!(
        claimed.run.session_id.as_deref(),
        Some(worker.session_id.as_str())
    );
    let by = claimed.run.claimed_by.as_ref().expect("claimed_by");
    assert_eq!(by.kind.as_deref(), Some("agent_session"));
    assert_eq!(by.reference.as_deref(), Some(worker.session_id.as_str()));
    assert_eq!(claimed.lease.run_id, enqueued.run_id);
    assert!(claimed.lease.lease_until.is_some());
    assert!(
        claimed
            .lease
            .claim_token_hash
            .as_deref()
            .is_some_and(|hash| hash.starts_with("sha256:"))
    );
    assert!(
        !serde_json::to_string(&claimed)
            .expect("json")
            .contains("agh_claim_")
    );
    assert_eq!(
        rig.sim.run(&enqueued.run_id).expect("run").status,
        "claimed"
    );
}

async fn heartbeat_moves_lease_until_forward(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let before = rig.sim.run(&run).expect("run").lease_until.expect("leased");
    rig.sim.advance_clock(Duration::from_secs(60));
    let lease = client
        .heartbeat(
            &run,
            &HeartbeatRequest {
                lease_seconds: Some(600),
            },
        )
        .await
        .expect("heartbeat");
    assert_eq!(lease.run_id, run);
    assert_eq!(lease.status, Some(RunStatus::Claimed));
    let after = lease.lease_until.clone().expect("lease_until");
    assert_ne!(after, before);
    assert!(after > before, "{after} must be later than {before}");
    assert_eq!(
        rig.sim.run(&run).expect("run").lease_until.as_deref(),
        Some(after.as_str())
    );
    assert!(lease.coordination_channel.is_none());
}

async fn complete_finishes_the_run_with_its_result(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let lease = client
        .complete(
            &run,
            &CompleteRequest {
                result: Some(json!({ "ok": true })),
            },
        )
        .await
        .expect("complete");
    assert_eq!(lease.run_id, run);
    assert_eq!(lease.status, Some(RunStatus::Completed));
    assert!(lease.lease_until.is_none());
    let stored = rig.sim.run(&run).expect("run");
    assert_eq!(stored.status, "completed");
    assert_eq!(stored.result, Some(json!({ "ok": true })));
}

async fn fail_finishes_the_run_with_its_error(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let lease = client
        .fail(
            &run,
            &FailRequest {
                error: "handler exited 3".into(),
                metadata: Some(json!({ "exit_code": 3 })),
            },
        )
        .await
        .expect("fail");
    assert_eq!(lease.status, Some(RunStatus::Failed));
    let stored = rig.sim.run(&run).expect("run");
    assert_eq!(stored.status, "failed");
    assert_eq!(stored.error.as_deref(), Some("handler exited 3"));
}

async fn release_requeues_the_same_run_without_a_holder(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let lease = client
        .release(
            &run,
            &ReleaseRequest {
                reason: Some("handoff".into()),
            },
        )
        .await
        .expect("release");
    assert_eq!(lease.run_id, run);
    assert_eq!(lease.status, Some(RunStatus::Queued));
    assert!(lease.session_id.is_none());
    assert!(lease.claimed_by.is_none());
    assert!(lease.claim_token_hash.is_none());
    let again = claim(&client).await;
    assert_eq!(again.run.id, run, "the same run is claimable again");
}

async fn task_run_reads_the_daemons_record_of_a_run_through_its_life(transport: Transport) {
    let rig = Rig::start(transport).await;
    let us = rig.worker().session_id;
    let (client, run) = claimed_run(&rig).await;
    let claimed = client.task_run(&run).await.expect("task-run");
    assert_eq!(claimed.run.id, run);
    assert_eq!(claimed.run.status, Some(RunStatus::Claimed));
    assert_eq!(claimed.run.holder(), Some(us.as_str()));
    assert_eq!(
        claimed.run.task_id.as_deref(),
        Some(claimed.task.id.as_str())
    );
    let session = claimed.session.expect("the session the run is bound to");
    assert_eq!(session.session_id, us);
    assert_eq!(session.state, Some(SessionState_::Active));
    let summary = claimed.summary.expect("the activity summary");
    assert!(summary.last_activity_at.is_some());
    assert_eq!(summary.last_event_type.as_deref(), Some("task.run_claimed"));

    client
        .complete(
            &run,
            &CompleteRequest {
                result: Some(json!({ "ok": true })),
            },
        )
        .await
        .expect("complete");
    let completed = client.task_run(&run).await.expect("task-run");
    assert_eq!(completed.run.status, Some(RunStatus::Completed));
    assert_eq!(
        completed.run.holder(),
        Some(us.as_str()),
        "a complete keeps the session"
    );
    assert_eq!(completed.run.result, Some(json!({ "ok": true })));

    let (_, second) = claimed_run(&rig).await;
    client
        .release(&second, &ReleaseRequest::default())
        .await
        .expect("release");
    let queued = client.task_run(&second).await.expect("task-run");
    assert_eq!(queued.run.status, Some(RunStatus::Queued));
    assert_eq!(queued.run.holder(), None, "a release clears the session");
    assert!(queued.session.is_none());
}

async fn task_run_of_an_unknown_run_is_not_found_at_once(transport: Transport) {
    let rig = Rig::start(transport).await;
    let err = assert_error(
        rig.client().task_run("run-0000000000000000").await,
        ErrorKind::NotFound,
        404,
    );
    assert!(
        err.message.contains("task: task run not found"),
        "{}",
        err.message
    );
    assert_eq!(
        rig.sim.ledger().requests_for(Route::TaskRun, 404),
        1,
        "a 404 is not retried"
    );
}

// ---- identity -----------------------------------------------------------------------------------

async fn a_client_with_an_empty_agent_is_identity_required_on_every_endpoint(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    let client = rig.client_with(
        Identity {
            session_id: worker.session_id.clone(),
            agent: String::new(),
            workspace_id: None,
        },
        quick_options(),
    );
    let run = "run-0000000000000000";
    let mut kinds = vec![
        client.me().await.map(drop),
        client.context().await.map(drop),
        client.channels().await.map(drop),
        client
            .recv("builders", RecvOptions::default())
            .await
            .map(drop),
        client
            .send("builders", &say("builders", "x"))
            .await
            .map(drop),
        client
            .reply(&ReplyRequest {
                reply_to_message_id: "msg-1".into(),
                body: json!({"text": "x"}),
                metadata: None,
                idempotency_key: None,
            })
            .await
            .map(drop),
        client.coordinator_config().await.map(drop),
        client.soul().await.map(drop),
        client
            .validate_soul(&SoulValidateRequest::default())
            .await
            .map(drop),
        client
            .spawn(
                &SpawnRequest {
                    agent_name: "coder".into(),
                    ttl_seconds: 60,
                    ..Default::default()
                },
                SPAWN_TIMEOUT,
            )
            .await
            .map(drop),
        client.claim_next(&ClaimRequest::default()).await.map(drop),
        client
            .heartbeat(run, &HeartbeatRequest::default())
            .await
            .map(drop),
        client
            .complete(run, &CompleteRequest::default())
            .await
            .map(drop),
        client
            .fail(
                run,
                &FailRequest {
                    error: "x".into(),
                    metadata: None,
                },
            )
            .await
            .map(drop),
        client
            .release(run, &ReleaseRequest::default())
            .await
            .map(drop),
        // Not an agent endpoint, but identity headers, once sent, are checked as on one.
        client.task_run(run).await.map(drop),
    ];
    assert_eq!(kinds.len(), 16);
    for (index, result) in kinds.drain(..).enumerate() {
        let err = result.expect_err("no endpoint answers without identity");
        assert_eq!(
            err.kind,
            ErrorKind::IdentityRequired,
            "endpoint #{index}: {err}"
        );
        assert_eq!(err.status, Some(401));
        assert_eq!(
            err.diagnostic.as_ref().and_then(|d| d.code.as_deref()),
            Some("identity_required")
        );
        assert!(
            err.message.contains("AGH_AGENT is required"),
            "{}",
            err.message
        );
        assert_eq!(err.kind.exit_code(), 10);
    }
}

async fn a_stopped_session_is_identity_stale(transport: Transport) {
    let rig = Rig::start(transport).await;
    let worker = rig.worker();
    rig.sim
        .set_session_state(&worker.session_id, SessionState::Stopped);
    let err = assert_error(rig.client().me().await, ErrorKind::IdentityStale, 401);
    assert!(!err.is_retryable());
    assert!(err.message.contains("not active"), "{}", err.message);
    assert_eq!(err.kind.exit_code(), 11);
}

async fn an_agent_name_of_another_agent_is_identity_mismatch(transport: Transport) {
    let rig = Rig::start(transport).await;
    let mut identity = Rig::identity_of(&rig.worker());
    identity.agent = "reviewer".into();
    let client = rig.client_with(identity, quick_options());
    assert_error(client.me().await, ErrorKind::IdentityMismatch, 401);
}

async fn a_workspace_header_of_another_workspace_is_identity_unauthorized(transport: Transport) {
    let rig = Rig::start(transport).await;
    let mut identity = Rig::identity_of(&rig.worker());
    identity.workspace_id = Some("ws-other".into());
    let client = rig.client_with(identity.clone(), quick_options());
    assert_error(client.context().await, ErrorKind::IdentityUnauthorized, 403);
    identity.workspace_id = Some("ws-default".into());
    let client = rig.client_with(identity, quick_options());
    client.me().await.expect("the own workspace passes");
}

// ---- leases -------------------------------------------------------------------------------------

async fn an_expired_lease_before_the_sweep_is_lease_expired(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    assert!(rig.sim.expire_lease(&run));
    let err = assert_error(
        client.heartbeat(&run, &HeartbeatRequest::default()).await,
        ErrorKind::LeaseExpired,
        409,
    );
    assert!(
        err.message.contains("AUTONOMY_LEASE_EXPIRED"),
        "{}",
        err.message
    );
    assert!(err.kind.is_lease_lost());
    assert_eq!(err.kind.exit_code(), 20);
}

async fn a_swept_lease_is_no_active_lease(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    assert!(rig.sim.expire_lease(&run));
    assert_eq!(rig.sim.sweep_now(), 1);
    assert_error(
        client.complete(&run, &CompleteRequest::default()).await,
        ErrorKind::NoActiveLease,
        409,
    );
}

async fn a_lease_call_on_another_run_while_holding_one_is_foreign_run(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, _run) = claimed_run(&rig).await;
    let other = rig.sim.enqueue_task(TaskSpec::titled("other")).run_id;
    let err = assert_error(
        client.heartbeat(&other, &HeartbeatRequest::default()).await,
        ErrorKind::ForeignRun,
        403,
    );
    assert!(err.kind.is_lease_lost());
}

async fn completing_a_run_twice_is_lease_expired(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    client
        .complete(&run, &CompleteRequest::default())
        .await
        .expect("first complete");
    let err = assert_error(
        client.complete(&run, &CompleteRequest::default()).await,
        ErrorKind::LeaseExpired,
        409,
    );
    assert_eq!(
        err.attempts, 1,
        "a 409 is an answer, not a transport failure"
    );
}

async fn a_second_claim_while_holding_a_lease_is_lease_already_held(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, _run) = claimed_run(&rig).await;
    rig.sim.enqueue_task(TaskSpec::titled("second"));
    let err = assert_error(
        client
            .claim_next(&ClaimRequest {
                wait: true,
                ..Default::default()
            })
            .await,
        ErrorKind::LeaseAlreadyHeld,
        409,
    );
    assert_eq!(err.kind.exit_code(), 21);
}

// ---- validation and size ------------------------------------------------------------------------

async fn a_lease_above_a_day_is_a_422_validation_error(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim.enqueue_task(TaskSpec::titled("x"));
    let client = rig.client();
    let err = assert_error(
        client
            .claim_next(&ClaimRequest {
                lease_seconds: Some(86_401),
                ..Default::default()
            })
            .await,
        ErrorKind::Validation,
        422,
    );
    assert!(
        err.message.contains("lease_seconds exceeds 86400"),
        "{}",
        err.message
    );
    assert_error(
        client
            .claim_next(&ClaimRequest {
                lease_seconds: Some(-1),
                ..Default::default()
            })
            .await,
        ErrorKind::Validation,
        422,
    );
    assert_eq!(err.kind.exit_code(), 30);
}

async fn a_blank_failure_error_is_a_422_validation_error(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    assert_error(
        client
            .fail(
                &run,
                &FailRequest {
                    error: "   ".into(),
                    metadata: None,
                },
            )
            .await,
        ErrorKind::Validation,
        422,
    );
    assert_eq!(rig.sim.run(&run).expect("run").status, "claimed");
}

async fn a_result_carrying_a_claim_token_is_a_422_validation_error(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let err = assert_error(
        client
            .complete(
                &run,
                &CompleteRequest {
                    result: Some(json!({ "nested": { "claim_token": "x" } })),
                },
            )
            .await,
        ErrorKind::Validation,
        422,
    );
    assert!(!err.is_retryable());
    assert_eq!(rig.sim.run(&run).expect("run").status, "claimed");
}

async fn a_result_of_70_000_bytes_is_payload_too_large(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    let err = assert_error(
        client
            .complete(
                &run,
                &CompleteRequest {
                    result: Some(json!({ "blob": "x".repeat(70_000) })),
                },
            )
            .await,
        ErrorKind::PayloadTooLarge,
        413,
    );
    assert!(err.message.contains("payload too large"), "{}", err.message);
    assert_eq!(err.attempts, 1);
    assert_eq!(err.kind.exit_code(), 30);
}

async fn claiming_for_another_workspace_is_permission_denied(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim.enqueue_task(TaskSpec::titled("x"));
    let err = assert_error(
        rig.client()
            .claim_next(&ClaimRequest {
                workspace_id: Some("ws-other".into()),
                ..Default::default()
            })
            .await,
        ErrorKind::PermissionDenied,
        403,
    );
    assert!(
        err.message.contains("cannot claim workspace"),
        "{}",
        err.message
    );
    assert_eq!(err.kind.exit_code(), 43);
}

async fn a_negative_priority_or_a_capability_with_spaces_is_a_422_validation_error(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    assert_error(
        client
            .claim_next(&ClaimRequest {
                priority_min: Some(-1),
                ..Default::default()
            })
            .await,
        ErrorKind::Validation,
        422,
    );
    assert_error(
        client
            .claim_next(&ClaimRequest {
                required_capabilities: vec!["two words".into()],
                ..Default::default()
            })
            .await,
        ErrorKind::Validation,
        422,
    );
}

async fn an_identity_lookup_failure_is_retryable_and_masked_over_tcp(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim.inject_fault(Fault::new(
        Route::Me,
        FaultKind::Status {
            status: 503,
            error: "agent identity lookup unavailable: session store busy".into(),
        },
        1,
    ));
    let mut options = quick_options();
    options.retry.read_budget = Duration::ZERO;
    let client = rig.client_with(Rig::identity_of(&rig.worker()), options);
    let err = client.me().await.expect_err("a 503");
    assert!(err.is_retryable(), "{err}");
    match transport {
        // Over TCP the text is masked, so only the status is left to go by.
        Transport::Tcp => assert_eq!(err.kind, ErrorKind::ServiceUnavailable, "{err}"),
        Transport::Unix => assert_eq!(err.kind, ErrorKind::IdentityLookupUnavailable, "{err}"),
    }
    assert_eq!(err.kind.exit_code(), 69);
    client.me().await.expect("the next call goes through");
}

// ---- spawn refusals -----------------------------------------------------------------------------

fn child(agent: &str) -> SpawnRequest {
    SpawnRequest {
        agent_name: agent.into(),
        ttl_seconds: 60,
        ..Default::default()
    }
}

async fn a_child_cannot_spawn_and_a_sixth_child_is_refused_as_spawn_limit(transport: Transport) {
    let rig = Rig::start(transport).await;
    let parent = rig.client();
    let first = parent
        .spawn(&child("coder"), SPAWN_TIMEOUT)
        .await
        .expect("first child");
    let grandchild = rig
        .client_with(
            Identity {
                session_id: first.session.id.clone(),
                agent: "coder".into(),
                workspace_id: None,
            },
            quick_options(),
        )
        .spawn(&child("coder"), SPAWN_TIMEOUT)
        .await;
    let err = assert_error(grandchild, ErrorKind::SpawnLimit, 409);
    assert!(err.message.contains("max_depth"), "{}", err.message);
    for _ in 0..4 {
        parent
            .spawn(&child("coder"), SPAWN_TIMEOUT)
            .await
            .expect("children two to five");
    }
    let err = assert_error(
        parent.spawn(&child("coder"), SPAWN_TIMEOUT).await,
        ErrorKind::SpawnLimit,
        409,
    );
    assert!(err.message.contains("max_children"), "{}", err.message);
    assert_eq!(err.kind.exit_code(), 40);
}

async fn permissions_wider_than_the_parent_are_spawn_permission(transport: Transport) {
    let rig = Rig::start(transport).await;
    let request = SpawnRequest {
        permissions: Some(Permissions {
            tools: vec!["shell".into()],
            ..Default::default()
        }),
        ..child("coder")
    };
    let err = assert_error(
        rig.client().spawn(&request, SPAWN_TIMEOUT).await,
        ErrorKind::SpawnPermission,
        403,
    );
    assert!(
        err.message.contains("widens parent permissions"),
        "{}",
        err.message
    );
}

async fn a_zero_ttl_or_a_coordinator_role_is_spawn_validation(transport: Transport) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    assert_error(
        client
            .spawn(
                &SpawnRequest {
                    ttl_seconds: 0,
                    ..child("coder")
                },
                SPAWN_TIMEOUT,
            )
            .await,
        ErrorKind::SpawnValidation,
        422,
    );
    assert_error(
        client
            .spawn(
                &SpawnRequest {
                    spawn_role: Some("Coordinator".into()),
                    ..child("coder")
                },
                SPAWN_TIMEOUT,
            )
            .await,
        ErrorKind::SpawnValidation,
        422,
    );
}

// ---- not found, route not found, masking --------------------------------------------------------

async fn sending_on_a_channel_that_is_not_the_sessions_own_is_not_found(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let err = assert_error(
        rig.client_as(&builder)
            .send("reviewers", &say("reviewers", "hello"))
            .await,
        ErrorKind::NotFound,
        404,
    );
    assert!(
        err.message.contains("local peer not found"),
        "{}",
        err.message
    );
    assert_eq!(err.kind.exit_code(), 44);
}

async fn replying_to_an_unknown_message_is_not_found(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    assert_error(
        rig.client_as(&builder)
            .reply(&ReplyRequest {
                reply_to_message_id: "msg-does-not-exist".into(),
                body: json!({ "text": "ack" }),
                metadata: None,
                idempotency_key: None,
            })
            .await,
        ErrorKind::NotFound,
        404,
    );
}

async fn a_plain_text_404_from_a_daemon_without_the_route_is_route_not_found(transport: Transport) {
    let canned = CannedServer::start(
        transport,
        "404 Not Found",
        "text/plain",
        "404 page not found",
    )
    .await;
    let client = AghClient::new(
        canned.endpoint.clone(),
        Identity {
            session_id: "sess-1".into(),
            agent: "worker".into(),
            workspace_id: None,
        },
        quick_options(),
    )
    .expect("client");
    let err = assert_error(client.me().await, ErrorKind::RouteNotFound, 404);
    assert_eq!(err.attempts, 1, "a missing route is not retried");
    assert!(err.to_string().contains("agh.endpoint"), "{err}");
}

async fn a_500_is_masked_over_tcp_but_shows_its_text_over_the_socket(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim.inject_fault(Fault::new(
        Route::Context,
        FaultKind::Status {
            status: 500,
            error: "situation: assemble context: disk I/O error".into(),
        },
        1,
    ));
    let mut options = quick_options();
    options.retry.read_budget = Duration::ZERO;
    let client = rig.client_with(Rig::identity_of(&rig.worker()), options);
    let err = assert_error(client.context().await, ErrorKind::Server, 500);
    assert!(err.is_retryable());
    match transport {
        Transport::Tcp => assert_eq!(err.message, "Internal Server Error"),
        Transport::Unix => assert_eq!(err.message, "situation: assemble context: disk I/O error"),
    }
    assert_eq!(err.kind.exit_code(), 69);
}

// ---- SPEC≠CODE (agh-protocol.md §9) --------------------------------------------------------------

async fn spec_vs_code_recv_send_and_reply_validation_is_400_not_422(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let reviewer = rig.session_on("reviewer", "builders");
    let client = rig.client_as(&builder);
    assert_error(
        client
            .recv(
                "builders",
                RecvOptions {
                    wait: false,
                    limit: Some(0),
                },
            )
            .await,
        ErrorKind::Validation,
        400,
    );
    assert_error(
        client.recv("Builders", RecvOptions::default()).await,
        ErrorKind::Validation,
        400,
    );
    let mut bad_metadata = say("builders", "x");
    bad_metadata.metadata.correlation_id = String::new();
    assert_error(
        client.send("builders", &bad_metadata).await,
        ErrorKind::Validation,
        400,
    );
    let source = rig.sim.inject_message(
        &builder.session_id,
        message(
            "builders",
            &reviewer.peer_id,
            "q",
            Some(coordination("request", "builders")),
        ),
    );
    assert_error(
        client
            .reply(&ReplyRequest {
                reply_to_message_id: source,
                body: json!({ "text": "ack" }),
                metadata: Some(metadata(MessageKind::Status, "builders")),
                idempotency_key: None,
            })
            .await,
        ErrorKind::Validation,
        400,
    );
}

async fn spec_vs_code_me_and_context_for_an_unknown_session_are_401_identity_stale_not_404(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let unknown = SessionInfo {
        session_id: "sess-ffffffffffffffff".into(),
        agent_name: "worker".into(),
        workspace_id: None,
        channel: None,
        peer_id: "worker.sess-ffffffffffffffff".into(),
    };
    let client = rig.client_with(stale_identity(&unknown), quick_options());
    let err = assert_error(client.me().await, ErrorKind::IdentityStale, 401);
    assert!(
        err.message.contains("not known to the daemon"),
        "{}",
        err.message
    );
    assert_error(client.context().await, ErrorKind::IdentityStale, 401);
}

async fn spec_vs_code_coordinator_config_ignores_the_workspace_parameter(transport: Transport) {
    let rig = Rig::start(transport).await;
    let other = rig
        .sim
        .create_session(SessionSpec::for_agent("planner", Some("ws-1")));
    let typed = rig
        .client_as(&other)
        .coordinator_config()
        .await
        .expect("coordinator config");
    assert_eq!(typed.workspace_id.as_deref(), Some("ws-1"));
    // The typed client never sends `?workspace`; a raw request that does gets the same answer.
    let (raw, base) = rig.raw();
    let bytes = raw
        .get(format!(
            "{base}/api/agent/coordinator/config?workspace=ws-9"
        ))
        .header("X-AGH-Session-ID", &other.session_id)
        .header("X-AGH-Agent", &other.agent_name)
        .send()
        .await
        .expect("raw request")
        .bytes()
        .await
        .expect("raw body");
    let answer: CoordinatorResponse = serde_json::from_slice(&bytes).expect("coordinator json");
    assert_eq!(answer.coordinator, typed);
    assert_eq!(answer.coordinator.source.as_deref(), Some("workspace"));
}

async fn spec_vs_code_get_soul_422_returns_the_soul_object(transport: Transport) {
    let rig = Rig::start(transport).await;
    rig.sim
        .set_soul("worker", Some("INVALID frontmatter".into()));
    let answer = rig.client().soul().await.expect("a 422 soul is an answer");
    assert_eq!(answer.http_status, 422);
    assert!(answer.soul.present);
    assert!(!answer.soul.valid);
    assert_eq!(
        answer.soul.validation_status,
        Some(SoulValidationStatus::Invalid)
    );
    assert_eq!(answer.soul.body.as_deref(), Some("INVALID frontmatter"));
}

async fn spec_vs_code_lease_ops_on_an_unknown_run_are_409_or_403_not_404(transport: Transport) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    let unknown = "run-0123456789abcdef";
    assert_error(
        client
            .heartbeat(unknown, &HeartbeatRequest::default())
            .await,
        ErrorKind::NoActiveLease,
        409,
    );
    assert_error(
        client.complete(unknown, &CompleteRequest::default()).await,
        ErrorKind::NoActiveLease,
        409,
    );
    assert_error(
        client
            .fail(
                unknown,
                &FailRequest {
                    error: "x".into(),
                    metadata: None,
                },
            )
            .await,
        ErrorKind::NoActiveLease,
        409,
    );
    assert_error(
        client.release(unknown, &ReleaseRequest::default()).await,
        ErrorKind::NoActiveLease,
        409,
    );
    let (client, _run) = claimed_run(&rig).await;
    assert_error(
        client.release(unknown, &ReleaseRequest::default()).await,
        ErrorKind::ForeignRun,
        403,
    );
}

async fn spec_vs_code_the_claim_conflict_lacks_the_documented_code_but_is_lease_already_held(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let (client, _run) = claimed_run(&rig).await;
    let err = assert_error(
        client.claim_next(&ClaimRequest::default()).await,
        ErrorKind::LeaseAlreadyHeld,
        409,
    );
    assert!(
        !err.message.contains("AUTONOMY_LEASE_ALREADY_HELD"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("active run lease exists"),
        "{}",
        err.message
    );
}

async fn spec_vs_code_spawn_ignores_model_and_idempotency_so_the_client_never_sends_them(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let request = SpawnRequest {
        spawn_role: Some("worker".into()),
        auto_stop_on_parent: Some(true),
        permissions: Some(Permissions::default()),
        provider: Some("claude".into()),
        name: Some("n".into()),
        prompt_overlay: Some("be brief".into()),
        ..child("coder")
    };
    let body = serde_json::to_value(&request).expect("json");
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(!keys.contains(&"model"), "{keys:?}");
    assert!(!keys.contains(&"idempotency_key"), "{keys:?}");
    // Without a dedupe key two identical spawns are two children: spawn is never retried.
    let client = rig.client();
    let first = client
        .spawn(&request, SPAWN_TIMEOUT)
        .await
        .expect("first spawn");
    let second = client
        .spawn(&request, SPAWN_TIMEOUT)
        .await
        .expect("second spawn");
    assert_ne!(first.session.id, second.session.id);
    let claim_keys = serde_json::to_value(ClaimRequest {
        wait: true,
        lease_seconds: Some(1),
        priority_min: Some(1),
        required_capabilities: vec!["x".into()],
        workspace_id: Some("ws".into()),
    })
    .expect("json");
    assert!(claim_keys.get("idempotency_key").is_none());
}

async fn spec_vs_code_a_send_body_without_text_is_400(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let request = SendRequest {
        body: json!({ "status": "investigating" }),
        ..say("builders", "")
    };
    let err = assert_error(
        rig.client_as(&builder).send("builders", &request).await,
        ErrorKind::Validation,
        400,
    );
    assert!(err.message.contains("text is required"), "{}", err.message);
}

async fn spec_vs_code_from_session_id_is_a_peer_id_in_recv_but_the_session_id_in_send_answers(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let reviewer = rig.session_on("reviewer", "builders");
    let sent = rig
        .client_as(&builder)
        .send("builders", &say("builders", "hi"))
        .await
        .expect("send");
    assert_eq!(
        sent.from_session_id.as_deref(),
        Some(builder.session_id.as_str())
    );
    let received = rig
        .client_as(&reviewer)
        .recv("builders", RecvOptions::default())
        .await
        .expect("recv");
    assert_eq!(
        received[0].from_session_id.as_deref(),
        Some(builder.peer_id.as_str())
    );
    assert_eq!(builder.peer_id, format!("builder.{}", builder.session_id));
}

// ---- long polls and bodies ----------------------------------------------------------------------

async fn a_waiting_claim_returns_the_run_enqueued_while_it_waits(transport: Transport) {
    let rig = Rig::start(transport).await;
    let client = rig.client();
    let waiting = tokio::spawn(async move {
        client
            .claim_next(&ClaimRequest {
                wait: true,
                ..Default::default()
            })
            .await
    });
    rig.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let run = rig.sim.enqueue_task(TaskSpec::titled("late")).run_id;
    match waiting.await.expect("join").expect("claim") {
        ClaimOutcome::Claimed(claim) => assert_eq!(claim.run.id, run),
        other => panic!("expected a claim, got {other:?}"),
    }
}

async fn a_claim_without_work_is_nothing_to_do(transport: Transport) {
    let rig = Rig::start(transport).await;
    let outcome = rig
        .client()
        .claim_next(&ClaimRequest::default())
        .await
        .expect("claim");
    assert_eq!(outcome, ClaimOutcome::NothingToDo);
}

async fn a_waiting_claim_that_reaches_the_client_deadline_is_deadline_reached(
    transport: Transport,
) {
    let rig = Rig::start(transport).await;
    let mut options = quick_options();
    options.long_poll_timeout = Duration::from_millis(300);
    let client = rig.client_with(Rig::identity_of(&rig.worker()), options);
    let outcome = client
        .claim_next(&ClaimRequest {
            wait: true,
            ..Default::default()
        })
        .await
        .expect("a deadline is an answer");
    assert_eq!(outcome, ClaimOutcome::DeadlineReached);
    assert_eq!(rig.sim.ledger().requests_for(Route::ClaimNext, 200), 0);
}

async fn a_waiting_recv_that_reaches_the_deadline_is_an_empty_list(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let mut options = quick_options();
    options.long_poll_timeout = Duration::from_millis(300);
    let client = rig.client_with(Rig::identity_of(&builder), options);
    let messages = client
        .recv(
            "builders",
            RecvOptions {
                wait: true,
                limit: None,
            },
        )
        .await
        .expect("a deadline is an answer");
    assert!(messages.is_empty());
}

async fn a_waiting_recv_returns_the_message_that_arrives_while_it_waits(transport: Transport) {
    let rig = Rig::start(transport).await;
    let builder = rig.session_on("builder", "builders");
    let client = rig.client_as(&builder);
    let waiting = tokio::spawn(async move {
        client
            .recv(
                "builders",
                RecvOptions {
                    wait: true,
                    limit: None,
                },
            )
            .await
    });
    rig.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    let id = rig.sim.inject_message(
        &builder.session_id,
        message(
            "builders",
            "reviewer.sess-peer",
            "news",
            Some(coordination("status", "builders")),
        ),
    );
    let messages = waiting.await.expect("join").expect("recv");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message_id, id);
}

async fn lease_calls_with_default_requests_send_a_json_body(transport: Transport) {
    let rig = Rig::start(transport).await;
    let (client, run) = claimed_run(&rig).await;
    // The simulator answers 400 to an empty body, so these succeed only with `{}`.
    client
        .heartbeat(&run, &HeartbeatRequest::default())
        .await
        .expect("heartbeat {}");
    client
        .release(&run, &ReleaseRequest::default())
        .await
        .expect("release {}");
    let again = claim(&client).await.run.id;
    client
        .complete(&again, &CompleteRequest::default())
        .await
        .expect("complete {}");
    let run = rig.sim.enqueue_task(TaskSpec::titled("fail")).run_id;
    assert_eq!(claim(&client).await.run.id, run);
    // A default fail request is a JSON body whose blank error the daemon judges (422, not 400).
    assert_error(
        client.fail(&run, &FailRequest::default()).await,
        ErrorKind::Validation,
        422,
    );
    client
        .fail(
            &run,
            &FailRequest {
                error: "broke".into(),
                metadata: None,
            },
        )
        .await
        .expect("fail");
    assert_eq!(rig.sim.ledger().requests_for(Route::Heartbeat, 400), 0);
}

on_both_transports!(
    me_names_the_session_its_workspace_limits_and_held_lease,
    context_describes_the_claimed_run_and_its_bundle,
    channels_lists_the_session_channel_with_every_message_kind,
    recv_returns_coordination_messages_oldest_first_without_consuming_them,
    send_answers_with_a_message_id_and_reaches_the_peers_on_the_channel,
    reply_goes_to_the_sender_and_inherits_the_metadata_as_a_reply,
    coordinator_config_reports_the_daemon_defaults_for_the_session_workspace,
    soul_reports_a_missing_soul_as_valid_and_a_present_one_with_its_body,
    validate_soul_answers_200_for_a_valid_body_and_422_with_diagnostics_for_an_invalid_one,
    spawn_creates_a_depth_one_worker_child_of_the_caller,
    claim_next_leases_the_queued_run_to_the_session,
    heartbeat_moves_lease_until_forward,
    complete_finishes_the_run_with_its_result,
    fail_finishes_the_run_with_its_error,
    release_requeues_the_same_run_without_a_holder,
    task_run_reads_the_daemons_record_of_a_run_through_its_life,
    task_run_of_an_unknown_run_is_not_found_at_once,
    a_client_with_an_empty_agent_is_identity_required_on_every_endpoint,
    a_stopped_session_is_identity_stale,
    an_agent_name_of_another_agent_is_identity_mismatch,
    a_workspace_header_of_another_workspace_is_identity_unauthorized,
    an_expired_lease_before_the_sweep_is_lease_expired,
    a_swept_lease_is_no_active_lease,
    a_lease_call_on_another_run_while_holding_one_is_foreign_run,
    completing_a_run_twice_is_lease_expired,
    a_second_claim_while_holding_a_lease_is_lease_already_held,
    a_lease_above_a_day_is_a_422_validation_error,
    a_blank_failure_error_is_a_422_validation_error,
    a_result_carrying_a_claim_token_is_a_422_validation_error,
    a_result_of_70_000_bytes_is_payload_too_large,
    claiming_for_another_workspace_is_permission_denied,
    a_negative_priority_or_a_capability_with_spaces_is_a_422_validation_error,
    an_identity_lookup_failure_is_retryable_and_masked_over_tcp,
    a_child_cannot_spawn_and_a_sixth_child_is_refused_as_spawn_limit,
    permissions_wider_than_the_parent_are_spawn_permission,
    a_zero_ttl_or_a_coordinator_role_is_spawn_validation,
    sending_on_a_channel_that_is_not_the_sessions_own_is_not_found,
    replying_to_an_unknown_message_is_not_found,
    a_plain_text_404_from_a_daemon_without_the_route_is_route_not_found,
    a_500_is_masked_over_tcp_but_shows_its_text_over_the_socket,
    spec_vs_code_recv_send_and_reply_validation_is_400_not_422,
    spec_vs_code_me_and_context_for_an_unknown_session_are_401_identity_stale_not_404,
    spec_vs_code_coordinator_config_ignores_the_workspace_parameter,
    spec_vs_code_get_soul_422_returns_the_soul_object,
    spec_vs_code_lease_ops_on_an_unknown_run_are_409_or_403_not_404,
    spec_vs_code_the_claim_conflict_lacks_the_documented_code_but_is_lease_already_held,
    spec_vs_code_spawn_ignores_model_and_idempotency_so_the_client_never_sends_them,
    spec_vs_code_a_send_body_without_text_is_400,
    spec_vs_code_from_session_id_is_a_peer_id_in_recv_but_the_session_id_in_send_answers,
    a_waiting_claim_returns_the_run_enqueued_while_it_waits,
    a_claim_without_work_is_nothing_to_do,
    a_waiting_claim_that_reaches_the_client_deadline_is_deadline_reached,
    a_waiting_recv_that_reaches_the_deadline_is_an_empty_list,
    a_waiting_recv_returns_the_message_that_arrives_while_it_waits,
    lease_calls_with_default_requests_send_a_json_body,
);
