//! `agh-worker acp` launched by the simulator as AGH launches its agents: the real binary, its
//! session's identity, ACP on stdin/stdout, wake prompts and AGH's stop.

mod support;

use std::path::Path;
use std::time::Duration;

use agh_worker::dev::sim::acp::STOP_GRACE;
use agh_worker::dev::sim::{Route, SimConfig};
use support::acp_rig::{
    NOOP, Rig, assert_only_json_rpc, calls_after_knowing_of_the_stop, completed,
};

/// How long after its stdin closes a call from a stopped session may still arrive: one sent just
/// before the worker read the end of stdin.
const STOP_CALL_WINDOW: Duration = Duration::from_millis(250);
use support::client_rig::Transport;

async fn completes_runs_with_its_sessions_identity(transport: Transport) {
    let rig = Rig::start(transport, SimConfig::default(), NOOP).await;
    let session = rig.session().await;
    let first = rig.enqueue("first");
    let second = rig.enqueue("second");
    rig.until("two completed runs", |sim| completed(sim) >= 2)
        .await;
    for run in [first, second] {
        let run = rig.sim.run(&run).expect("the run");
        assert_eq!(run.status, "completed");
        assert_eq!(run.session_id.as_deref(), Some(session.session_id.as_str()));
    }
    let answer = rig
        .sim
        .prompt_agent(&session.session_id, "what are you doing?")
        .await
        .expect("a prompt is answered");
    assert_eq!(answer["stopReason"], "end_turn");
    let stop = rig
        .sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(stop.exited_by_itself, "{stop:?}");
    let stdout = rig.sim.agent_stdout(&session.session_id);
    assert_only_json_rpc(&stdout);
    assert!(
        stdout.iter().any(|line| line.contains("session/update")),
        "the turn came with a session/update: {stdout:?}"
    );
    assert_eq!(rig.sim.ledger().violations_total, 0);
}

#[tokio::test]
async fn the_simulator_launches_acp_over_tcp_and_it_completes_runs_with_its_sessions_identity() {
    completes_runs_with_its_sessions_identity(Transport::Tcp).await;
}

#[tokio::test]
async fn the_simulator_launches_acp_over_a_unix_socket_and_it_completes_runs_with_its_sessions_identity()
 {
    completes_runs_with_its_sessions_identity(Transport::Unix).await;
}

#[tokio::test]
async fn a_wake_prompt_makes_the_worker_claim_without_waiting_out_the_long_poll() {
    // The daemon re-checks an open long-poll only every poll interval: an hour here, and the
    // simulator's own scheduler wakes nobody, so only this test's wake can bring the queued run
    // to the worker within the test.
    let config = SimConfig {
        poll_interval: Duration::from_secs(3600),
        wake_idle_sessions: false,
        ..SimConfig::default()
    };
    let rig = Rig::start(Transport::Tcp, config, NOOP).await;
    let session = rig.session().await;
    rig.sim.wait_for_waiters(Route::ClaimNext, 1).await;
    let run = rig.enqueue("woken");
    let claims_before = rig.sim.ledger().requests_for(Route::ClaimNext, 200);
    let answer = rig
        .sim
        .wake_agent(&session.session_id, "task", &run)
        .await
        .expect("the wake is answered");
    assert_eq!(answer["stopReason"], "end_turn");
    rig.until("the woken run to complete", |sim| completed(sim) >= 1)
        .await;
    assert_eq!(
        rig.sim.ledger().requests_for(Route::ClaimNext, 200),
        claims_before + 1,
        "one claim, made after the wake"
    );
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
}

/// An exec handler whose program records its pid and a child's, then waits for ever.
fn sleeping_handler(dir: &Path) -> String {
    let script = format!(
        "sleep 600 & echo $! > '{child}'; echo $$ > '{leader}'; wait",
        child = dir.join("child.pid").display(),
        leader = dir.join("leader.pid").display()
    );
    format!(
        "[[handlers]]\nname = \"sleeper\"\nkind = \"exec\"\n[handlers.exec]\nprogram = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n"
    )
}

fn alive(pid_file: &Path) -> bool {
    let pid = std::fs::read_to_string(pid_file).expect("the handler wrote its pid");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    // A zombie has ended; only its parent's wait is missing.
    stat.is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn a_prompt_is_answered_while_a_handler_runs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = Rig::start(
        Transport::Tcp,
        SimConfig::default(),
        &sleeping_handler(dir.path()),
    )
    .await;
    let session = rig.session().await;
    let run = rig.enqueue("long");
    rig.until("the run's first heartbeat", |sim| {
        sim.ledger().requests_for(Route::Heartbeat, 200) >= 1
            || dir.path().join("leader.pid").exists()
    })
    .await;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        rig.sim.prompt_agent(&session.session_id, "status?"),
    )
    .await
    .expect("the turn ends at once, the handler still running")
    .expect("a prompt is answered");
    assert_eq!(answer["stopReason"], "end_turn");
    let stdout = rig.sim.agent_stdout(&session.session_id).join("\n");
    assert!(
        stdout.contains(&run),
        "the answer names the run in hand: {stdout}"
    );
    rig.sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
}

#[tokio::test]
async fn closing_stdin_after_stopping_leaves_no_handler_and_no_call_to_agh() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rig = Rig::start(
        Transport::Tcp,
        SimConfig::default(),
        &sleeping_handler(dir.path()),
    )
    .await;
    let session = rig.session().await;
    rig.enqueue("long");
    let leader = dir.path().join("leader.pid");
    let child = dir.path().join("child.pid");
    rig.until("the handler to start", |_| {
        leader.exists() && child.exists()
    })
    .await;
    let stop = rig
        .sim
        .stop_agent_session(&session.session_id)
        .await
        .expect("stops");
    assert!(
        stop.exited_by_itself && stop.waited < STOP_GRACE,
        "the worker exits by itself before AGH's SIGTERM: {stop:?}"
    );
    assert!(rig.sim.agent_exited(&session.session_id));
    assert!(!alive(&leader), "the handler program is gone");
    assert!(!alive(&child), "what the handler started is gone");
    assert_eq!(
        calls_after_knowing_of_the_stop(&rig.sim, &session.session_id, STOP_CALL_WINDOW),
        Vec::new(),
        "no call to AGH once the worker knew of the stop"
    );
    assert_only_json_rpc(&rig.sim.agent_stdout(&session.session_id));
    let log = std::fs::read_to_string(rig.path("acp.log")).expect("the durable log file");
    assert!(log.contains("stdin closed"), "{log}");
    assert!(!log.contains("must-not-reach-the-agent"));
}
