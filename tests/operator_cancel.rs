//! An operator's cancel and pause of a task, seen by the worker through the task's event stream,
//! against the built-in simulator over loopback TCP and a Unix socket: a cancel stops the
//! handler with no heartbeat and no terminal call, a pause shows in the status and the run goes
//! on, a dropped stream is resumed after the last event seen, and a daemon without the stream
//! still has its cancel found by the heartbeat.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agh_worker::dev::sim::{
    EnqueuedRun, Fault, FaultKind, Route, SimConfig, SimServer, Simulator, TaskSpec,
};
use agh_worker::handler::{Handler, HandlerSet, Outcome, SharedHandlers, TaskContext};
use agh_worker::worker::{
    ClaimLoop, LogEvents, RunEnd, Shutdown, StatusBoard, WorkerExit, WorkerSettings,
};
use serde_json::json;
use support::client_rig::Transport;
use support::recorder::Recorder;
use support::sim::{self, worker_settings};
use tokio::sync::{Notify, mpsc};
use tokio::time::timeout;

/// Waits for the handler to start, then for a cancel (answering a release) or for `finish`
/// (answering a completion); says which on `stopped`.
struct Waits {
    started: mpsc::UnboundedSender<String>,
    stopped: mpsc::UnboundedSender<&'static str>,
    finish: Arc<Notify>,
}

impl Handler for Waits {
    fn run(&self, context: TaskContext) -> impl Future<Output = Outcome> + Send {
        let _ = self.started.send(context.document.run_id.clone());
        let stopped = self.stopped.clone();
        let finish = self.finish.clone();
        async move {
            tokio::select! {
                () = context.cancel.cancelled() => {
                    let _ = stopped.send("cancelled");
                    Outcome::Release("cancelled".into())
                }
                () = finish.notified() => {
                    let _ = stopped.send("finished");
                    Outcome::Complete(json!({"ok": true}))
                }
            }
        }
    }
}

struct Rig {
    sim: Simulator,
    _server: SimServer,
    worker: Arc<ClaimLoop<Recorder, LogEvents>>,
    run: EnqueuedRun,
    started: mpsc::UnboundedReceiver<String>,
    stopped: mpsc::UnboundedReceiver<&'static str>,
    finish: Arc<Notify>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(via: Transport, settings: WorkerSettings) -> Rig {
        support::log_capture::show_in_test_output();
        let dir = tempfile::tempdir().expect("temporary directory");
        let sim = Simulator::new(SimConfig::default());
        let (server, endpoint) = sim::serve(&sim, via, dir.path()).await;
        let session = sim.default_session().expect("default session");
        let (started_tx, started) = mpsc::unbounded_channel();
        let (stopped_tx, stopped) = mpsc::unbounded_channel();
        let finish = Arc::new(Notify::new());
        let handler = Waits {
            started: started_tx,
            stopped: stopped_tx,
            finish: finish.clone(),
        };
        let worker = Arc::new(ClaimLoop {
            api: Arc::new(Recorder::new(sim::worker_client(&endpoint, &session))),
            handlers: Arc::new(SharedHandlers::from(HandlerSet::from(handler))),
            events: Arc::new(LogEvents),
            settings: WorkerSettings {
                max_runs: Some(1),
                ..settings
            }
            .into(),
            status: StatusBoard::default(),
            shutdown: Shutdown::default(),
            wake: Default::default(),
        });
        let run = sim.enqueue_task(TaskSpec::titled("long job"));
        Rig {
            sim,
            _server: server,
            worker,
            run,
            started,
            stopped,
            finish,
            _dir: dir,
        }
    }

    /// Starts the worker and waits until its handler works on the run and the run's task
    /// stream is open.
    async fn start(&mut self) -> tokio::task::JoinHandle<WorkerExit> {
        let worker = self.worker.clone();
        let handle = tokio::spawn(async move { worker.run().await });
        let started = timeout(Duration::from_secs(5), self.started.recv())
            .await
            .expect("the handler starts")
            .expect("the handler lives");
        assert_eq!(started, self.run.run_id);
        timeout(
            Duration::from_secs(5),
            self.sim.wait_for_waiters(Route::TaskStream, 1),
        )
        .await
        .expect("the worker follows the task stream");
        handle
    }

    async fn stopped(&mut self) -> &'static str {
        timeout(Duration::from_secs(5), self.stopped.recv())
            .await
            .expect("the handler stops")
            .expect("the handler lives")
    }

    fn requests(&self, route: Route) -> u64 {
        sim::requests(&self.sim, route)
    }

    fn assert_no_terminal_call(&self) {
        for route in [Route::Complete, Route::Fail, Route::Release] {
            assert_eq!(self.requests(route), 0, "{route:?} was called");
        }
    }

    fn last_end(&self) -> RunEnd {
        let status = self.worker.status.snapshot();
        let last = status.recent_runs.back().expect("an ended run");
        assert_eq!(last.run_id, self.run.run_id);
        last.end
    }
}

/// Settings with AGH's default 20 s heartbeat: no renewal is due within the test.
fn twenty_second_heartbeat() -> WorkerSettings {
    WorkerSettings {
        lease: Duration::from_secs(60),
        heartbeat_every: Duration::from_secs(20),
        ..worker_settings()
    }
}

async fn ends(handle: tokio::task::JoinHandle<WorkerExit>) -> WorkerExit {
    timeout(Duration::from_secs(10), handle)
        .await
        .expect("the worker stops in time")
        .expect("the worker task does not panic")
}

// ----- a cancel stops the handler before any heartbeat, with no terminal call ---------------------

async fn a_cancel_stops_the_handler_before_any_heartbeat_and_makes_no_terminal_call(
    via: Transport,
) {
    let mut rig = Rig::new(via, twenty_second_heartbeat()).await;
    let handle = rig.start().await;
    assert!(rig.sim.cancel_task(&rig.run.task_id, Some("not needed")));
    assert_eq!(rig.stopped().await, "cancelled");
    assert_eq!(ends(handle).await, WorkerExit::MaxRuns);
    assert_eq!(rig.requests(Route::Heartbeat), 0);
    rig.assert_no_terminal_call();
    assert_eq!(rig.last_end(), RunEnd::Canceled);
    let counters = rig.worker.status.snapshot().counters;
    assert_eq!((counters.runs_canceled, counters.leases_lost), (1, 0));
    let run = rig.sim.run(&rig.run.run_id).expect("the run");
    assert_eq!(run.status, "canceled");
    assert_eq!(rig.sim.ledger().violations_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_handler_before_any_heartbeat_and_makes_no_terminal_call_over_tcp() {
    a_cancel_stops_the_handler_before_any_heartbeat_and_makes_no_terminal_call(Transport::Tcp)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_handler_before_any_heartbeat_and_makes_no_terminal_call_over_a_unix_socket()
 {
    a_cancel_stops_the_handler_before_any_heartbeat_and_makes_no_terminal_call(Transport::Unix)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_stream_opens_is_seen_when_it_opens_within_the_follow_delay() {
    let mut rig = Rig::new(Transport::Unix, twenty_second_heartbeat()).await;
    let worker = rig.worker.clone();
    let handle = tokio::spawn(async move { worker.run().await });
    timeout(Duration::from_secs(5), rig.started.recv())
        .await
        .expect("the handler starts")
        .expect("the handler lives");
    let cancelled = tokio::time::Instant::now();
    assert!(rig.sim.cancel_task(&rig.run.task_id, Some("early")));
    assert_eq!(rig.stopped().await, "cancelled");
    let took = cancelled.elapsed();
    assert!(
        took < agh_worker::worker::lease::FOLLOW_AFTER + Duration::from_millis(500),
        "an early cancel waits for the stream to open, no longer: {took:?}"
    );
    assert_eq!(ends(handle).await, WorkerExit::MaxRuns);
    assert_eq!(rig.requests(Route::Heartbeat), 0, "found by the stream");
    rig.assert_no_terminal_call();
    assert_eq!(rig.last_end(), RunEnd::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_before_the_follow_delay_opens_no_task_stream() {
    let rig = Rig::new(Transport::Tcp, twenty_second_heartbeat()).await;
    rig.finish.notify_one();
    let worker = rig.worker.clone();
    let exit = ends(tokio::spawn(async move { worker.run().await })).await;
    assert_eq!(exit, WorkerExit::MaxRuns);
    assert_eq!(rig.last_end(), RunEnd::Completed);
    assert!(
        rig.sim.stream_opens().is_empty(),
        "no stream for a run shorter than the delay: {:?}",
        rig.sim.stream_opens()
    );
}

// ----- a pause shows in the status and the run completes -------------------------------------------

async fn a_paused_tasks_run_completes_and_the_status_shows_the_pause(via: Transport) {
    let mut rig = Rig::new(via, twenty_second_heartbeat()).await;
    let handle = rig.start().await;
    assert!(rig.sim.pause_task(&rig.run.task_id, "incident 7"));
    let shown = timeout(Duration::from_secs(5), async {
        loop {
            let current = rig.worker.status.snapshot().current;
            if let Some(reason) = current.and_then(|run| run.task_paused) {
                return reason;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the status shows the pause");
    assert_eq!(shown, "incident 7");
    rig.finish.notify_one();
    assert_eq!(rig.stopped().await, "finished");
    assert_eq!(ends(handle).await, WorkerExit::MaxRuns);
    assert_eq!(rig.last_end(), RunEnd::Completed);
    let status = rig.worker.status.snapshot();
    let last = status.recent_runs.back().expect("an ended run");
    assert_eq!(last.task_paused.as_deref(), Some("incident 7"));
    assert_eq!(
        rig.sim.run(&rig.run.run_id).expect("run").status,
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tasks_run_completes_and_the_status_shows_the_pause_over_tcp() {
    a_paused_tasks_run_completes_and_the_status_shows_the_pause(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tasks_run_completes_and_the_status_shows_the_pause_over_a_unix_socket() {
    a_paused_tasks_run_completes_and_the_status_shows_the_pause(Transport::Unix).await;
}

// ----- a dropped stream is resumed after the last event seen --------------------------------------

async fn a_dropped_stream_is_resumed_with_last_event_id_and_still_sees_the_cancel(via: Transport) {
    let mut rig = Rig::new(via, twenty_second_heartbeat()).await;
    let handle = rig.start().await;
    assert_eq!(rig.sim.drop_task_streams(&rig.run.task_id), 1);
    assert!(rig.sim.cancel_task(&rig.run.task_id, None));
    assert_eq!(rig.stopped().await, "cancelled");
    assert_eq!(ends(handle).await, WorkerExit::MaxRuns);
    let opens = rig.sim.stream_opens();
    assert!(opens.len() >= 2, "the stream was opened again: {opens:?}");
    let first = opens[0]
        .last_event_id
        .expect("the first open starts after the claim");
    assert_eq!(opens[0].after_sequence, Some(first));
    assert!(
        opens[1].last_event_id.is_some_and(|id| id >= first),
        "resumed after the last event seen: {opens:?}"
    );
    assert_eq!(rig.requests(Route::Heartbeat), 0);
    rig.assert_no_terminal_call();
    assert_eq!(rig.last_end(), RunEnd::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_resumed_with_last_event_id_and_still_sees_the_cancel_over_tcp() {
    a_dropped_stream_is_resumed_with_last_event_id_and_still_sees_the_cancel(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_resumed_with_last_event_id_and_still_sees_the_cancel_over_a_unix_socket()
 {
    a_dropped_stream_is_resumed_with_last_event_id_and_still_sees_the_cancel(Transport::Unix).await;
}

// ----- without the stream, the heartbeat finds the cancel -----------------------------------------

async fn without_the_stream_the_heartbeat_finds_the_cancel(via: Transport) {
    let mut rig = Rig::new(via, worker_settings()).await;
    rig.sim.inject_fault(Fault::new(
        Route::TaskStream,
        FaultKind::Status {
            status: 404,
            error: "404 page not found".into(),
        },
        1,
    ));
    let worker = rig.worker.clone();
    let handle = tokio::spawn(async move { worker.run().await });
    timeout(Duration::from_secs(5), rig.started.recv())
        .await
        .expect("the handler starts")
        .expect("the handler lives");
    // One renewal first: the lease is live, and only a later heartbeat can find the cancel.
    rig.worker
        .api
        .until_count("heartbeat", 1, Duration::from_secs(5))
        .await;
    assert!(rig.sim.cancel_task(&rig.run.task_id, None));
    assert_eq!(rig.stopped().await, "cancelled");
    assert_eq!(ends(handle).await, WorkerExit::MaxRuns);
    assert_eq!(rig.requests(Route::TaskStream), 1, "not asked again");
    assert_eq!(rig.sim.ledger().requests_for(Route::TaskStream, 404), 1);
    assert!(rig.sim.ledger().requests_for(Route::Heartbeat, 409) >= 1);
    rig.assert_no_terminal_call();
    assert_eq!(rig.last_end(), RunEnd::LeaseLost);
    assert_eq!(rig.worker.status.snapshot().counters.runs_canceled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_stream_the_heartbeat_finds_the_cancel_over_tcp() {
    without_the_stream_the_heartbeat_finds_the_cancel(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_stream_the_heartbeat_finds_the_cancel_over_a_unix_socket() {
    without_the_stream_the_heartbeat_finds_the_cancel(Transport::Unix).await;
}
