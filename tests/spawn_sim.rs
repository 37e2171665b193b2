//! Spawning as AGH does it, against the built-in simulator over TCP and a Unix socket, on paused
//! tokio time: AGH starts the child's agent inside the spawn request (the simulator's spawn
//! delay), a client that gives up cancels the spawn, and `idempotency_key` is ignored, so the
//! spawner looks for the child among this session's children before it says what happened.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use agh_worker::api::types::{
    ChannelMessage, CoordinatorConfig, Me, ReplyRequest, SendRequest, SpawnRequest, Spawned,
    SpawnedSession,
};
use agh_worker::api::{AghClient, ApiError, Endpoint};
use agh_worker::coordination::CoordinationApi;
use agh_worker::coordination::spawner::{RunClock, SpawnSettings, Spawner};
use agh_worker::dev::sim::{
    Fault, FaultKind, Route, SessionInfo, SessionSpec, SimConfig, SimServer, Simulator,
};
use agh_worker::handler::{SpawnAnswer, SpawnAsk};
use agh_worker::worker::StatusBoard;
use support::client_rig::{Transport, short_tempdir};
use support::sim::{requests, serve, worker_client};
use tempfile::TempDir;
use tokio::time::Instant;

struct Rig {
    sim: Simulator,
    endpoint: Endpoint,
    client: AghClient,
    parent: SessionInfo,
    _server: SimServer,
    _dir: TempDir,
}

impl Rig {
    async fn start(transport: Transport, spawn_delay: Duration) -> Rig {
        let sim = Simulator::new(SimConfig {
            spawn_delay,
            ..SimConfig::default()
        });
        let dir = short_tempdir();
        let (server, endpoint) = serve(&sim, transport, dir.path()).await;
        let parent = sim.create_session(SessionSpec::for_agent("lead", Some("ws-default")));
        let client = worker_client(&endpoint, &parent);
        Rig {
            sim,
            endpoint,
            client,
            parent,
            _server: server,
            _dir: dir,
        }
    }

    fn spawner<A: CoordinationApi>(&self, api: A, timeout: Duration) -> Spawner<A> {
        Spawner::new(
            Arc::new(api),
            StatusBoard::default(),
            SpawnSettings {
                spawn_timeout: timeout,
                ..SpawnSettings::default()
            },
        )
    }

    /// The parent's children as AGH lists them.
    async fn children(&self) -> Vec<SpawnedSession> {
        CoordinationApi::children(&self.client)
            .await
            .expect("the sessions list")
    }
}

fn clock() -> RunClock {
    RunClock {
        started: Instant::now(),
        time_limit: None,
    }
}

fn ask(name: Option<&str>) -> SpawnAsk {
    SpawnAsk {
        agent_name: "helper".into(),
        ttl_seconds: Some(600),
        name: name.map(str::to_string),
        ..SpawnAsk::default()
    }
}

async fn a_fifteen_second_spawn_succeeds_once(transport: Transport) {
    let rig = Rig::start(transport, Duration::from_secs(15)).await;
    let spawner = rig.spawner(rig.client.clone(), Duration::from_secs(120));
    let started = Instant::now();
    let answer = spawner.spawn("run-1", clock(), ask(Some("r1"))).await;
    let SpawnAnswer::Spawned {
        session_id,
        found_after_lost_answer,
        ..
    } = answer
    else {
        panic!("a 15 s spawn within a 120 s timeout was refused: {answer:?}");
    };
    assert!(!found_after_lost_answer, "the daemon answered this spawn");
    // Longer than the 2 s request timeout of the client: the spawn has its own.
    assert!(started.elapsed() >= Duration::from_secs(15));
    assert_eq!(rig.sim.ledger().requests_for(Route::Spawn, 201), 1);
    assert_eq!(
        requests(&rig.sim, Route::Sessions),
        0,
        "nothing to look for"
    );
    let children = rig.children().await;
    assert_eq!(children.len(), 1, "{children:?}");
    assert_eq!(children[0].id, session_id);
    assert_eq!(children[0].name.as_deref(), Some("r1"));
}

async fn a_spawn_whose_answer_is_lost_makes_one_child_and_the_handler_hears_it_was_found(
    transport: Transport,
) {
    let rig = Rig::start(transport, Duration::from_secs(3)).await;
    rig.sim
        .inject_fault(Fault::new(Route::Spawn, FaultKind::DropAfterCommit, 1));
    let spawner = rig.spawner(rig.client.clone(), Duration::from_secs(120));
    // No name asked for: the spawner names the child so that it can find it.
    let answer = spawner.spawn("run-1", clock(), ask(None)).await;
    let SpawnAnswer::Spawned {
        session_id,
        found_after_lost_answer,
        ..
    } = answer
    else {
        panic!("the child the lost answer made was not found: {answer:?}");
    };
    assert!(found_after_lost_answer);
    assert_eq!(requests(&rig.sim, Route::Sessions), 1, "looked once");
    let children = rig.children().await;
    assert_eq!(children.len(), 1, "one child, not two: {children:?}");
    assert_eq!(children[0].id, session_id);
    assert!(
        children[0]
            .name
            .as_deref()
            .is_some_and(|name| name.starts_with("helper-")),
        "{children:?}"
    );
    assert_eq!(spawner.live_children(), 1, "the found child counts");
}

async fn a_spawn_given_up_at_its_timeout_makes_no_child_and_is_reported_not_created(
    transport: Transport,
) {
    let rig = Rig::start(transport, Duration::from_secs(200)).await;
    let spawner = rig.spawner(rig.client.clone(), Duration::from_secs(120));
    let answer = spawner.spawn("run-1", clock(), ask(Some("slow"))).await;
    let SpawnAnswer::Refused { reason } = answer else {
        panic!("a spawn slower than its timeout made a child: {answer:?}");
    };
    assert!(
        reason.starts_with("spawn not created")
            && reason.contains("coordination.spawn_timeout_seconds")
            && reason.contains("\"slow\""),
        "{reason}"
    );
    // Long past the simulator's 200 s: the spawn that was given up never makes its child.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(rig.children().await.is_empty());
    assert_eq!(
        requests(&rig.sim, Route::Spawn),
        0,
        "no spawn ever finished"
    );
    assert_eq!(
        requests(&rig.sim, Route::Sessions),
        2,
        "one look, then ours"
    );
}

async fn a_spawn_that_failed_on_the_daemon_is_looked_for_and_reported_not_created(
    transport: Transport,
) {
    let rig = Rig::start(transport, Duration::ZERO).await;
    rig.sim.inject_fault(Fault::new(
        Route::Spawn,
        FaultKind::Status {
            status: 500,
            error: "session: create agent for \"x\": acp: initialize: broken pipe".into(),
        },
        1,
    ));
    let spawner = rig.spawner(rig.client.clone(), Duration::from_secs(120));
    let answer = spawner.spawn("run-1", clock(), ask(Some("r1"))).await;
    let SpawnAnswer::Refused { reason } = answer else {
        panic!("a failed spawn was reported as made: {answer:?}");
    };
    assert!(
        reason.starts_with("spawn not created") && reason.contains("no child named \"r1\""),
        "{reason}"
    );
    assert!(rig.children().await.is_empty());
    // A 5xx is an answer: not asked again.
    assert_eq!(requests(&rig.sim, Route::Spawn), 1);
}

/// The real client, with `me.limits` rewritten to say less than AGH's spawn fallback.
struct SmallLimits(AghClient);

impl CoordinationApi for SmallLimits {
    async fn recv_wait(&self, channel: &str) -> Result<Vec<ChannelMessage>, ApiError> {
        CoordinationApi::recv_wait(&self.0, channel).await
    }
    async fn send(&self, channel: &str, request: &SendRequest) -> Result<ChannelMessage, ApiError> {
        CoordinationApi::send(&self.0, channel, request).await
    }
    async fn reply(&self, request: &ReplyRequest) -> Result<ChannelMessage, ApiError> {
        CoordinationApi::reply(&self.0, request).await
    }
    async fn spawn(&self, request: &SpawnRequest, timeout: Duration) -> Result<Spawned, ApiError> {
        CoordinationApi::spawn(&self.0, request, timeout).await
    }
    async fn children(&self) -> Result<Vec<SpawnedSession>, ApiError> {
        CoordinationApi::children(&self.0).await
    }
    async fn me(&self) -> Result<Me, ApiError> {
        let mut me = CoordinationApi::me(&self.0).await?;
        if let Some(limits) = me.limits.as_mut() {
            limits.max_children = 2;
            limits.max_spawn_depth = 3;
        }
        Ok(me)
    }
    async fn coordinator_config(&self) -> Result<CoordinatorConfig, ApiError> {
        CoordinationApi::coordinator_config(&self.0).await
    }
}

async fn a_zero_budget_allows_five_children_at_depth_one_whatever_the_limits_say(
    transport: Transport,
) {
    let rig = Rig::start(transport, Duration::ZERO).await;
    let spawner = rig.spawner(SmallLimits(rig.client.clone()), Duration::from_secs(120));
    for n in 0..5 {
        let answer = spawner.spawn("run-1", clock(), ask(None)).await;
        assert!(
            matches!(answer, SpawnAnswer::Spawned { .. }),
            "child {n}: {answer:?}"
        );
    }
    let sixth = spawner.spawn("run-1", clock(), ask(None)).await;
    let SpawnAnswer::Refused { reason } = sixth else {
        panic!("a sixth child under a zero budget: {sixth:?}");
    };
    assert!(
        reason.contains("max_children is 5") && reason.contains("nothing sent"),
        "{reason}"
    );
    assert_eq!(requests(&rig.sim, Route::Spawn), 5);
    assert_eq!(rig.children().await.len(), 5);

    // A child at depth 1 may not spawn, whatever `me.limits.max_spawn_depth` says.
    let child_id = rig.children().await[0].id.clone();
    let child = SessionInfo {
        session_id: child_id,
        agent_name: "helper".into(),
        ..rig.parent.clone()
    };
    let child_client = worker_client(&rig.endpoint, &child);
    let nested = rig.spawner(SmallLimits(child_client), Duration::from_secs(120));
    let answer = nested.spawn("run-2", clock(), ask(None)).await;
    assert!(
        matches!(&answer, SpawnAnswer::Refused { reason } if reason.contains("max_spawn_depth 1")),
        "{answer:?}"
    );
    assert_eq!(requests(&rig.sim, Route::Spawn), 5, "refused locally");
}

on_both_transports!(
    paused: a_fifteen_second_spawn_succeeds_once,
    a_spawn_whose_answer_is_lost_makes_one_child_and_the_handler_hears_it_was_found,
    a_spawn_given_up_at_its_timeout_makes_no_child_and_is_reported_not_created,
    a_spawn_that_failed_on_the_daemon_is_looked_for_and_reported_not_created,
    a_zero_budget_allows_five_children_at_depth_one_whatever_the_limits_say,
);
