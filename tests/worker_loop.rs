//! Behaviour tests of the worker loop on paused tokio time, against an in-memory AGH daemon
//! (`support::fake_agh`) that enforces the lease rules and keeps a ledger of terminal calls.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agh_worker::config::OrphanPolicy;
use agh_worker::handler::{Handler, HandlerSet, MatchRule, SharedHandlers};
use agh_worker::handler::{HandlerEvent, Outcome, TaskContext, TaskDocument};
use agh_worker::worker::{
    ClaimLoop, EventSink, Shutdown, StatusBoard, WorkerExit, WorkerSettings, WorkerState,
};
use serde_json::{Value, json};
use support::fake_agh::*;
use support::log_capture::Capture;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const S: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ----- scripted handlers -------------------------------------------------------------------

type BoxOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type RunFn = dyn Fn(TaskContext, Probe) -> BoxOutcome + Send + Sync;

/// What one handler invocation saw and when (tokio time since the test began).
#[derive(Clone, Debug)]
struct Seen {
    run_id: String,
    document: Arc<TaskDocument>,
    time_limit: Option<Duration>,
    started: Duration,
    cancelled: Option<Duration>,
    ended: Option<Duration>,
}

/// Handed to a scripted handler: which invocation it is, and the test's clock.
#[derive(Clone)]
struct Probe {
    invocation: usize,
}

struct Script {
    select: Option<String>,
    run: Arc<RunFn>,
    seen: Arc<Mutex<Vec<Seen>>>,
    start: Instant,
}

impl Handler for Script {
    fn run(&self, context: TaskContext) -> impl Future<Output = Outcome> + Send {
        let start = self.start;
        let seen = self.seen.clone();
        let invocation = {
            let mut seen = seen.lock().unwrap();
            seen.push(Seen {
                run_id: context.document.run_id.clone(),
                document: context.document.clone(),
                time_limit: context.time_limit,
                started: start.elapsed(),
                cancelled: None,
                ended: None,
            });
            seen.len() - 1
        };
        let cancel = context.cancel.clone();
        let watcher = seen.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            watcher.lock().unwrap()[invocation].cancelled = Some(start.elapsed());
        });
        let future = (self.run)(context, Probe { invocation });
        async move {
            let outcome = future.await;
            seen.lock().unwrap()[invocation].ended = Some(start.elapsed());
            outcome
        }
    }
}

fn script(
    run: impl Fn(TaskContext, Probe) -> BoxOutcome + Send + Sync + 'static,
) -> (Script, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (
        Script {
            select: Some("scripted".into()),
            run: Arc::new(run),
            seen: seen.clone(),
            start: Instant::now(),
        },
        seen,
    )
}

/// Works for `d`, then completes with `result`; on cancel gives the run back.
fn work(d: Duration, result: Value) -> (Script, Arc<Mutex<Vec<Seen>>>) {
    script(move |cx, _| {
        let result = result.clone();
        Box::pin(async move {
            tokio::select! {
                _ = sleep(d) => Outcome::Complete(result),
                _ = cx.cancel.cancelled() => Outcome::Release("cancelled".into()),
            }
        })
    })
}

/// Waits for cancel, then gives the run back.
fn until_cancel() -> (Script, Arc<Mutex<Vec<Seen>>>) {
    script(|cx, _| {
        Box::pin(async move {
            cx.cancel.cancelled().await;
            Outcome::Release("cancelled".into())
        })
    })
}

/// Works for `d` whatever happens, then completes.
fn ignore_cancel(d: Duration) -> (Script, Arc<Mutex<Vec<Seen>>>) {
    script(move |_cx, _| {
        Box::pin(async move {
            sleep(d).await;
            Outcome::Complete(json!({"late": true}))
        })
    })
}

// ----- events ------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Events {
    log: Arc<Mutex<Vec<String>>>,
}

impl EventSink for Events {
    async fn handle(&self, document: &TaskDocument, event: HandlerEvent) {
        let line = match event {
            HandlerEvent::Progress(text) => format!("{} progress {text}", document.run_id),
            other => format!("{} {other:?}", document.run_id),
        };
        self.log.lock().unwrap().push(line);
    }
}

// ----- the rig -----------------------------------------------------------------------------

fn settings() -> WorkerSettings {
    WorkerSettings {
        lease: secs(60),
        heartbeat_every: secs(20),
        claim_wait: true,
        orphan_policy: OrphanPolicy::Adopt,
        drain_timeout: secs(30),
        max_runtime: None,
        max_runs: Some(1),
        idle_exit: None,
        once: false,
        identity_probe: secs(30),
        initial_backoff: secs(1),
        max_backoff: secs(30),
        cancel_grace: secs(10),
        poll_interval: secs(1),
        required_capabilities: Vec::new(),
        priority_min: None,
        follow_task_events: true,
    }
}

type TestWorker = ClaimLoop<FakeAgh, Events>;

struct Rig {
    fake: FakeAgh,
    worker: Arc<TestWorker>,
    seen: Arc<Mutex<Vec<Seen>>>,
    events: Events,
}

impl Rig {
    fn new(
        fake: &FakeAgh,
        (handlers, seen): (Script, Arc<Mutex<Vec<Seen>>>),
        settings: WorkerSettings,
    ) -> Rig {
        // The loop's backoff jitter comes from fastrand's thread-local generator; the paused
        // runtime runs everything on this thread, so seeding it makes the timings repeatable.
        fastrand::seed(0x00a9_4ee1);
        let events = Events::default();
        let worker = Arc::new(ClaimLoop {
            api: Arc::new(fake.clone()),
            // A script without a name takes no task.
            handlers: Arc::new(SharedHandlers::from(match handlers.select.clone() {
                Some(name) => {
                    HandlerSet::default().with_in_process(name, MatchRule::default(), handlers)
                }
                None => HandlerSet::default(),
            })),
            events: Arc::new(events.clone()),
            settings: settings.into(),
            status: StatusBoard::default(),
            shutdown: Shutdown::default(),
            wake: Default::default(),
        });
        Rig {
            fake: fake.clone(),
            worker,
            seen,
            events,
        }
    }

    fn spawn(&self) -> JoinHandle<WorkerExit> {
        let worker = self.worker.clone();
        tokio::spawn(async move { worker.run().await })
    }

    /// Runs the loop to its end (bounded by a day of tokio time).
    async fn run(&self) -> WorkerExit {
        join(self.spawn()).await
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn counters(&self) -> agh_worker::worker::Counters {
        self.worker.status.snapshot().counters
    }
}

async fn join(handle: JoinHandle<WorkerExit>) -> WorkerExit {
    tokio::time::timeout(secs(24 * 3600), handle)
        .await
        .expect("the worker loop did not end within a day of tokio time")
        .expect("the worker loop panicked")
}

/// Sleeps in tokio time until `done` holds (checked every second), at most `max`.
async fn wait_until(max: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + max;
    while !done() {
        assert!(Instant::now() < until, "condition not reached in {max:?}");
        sleep(S).await;
    }
}

fn at(call: &Call) -> f64 {
    call.at.as_secs_f64()
}

// ----- 1. one run, one completion ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_claimed_run_is_completed_exactly_once_with_the_handlers_result() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let handler = script(|cx, _| {
        Box::pin(async move {
            sleep(secs(5)).await;
            let handoff = cx
                .document
                .bundle
                .as_ref()
                .and_then(|b| b.handoff_summary.clone());
            Outcome::Complete(json!({"summary": "done", "handoff": handoff}))
        })
    });
    let rig = Rig::new(&fake, handler, settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1, "{}", fake.log());
    assert_eq!(terminals[0].op, Op::Complete);
    assert_eq!(terminals[0].run_id.as_deref(), Some("run-1"));
    let expected = json!({"summary": "done", "handoff": "handoff for run-1"});
    assert_eq!(terminals[0].body.as_ref().unwrap()["result"], expected);
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    assert_eq!(fake.run("run-1").state, RunState::Completed(expected));

    let seen = rig.seen();
    assert_eq!(seen.len(), 1);
    let document = &seen[0].document;
    assert_eq!(document.run_id, "run-1");
    assert_eq!(document.task_id, "task-1");
    assert_eq!(document.title, "Task 1");
    let bundle = document
        .bundle
        .as_ref()
        .expect("the bundle reaches the handler");
    assert_eq!(bundle.handoff_summary.as_deref(), Some("handoff for run-1"));
    assert_eq!(bundle.current_run.as_ref().unwrap().id, "run-1");
    assert_eq!(seen[0].cancelled, None);
    assert_eq!(rig.counters().runs_completed, 1);
    fake.assert_clean();
}

// ----- 2. heartbeat cadence ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_every_interval_with_the_lease_length_while_the_handler_runs() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let rig = Rig::new(&fake, work(secs(70), json!({"ok": true})), settings());
    rig.run().await;

    let beats = fake.calls_of(Op::Heartbeat);
    let times: Vec<f64> = beats.iter().map(at).collect();
    assert_eq!(times, vec![20.0, 40.0, 60.0], "{}", fake.log());
    assert!(beats.iter().all(|b| b.lease_seconds == Some(60) && b.ok()));
    let complete = &fake.terminal_calls()[0];
    assert_eq!((complete.op, at(complete)), (Op::Complete, 70.0));
    assert_eq!(rig.counters().heartbeats_ok, 3);
    fake.assert_clean();
}

// ----- 3. lease lost mid-run ---------------------------------------------------------------

async fn lose_the_lease_on_the_second_heartbeat(
    lose: impl Fn(&FakeAgh) + Send + 'static,
) -> (Rig, f64) {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let rig = Rig::new(&fake, until_cancel(), settings());
    let handle = rig.spawn();
    sleep(secs(30)).await;
    lose(&fake);
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);
    let beats = fake.calls_of(Op::Heartbeat);
    assert_eq!(beats.len(), 2, "{}", fake.log());
    assert!(beats[0].ok() && !beats[1].ok());
    (rig, at(&beats[1]))
}

fn assert_cancelled_at_once_and_no_terminal_call(rig: &Rig, lost_at: f64) {
    let fake = &rig.fake;
    let seen = rig.seen();
    let cancelled = seen[0]
        .cancelled
        .expect("the handler was cancelled")
        .as_secs_f64();
    assert!(
        cancelled >= lost_at && cancelled - lost_at < 1.0,
        "cancelled at {cancelled}, lease lost at {lost_at}"
    );
    assert!(fake.terminal_calls().is_empty(), "{}", fake.log());
    assert_eq!(rig.counters().leases_lost, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_mid_run_cancels_the_handler_at_once_and_sends_no_terminal_call() {
    // The daemon says the lease expired (409 AUTONOMY_LEASE_EXPIRED).
    let (rig, lost_at) = lose_the_lease_on_the_second_heartbeat(|fake| {
        fake.fault(
            Op::Heartbeat,
            Fault::Error(lease_expired("heartbeat", "run-1")),
        );
        fake.fault(
            Op::Heartbeat,
            Fault::Error(lease_expired("heartbeat", "run-1")),
        );
    })
    .await;
    // The first queued fault hits the heartbeat at 40 s; drop the ordering doubt by checking it.
    assert_eq!(lost_at, 40.0);
    assert_cancelled_at_once_and_no_terminal_call(&rig, lost_at);
}

#[tokio::test(start_paused = true)]
async fn a_run_taken_by_another_session_is_detected_on_the_next_heartbeat() {
    // The run was requeued and claimed by another session: the daemon answers 409 NO_ACTIVE_LEASE.
    let (rig, lost_at) = lose_the_lease_on_the_second_heartbeat(|fake| fake.steal("run-1")).await;
    let beats = rig.fake.calls_of(Op::Heartbeat);
    assert!(
        beats[1].outcome.contains("no_active_lease"),
        "{}",
        beats[1].outcome
    );
    assert_cancelled_at_once_and_no_terminal_call(&rig, lost_at);
}

#[tokio::test(start_paused = true)]
async fn a_foreign_run_answer_counts_as_a_lost_lease() {
    let (rig, lost_at) = lose_the_lease_on_the_second_heartbeat(|fake| {
        fake.fault(
            Op::Heartbeat,
            Fault::Error(foreign_run("heartbeat", "run-1")),
        );
    })
    .await;
    assert_cancelled_at_once_and_no_terminal_call(&rig, lost_at);
}

#[tokio::test(start_paused = true)]
async fn a_handler_finishing_as_its_lease_is_lost_sends_no_terminal_call() {
    // The handler returns at the very instant the heartbeat is answered "lease expired": whichever
    // the worker sees first, the terminal call must not go out after the loss was reported.
    // Repeated because tokio::select! picks among ready branches at random.
    for round in 0..40 {
        let fake = FakeAgh::new();
        fake.enqueue("run-1");
        let rig = Rig::new(&fake, work(secs(40), json!({"round": round})), settings());
        let handle = rig.spawn();
        sleep(secs(39)).await;
        fake.revoke("run-1", false);
        assert_eq!(join(handle).await, WorkerExit::MaxRuns);
        let beats = fake.calls_of(Op::Heartbeat);
        assert!(
            beats.last().unwrap().outcome.contains("lease_expired"),
            "{}",
            fake.log()
        );
        fake.assert_clean();
        assert!(fake.ledger().accepted("run-1").is_empty());
    }
}

// ----- 4. failing heartbeats ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failing_heartbeats_are_retried_sooner_and_the_handler_is_stopped_before_the_lease_ends() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    // Transport errors for the first 52 s, then the daemon is reachable again.
    fake.rule(
        Op::Heartbeat,
        Box::new(|_, at, _| (at < secs(52)).then(|| Fault::Error(transport("heartbeat")))),
    );
    let handler = script(|cx, probe| {
        Box::pin(async move {
            if probe.invocation == 0 {
                cx.cancel.cancelled().await;
                Outcome::Release("cancelled".into())
            } else {
                sleep(secs(5)).await;
                Outcome::Complete(json!({"second": true}))
            }
        })
    });
    let mut settings = settings();
    settings.max_runs = Some(2);
    let rig = Rig::new(&fake, handler, settings);
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let seen = rig.seen();
    let cancelled = seen[0].cancelled.expect("cancelled").as_secs_f64();
    assert!(
        cancelled < 60.0,
        "cancelled at {cancelled}, the lease ended at 60"
    );
    assert!(cancelled >= 45.0, "cancelled too early, at {cancelled}");
    // Retries came faster than the regular 20 s interval.
    let beats: Vec<f64> = fake
        .calls_of(Op::Heartbeat)
        .iter()
        .filter(|c| c.at < Duration::from_secs_f64(cancelled))
        .map(at)
        .collect();
    assert!(beats.len() >= 4, "{beats:?}");
    assert!(beats.windows(2).all(|w| w[1] - w[0] < 20.0), "{beats:?}");
    // No terminal call while the first handler ran or as it stopped.
    assert!(
        fake.terminal_calls().iter().all(|c| at(c) > cancelled),
        "{}",
        fake.log()
    );
    // The loop went on claiming after giving up, and the run was finished later.
    assert!(
        fake.calls_of(Op::Claim).iter().any(|c| at(c) >= cancelled),
        "{}",
        fake.log()
    );
    assert!(matches!(fake.run("run-1").state, RunState::Completed(_)));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_that_never_answers_is_given_up_before_the_lease_ends() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Heartbeat, Fault::Hang);
    let rig = Rig::new(&fake, until_cancel(), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    let cancelled = rig.seen()[0].cancelled.expect("cancelled");
    assert_eq!(cancelled, secs(50), "{}", fake.log());
    assert!(fake.terminal_calls().is_empty());
    assert_eq!(rig.counters().leases_lost, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_run_claimed_late_in_a_long_poll_is_renewed_not_given_up() {
    // A 30 s lease with the 30 s long poll: a run that turns up 28 s into the wait is claimed
    // with nearly all its lease left, although the claim was sent 28 s earlier.
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.lease = secs(30);
    settings.heartbeat_every = secs(10);
    let rig = Rig::new(&fake, work(secs(40), json!({"late": true})), settings);
    let handle = rig.spawn();
    sleep(secs(28)).await;
    fake.enqueue("run-1");
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);
    let seen = rig.seen();
    assert_eq!(seen.len(), 1, "{}", fake.log());
    assert_eq!(seen[0].cancelled, None, "{}", fake.log());
    let beats = fake.calls_of(Op::Heartbeat);
    assert!(beats.iter().all(Call::ok), "{}", fake.log());
    assert!(at(&beats[0]) < 28.0 + 10.0, "{}", fake.log());
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    assert_eq!(fake.terminal_calls()[0].op, Op::Complete);
    fake.assert_clean();
}

// ----- handler crash -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_handler_that_panics_fails_its_run() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let handler = script(|_cx, _| {
        Box::pin(async move {
            sleep(secs(3)).await;
            panic!("handler bug");
        })
    });
    let rig = Rig::new(&fake, handler, settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1);
    assert_eq!((terminals[0].op, at(&terminals[0])), (Op::Fail, 3.0));
    let error = terminals[0].body.as_ref().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("crashed"), "{error}");
    fake.assert_clean();
}

// ----- 5. orphans at start-up --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_orphan_found_at_start_up_is_adopted_renewed_at_once_and_completed() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.hold("run-1", SESSION, secs(40));
    let rig = Rig::new(&fake, work(secs(5), json!({"adopted": true})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let calls = fake.calls();
    assert_eq!(calls[0].op, Op::Me);
    let first_beat = &fake.calls_of(Op::Heartbeat)[0];
    assert_eq!(at(first_beat), 0.0, "{}", fake.log());
    assert!(first_beat.ok());
    assert_eq!(fake.count(Op::Claim), 0, "{}", fake.log());
    let seen = rig.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].run_id, "run-1");
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    assert_eq!(fake.terminal_calls()[0].op, Op::Complete);
    assert_eq!(rig.counters().runs_adopted, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn an_orphan_found_at_start_up_is_released_when_the_policy_says_so() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.hold("run-1", SESSION, secs(40));
    let mut settings = settings();
    settings.orphan_policy = OrphanPolicy::Release;
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(S).await;
    // The release requeued the run; the worker then claims it like any other.
    wait_until(secs(60), || {
        matches!(fake.run("run-1").state, RunState::Completed(_))
    })
    .await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);

    let calls = fake.calls();
    assert_eq!(calls[0].op, Op::Me);
    assert_eq!(calls[1].op, Op::Release, "{}", fake.log());
    assert_eq!(at(&calls[1]), 0.0);
    let reason = calls[1].body.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("orphan"), "{reason}");
    let releases = fake.calls_of(Op::Release);
    assert_eq!(releases.len(), 1);
    // No handler ran on the orphaned lease: the only invocation came after a fresh claim.
    let first_claim = at(&fake.calls_of(Op::Claim)[0]);
    assert!(
        rig.seen()
            .iter()
            .all(|s| s.started.as_secs_f64() >= first_claim)
    );
    assert_eq!(rig.seen().len(), 1);
    fake.assert_clean();
}

// ----- 6. 409 "active run lease exists" ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_claim_answered_lease_exists_is_recovered_through_me_by_adopting() {
    let fake = FakeAgh::new();
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    let handle = rig.spawn();
    sleep(secs(5)).await;
    // Another process of this session claimed a run while the worker's claim was waiting.
    fake.enqueue("run-1");
    fake.hold("run-1", SESSION, secs(60));
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);

    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 1, "{}", fake.log());
    assert!(claims[0].outcome.contains("lease_already_held"));
    assert!(at(&claims[0]) < 1.0);
    assert_eq!(rig.seen().len(), 1);
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_claim_answered_lease_exists_is_recovered_through_me_by_releasing() {
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.orphan_policy = OrphanPolicy::Release;
    // The released orphan is not a run handled; the run claimed after it is.
    settings.max_runs = Some(1);
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    fake.enqueue("run-1");
    fake.hold("run-1", SESSION, secs(60));
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);

    // 409, then me, then release, then a claim that gets the requeued run.
    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 2, "{}", fake.log());
    assert!(claims[0].outcome.contains("lease_already_held"));
    assert_eq!(claims[1].outcome, "claimed run-1");
    assert_eq!(fake.calls_of(Op::Release).len(), 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn repeated_lease_exists_answers_are_never_looped_on() {
    // The daemon keeps answering 409 although `me` shows no lease (a lagging read):
    // the worker must not spin between claim and me.
    let fake = FakeAgh::new();
    fake.faults(Op::Claim, 1000, Fault::Error(lease_exists()));
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(60)).await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);
    let claims = fake.count(Op::Claim);
    assert!(claims <= 10, "{claims} claims in 60 s:\n{}", fake.log());
    assert!(fake.count(Op::Me) <= claims + 2);
}

// ----- 7. a lost claim answer --------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_claim_whose_answer_was_lost_is_recovered_within_seconds_through_me() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Claim, Fault::CommitThenError(transport("claim-next")));
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 1, "{}", fake.log());
    let recovered = fake
        .calls_of(Op::Me)
        .into_iter()
        .find(|c| c.at > claims[0].at || (c.at == claims[0].at && c.outcome.contains("holding")))
        .expect("me checked after the lost answer");
    assert!(at(&recovered) - at(&claims[0]) <= 3.0, "{}", fake.log());
    assert!(recovered.outcome.contains("holding run-1"));
    assert_eq!(rig.seen().len(), 1);
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    fake.assert_clean();
}

// ----- 8. the long poll's deadline ---------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_claim_reaching_its_deadline_is_followed_by_the_next_claim_at_once() {
    let fake = FakeAgh::new();
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    let handle = rig.spawn();
    sleep(secs(70)).await;
    fake.enqueue("run-1");
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);

    let claims: Vec<(f64, String)> = fake
        .calls_of(Op::Claim)
        .iter()
        .map(|c| (at(c), c.outcome.clone()))
        .collect();
    assert_eq!(claims.len(), 3, "{claims:?}");
    assert_eq!(claims[0], (0.0, "deadline".to_string()));
    assert_eq!(claims[1], (30.0, "deadline".to_string()));
    assert_eq!(claims[2], (60.0, "claimed run-1".to_string()));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_claim_committed_at_the_deadline_is_found_by_the_next_claims_409() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Claim, Fault::CommitAtDeadline);
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 2, "{}", fake.log());
    assert!(claims[0].outcome.starts_with("deadline (committed"));
    assert_eq!(at(&claims[1]), 30.0);
    assert!(claims[1].outcome.contains("lease_already_held"));
    let seen = rig.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].started.as_secs_f64() < 31.0);
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    fake.assert_clean();
}

// ----- 9. server errors --------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_burst_of_server_errors_backs_off_growing_and_recovers_after_it() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.rule(
        Op::Claim,
        Box::new(|_, at, _| (at < secs(60)).then(|| Fault::Error(server_error("claim-next", 500)))),
    );
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);

    let claims: Vec<f64> = fake.calls_of(Op::Claim).iter().map(at).collect();
    let in_burst = claims.iter().filter(|t| **t < 60.0).count();
    assert!(
        in_burst <= 8,
        "{in_burst} claims during the burst: {claims:?}"
    );
    let gaps: Vec<f64> = claims.windows(2).map(|w| w[1] - w[0]).collect();
    // Doubling with ±25 % jitter: every gap is at least 1.2× the one before, up to the 30 s cap.
    for pair in gaps.windows(2) {
        assert!(
            pair[1] >= pair[0] * 1.2 || pair[1] >= 30.0 * 0.75,
            "backoff did not grow: {gaps:?}"
        );
    }
    assert!(gaps.iter().all(|g| *g <= 30.0), "{gaps:?}");
    let last = *claims.last().unwrap();
    assert!((60.0..=60.0 + 30.0 * 1.25).contains(&last), "{claims:?}");
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    fake.assert_clean();
}

// ----- 10. a stale identity ----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_stale_identity_stops_claims_probes_me_slowly_and_resumes() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.identity_stale_until(secs(95));
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    let handle = rig.spawn();
    sleep(secs(50)).await;
    let status = rig.worker.status.snapshot();
    assert!(!status.identity_ok);
    assert_eq!(status.state, WorkerState::IdentityStale);
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);

    let stale: Vec<Duration> = fake
        .calls()
        .iter()
        .filter(|c| c.outcome.contains("identity_stale"))
        .map(|c| c.at)
        .collect();
    assert!(stale.len() >= 3, "{}", fake.log());
    assert!(
        stale.windows(2).all(|w| w[1] - w[0] >= secs(30)),
        "{stale:?}"
    );
    let claims = fake.calls_of(Op::Claim);
    assert!(claims.iter().all(|c| at(c) >= 95.0), "{}", fake.log());
    assert!(at(&claims[0]) <= 95.0 + 30.0);
    assert!(rig.worker.status.snapshot().identity_ok);
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn an_identity_going_stale_between_runs_is_waited_out_without_claiming() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let mut settings = settings();
    settings.max_runs = Some(2);
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(10)).await;
    // The session was stopped after the first run; it is resumed at 100 s.
    fake.identity_stale_until(secs(100));
    fake.enqueue("run-2");
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);
    // The waiting claim is answered 403 "not active", the next one 401; then only `me` probes.
    let stale_claims = fake
        .calls_of(Op::Claim)
        .iter()
        .filter(|c| at(c) < 100.0)
        .count();
    assert!(stale_claims <= 3, "{}", fake.log());
    assert!(!rig.worker.status.snapshot().identity_ok || fake.now() >= secs(100));
    let me_stale: Vec<Duration> = fake
        .calls_of(Op::Me)
        .iter()
        .filter(|c| c.outcome.contains("identity_stale"))
        .map(|c| c.at)
        .collect();
    assert!(
        me_stale.windows(2).all(|w| w[1] - w[0] >= secs(30)),
        "{me_stale:?}"
    );
    assert_eq!(fake.ledger().accepted("run-2").len(), 1);
    fake.assert_clean();
}

// ----- 11. shutdown drain ------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_handler_finishing_within_the_drain_timeout_completes_and_the_loop_exits() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.enqueue("run-2");
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(20), json!({"drained": true})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);

    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1, "{}", fake.log());
    assert_eq!((terminals[0].op, at(&terminals[0])), (Op::Complete, 20.0));
    assert!(
        fake.calls_of(Op::Claim).iter().all(|c| at(c) < 5.0),
        "{}",
        fake.log()
    );
    assert_eq!(fake.run("run-2").state, RunState::Queued);
    assert_eq!(rig.worker.status.snapshot().state, WorkerState::Stopped);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_handler_exceeding_the_drain_timeout_is_cancelled_and_its_run_released() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(300), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);

    let cancelled = rig.seen()[0].cancelled.expect("cancelled").as_secs_f64();
    assert_eq!(cancelled, 35.0);
    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1, "{}", fake.log());
    assert_eq!(terminals[0].op, Op::Release);
    assert!(at(&terminals[0]) < 36.0);
    let reason = terminals[0].body.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("shutting down"), "{reason}");
    assert_eq!(fake.run("run-1").state, RunState::Queued);
    assert!(fake.calls_of(Op::Claim).iter().all(|c| at(c) < 5.0));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_drain_while_waiting_for_work_abandons_the_claim_and_checks_me() {
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);
    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].outcome, "abandoned");
    let last = fake.calls().last().unwrap().clone();
    assert_eq!((last.op, at(&last)), (Op::Me, 5.0));
}

#[tokio::test(start_paused = true)]
async fn a_drain_during_the_backoff_after_a_lost_claim_answer_still_releases_the_claim() {
    // The claim committed but its answer was lost; the drain begins while the loop backs off.
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Claim, Fault::CommitThenError(transport("claim-next")));
    let mut settings = settings();
    settings.initial_backoff = secs(5);
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(1)).await;
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);
    let releases = fake.calls_of(Op::Release);
    assert_eq!(releases.len(), 1, "{}", fake.log());
    assert!(releases[0].ok());
    assert_eq!(fake.run("run-1").state, RunState::Queued);
    assert!(rig.seen().is_empty());
    fake.assert_clean();
}

// ----- 12. force ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_second_signal_cancels_the_handler_at_once_and_releases_the_run() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(300), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    rig.worker.shutdown.drain.cancel();
    sleep(secs(5)).await;
    rig.worker.shutdown.force.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);

    assert_eq!(rig.seen()[0].cancelled, Some(secs(10)));
    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1, "{}", fake.log());
    assert_eq!((terminals[0].op, at(&terminals[0])), (Op::Release, 10.0));
    assert_eq!(fake.run("run-1").state, RunState::Queued);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_stop_now_without_a_drain_first_also_ends_the_loop() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.enqueue("run-2");
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, work(secs(300), json!({})), settings);
    let handle = rig.spawn();
    sleep(secs(5)).await;
    rig.worker.shutdown.force.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);
    assert_eq!(rig.seen()[0].cancelled, Some(secs(5)));
    assert_eq!(fake.calls_of(Op::Release).len(), 1, "{}", fake.log());
    assert_eq!(fake.count(Op::Claim), 1, "{}", fake.log());
    fake.assert_clean();
}

// ----- 13. max runs, idle exit, once -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_loop_exits_after_max_runs() {
    let fake = FakeAgh::new();
    for n in 1..=5 {
        fake.enqueue(&format!("run-{n}"));
    }
    let mut settings = settings();
    settings.max_runs = Some(3);
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(fake.count(Op::Claim), 3);
    assert_eq!(fake.terminal_calls().len(), 3);
    assert_eq!(fake.run("run-4").state, RunState::Queued);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn the_loop_exits_after_the_idle_time_abandoning_the_open_claim_and_checking_me() {
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.max_runs = None;
    settings.idle_exit = Some(secs(45));
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    assert_eq!(rig.run().await, WorkerExit::Idle);
    assert_eq!(fake.now(), secs(45));
    let claims = fake.calls_of(Op::Claim);
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[1].outcome, "abandoned");
    let last = fake.calls().last().unwrap().clone();
    assert_eq!((last.op, at(&last)), (Op::Me, 45.0));
}

#[tokio::test(start_paused = true)]
async fn a_claim_committed_as_the_idle_exit_abandons_it_is_released() {
    let fake = FakeAgh::new();
    fake.commit_on_abandon("run-late");
    let mut settings = settings();
    settings.max_runs = None;
    settings.idle_exit = Some(secs(45));
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    assert_eq!(rig.run().await, WorkerExit::Idle);
    let releases = fake.calls_of(Op::Release);
    assert_eq!(releases.len(), 1, "{}", fake.log());
    assert_eq!(releases[0].run_id.as_deref(), Some("run-late"));
    assert!(releases[0].ok());
    assert_eq!(fake.run("run-late").state, RunState::Queued);
    assert!(rig.seen().is_empty());
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn once_handles_one_run_and_exits() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.enqueue("run-2");
    let mut settings = settings();
    settings.max_runs = None;
    settings.once = true;
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(fake.count(Op::Claim), 1, "{}", fake.log());
    assert_eq!(fake.run("run-2").state, RunState::Queued);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn once_with_nothing_to_do_exits_after_one_claim_wait() {
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.max_runs = None;
    settings.once = true;
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings);
    assert_eq!(rig.run().await, WorkerExit::Idle);
    assert_eq!(fake.count(Op::Claim), 1);
    assert_eq!(fake.now(), secs(30));
    let last = fake.calls().last().unwrap().clone();
    assert_eq!(last.op, Op::Me);
}

// ----- 14. time limits ---------------------------------------------------------------------

async fn time_limited(
    max_runtime_seconds: i64,
    ceiling: Option<Duration>,
    handler: (Script, Arc<Mutex<Vec<Seen>>>),
) -> (Rig, Call) {
    let fake = FakeAgh::new();
    fake.enqueue_with("run-1", max_runtime_seconds);
    let mut settings = settings();
    settings.max_runtime = ceiling;
    let rig = Rig::new(&fake, handler, settings);
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1, "{}", fake.log());
    assert_eq!(terminals[0].op, Op::Fail);
    let error = terminals[0].body.as_ref().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("time limit"), "{error}");
    fake.assert_clean();
    (rig, terminals[0].clone())
}

#[tokio::test(start_paused = true)]
async fn the_bundles_max_runtime_cancels_the_handler_and_fails_the_run() {
    let (rig, fail) = time_limited(30, None, until_cancel()).await;
    let seen = rig.seen();
    assert_eq!(seen[0].time_limit, Some(secs(30)));
    assert_eq!(seen[0].document.deadline_seconds, Some(30));
    assert_eq!(seen[0].cancelled, Some(secs(30)));
    assert_eq!(at(&fail), 30.0);
}

#[tokio::test(start_paused = true)]
async fn the_configured_max_runtime_ceiling_cancels_the_handler_and_fails_the_run() {
    let (rig, fail) = time_limited(0, Some(secs(20)), until_cancel()).await;
    assert_eq!(rig.seen()[0].cancelled, Some(secs(20)));
    assert_eq!(at(&fail), 20.0);
    // The smaller limit wins.
    let (rig, fail) = time_limited(90, Some(secs(45)), until_cancel()).await;
    assert_eq!(rig.seen()[0].cancelled, Some(secs(45)));
    assert_eq!(at(&fail), 45.0);
}

#[tokio::test(start_paused = true)]
async fn a_handler_ignoring_cancel_is_abandoned_after_the_grace_and_the_run_failed() {
    let (rig, fail) = time_limited(30, None, ignore_cancel(secs(1000))).await;
    assert_eq!(rig.seen()[0].cancelled, Some(secs(30)));
    assert_eq!(
        rig.seen()[0].ended,
        None,
        "the abandoned handler never returned"
    );
    assert_eq!(at(&fail), 40.0);
    // The lease was kept alive meanwhile.
    assert!(rig.fake.calls_of(Op::Heartbeat).iter().all(Call::ok));
}

// ----- 15. no handler ----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_run_no_handler_matches_is_released_with_a_clear_reason() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let (mut handlers, seen) = work(secs(5), json!({}));
    handlers.select = None;
    let rig = Rig::new(&fake, (handlers, seen), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    let terminals = fake.terminal_calls();
    assert_eq!(terminals.len(), 1);
    assert_eq!(terminals[0].op, Op::Release);
    let reason = terminals[0].body.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("no configured handler matches"), "{reason}");
    assert!(rig.seen().is_empty());
    assert_eq!(fake.run("run-1").state, RunState::Queued);
    fake.assert_clean();
}

// ----- 16. results the daemon refuses ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_complete_refused_as_too_large_becomes_one_fail_call() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(
        Op::Complete,
        Fault::Error(error(
            "complete",
            413,
            "task: payload too large: result exceeds 65536 bytes",
        )),
    );
    let rig = Rig::new(&fake, work(secs(5), json!({"x": 1})), settings());
    rig.run().await;
    let terminals = fake.terminal_calls();
    let ops: Vec<Op> = terminals.iter().map(|c| c.op).collect();
    assert_eq!(ops, vec![Op::Complete, Op::Fail], "{}", fake.log());
    let error = terminals[1].body.as_ref().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("refused"), "{error}");
    assert!(matches!(fake.run("run-1").state, RunState::Failed(_)));
    assert_eq!(rig.counters().runs_failed, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_large_result_is_capped_with_the_truncation_marker_and_claim_tokens_removed() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.enqueue("run-2");
    let handler = script(|_cx, probe| {
        Box::pin(async move {
            if probe.invocation == 0 {
                Outcome::Complete(json!({"log": "x".repeat(100 * 1024)}))
            } else {
                Outcome::Complete(json!({
                    "claim_token": "agh_claim_abc",
                    "nested": {"claim_token": "y", "ok": 1},
                    "list": [{"claim_token": 2, "note": "used agh_claim_abcdef123 here"}],
                }))
            }
        })
    });
    let mut settings = settings();
    settings.max_runs = Some(2);
    let rig = Rig::new(&fake, handler, settings);
    rig.run().await;
    let completes = fake.calls_of(Op::Complete);
    assert_eq!(completes.len(), 2);
    assert!(completes.iter().all(Call::ok), "{}", fake.log());
    let big = &completes[0].body.as_ref().unwrap()["result"];
    assert!(serde_json::to_string(big).unwrap().len() <= MAX_PAYLOAD);
    assert_eq!(big["truncated"], json!(true));
    assert!(big["original_bytes"].as_u64().unwrap() > 100 * 1024);
    let clean = &completes[1].body.as_ref().unwrap()["result"];
    assert!(!has_claim_token(clean), "{clean}");
    assert_eq!(clean["nested"]["ok"], json!(1));
    assert!(!clean.to_string().contains("agh_claim_abc"));
    fake.assert_clean();
}

// ----- 17. a terminal call whose first attempt was applied ---------------------------------

#[tokio::test(start_paused = true)]
async fn a_terminal_call_answered_409_after_a_retry_counts_as_done_and_is_not_repeated() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    // The client retried after transport errors; the first attempt had been applied.
    let mut err = lease_expired("complete", "run-1");
    err.attempts = 2;
    fake.fault(Op::Complete, Fault::ApplyThenError(err));
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(fake.terminal_calls().len(), 1, "{}", fake.log());
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    let counters = rig.counters();
    assert_eq!((counters.runs_completed, counters.leases_lost), (1, 0));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_terminal_call_answered_409_on_its_first_attempt_counts_as_a_lost_lease() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(
        Op::Complete,
        Fault::Error(lease_expired("complete", "run-1")),
    );
    let rig = Rig::new(&fake, work(secs(5), json!({})), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(fake.terminal_calls().len(), 1, "{}", fake.log());
    let counters = rig.counters();
    assert_eq!((counters.runs_completed, counters.leases_lost), (0, 1));
    fake.assert_clean();
}

// ----- 18. a terminal call whose answer was lost is confirmed by reading the run -----------

/// Ends every run with `outcome` after five seconds of work.
fn ends_with(outcome: Outcome) -> (Script, Arc<Mutex<Vec<Seen>>>) {
    script(move |_cx, _| {
        let outcome = outcome.clone();
        Box::pin(async move {
            sleep(secs(5)).await;
            outcome
        })
    })
}

fn failing() -> Outcome {
    Outcome::Fail {
        error: "tests failed".into(),
        metadata: None,
    }
}

/// Captures this test's log lines (the paused runtime runs every task on this thread).
fn capture_logs() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let guard = tracing_subscriber::registry()
        .with(agh_worker::ops::logging::json_layer(capture.clone()))
        .set_default();
    (capture, guard)
}

/// The ops of the terminal calls and run reads, in order.
fn finishing_ops(fake: &FakeAgh) -> Vec<Op> {
    fake.calls()
        .iter()
        .map(|c| c.op)
        .filter(|op| op.is_terminal() || *op == Op::TaskRun)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_terminal_call_applied_but_whose_answer_was_lost_is_confirmed_and_not_repeated() {
    for (outcome, op, state) in [
        (
            Outcome::Complete(json!({"ok": true})),
            Op::Complete,
            RunState::Completed(json!({"ok": true})),
        ),
        (failing(), Op::Fail, RunState::Failed("tests failed".into())),
        (
            Outcome::Release("handing off".into()),
            Op::Release,
            RunState::Queued,
        ),
    ] {
        let fake = FakeAgh::new();
        fake.enqueue("run-1");
        fake.fault(op, Fault::ApplyThenError(transport("terminal")));
        let rig = Rig::new(&fake, ends_with(outcome), settings());
        let (logs, _guard) = capture_logs();
        assert_eq!(rig.run().await, WorkerExit::MaxRuns);
        assert!(
            logs.text().contains("confirmed by reading the run"),
            "{}",
            logs.text()
        );
        assert_eq!(
            finishing_ops(&fake),
            vec![op, Op::TaskRun],
            "{}",
            fake.log()
        );
        assert_eq!(fake.ledger().accepted("run-1").len(), 1);
        assert_eq!(fake.run("run-1").state, state);
        let c = rig.counters();
        let ends = (c.runs_completed, c.runs_failed, c.runs_released);
        let expected = match op {
            Op::Complete => (1, 0, 0),
            Op::Fail => (0, 1, 0),
            _ => (0, 0, 1),
        };
        assert_eq!(ends, expected, "{op:?}");
        assert_eq!((c.leases_lost, c.terminal_call_failures), (0, 0));
        fake.assert_clean();
    }
}

#[tokio::test(start_paused = true)]
async fn a_terminal_call_that_did_not_land_while_the_run_is_still_ours_is_sent_once_more() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Complete, Fault::Error(transport("complete")));
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(
        finishing_ops(&fake),
        vec![Op::Complete, Op::TaskRun, Op::Complete],
        "{}",
        fake.log()
    );
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
    assert_eq!(rig.counters().runs_completed, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_terminal_call_that_never_lands_is_sent_twice_at_most_then_given_up() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.faults(Op::Complete, 5, Fault::Error(transport("complete")));
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(
        finishing_ops(&fake),
        vec![Op::Complete, Op::TaskRun, Op::Complete, Op::TaskRun],
        "{}",
        fake.log()
    );
    let c = rig.counters();
    assert_eq!((c.runs_completed, c.terminal_call_failures), (0, 1));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_for_a_run_another_session_took_meanwhile_is_a_lost_lease() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Complete, Fault::Error(transport("complete")));
    let daemon = fake.clone();
    let handler = script(move |_cx, _| {
        let daemon = daemon.clone();
        Box::pin(async move {
            sleep(secs(5)).await;
            // The daemon hands the run to another session as the worker finishes.
            daemon.steal("run-1");
            Outcome::Complete(json!({}))
        })
    });
    let rig = Rig::new(&fake, handler, settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(
        finishing_ops(&fake),
        vec![Op::Complete, Op::TaskRun],
        "no second call for a run that is not ours: {}",
        fake.log()
    );
    let c = rig.counters();
    assert_eq!((c.runs_completed, c.leases_lost), (0, 1));
    assert_eq!(c.leases_lost_rejected, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_whose_run_cannot_be_read_falls_back_to_what_the_answer_suggests() {
    // A 409 to the client's retry: most likely applied (unconfirmed).
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let mut retried = lease_expired("complete", "run-1");
    retried.attempts = 2;
    fake.fault(Op::Complete, Fault::ApplyThenError(retried));
    fake.fault(Op::TaskRun, Fault::Error(server_error("task-run", 500)));
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    let (logs, guard) = capture_logs();
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    drop(guard);
    assert!(logs.text().contains("unconfirmed"), "{}", logs.text());
    assert_eq!(finishing_ops(&fake), vec![Op::Complete, Op::TaskRun]);
    assert_eq!(rig.counters().runs_completed, 1);
    fake.assert_clean();

    // A transport failure: the call did not get through, and is not sent blind again.
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(Op::Complete, Fault::Error(transport("complete")));
    fake.fault(Op::TaskRun, Fault::Error(transport("task-run")));
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    assert_eq!(finishing_ops(&fake), vec![Op::Complete, Op::TaskRun]);
    let c = rig.counters();
    assert_eq!((c.runs_completed, c.terminal_call_failures), (0, 1));
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn the_lease_is_kept_while_a_lost_answer_takes_long_and_the_call_is_then_sent_again() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    // Lost only after 70 s: longer than the 60 s lease.
    fake.fault(
        Op::Complete,
        Fault::ErrorAfter(secs(70), transport("complete")),
    );
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    let completes = fake.calls_of(Op::Complete);
    assert_eq!(completes.len(), 2, "{}", fake.log());
    assert_eq!((at(&completes[0]), at(&completes[1])), (5.0, 75.0));
    let renewals = fake
        .calls_of(Op::Heartbeat)
        .iter()
        .filter(|c| c.ok() && (5.0..75.0).contains(&at(c)))
        .count();
    assert!(renewals >= 3, "{}", fake.log());
    assert_eq!(rig.counters().runs_completed, 1);
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn a_call_that_did_not_land_is_not_sent_again_once_the_lease_was_given_up_meanwhile() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.fault(
        Op::Complete,
        Fault::ErrorAfter(secs(60), transport("complete")),
    );
    fake.rule(
        Op::Heartbeat,
        Box::new(|_, _, _| Some(Fault::Error(transport("heartbeat")))),
    );
    let rig = Rig::new(&fake, ends_with(Outcome::Complete(json!({}))), settings());
    assert_eq!(rig.run().await, WorkerExit::MaxRuns);
    // At 65 s the run still reads as ours (its lease ended at 60 s, the sweep comes later), but
    // the keeper gave the lease up at 50 s: no second call.
    assert_eq!(
        finishing_ops(&fake),
        vec![Op::Complete, Op::TaskRun],
        "{}",
        fake.log()
    );
    let c = rig.counters();
    assert_eq!((c.runs_completed, c.leases_lost), (0, 1));
    assert_eq!(c.leases_lost_deadline, 1);
    fake.assert_clean();
}

// ----- progress events ---------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn progress_events_reach_the_sink_before_the_run_completes() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    let handler = script(|cx, _| {
        Box::pin(async move {
            for step in 1..=3 {
                cx.progress(format!("step {step}")).await;
                sleep(secs(10)).await;
            }
            cx.progress("finishing").await;
            Outcome::Complete(json!({"steps": 3}))
        })
    });
    let rig = Rig::new(&fake, handler, settings());
    rig.run().await;
    let log = rig.events.log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            "run-1 progress step 1",
            "run-1 progress step 2",
            "run-1 progress step 3",
            "run-1 progress finishing"
        ]
    );
    assert_eq!(fake.ledger().accepted("run-1").len(), 1);
}

// ----- 18. a long randomized run -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_long_randomized_run_keeps_every_lease_rule() {
    let fake = FakeAgh::new();
    const RUNS: usize = 200;
    for n in 0..RUNS {
        fake.enqueue(&format!("run-{n:03}"));
    }
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(0x5eed)));
    // One heartbeat in eight meets a transport error.
    let beats_rng = rng.clone();
    fake.rule(
        Op::Heartbeat,
        Box::new(move |_, _, _| {
            (beats_rng.lock().unwrap().u8(..) < 32).then(|| Fault::Error(transport("heartbeat")))
        }),
    );
    let handler_rng = rng.clone();
    let handler = script(move |cx, _| {
        let (duration, roll) = {
            let mut rng = handler_rng.lock().unwrap();
            (secs(rng.u64(1..=120)), rng.u8(..))
        };
        Box::pin(async move {
            if roll < 8 {
                // Ignores cancel for a while.
                sleep(duration).await;
                return Outcome::Complete(json!({"stubborn": true}));
            }
            tokio::select! {
                _ = sleep(duration) => match roll {
                    0..=30 => Outcome::Fail { error: "tests failed".into(), metadata: Some(json!({"n": 3})) },
                    31..=40 => Outcome::Release("handing off".into()),
                    _ => Outcome::Complete(json!({"ok": true})),
                },
                _ = cx.cancel.cancelled() => Outcome::Release("cancelled".into()),
            }
        })
    });
    let mut settings = settings();
    settings.max_runs = None;
    let rig = Rig::new(&fake, handler, settings);
    let handle = rig.spawn();

    // Now and then the lease is taken away: requeued by the daemon, or claimed by another session.
    let mut chaos = fastrand::Rng::with_seed(0xc4a05);
    let done = |fake: &FakeAgh| {
        fake.runs()
            .iter()
            .all(|r| matches!(r.state, RunState::Completed(_) | RunState::Failed(_)))
    };
    let until = Instant::now() + secs(7 * 24 * 3600);
    while !done(&fake) && Instant::now() < until {
        sleep(secs(chaos.u64(5..=90))).await;
        let held = fake
            .holdings()
            .into_iter()
            .rev()
            .find(|h| h.session == SESSION && !h.ended);
        if let Some(holding) = held {
            match chaos.u8(..) {
                0..=12 => fake.revoke(&holding.run_id, true),
                13..=20 => fake.steal(&holding.run_id),
                21..=26 => fake.revoke(&holding.run_id, false),
                _ => {}
            }
        }
    }
    rig.worker.shutdown.drain.cancel();
    assert_eq!(join(handle).await, WorkerExit::Shutdown);
    // Let leases left to other sessions expire and be swept.
    sleep(secs(400)).await;

    fake.assert_clean();
    let runs = fake.runs();
    let finished = runs
        .iter()
        .filter(|r| matches!(r.state, RunState::Completed(_) | RunState::Failed(_)))
        .count();
    assert!(
        runs.iter().all(|r| !matches!(r.state, RunState::Held(_))),
        "every run ends terminal or requeued"
    );
    assert!(
        finished >= RUNS * 9 / 10,
        "only {finished} of {RUNS} runs finished"
    );
    for holding in fake.holdings() {
        assert!(holding.accepted_terminals <= 1, "{holding:?}");
    }
    let ledger = fake.ledger();
    let accepted = ledger.terminals.iter().filter(|t| t.accepted).count();
    let releases = runs.iter().map(|r| r.releases as usize).sum::<usize>();
    assert_eq!(accepted, finished + releases);
    let counters = rig.counters();
    assert!(
        counters.leases_lost > 0 && counters.heartbeats_failed > 0,
        "{counters:?}"
    );
    assert_eq!(rig.worker.status.snapshot().state, WorkerState::Stopped);
}

// ----- reload ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn replaced_settings_apply_from_the_next_claim_while_the_run_in_hand_keeps_its_own() {
    let fake = FakeAgh::new();
    fake.enqueue("run-1");
    fake.enqueue("run-2");
    let mut first = settings();
    first.max_runs = Some(2);
    let rig = Rig::new(&fake, work(secs(50), json!({"ok": true})), first);
    let handle = rig.spawn();
    // While run-1 is in hand (heartbeats with the 60 s lease), a reload asks for 120 s leases.
    sleep(secs(10)).await;
    let mut reloaded = settings();
    reloaded.max_runs = Some(2);
    reloaded.lease = secs(120);
    reloaded.heartbeat_every = secs(40);
    rig.worker.settings.replace(reloaded);
    assert_eq!(join(handle).await, WorkerExit::MaxRuns);

    let claims: Vec<Option<i64>> = fake
        .calls_of(Op::Claim)
        .iter()
        .map(|c| c.lease_seconds)
        .collect();
    assert_eq!(claims.first(), Some(&Some(60)), "{}", fake.log());
    assert_eq!(claims.last(), Some(&Some(120)), "{}", fake.log());
    let beats = fake.calls_of(Op::Heartbeat);
    let run_one: Vec<f64> = beats
        .iter()
        .filter(|b| b.run_id.as_deref() == Some("run-1"))
        .map(at)
        .collect();
    assert_eq!(run_one, vec![20.0, 40.0], "{}", fake.log());
    assert!(
        beats
            .iter()
            .filter(|b| b.run_id.as_deref() == Some("run-2"))
            .all(|b| b.lease_seconds == Some(120)),
        "{}",
        fake.log()
    );
    fake.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn the_loop_keeps_ticking_while_a_claim_long_poll_is_open() {
    let fake = FakeAgh::new();
    let mut settings = settings();
    settings.max_runs = None;
    settings.idle_exit = Some(secs(100));
    let rig = Rig::new(&fake, work(secs(1), json!({})), settings);
    let handle = rig.spawn();
    // Mid-way through a 30 s long-poll the loop has still shown itself alive recently.
    sleep(secs(17)).await;
    let since_tick = rig.worker.status.snapshot().last_tick.elapsed();
    assert!(
        since_tick <= agh_worker::worker::LOOP_TICK,
        "last tick {since_tick:?} ago"
    );
    assert_eq!(join(handle).await, WorkerExit::Idle);
}
