//! The coordination layer against the AGH simulator over real HTTP: the channel listener
//! (routing, dedupe, request-rate bounds, the network-disabled probe), messages sent for
//! handlers (progress, throttling, the own-channel rule, replies) and the spawner (budgets,
//! the daemon's refusals, TTL caps), and one whole run through the worker loop.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agh_worker::api::types::{
    ChannelMessage, ClaimRequest, CoordinatorConfig, Me, MessageKind, ReplyRequest, SendRequest,
    SpawnRequest, Spawned, SpawnedSession,
};
use agh_worker::api::{
    AghClient, ApiError, ClaimOutcome, ClientOptions, Endpoint, Identity, RecvOptions,
};
use agh_worker::coordination::listener::ListenerSettings;
use agh_worker::coordination::spawner::SpawnSettings;
use agh_worker::coordination::{Coordination, CoordinationApi, CoordinationSettings};
use agh_worker::dev::sim::{
    Fault, FaultKind, MessageSpec, PermissionPolicy, Route, SessionInfo, SessionSpec, SimConfig,
    SimServer, Simulator, SpawnBudget, TaskSpec,
};
use agh_worker::handler::{Handler, HandlerSet, SharedHandlers};
use agh_worker::handler::{
    HandlerEvent, Outcome, SpawnAnswer, SpawnAsk, TaskContext, TaskDocument,
};
use agh_worker::worker::{ClaimLoop, EventSink, Shutdown, StatusBoard, WorkerSettings};
use serde_json::{Value, json};
use support::sim;
use support::sim::SPAWN_TIMEOUT;
use tokio::sync::{mpsc, oneshot};

const CHANNEL: &str = "builders";
const WORKSPACE: &str = "ws-default";

/// The recv API wrapped to count every recv the listener starts: a long-poll that reaches the
/// client's deadline is dropped, so the simulator's ledger never sees it.
struct Counting {
    client: AghClient,
    recvs: AtomicUsize,
}

impl CoordinationApi for Counting {
    async fn recv_wait(&self, channel: &str) -> Result<Vec<ChannelMessage>, ApiError> {
        self.recvs.fetch_add(1, Ordering::SeqCst);
        CoordinationApi::recv_wait(&self.client, channel).await
    }
    async fn send(&self, channel: &str, request: &SendRequest) -> Result<ChannelMessage, ApiError> {
        CoordinationApi::send(&self.client, channel, request).await
    }
    async fn reply(&self, request: &ReplyRequest) -> Result<ChannelMessage, ApiError> {
        CoordinationApi::reply(&self.client, request).await
    }
    async fn spawn(&self, request: &SpawnRequest, timeout: Duration) -> Result<Spawned, ApiError> {
        CoordinationApi::spawn(&self.client, request, timeout).await
    }
    async fn children(&self) -> Result<Vec<SpawnedSession>, ApiError> {
        CoordinationApi::children(&self.client).await
    }
    async fn me(&self) -> Result<Me, ApiError> {
        CoordinationApi::me(&self.client).await
    }
    async fn coordinator_config(&self) -> Result<CoordinatorConfig, ApiError> {
        CoordinationApi::coordinator_config(&self.client).await
    }
}

struct Env {
    sim: Simulator,
    server: SimServer,
}

impl Env {
    async fn start() -> Env {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve over tcp");
        Env { sim, server }
    }

    fn client(&self, who: &SessionInfo, long_poll: Duration) -> AghClient {
        AghClient::new(
            Endpoint::parse(&self.server.base_url()).expect("endpoint"),
            Identity {
                session_id: who.session_id.clone(),
                agent: who.agent_name.clone(),
                workspace_id: None,
            },
            ClientOptions {
                long_poll_timeout: long_poll,
                ..ClientOptions::default()
            },
        )
        .expect("client")
    }

    fn session(&self, agent: &str, channel: Option<&str>) -> SessionInfo {
        self.session_with(agent, channel, |_| {})
    }

    fn session_with(
        &self,
        agent: &str,
        channel: Option<&str>,
        adjust: impl FnOnce(&mut SessionSpec),
    ) -> SessionInfo {
        let mut spec = SessionSpec {
            agent_name: agent.into(),
            workspace_id: Some(WORKSPACE.into()),
            channel: channel.map(str::to_string),
            ..SessionSpec::default()
        };
        adjust(&mut spec);
        self.sim.create_session(spec)
    }

    /// Enqueues a task on `channel` and claims it as `client`; the document the handler would get.
    async fn claimed(
        &self,
        client: &AghClient,
        channel: Option<&str>,
        deadline: Option<Duration>,
    ) -> TaskDocument {
        let run = self.sim.enqueue_task(TaskSpec {
            title: "coordinate".into(),
            channel: channel.map(str::to_string),
            ..TaskSpec::default()
        });
        let claim = match client
            .claim_next(&ClaimRequest::default())
            .await
            .expect("claim")
        {
            ClaimOutcome::Claimed(claim) => *claim,
            other => panic!("nothing claimed: {other:?}"),
        };
        assert_eq!(claim.run.id, run.run_id);
        TaskDocument::new(claim, None, deadline)
    }

    fn requests(&self, route: Route, status: u16) -> u64 {
        self.sim.ledger().requests_for(route, status)
    }

    fn all_requests(&self, route: Route) -> u64 {
        sim::requests(&self.sim, route)
    }
}

fn listener_settings(session_channel: Option<&str>) -> ListenerSettings {
    ListenerSettings {
        session_channel: session_channel.map(str::to_string),
        idle_backoff_initial: Duration::from_millis(250),
        idle_backoff_max: Duration::from_secs(1),
        error_backoff_initial: Duration::from_millis(100),
        error_backoff_max: Duration::from_secs(1),
        disabled_probe: Duration::from_secs(1),
    }
}

fn settings(progress_interval: Duration) -> CoordinationSettings {
    CoordinationSettings {
        progress_interval,
        spawn: SpawnSettings::default(),
    }
}

fn metadata(run_id: &str, kind: &str) -> Value {
    json!({
        "task_id": "task-peer",
        "run_id": run_id,
        "coordination_channel_id": CHANNEL,
        "message_kind": kind,
        "correlation_id": run_id,
    })
}

fn peer_message(from: &SessionInfo, run_id: &str, text: &str) -> MessageSpec {
    MessageSpec {
        channel: CHANNEL.into(),
        from_peer: from.peer_id.clone(),
        body: json!({ "text": text }),
        metadata: Some(metadata(run_id, "request")),
        ..MessageSpec::default()
    }
}

/// Polls `check` every 20 ms for up to 10 s; the test fails with `what` if it never holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// What `peer` can read on the channel (a non-destructive peek).
async fn peek(client: &AghClient) -> Vec<ChannelMessage> {
    client
        .recv(
            CHANNEL,
            RecvOptions {
                wait: false,
                limit: None,
            },
        )
        .await
        .expect("peek")
}

async fn spawn_answer<A: CoordinationApi>(
    sink: &Coordination<A>,
    document: &TaskDocument,
    ask: SpawnAsk,
) -> SpawnAnswer {
    let (answer, receive) = oneshot::channel();
    sink.handle(
        document,
        HandlerEvent::Spawn {
            ask: Box::new(ask),
            answer,
        },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), receive)
        .await
        .expect("a spawn answer in time")
        .expect("the spawner answers")
}

fn ask(agent: &str, ttl: Option<i64>) -> SpawnAsk {
    SpawnAsk {
        agent_name: agent.into(),
        ttl_seconds: ttl,
        ..SpawnAsk::default()
    }
}

// ---- the listener -----------------------------------------------------------------------------

#[tokio::test]
async fn a_message_for_the_run_in_hand_reaches_its_handler_exactly_once_although_recv_keeps_returning_it()
 {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let document = env.claimed(&client, Some(CHANNEL), None).await;
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, mut inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    env.sim.wait_for_waiters(Route::ChannelRecv, 1).await;

    let id = env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, &document.run_id, "please add tests"),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .expect("the message in time")
        .expect("a message");
    assert_eq!(first.message_id, id);
    assert_eq!(first.text(), Some("please add tests"));

    // The message stays queued (recv is a peek) and is returned again and again.
    let seen_at = env.requests(Route::ChannelRecv, 200);
    eventually("three more recv answers", || {
        env.requests(Route::ChannelRecv, 200) >= seen_at + 3
    })
    .await;
    assert!(inbound.try_recv().is_err(), "the message was routed twice");
    assert_eq!(status.snapshot().counters.messages_received, 1);

    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn without_a_configured_session_channel_the_listener_follows_the_one_agh_reports() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(None), shutdown.clone())
            .run(),
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        env.sim.wait_for_waiters(Route::ChannelRecv, 1),
    )
    .await
    .expect("the listener waits on the session's channel");
    assert_eq!(env.all_requests(Route::Me), 1);
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn a_message_that_arrives_before_its_run_starts_is_handed_over_when_it_starts() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client.clone()),
        status.clone(),
        settings(Duration::from_secs(1)),
    );
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    env.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    let run = env.sim.enqueue_task(TaskSpec {
        title: "early news".into(),
        channel: Some(CHANNEL.into()),
        ..TaskSpec::default()
    });
    // The peer writes about the run before this worker has claimed it.
    let id = env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, &run.run_id, "start with the parser"),
    );
    eventually("the listener read it", || {
        env.requests(Route::ChannelRecv, 200) >= 2
    })
    .await;
    let claim = match client.claim_next(&ClaimRequest::default()).await {
        Ok(ClaimOutcome::Claimed(claim)) => *claim,
        other => panic!("nothing claimed: {other:?}"),
    };
    let document = TaskDocument::new(claim, None, None);
    let (inbound_tx, mut inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let routed = tokio::time::timeout(Duration::from_secs(10), inbound.recv())
        .await
        .expect("the early message in time")
        .expect("a message");
    assert_eq!(routed.message_id, id);
    assert_eq!(status.snapshot().counters.messages_received, 1);
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn messages_for_no_run_in_hand_are_only_logged() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_secs(1)),
    );
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    env.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, "run-elsewhere", "hi"),
    );
    eventually("the message was read", || {
        env.requests(Route::ChannelRecv, 200) >= 2
    })
    .await;
    assert_eq!(status.snapshot().counters.messages_received, 0);
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn a_stuck_message_costs_at_most_about_one_recv_per_backoff_cap() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(30));
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    // Queued before the listener starts, and never dequeued: every waiting recv returns at once.
    env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, "run-elsewhere", "stuck"),
    );
    let shutdown = Shutdown::default();
    let settings = listener_settings(Some(CHANNEL));
    let cap = settings.idle_backoff_max;
    let listener = tokio::spawn(sink.listener(settings, shutdown.clone()).run());
    eventually("the first recv", || {
        env.requests(Route::ChannelRecv, 200) >= 1
    })
    .await;
    let start = env.requests(Route::ChannelRecv, 200);
    // A rate measured over real time: 4 s with pauses of 250 ms doubling to the 1 s cap.
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let used = env.requests(Route::ChannelRecv, 200) - start;
    // One per cap, plus the ramp (250 + 500 ms) and one in flight; a hot loop would be thousands.
    let bound = (window.as_millis() / cap.as_millis()) as u64 + 3;
    assert!(
        used <= bound,
        "{used} recv calls in {window:?} (bound {bound})"
    );
    assert!(used >= 2, "the listener stopped asking: {used}");
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn an_idle_listener_asks_about_once_per_long_poll_deadline() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let long_poll = Duration::from_millis(500);
    let api = Arc::new(Counting {
        client: env.client(&builder, long_poll),
        recvs: AtomicUsize::new(0),
    });
    let sink = Coordination::new(
        api.clone(),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    env.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    let start = api.recvs.load(Ordering::SeqCst);
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let used = api.recvs.load(Ordering::SeqCst) - start;
    let bound = (window.as_millis() / long_poll.as_millis()) as usize + 1;
    assert!(
        used <= bound,
        "{used} recv calls in {window:?} (bound {bound})"
    );
    assert!(used >= 2, "the listener stopped asking: {used}");
    // Nothing came back with a status: every one of them was a long-poll that waited.
    assert_eq!(env.requests(Route::ChannelRecv, 200), 0);
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

#[tokio::test]
async fn a_disabled_network_switches_the_channel_to_a_slow_probe() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    env.sim.inject_fault(Fault::new(
        Route::ChannelRecv,
        FaultKind::Status {
            status: 503,
            error: "api: network is disabled".into(),
        },
        1000,
    ));
    let client = env.client(&builder, Duration::from_secs(2));
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let shutdown = Shutdown::default();
    let settings = listener_settings(Some(CHANNEL));
    let probe = settings.disabled_probe;
    let listener = tokio::spawn(sink.listener(settings, shutdown.clone()).run());
    eventually("the first 503", || {
        env.requests(Route::ChannelRecv, 503) >= 1
    })
    .await;
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let probes = env.requests(Route::ChannelRecv, 503);
    let bound = (window.as_millis() / probe.as_millis()) as u64 + 2;
    assert!(
        probes <= bound,
        "{probes} probes in {window:?} (bound {bound})"
    );

    // When the network is back, the listener picks the channel up again on its next probe.
    env.sim.clear_faults();
    env.sim.wait_for_waiters(Route::ChannelRecv, 1).await;
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

// ---- messages from handlers -------------------------------------------------------------------

#[tokio::test]
async fn progress_is_sent_as_a_status_message_with_complete_metadata() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let document = env.claimed(&client, Some(CHANNEL), None).await;
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_millis(200)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    sink.handle(&document, HandlerEvent::Progress("half way".into()))
        .await;
    sink.handle(
        &document,
        HandlerEvent::Message {
            kind: MessageKind::Blocker,
            text: "waiting on credentials".into(),
        },
    )
    .await;
    // Empty text is never sent (the daemon would answer 400).
    sink.handle(&document, HandlerEvent::Progress("   ".into()))
        .await;
    sink.run_ended(&document.run_id);
    assert!(sink.flush(Duration::from_secs(10)).await);

    let peer = env.client(&reviewer, Duration::from_secs(2));
    let seen = peek(&peer).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    let by_kind = |kind: &str| {
        seen.iter()
            .find(|m| {
                m.metadata
                    .as_ref()
                    .is_some_and(|md| md.message_kind.as_str() == kind)
            })
            .unwrap_or_else(|| panic!("no {kind} message in {seen:?}"))
    };
    let progress = by_kind("status");
    assert_eq!(progress.text(), Some("half way"));
    let metadata = progress.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.run_id, document.run_id);
    assert_eq!(metadata.task_id, document.task_id);
    assert_eq!(metadata.coordination_channel_id, CHANNEL);
    assert_eq!(metadata.correlation_id, document.run_id);
    assert_eq!(by_kind("blocker").text(), Some("waiting on credentials"));
    assert!(
        progress.message_id.starts_with(&document.run_id),
        "idempotency key as id"
    );
    assert_eq!(env.requests(Route::ChannelSend, 202), 2);
    assert_eq!(env.requests(Route::ChannelSend, 400), 0);
    assert_eq!(status.snapshot().counters.messages_sent, 2);
}

#[tokio::test]
async fn a_burst_of_progress_is_coalesced_into_a_few_sends_and_the_last_text_wins() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let document = env.claimed(&client, Some(CHANNEL), None).await;
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(2)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    for step in 1..=50 {
        sink.handle(&document, HandlerEvent::Progress(format!("step {step}")))
            .await;
    }
    sink.run_ended(&document.run_id);
    assert!(sink.flush(Duration::from_secs(10)).await);

    let sends = env.requests(Route::ChannelSend, 202);
    assert!(
        (1..=3).contains(&sends),
        "{sends} sends for 50 progress lines"
    );
    let peer = env.client(&reviewer, Duration::from_secs(2));
    let seen = peek(&peer).await;
    // The pending progress at the run's end is flushed: the final status reaches the peers.
    assert_eq!(
        seen.last().and_then(ChannelMessage::text),
        Some("step 50"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_own_channel_rule_is_met_once_per_run_and_then_only_logged() {
    let env = Env::start().await;
    // The default session is not on the network; the run's channel is `builders`.
    let worker = env.sim.default_session().expect("default session");
    let client = env.client(&worker, Duration::from_secs(2));
    let document = env.claimed(&client, Some(CHANNEL), None).await;
    assert_eq!(document.coordination_channel_id(), Some(CHANNEL));
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_millis(100)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    sink.handle(&document, HandlerEvent::Progress("one".into()))
        .await;
    eventually("the first send", || {
        env.all_requests(Route::ChannelSend) >= 1
    })
    .await;
    for text in ["two", "three"] {
        sink.handle(&document, HandlerEvent::Progress(text.into()))
            .await;
        sink.handle(
            &document,
            HandlerEvent::Message {
                kind: MessageKind::Result,
                text: text.into(),
            },
        )
        .await;
    }
    sink.run_ended(&document.run_id);
    assert!(sink.flush(Duration::from_secs(10)).await);
    assert_eq!(env.requests(Route::ChannelSend, 404), 1);
    assert_eq!(env.all_requests(Route::ChannelSend), 1);
    assert_eq!(status.snapshot().counters.message_send_failures, 1);
}

#[tokio::test]
async fn a_reply_goes_back_to_the_sender_of_the_message() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let client = env.client(&builder, Duration::from_secs(2));
    let document = env.claimed(&client, Some(CHANNEL), None).await;
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let question = env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, &document.run_id, "which branch?"),
    );
    sink.handle(
        &document,
        HandlerEvent::Reply {
            to_message_id: question.clone(),
            text: "main".into(),
        },
    )
    .await;
    sink.run_ended(&document.run_id);
    assert!(sink.flush(Duration::from_secs(10)).await);
    assert_eq!(env.requests(Route::ChannelReply, 202), 1);
    let peer = env.client(&reviewer, Duration::from_secs(2));
    let seen = peek(&peer).await;
    let reply = seen.first().expect("the reply reached the reviewer");
    assert_eq!(reply.text(), Some("main"));
    let metadata = reply.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.message_kind, MessageKind::Reply);
    assert_eq!(metadata.run_id, document.run_id);
}

// ---- the spawner ------------------------------------------------------------------------------

#[tokio::test]
async fn a_spawn_within_the_budget_creates_a_child_kept_in_the_status() {
    let env = Env::start().await;
    let worker = env.sim.default_session().expect("default session");
    let client = env.client(&worker, Duration::from_secs(2));
    let document = env
        .claimed(&client, None, Some(Duration::from_secs(600)))
        .await;
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let answer = spawn_answer(&sink, &document, ask("helper", Some(120))).await;
    let SpawnAnswer::Spawned {
        session_id,
        agent_name,
        ttl_seconds,
        found_after_lost_answer,
    } = answer
    else {
        panic!("refused: {answer:?}");
    };
    assert_eq!((agent_name.as_str(), ttl_seconds), ("helper", 120));
    assert!(!found_after_lost_answer, "the daemon answered this spawn");
    assert_eq!(env.requests(Route::Spawn, 201), 1);
    let snapshot = status.snapshot();
    assert_eq!(snapshot.counters.spawns_created, 1);
    assert_eq!(snapshot.children.len(), 1);
    assert_eq!(snapshot.children[0].session_id, session_id);
    assert_eq!(snapshot.children[0].run_id, document.run_id);
    assert!(env.sim.session(&session_id).is_some());
}

#[tokio::test]
async fn a_spawn_beyond_the_children_budget_is_refused_without_asking_the_daemon() {
    let env = Env::start().await;
    let parent = env.session_with("builder", None, |spec| {
        spec.spawn_budget = Some(SpawnBudget {
            max_children: 1,
            ..SpawnBudget::default()
        });
    });
    let client = env.client(&parent, Duration::from_secs(2));
    let document = env.claimed(&client, None, None).await;
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let first = spawn_answer(&sink, &document, ask("helper", Some(60))).await;
    assert!(matches!(first, SpawnAnswer::Spawned { .. }), "{first:?}");
    let second = spawn_answer(&sink, &document, ask("helper", Some(60))).await;
    let SpawnAnswer::Refused { reason } = second else {
        panic!("spawned beyond the budget: {second:?}");
    };
    assert!(
        reason.contains("limit") && reason.contains("max_children is 1"),
        "{reason}"
    );
    assert_eq!(
        env.all_requests(Route::Spawn),
        1,
        "the refusal cost a server call"
    );
    let counters = status.snapshot().counters;
    assert_eq!((counters.spawns_created, counters.spawns_refused), (1, 1));
}

#[tokio::test]
async fn a_child_session_cannot_spawn_and_is_told_so_locally() {
    let env = Env::start().await;
    let worker = env.sim.default_session().expect("default session");
    let parent_client = env.client(&worker, Duration::from_secs(2));
    let spawned = parent_client
        .spawn(
            &SpawnRequest {
                agent_name: "worker".into(),
                ttl_seconds: 600,
                ..SpawnRequest::default()
            },
            SPAWN_TIMEOUT,
        )
        .await
        .expect("a child");
    let child = env.sim.session(&spawned.session.id).expect("child session");
    let client = env.client(&child, Duration::from_secs(2));
    let document = env.claimed(&client, None, None).await;
    let sink = Coordination::new(
        Arc::new(client),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    let answer = spawn_answer(&sink, &document, ask("helper", Some(60))).await;
    let SpawnAnswer::Refused { reason } = answer else {
        panic!("a depth-1 child spawned: {answer:?}");
    };
    assert!(reason.contains("max_spawn_depth 1"), "{reason}");
    assert_eq!(
        env.all_requests(Route::Spawn),
        1,
        "only the parent's own spawn"
    );
}

#[tokio::test]
async fn the_daemons_limit_permission_and_validation_refusals_become_ordinary_answers() {
    let env = Env::start().await;
    let parent = env.session_with("builder", None, |spec| {
        spec.spawn_budget = Some(SpawnBudget {
            max_children: 1,
            ..SpawnBudget::default()
        });
        spec.permission_policy = Some(PermissionPolicy {
            tools: vec!["read".into()],
            ..PermissionPolicy::default()
        });
    });
    let client = env.client(&parent, Duration::from_secs(2));
    let document = env.claimed(&client, None, None).await;
    let sink = Coordination::new(
        Arc::new(client.clone()),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);

    // 403: the child would get a tool the parent's policy does not hold.
    let mut wider = ask("helper", Some(60));
    wider.permissions = Some(agh_worker::api::types::Permissions {
        tools: vec!["write".into()],
        ..Default::default()
    });
    let answer = spawn_answer(&sink, &document, wider).await;
    assert!(
        matches!(&answer, SpawnAnswer::Refused { reason } if reason.contains("permission")),
        "{answer:?}"
    );
    assert_eq!(env.requests(Route::Spawn, 403), 1);

    // 422: a role the daemon reserves.
    let mut coordinator = ask("helper", Some(60));
    coordinator.spawn_role = Some("Coordinator".into());
    let answer = spawn_answer(&sink, &document, coordinator).await;
    assert!(
        matches!(&answer, SpawnAnswer::Refused { reason } if reason.contains("invalid")),
        "{answer:?}"
    );
    assert_eq!(env.requests(Route::Spawn, 422), 1);

    // 409: a child this worker does not know of (created by the agent itself) fills the budget.
    client
        .spawn(
            &SpawnRequest {
                agent_name: "helper".into(),
                ttl_seconds: 60,
                ..SpawnRequest::default()
            },
            SPAWN_TIMEOUT,
        )
        .await
        .expect("a child made behind the worker's back");
    let answer = spawn_answer(&sink, &document, ask("helper", Some(60))).await;
    assert!(
        matches!(&answer, SpawnAnswer::Refused { reason } if reason.contains("limit")),
        "{answer:?}"
    );
    assert_eq!(env.requests(Route::Spawn, 409), 1);
}

#[tokio::test]
async fn a_childs_ttl_is_capped_by_the_runs_remaining_time_and_by_the_ceiling() {
    let env = Env::start().await;
    let worker = env.sim.default_session().expect("default session");
    let client = env.client(&worker, Duration::from_secs(2));
    let document = env
        .claimed(&client, None, Some(Duration::from_secs(90)))
        .await;
    let status = StatusBoard::default();
    let sink = Coordination::new(
        Arc::new(client),
        status.clone(),
        CoordinationSettings {
            progress_interval: Duration::from_secs(1),
            spawn: SpawnSettings {
                max_child_ttl_seconds: 60,
                ..SpawnSettings::default()
            },
        },
    );
    let (inbound_tx, _inbound) = mpsc::channel(8);
    sink.run_started(&document, inbound_tx);
    // Asked for 10 minutes: the 60 s ceiling wins over the 90 s the run has left.
    let answer = spawn_answer(&sink, &document, ask("helper", Some(600))).await;
    assert!(
        matches!(
            answer,
            SpawnAnswer::Spawned {
                ttl_seconds: 60,
                ..
            }
        ),
        "{answer:?}"
    );
    // No TTL asked: the coordinator's default (7200 s) is capped the same way.
    let answer = spawn_answer(&sink, &document, ask("helper", None)).await;
    assert!(
        matches!(
            answer,
            SpawnAnswer::Spawned {
                ttl_seconds: 60,
                ..
            }
        ),
        "{answer:?}"
    );

    // A run with 30 s limit: the run's remaining time wins over the ceiling.
    let short = Coordination::new(
        Arc::new(env.client(&worker, Duration::from_secs(2))),
        StatusBoard::default(),
        settings(Duration::from_secs(1)),
    );
    let mut brief = document.clone();
    brief.deadline_seconds = Some(30);
    let (inbound_tx, _inbound2) = mpsc::channel(8);
    short.run_started(&brief, inbound_tx);
    let answer = spawn_answer(&short, &brief, ask("helper", Some(600))).await;
    let SpawnAnswer::Spawned { ttl_seconds, .. } = answer else {
        panic!("refused: {answer:?}");
    };
    assert!((29..=30).contains(&ttl_seconds), "ttl {ttl_seconds}");
}

// ---- a whole run through the worker loop -------------------------------------------------------

/// A handler that waits for one inbound message, answers it, reports progress, asks for a
/// child, and completes with what it saw.
struct Conversing {
    /// Told when the handler is waiting for its message.
    ready: mpsc::UnboundedSender<String>,
}

impl Handler for Conversing {
    async fn run(&self, mut context: TaskContext) -> Outcome {
        let _ = self.ready.send(context.document.run_id.clone());
        let Some(message) = context.inbound.recv().await else {
            return Outcome::Fail {
                error: "no message".into(),
                metadata: None,
            };
        };
        let _ = context
            .events
            .send(HandlerEvent::Reply {
                to_message_id: message.message_id.clone(),
                text: "on it".into(),
            })
            .await;
        context.progress("working").await;
        let child = context.spawn(ask("helper", Some(60))).await;
        Outcome::Complete(json!({
            "message": message.text(),
            "spawned": matches!(child, SpawnAnswer::Spawned { .. }),
        }))
    }
}

#[tokio::test]
async fn a_handler_hears_a_peer_replies_reports_and_spawns_through_the_worker() {
    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let run = env.sim.enqueue_task(TaskSpec {
        title: "converse".into(),
        channel: Some(CHANNEL.into()),
        ..TaskSpec::default()
    });
    let api = Arc::new(env.client(&builder, Duration::from_secs(2)));
    let status = StatusBoard::default();
    let sink = Arc::new(Coordination::new(
        api.clone(),
        status.clone(),
        settings(Duration::from_millis(100)),
    ));
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut worker_settings = WorkerSettings::from_config(&agh_worker::config::Config::default());
    worker_settings.max_runs = Some(1);
    let worker = ClaimLoop {
        api,
        handlers: Arc::new(SharedHandlers::from(HandlerSet::from(Conversing {
            ready: ready_tx,
        }))),
        events: sink.clone(),
        settings: worker_settings.into(),
        status: status.clone(),
        shutdown: shutdown.clone(),
        wake: Default::default(),
    };
    let running = tokio::spawn(async move { worker.run().await });

    let run_id = tokio::time::timeout(Duration::from_secs(10), ready.recv())
        .await
        .expect("the handler started in time")
        .expect("run id");
    assert_eq!(run_id, run.run_id);
    env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, &run_id, "please also update the docs"),
    );
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the run finished in time")
        .expect("worker task");
    assert!(sink.flush(Duration::from_secs(10)).await);

    let finished = env.sim.run(&run_id).expect("run");
    assert_eq!(finished.status, "completed");
    assert_eq!(
        finished.result,
        Some(json!({"message": "please also update the docs", "spawned": true}))
    );
    let peer = env.client(&reviewer, Duration::from_secs(2));
    let seen = peek(&peer).await;
    let texts: Vec<&str> = seen.iter().filter_map(ChannelMessage::text).collect();
    assert!(texts.contains(&"on it"), "{texts:?}");
    assert!(texts.contains(&"working"), "{texts:?}");
    let counters = status.snapshot().counters;
    assert_eq!(counters.messages_received, 1);
    assert_eq!(counters.spawns_created, 1);
    assert_eq!(env.requests(Route::ChannelSend, 400), 0);

    shutdown.force.cancel();
    listener.await.expect("listener ends");
}

/// An exec program that waits for one channel message on stdin, replies to it, asks for a child
/// session and completes with the spawn answer it read.
const CONVERSING_PROGRAM: &str = r#"#!/bin/sh
IFS= read -r task
echo '{"type":"progress","text":"waiting for a message"}'
IFS= read -r message
id=$(printf '%s\n' "$message" | sed -n 's/.*"message_id":"\([^"]*\)".*/\1/p')
printf '{"type":"reply","to":"%s","text":"on it"}\n' "$id"
echo '{"type":"spawn","agent_name":"helper","ttl_seconds":60}'
IFS= read -r answer
printf '{"type":"result","result":{"answer":%s}}\n' "$answer"
"#;

#[tokio::test]
async fn an_exec_program_reads_messages_and_writes_replies_and_spawns_through_the_worker() {
    use std::os::unix::fs::PermissionsExt;

    use agh_worker::handler::exec::ExecConfig;
    use agh_worker::handler::{HandlerConfig, HandlerKind, HandlerSet, MatchRule};

    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("converse.sh");
    std::fs::write(&program, CONVERSING_PROGRAM).expect("write program");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let env = Env::start().await;
    let builder = env.session("builder", Some(CHANNEL));
    let reviewer = env.session("reviewer", Some(CHANNEL));
    let run = env.sim.enqueue_task(TaskSpec {
        title: "converse".into(),
        channel: Some(CHANNEL.into()),
        ..TaskSpec::default()
    });
    // Written before the worker starts: handed over when the run does.
    env.sim.inject_message(
        &builder.session_id,
        peer_message(&reviewer, &run.run_id, "which branch?"),
    );
    let api = Arc::new(env.client(&builder, Duration::from_secs(2)));
    let status = StatusBoard::default();
    let sink = Arc::new(Coordination::new(
        api.clone(),
        status.clone(),
        settings(Duration::from_millis(100)),
    ));
    let shutdown = Shutdown::default();
    let listener = tokio::spawn(
        sink.listener(listener_settings(Some(CHANNEL)), shutdown.clone())
            .run(),
    );
    let mut worker_settings = WorkerSettings::from_config(&agh_worker::config::Config::default());
    worker_settings.max_runs = Some(1);
    let worker = ClaimLoop {
        api,
        handlers: Arc::new(SharedHandlers::from(HandlerSet::new(vec![HandlerConfig {
            name: "converse".into(),
            kind: HandlerKind::Exec,
            matches: MatchRule::default(),
            exec: Some(ExecConfig {
                program: program.clone(),
                ..ExecConfig::default()
            }),
            webhook: None,
            coder: None,
        }]))),
        events: sink.clone(),
        settings: worker_settings.into(),
        status: status.clone(),
        shutdown: shutdown.clone(),
        wake: Default::default(),
    };
    tokio::time::timeout(Duration::from_secs(30), worker.run())
        .await
        .expect("the run finished in time");
    assert!(sink.flush(Duration::from_secs(10)).await);

    let finished = env.sim.run(&run.run_id).expect("run");
    assert_eq!(finished.status, "completed", "{finished:?}");
    let answer = &finished.result.as_ref().expect("a result")["answer"];
    assert_eq!(answer["type"], "spawned", "{answer}");
    assert_eq!(answer["agent_name"], "helper");
    assert_eq!(answer["ttl_seconds"], 60);
    let peer = env.client(&reviewer, Duration::from_secs(2));
    let seen = peek(&peer).await;
    let reply = seen
        .iter()
        .find(|m| m.text() == Some("on it"))
        .unwrap_or_else(|| panic!("no reply in {seen:?}"));
    assert_eq!(
        reply.metadata.as_ref().map(|m| m.message_kind.clone()),
        Some(MessageKind::Reply)
    );
    assert_eq!(
        reply.to_session_id.as_deref(),
        Some(reviewer.peer_id.as_str())
    );
    assert!(
        seen.iter()
            .any(|m| m.text() == Some("waiting for a message")),
        "{seen:?}"
    );
    assert_eq!(env.requests(Route::ChannelReply, 202), 1);
    assert_eq!(status.snapshot().counters.messages_received, 1);
    shutdown.force.cancel();
    listener.await.expect("listener ends");
}
