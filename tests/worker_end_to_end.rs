//! End-to-end behaviour tests of the worker loop against the built-in AGH simulator, over real
//! HTTP on loopback TCP and over a Unix socket: claims, leases, faults, restarts, identity and exits.
//!
//! Every test ends with a ledger check: no invariant violation, no run left claimed, and the
//! runs' claim counts add up to the claim transitions and to the ends those claims had.

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agh_worker::api::types::ClaimRequest;
use agh_worker::api::{AghClient, ClaimOutcome, Endpoint, ErrorKind};
use agh_worker::config::OrphanPolicy;
use agh_worker::dev::sim::{
    EnqueuedRun, Fault, FaultKind, Route, SessionInfo, SessionState, SimConfig, SimServer,
    Simulator, TaskSpec, Timestamp, TransitionKind,
};
use agh_worker::handler::exec::ExecConfig;
use agh_worker::handler::{Handler, SharedHandlers};
use agh_worker::handler::{
    HandlerConfig, HandlerKind, HandlerSet, MatchRule, Outcome, TaskContext,
};
use agh_worker::worker::{
    ClaimLoop, LogEvents, Shutdown, StatusBoard, WorkerExit, WorkerSettings, WorkerState,
};
use serde_json::json;
use support::client_rig::Transport;
use support::recorder::Recorder;
use support::sim::{self, worker_settings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

// ----- the rig ----------------------------------------------------------------------------------

struct Rig {
    sim: Simulator,
    server: Option<SimServer>,
    endpoint: Endpoint,
    session: SessionInfo,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(via: Transport) -> Rig {
        support::log_capture::show_in_test_output();
        let dir = tempfile::tempdir().expect("temporary directory");
        let sim = Simulator::new(SimConfig::default());
        let (server, endpoint) = sim::serve(&sim, via, dir.path()).await;
        let session = sim.default_session().expect("default session");
        Rig {
            sim,
            server: Some(server),
            endpoint,
            session,
            _dir: dir,
        }
    }

    fn client(&self) -> AghClient {
        sim::worker_client(&self.endpoint, &self.session)
    }

    fn worker(&self, handlers: impl Into<HandlerSet>, settings: WorkerSettings) -> Rigged {
        Arc::new(ClaimLoop {
            api: Arc::new(Recorder::new(self.client())),
            handlers: Arc::new(SharedHandlers::from(handlers.into())),
            events: Arc::new(LogEvents),
            settings: settings.into(),
            status: StatusBoard::default(),
            shutdown: Shutdown::default(),
            wake: Default::default(),
        })
    }

    async fn restart(&mut self) {
        let server = self.server.take().expect("a running server");
        self.server = Some(server.restart().await.expect("the simulator restarts"));
    }

    fn enqueue(&self, title: &str) -> EnqueuedRun {
        self.sim.enqueue_task(TaskSpec::titled(title))
    }

    /// Requests of `route` the simulator answered, whatever the status.
    fn requests(&self, route: Route) -> u64 {
        sim::requests(&self.sim, route)
    }

    /// The ledger check every test ends with.
    fn check_ledger(&self, runs: &[&EnqueuedRun]) {
        sim::assert_no_violation_and_no_claimed_run(&self.sim);
        let ledger = self.sim.ledger();
        let mut claims = 0u64;
        for run in runs {
            let snapshot = self.sim.run(&run.run_id).expect("the run is known");
            assert!(
                matches!(snapshot.status.as_str(), "completed" | "failed" | "queued"),
                "run {} ended {}",
                run.run_id,
                snapshot.status
            );
            if snapshot.status != "queued" {
                assert!(snapshot.claims >= 1, "{snapshot:?}");
            }
            claims += u64::from(snapshot.claims);
        }
        assert_eq!(claims, ledger.transitions_of(TransitionKind::Claimed));
        let ends = ledger.transitions_of(TransitionKind::Completed)
            + ledger.transitions_of(TransitionKind::Failed)
            + ledger.transitions_of(TransitionKind::Released)
            + ledger.transitions_of(TransitionKind::RequeuedBySweep)
            + ledger.transitions_of(TransitionKind::ReleasedByReaper);
        assert_eq!(
            claims, ends,
            "every claim ends exactly once: {:?}",
            ledger.transitions
        );
    }
}

type Rigged = Arc<ClaimLoop<Recorder, LogEvents>>;

fn max_runs(n: u64) -> WorkerSettings {
    WorkerSettings {
        max_runs: Some(n),
        ..worker_settings()
    }
}

fn start(worker: &Rigged) -> JoinHandle<WorkerExit> {
    let worker = worker.clone();
    tokio::spawn(async move { worker.run().await })
}

async fn ends(handle: JoinHandle<WorkerExit>, within: Duration) -> WorkerExit {
    timeout(within, handle)
        .await
        .expect("the worker stops in time")
        .expect("the worker task does not panic")
}

fn example_handler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-handler.sh")
}

fn exec_handlers(title: Option<&str>) -> HandlerSet {
    HandlerSet::new(vec![HandlerConfig {
        name: "example".into(),
        kind: HandlerKind::Exec,
        matches: MatchRule {
            title: title.map(str::to_owned),
            ..MatchRule::default()
        },
        exec: Some(ExecConfig {
            program: example_handler(),
            kill_grace_ms: 1000,
            ..ExecConfig::default()
        }),
        webhook: None,
        coder: None,
    }])
}

// ----- scripted handlers -------------------------------------------------------------------------

type BoxOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A handler table of one scripted handler: `script(invocation, context)` is each run's body.
/// Every start is announced on `started` as (invocation, run id).
struct Script {
    script: Box<dyn Fn(usize, TaskContext) -> BoxOutcome + Send + Sync>,
    invocations: Mutex<usize>,
    started: mpsc::UnboundedSender<(usize, String)>,
}

fn script(
    body: impl Fn(usize, TaskContext) -> BoxOutcome + Send + Sync + 'static,
) -> (Script, mpsc::UnboundedReceiver<(usize, String)>) {
    let (started, starts) = mpsc::unbounded_channel();
    (
        Script {
            script: Box::new(body),
            invocations: Mutex::new(0),
            started,
        },
        starts,
    )
}

/// Completes every run at once with `{"run": <run id>}`.
fn completes() -> Script {
    script(|_, context| {
        Box::pin(async move { Outcome::Complete(json!({"run": context.document.run_id})) })
    })
    .0
}

impl Handler for Script {
    fn run(&self, context: TaskContext) -> impl Future<Output = Outcome> + Send {
        let invocation = {
            let mut count = self.invocations.lock().expect("lock");
            *count += 1;
            *count - 1
        };
        let _ = self
            .started
            .send((invocation, context.document.run_id.clone()));
        (self.script)(invocation, context)
    }
}

async fn next_start(starts: &mut mpsc::UnboundedReceiver<(usize, String)>) -> (usize, String) {
    timeout(Duration::from_secs(5), starts.recv())
        .await
        .expect("a handler starts in time")
        .expect("the script lives")
}

/// Orders two simulator timestamps given as RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac]Z`).
fn rfc3339_key(text: &str) -> (String, f64) {
    let (date, time) = text.split_once('T').expect("an RFC 3339 timestamp");
    let time = time.trim_end_matches('Z');
    let mut parts = time.split(':');
    let mut next = || -> f64 { parts.next().expect("h:m:s").parse().expect("a number") };
    let seconds = next() * 3600.0 + next() * 60.0 + next();
    (date.to_owned(), seconds)
}

fn before(a: Timestamp, b: &str) -> bool {
    rfc3339_key(&a.to_rfc3339()) < rfc3339_key(b)
}

// ----- the core case over both transports ---------------------------------------------------------

async fn claimed_runs_are_completed_with_the_exec_handlers_result(via: Transport) {
    let rig = Rig::new(via).await;
    let first = rig.enqueue("Summarise the build log");
    let second = rig.enqueue("Triage issue 412");
    let worker = rig.worker(exec_handlers(None), max_runs(2));
    let exit = ends(start(&worker), Duration::from_secs(8)).await;
    assert_eq!(exit, WorkerExit::MaxRuns);
    for (run, title) in [
        (&first, "Summarise the build log"),
        (&second, "Triage issue 412"),
    ] {
        let snapshot = rig.sim.run(&run.run_id).expect("run");
        assert_eq!(snapshot.status, "completed");
        let result = snapshot.result.expect("a result");
        assert_eq!(result["summary"], json!(format!("handled: {title}")));
        assert_eq!(result["run_id"], json!(run.run_id));
        assert_eq!(snapshot.claims, 1);
    }
    let status = worker.status.snapshot();
    assert_eq!(status.counters.runs_completed, 2);
    assert_eq!(status.state, WorkerState::Stopped);
    assert!(worker.api.calls("heartbeat").len() <= 4);
    rig.check_ledger(&[&first, &second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_runs_are_completed_with_the_exec_handlers_result_over_tcp() {
    claimed_runs_are_completed_with_the_exec_handlers_result(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_runs_are_completed_with_the_exec_handlers_result_over_a_unix_socket() {
    claimed_runs_are_completed_with_the_exec_handlers_result(Transport::Unix).await;
}

// ----- lost claim answers and orphans ------------------------------------------------------------

async fn a_lost_claim_answer_is_found_through_me(via: Transport, policy: OrphanPolicy) {
    let rig = Rig::new(via).await;
    rig.sim
        .inject_fault(Fault::new(Route::ClaimNext, FaultKind::DropAfterCommit, 1));
    let run = rig.enqueue("lost in transit");
    let worker = rig.worker(
        completes(),
        WorkerSettings {
            orphan_policy: policy,
            ..max_runs(1)
        },
    );
    let began = Instant::now();
    let exit = ends(start(&worker), Duration::from_secs(8)).await;
    assert_eq!(exit, WorkerExit::MaxRuns);
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed");
    assert_eq!(snapshot.result, Some(json!({"run": run.run_id})));
    let counters = worker.status.snapshot().counters;
    let ledger = rig.sim.ledger();
    match policy {
        OrphanPolicy::Adopt => {
            assert_eq!(snapshot.claims, 1);
            assert_eq!(counters.runs_adopted, 1);
            assert_eq!(ledger.transitions_of(TransitionKind::Released), 0);
        }
        OrphanPolicy::Release => {
            assert_eq!(snapshot.claims, 2, "released, then claimed again");
            assert_eq!(counters.runs_released, 1);
            assert_eq!(ledger.transitions_of(TransitionKind::Released), 1);
            let releases = worker.api.calls("release");
            assert_eq!(releases.len(), 1);
            assert!(
                releases[0].body.as_str().unwrap_or("").contains("orphan"),
                "{releases:?}"
            );
        }
    }
    let calls: Vec<(&str, Option<ErrorKind>)> = worker
        .api
        .all_calls()
        .iter()
        .map(|call| (call.verb, call.error))
        .collect();
    assert_eq!(worker.api.calls("complete").len(), 1, "{calls:?}");
    // An adopted lease is renewed at once, and that heartbeat may reach the daemon just after
    // the complete: its "lease expired" answer must not turn the completed run into a lost one.
    assert_eq!(counters.runs_completed, 1, "{calls:?}");
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_answer_is_found_through_me_and_adopted() {
    a_lost_claim_answer_is_found_through_me(Transport::Tcp, OrphanPolicy::Adopt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_answer_over_a_unix_socket_is_found_through_me_and_adopted() {
    a_lost_claim_answer_is_found_through_me(Transport::Unix, OrphanPolicy::Adopt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_answer_is_found_through_me_and_released_under_the_release_policy() {
    a_lost_claim_answer_is_found_through_me(Transport::Tcp, OrphanPolicy::Release).await;
}

async fn a_lease_orphaned_before_start_up(policy: OrphanPolicy) {
    let rig = Rig::new(Transport::Tcp).await;
    let run = rig.enqueue("left behind by a crashed worker");
    let claimed = rig
        .client()
        .claim_next(&ClaimRequest {
            lease_seconds: Some(30),
            ..ClaimRequest::default()
        })
        .await
        .expect("a direct claim");
    assert!(matches!(claimed, ClaimOutcome::Claimed(_)));
    let worker = rig.worker(
        completes(),
        WorkerSettings {
            orphan_policy: policy,
            ..max_runs(1)
        },
    );
    let exit = ends(start(&worker), Duration::from_secs(8)).await;
    assert_eq!(exit, WorkerExit::MaxRuns);
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed");
    let counters = worker.status.snapshot().counters;
    match policy {
        OrphanPolicy::Adopt => {
            assert_eq!(snapshot.claims, 1, "adopted, not claimed again");
            assert_eq!(counters.runs_adopted, 1);
            assert!(worker.api.calls("release").is_empty());
        }
        OrphanPolicy::Release => {
            assert_eq!(snapshot.claims, 2, "released, then claimed again");
            assert_eq!(counters.runs_adopted, 0);
            assert_eq!(worker.api.calls("release").len(), 1);
            assert_eq!(rig.sim.ledger().transitions_of(TransitionKind::Released), 1);
        }
    }
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_orphaned_before_start_up_is_adopted_and_completed() {
    a_lease_orphaned_before_start_up(OrphanPolicy::Adopt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_orphaned_before_start_up_is_released_then_completed_by_a_later_claim() {
    a_lease_orphaned_before_start_up(OrphanPolicy::Release).await;
}

// ----- losing the lease --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_mid_run_cancels_the_handler_at_the_next_heartbeat_and_sends_no_terminal_call()
{
    let rig = Rig::new(Transport::Tcp).await;
    let run = rig.enqueue("long analysis");
    let (cancelled_tx, mut cancelled_rx) = mpsc::unbounded_channel::<Instant>();
    let (handlers, mut starts) = script(move |invocation, context| {
        let cancelled_tx = cancelled_tx.clone();
        Box::pin(async move {
            if invocation == 0 {
                context.cancel.cancelled().await;
                let _ = cancelled_tx.send(Instant::now());
                // A handler that claims success after being stopped must not be believed.
                return Outcome::Complete(json!({"from": "the cancelled handler"}));
            }
            Outcome::Complete(json!({"from": "the second attempt"}))
        })
    });
    let worker = rig.worker(handlers, max_runs(2));
    let running = start(&worker);
    let (_, run_id) = next_start(&mut starts).await;
    assert_eq!(run_id, run.run_id);
    // The lease passes to the sweep: the next heartbeat is refused.
    let lost_at = Instant::now();
    assert!(rig.sim.expire_lease(&run.run_id));
    assert_eq!(rig.sim.sweep_now(), 1);
    let cancelled_at = timeout(Duration::from_secs(4), cancelled_rx.recv())
        .await
        .expect("the handler is cancelled")
        .expect("the script lives");
    let reaction = cancelled_at - lost_at;
    assert!(
        reaction < Duration::from_millis(2000),
        "the handler was cancelled {reaction:?} after the lease was lost (heartbeat every 1 s)"
    );
    // The worker goes on claiming: the requeued run comes back and completes.
    let (invocation, again) = next_start(&mut starts).await;
    assert_eq!((invocation, again.as_str()), (1, run.run_id.as_str()));
    assert_eq!(
        ends(running, Duration::from_secs(8)).await,
        WorkerExit::MaxRuns
    );
    let terminal = worker.api.terminal_calls();
    assert_eq!(
        terminal.len(),
        1,
        "one terminal call, for the second claim: {terminal:?}"
    );
    assert_eq!(terminal[0].verb, "complete");
    assert_eq!(terminal[0].body, json!({"from": "the second attempt"}));
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.result, Some(json!({"from": "the second attempt"})));
    assert_eq!(snapshot.claims, 2);
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.transitions_of(TransitionKind::RequeuedBySweep), 1);
    assert_eq!(ledger.transitions_of(TransitionKind::Released), 0);
    assert_eq!(worker.status.snapshot().counters.leases_lost, 1);
    let rejected = worker.api.calls("heartbeat");
    assert!(
        rejected
            .iter()
            .any(|call| call.error.is_some_and(ErrorKind::is_lease_lost)),
        "{rejected:?}"
    );
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_heartbeats_cancel_the_handler_before_the_lease_expires_and_no_terminal_call_follows()
 {
    let rig = Rig::new(Transport::Tcp).await;
    rig.sim.inject_fault(Fault::new(
        Route::Heartbeat,
        FaultKind::Status {
            status: 503,
            error: "task service unavailable".into(),
        },
        1000,
    ));
    let run = rig.enqueue("needs renewals");
    let sim = rig.sim.clone();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(Timestamp, Option<String>, String)>();
    let (handlers, mut starts) = script(move |_, context| {
        let sim = sim.clone();
        let seen_tx = seen_tx.clone();
        Box::pin(async move {
            context.cancel.cancelled().await;
            let now = sim.now();
            let snapshot = sim.run(&context.document.run_id).expect("run");
            let _ = seen_tx.send((now, snapshot.lease_until, snapshot.status));
            Outcome::Complete(json!({"from": "the cancelled handler"}))
        })
    });
    let worker = rig.worker(handlers, max_runs(1));
    let running = start(&worker);
    next_start(&mut starts).await;
    let (cancelled_at, lease_until, status) = timeout(Duration::from_secs(6), seen_rx.recv())
        .await
        .expect("the handler is cancelled before the lease ends")
        .expect("the script lives");
    assert_eq!(status, "claimed", "the lease had not passed to the sweep");
    let lease_until = lease_until.expect("a lease end");
    assert!(
        before(cancelled_at, &lease_until),
        "cancelled at {} but the lease ran until {lease_until}",
        cancelled_at.to_rfc3339()
    );
    assert_eq!(
        ends(running, Duration::from_secs(6)).await,
        WorkerExit::MaxRuns
    );
    assert!(worker.api.terminal_calls().is_empty());
    let heartbeats = worker.api.calls("heartbeat").len();
    assert!(
        (2..=5).contains(&heartbeats),
        "renewals are retried at a pace, not in a storm: {heartbeats}"
    );
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.transitions_of(TransitionKind::Completed), 0);
    assert_eq!(worker.status.snapshot().counters.leases_lost, 1);
    // The lease then runs out and the sweep gives the run back to the queue.
    rig.sim.clear_faults();
    rig.sim.advance_clock(Duration::from_secs(5));
    assert_eq!(rig.sim.sweep_now(), 1);
    rig.check_ledger(&[&run]);
}

// ----- a failing daemon --------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_server_errors_on_claim_next_is_backed_off_and_every_run_still_finishes() {
    let rig = Rig::new(Transport::Tcp).await;
    rig.sim.inject_fault(Fault::new(
        Route::ClaimNext,
        FaultKind::Status {
            status: 500,
            error: "database is locked".into(),
        },
        10_000,
    ));
    let runs: Vec<EnqueuedRun> = (1..=3).map(|n| rig.enqueue(&format!("task {n}"))).collect();
    let worker = rig.worker(completes(), max_runs(3));
    let running = start(&worker);
    // A measuring window, not a synchronisation: how many claims does the burst see?
    worker
        .api
        .until_count("claim", 1, Duration::from_secs(3))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rig.sim.ledger().requests_for(Route::ClaimNext, 500);
    assert!(
        (2..=10).contains(&during),
        "claims during 1.5 s of errors with a 50 ms → 500 ms backoff: {during}"
    );
    assert_eq!(worker.status.snapshot().state, WorkerState::BackingOff);
    rig.sim.clear_faults();
    assert_eq!(
        ends(running, Duration::from_secs(5)).await,
        WorkerExit::MaxRuns
    );
    for run in &runs {
        assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "completed");
    }
    rig.check_ledger(&runs.iter().collect::<Vec<_>>());
}

async fn a_simulator_restart_while_the_worker_waits_for_work_is_recovered_from(via: Transport) {
    let mut rig = Rig::new(via).await;
    let worker = rig.worker(completes(), max_runs(1));
    let running = start(&worker);
    timeout(
        Duration::from_secs(3),
        rig.sim.wait_for_waiters(Route::ClaimNext, 1),
    )
    .await
    .expect("the worker waits for work");
    rig.restart().await;
    let run = rig.enqueue("after the restart");
    assert_eq!(
        ends(running, Duration::from_secs(6)).await,
        WorkerExit::MaxRuns
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed");
    assert_eq!(snapshot.claims, 1);
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_restart_while_the_worker_waits_for_work_is_recovered_from_over_tcp() {
    a_simulator_restart_while_the_worker_waits_for_work_is_recovered_from(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_restart_while_the_worker_waits_for_work_is_recovered_from_over_a_unix_socket()
{
    a_simulator_restart_while_the_worker_waits_for_work_is_recovered_from(Transport::Unix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_answers_on_claim_and_complete_are_retried_and_the_result_lands_once()
{
    let rig = Rig::new(Transport::Tcp).await;
    for route in [Route::ClaimNext, Route::Complete] {
        rig.sim
            .inject_fault(Fault::new(route, FaultKind::Garbage, 1));
        rig.sim
            .inject_fault(Fault::new(route, FaultKind::Truncated, 1));
    }
    let run = rig.enqueue("through a broken proxy");
    let worker = rig.worker(completes(), max_runs(1));
    assert_eq!(
        ends(start(&worker), Duration::from_secs(8)).await,
        WorkerExit::MaxRuns
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed");
    assert_eq!(snapshot.result, Some(json!({"run": run.run_id})));
    assert_eq!(snapshot.claims, 1);
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.transitions_of(TransitionKind::Completed), 1);
    assert_eq!(
        ledger.requests_for(Route::Complete, 200),
        3,
        "two broken answers, then the real one"
    );
    assert!(ledger.requests_for(Route::ClaimNext, 200) >= 3);
    // The client retries an unreadable answer inside the one call the worker makes.
    let completes = worker.api.calls("complete");
    assert_eq!(completes.len(), 1);
    assert_eq!(completes[0].error, None);
    rig.check_ledger(&[&run]);
}

// ----- terminal calls whose answer was lost -------------------------------------------------------

/// A handler table that ends every run with `outcome`.
fn ending_with(outcome: Outcome) -> Script {
    script(move |_, _| {
        let outcome = outcome.clone();
        Box::pin(async move { outcome })
    })
    .0
}

/// The call `route` is, the outcome that makes it, and the status it leaves the run in.
fn terminal_case(route: Route) -> (&'static str, Outcome, &'static str) {
    match route {
        Route::Complete => (
            "complete",
            Outcome::Complete(json!({"ok": true})),
            "completed",
        ),
        Route::Fail => (
            "fail",
            Outcome::Fail {
                error: "tests failed".into(),
                metadata: None,
            },
            "failed",
        ),
        _ => ("release", Outcome::Release("handing off".into()), "queued"),
    }
}

/// The terminal calls and run reads the worker made, in order.
fn finishing_verbs(worker: &Rigged) -> Vec<&'static str> {
    worker
        .api
        .all_calls()
        .iter()
        .map(|call| call.verb)
        .filter(|verb| matches!(*verb, "complete" | "fail" | "release" | "task-run"))
        .collect()
}

async fn a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
    via: Transport,
    route: Route,
) {
    let rig = Rig::new(via).await;
    let (verb, outcome, status) = terminal_case(route);
    let run = rig.enqueue("answer lost on the way back");
    rig.sim
        .inject_fault(Fault::new(route, FaultKind::DropAfterCommit, 1));
    let worker = rig.worker(ending_with(outcome), max_runs(1));
    assert_eq!(
        ends(start(&worker), Duration::from_secs(8)).await,
        WorkerExit::MaxRuns
    );
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, status);
    // The call landed; the client's retry was refused (409); the run's record settled it and
    // nothing was sent after it.
    assert_eq!(finishing_verbs(&worker), vec![verb, "task-run"]);
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.requests_for(route, 200), 1, "the cut answer");
    assert_eq!(ledger.requests_for(route, 409), 1, "the client's retry");
    assert_eq!(ledger.requests_for(Route::TaskRun, 200), 1);
    let counters = worker.status.snapshot().counters;
    let ends = (
        counters.runs_completed,
        counters.runs_failed,
        counters.runs_released,
    );
    let expected = match route {
        Route::Complete => (1, 0, 0),
        Route::Fail => (0, 1, 0),
        _ => (0, 0, 1),
    };
    assert_eq!(ends, expected);
    assert_eq!(
        (counters.leases_lost, counters.terminal_call_failures),
        (0, 0)
    );
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_whose_answer_was_cut_is_confirmed_by_reading_the_run_over_tcp() {
    a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
        Transport::Tcp,
        Route::Complete,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_whose_answer_was_cut_is_confirmed_by_reading_the_run_over_a_unix_socket() {
    a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
        Transport::Unix,
        Route::Complete,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_whose_answer_was_cut_is_confirmed_by_reading_the_run_over_tcp() {
    a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
        Transport::Tcp,
        Route::Fail,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_whose_answer_was_cut_is_confirmed_by_reading_the_run_over_a_unix_socket() {
    a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
        Transport::Unix,
        Route::Fail,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_answer_was_cut_is_confirmed_by_reading_the_run() {
    a_terminal_answer_cut_after_the_commit_is_confirmed_by_reading_the_run(
        Transport::Tcp,
        Route::Release,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_whose_answer_was_cut_and_whose_run_cannot_be_read_counts_as_done_unconfirmed() {
    let rig = Rig::new(Transport::Unix).await;
    let run = rig.enqueue("answer lost, record unreadable");
    rig.sim
        .inject_fault(Fault::new(Route::Complete, FaultKind::DropAfterCommit, 1));
    rig.sim.inject_fault(Fault::new(
        Route::TaskRun,
        FaultKind::Status {
            status: 500,
            error: "task: store unavailable".into(),
        },
        1_000,
    ));
    let worker = rig.worker(ending_with(Outcome::Complete(json!({}))), max_runs(1));
    assert_eq!(
        ends(start(&worker), Duration::from_secs(10)).await,
        WorkerExit::MaxRuns
    );
    // The read was retried within its budget, then the 409 to the retry was taken as "applied".
    assert_eq!(finishing_verbs(&worker), vec!["complete", "task-run"]);
    assert!(rig.sim.ledger().requests_for(Route::TaskRun, 500) > 1);
    assert_eq!(worker.status.snapshot().counters.runs_completed, 1);
    rig.sim.clear_faults();
    rig.check_ledger(&[&run]);
}

// ----- what handlers return ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_result_completes_the_run_with_the_truncation_marker() {
    let rig = Rig::new(Transport::Unix).await;
    let run = rig.enqueue("dump everything");
    let (handlers, _) = script(|_, _| {
        Box::pin(async { Outcome::Complete(json!({"blob": "x".repeat(100 * 1024)})) })
    });
    let worker = rig.worker(handlers, max_runs(1));
    assert_eq!(
        ends(start(&worker), Duration::from_secs(8)).await,
        WorkerExit::MaxRuns
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed");
    let result = snapshot.result.expect("a result");
    assert_eq!(result["truncated"], json!(true));
    assert!(result["original_bytes"].as_u64().unwrap_or(0) > 100 * 1024);
    assert!(serde_json::to_string(&result).expect("json").len() <= 64 * 1024);
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_max_runtime_cancels_a_slow_handler_and_fails_the_run_with_a_time_limit_error() {
    let rig = Rig::new(Transport::Tcp).await;
    let run = rig.sim.enqueue_task(TaskSpec {
        max_runtime_seconds: 1,
        ..TaskSpec::titled("slow report")
    });
    let worker = rig.worker(exec_handlers(None), max_runs(1));
    let began = Instant::now();
    assert_eq!(
        ends(start(&worker), Duration::from_secs(8)).await,
        WorkerExit::MaxRuns
    );
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the 2 s script was stopped at its 1 s limit: {:?}",
        began.elapsed()
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "failed");
    let error = snapshot.error.expect("an error");
    assert!(error.contains("time limit"), "{error}");
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_no_handler_matches_is_released_with_the_reason() {
    let rig = Rig::new(Transport::Tcp).await;
    let run = rig.enqueue("write the docs");
    let worker = rig.worker(exec_handlers(Some("deploy *")), worker_settings());
    let running = start(&worker);
    worker
        .api
        .until_count("release", 1, Duration::from_secs(5))
        .await;
    // Stop after the first release: the run would only come back to this worker.
    worker.shutdown.drain.cancel();
    assert_eq!(
        ends(running, Duration::from_secs(5)).await,
        WorkerExit::Shutdown
    );
    let releases = worker.api.calls("release");
    assert_eq!(releases[0].run_id, run.run_id);
    assert!(
        releases[0]
            .body
            .as_str()
            .unwrap_or("")
            .contains("no configured handler matches"),
        "{releases:?}"
    );
    assert!(worker.api.calls("complete").is_empty());
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "queued");
    rig.check_ledger(&[&run]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_handler_keeps_releasing_is_claimed_again_only_after_a_growing_pause() {
    let rig = Rig::new(Transport::Tcp).await;
    let run = rig.enqueue("release me");
    let worker = rig.worker(exec_handlers(None), worker_settings());
    let running = start(&worker);
    worker
        .api
        .until_count("release", 1, Duration::from_secs(5))
        .await;
    // A measuring window: without a pause the run comes straight back, dozens of times a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let releases = worker.api.calls("release").len();
    worker.shutdown.drain.cancel();
    assert_eq!(
        ends(running, Duration::from_secs(5)).await,
        WorkerExit::Shutdown
    );
    assert!(
        releases <= 6,
        "the handler released the run {releases} times in 1.5 s"
    );
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "queued");
    rig.check_ledger(&[&run]);
}

// ----- identity ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_identity_stops_claims_until_the_session_is_active_again() {
    let rig = Rig::new(Transport::Unix).await;
    let worker = rig.worker(completes(), max_runs(1));
    let running = start(&worker);
    timeout(
        Duration::from_secs(3),
        rig.sim.wait_for_waiters(Route::ClaimNext, 1),
    )
    .await
    .expect("the worker waits for work");
    assert!(
        rig.sim
            .set_session_state(&rig.session.session_id, SessionState::Stopped)
    );
    // The worker probes `me` slowly once it knows its identity is stale.
    worker
        .api
        .until("a failed identity probe", Duration::from_secs(5), |calls| {
            calls
                .iter()
                .any(|call| call.verb == "me" && call.error == Some(ErrorKind::IdentityStale))
        })
        .await;
    let status = worker.status.snapshot();
    assert!(!status.identity_ok);
    assert_eq!(status.state, WorkerState::IdentityStale);
    let claims_when_stale = rig.requests(Route::ClaimNext);
    let probes = worker.api.calls("me").len();
    worker
        .api
        .until_count("me", probes + 3, Duration::from_secs(5))
        .await;
    assert_eq!(
        rig.requests(Route::ClaimNext),
        claims_when_stale,
        "no claims while the identity is stale"
    );
    assert!(!worker.status.snapshot().identity_ok);
    assert!(
        rig.sim
            .set_session_state(&rig.session.session_id, SessionState::Active)
    );
    let run = rig.enqueue("after the pause");
    assert_eq!(
        ends(running, Duration::from_secs(5)).await,
        WorkerExit::MaxRuns
    );
    assert!(worker.status.snapshot().identity_ok);
    assert_eq!(rig.sim.run(&run.run_id).expect("run").status, "completed");
    rig.check_ledger(&[&run]);
}

// ----- how the loop ends -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runs_ends_the_loop_after_that_many_runs_and_leaves_the_rest_queued() {
    let rig = Rig::new(Transport::Tcp).await;
    let runs: Vec<EnqueuedRun> = (1..=3).map(|n| rig.enqueue(&format!("task {n}"))).collect();
    let worker = rig.worker(completes(), max_runs(2));
    assert_eq!(
        ends(start(&worker), Duration::from_secs(6)).await,
        WorkerExit::MaxRuns
    );
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.runs_in_status("completed"), 2);
    assert_eq!(ledger.runs_in_status("queued"), 1);
    rig.check_ledger(&runs.iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_exit_ends_the_loop_when_nothing_comes() {
    let rig = Rig::new(Transport::Tcp).await;
    let worker = rig.worker(
        completes(),
        WorkerSettings {
            idle_exit: Some(Duration::from_millis(700)),
            ..worker_settings()
        },
    );
    let began = Instant::now();
    assert_eq!(
        ends(start(&worker), Duration::from_secs(5)).await,
        WorkerExit::Idle
    );
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    rig.check_ledger(&[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_handles_one_run_and_exits() {
    let rig = Rig::new(Transport::Unix).await;
    let first = rig.enqueue("one");
    let second = rig.enqueue("two");
    let worker = rig.worker(
        completes(),
        WorkerSettings {
            once: true,
            ..worker_settings()
        },
    );
    assert_eq!(
        ends(start(&worker), Duration::from_secs(6)).await,
        WorkerExit::MaxRuns
    );
    assert_eq!(rig.sim.run(&first.run_id).expect("run").status, "completed");
    assert_eq!(rig.sim.run(&second.run_id).expect("run").status, "queued");
    rig.check_ledger(&[&first, &second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_nothing_to_do_exits_idle_after_one_claim_wait() {
    let rig = Rig::new(Transport::Tcp).await;
    let worker = rig.worker(
        completes(),
        WorkerSettings {
            once: true,
            ..worker_settings()
        },
    );
    assert_eq!(
        ends(start(&worker), Duration::from_secs(5)).await,
        WorkerExit::Idle
    );
    assert_eq!(worker.api.calls("claim").len(), 1);
    rig.check_ledger(&[]);
}
