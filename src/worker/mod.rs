//! The claim loop: claim a run, hand its lease to [`lease`], repeat; recover orphaned leases,
//! back off from a failing daemon, wait out a stale identity, stop on shutdown, max runs or idleness.
//!
//! One run at a time: AGH allows one active lease per session, so more throughput means more
//! sessions, not more tasks here.

pub mod api;
mod counters;
mod keeper;
pub mod lease;
mod orphans;
pub mod payload;
mod reckon;
pub mod settings;
pub mod shutdown;
pub mod status;
mod task_stream;
mod task_view;
mod terminal;
pub mod wake;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::types::{ChannelMessage, ClaimRequest};
use crate::api::{ApiError, ClaimOutcome, ErrorKind};
use crate::handler::SharedHandlers;
use crate::handler::{HandlerEvent, TaskDocument};
use crate::util::backoff::Backoff;
use crate::util::time::sleep_until_option;

pub use crate::handler::CANCEL_GRACE;
pub use crate::handler::health::{HandlerHealth, HandlerHealthReporter, UnhealthyHandler};
pub use api::AghApi;
pub use counters::Counters;
pub use settings::{SharedSettings, WorkerSettings};
pub use shutdown::Shutdown;
pub use status::{
    CurrentRun, EndedRun, LeaseLostReason, RunEnd, RunHistograms, StatusBoard, WorkerState,
    WorkerStatus,
};
pub use task_stream::OperatorCancel;
pub use wake::Wake;

/// How often the loop shows it is alive while it waits on a long-poll.
pub const LOOP_TICK: Duration = Duration::from_secs(5);

/// Receives what handlers report while they run. The coordination layer sends progress as
/// channel messages and answers spawn requests; without it, events are logged and spawns refused.
pub trait EventSink: Send + Sync + 'static {
    /// A handler starts on `document`; channel messages for the run go to `inbound`.
    fn run_started(&self, _document: &TaskDocument, _inbound: mpsc::Sender<ChannelMessage>) {}
    /// The handler of `run_id` has ended; nothing more is routed to it.
    fn run_ended(&self, _run_id: &str) {}
    /// One event from the handler of `document`.
    fn handle(
        &self,
        document: &TaskDocument,
        event: HandlerEvent,
    ) -> impl Future<Output = ()> + Send;
}

/// Logs progress and messages; refuses spawns.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEvents;

impl EventSink for LogEvents {
    async fn handle(&self, document: &TaskDocument, event: HandlerEvent) {
        match event {
            HandlerEvent::Progress(text) => {
                tracing::info!(run_id = %document.run_id, progress = %text, "handler progress");
            }
            HandlerEvent::Message { kind, text } => {
                tracing::info!(run_id = %document.run_id, kind = %kind, text = %text, "handler message");
            }
            HandlerEvent::Reply {
                to_message_id,
                text,
            } => {
                tracing::info!(run_id = %document.run_id, to = %to_message_id, text = %text, "handler reply");
            }
            HandlerEvent::Spawn { ask, answer } => {
                tracing::info!(run_id = %document.run_id, agent = %ask.agent_name, "handler asked for a child session; no spawner is running");
                let _ = answer.send(crate::handler::SpawnAnswer::Refused {
                    reason: "this worker has no spawner".into(),
                });
            }
        }
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// A shutdown signal.
    Shutdown,
    /// `--max-runs` (or `--once`) reached.
    MaxRuns,
    /// `--idle-exit` (or `--once` with nothing to do).
    Idle,
}

/// Everything the loop and its lease tasks share.
pub struct ClaimLoop<A, E> {
    pub api: Arc<A>,
    pub handlers: Arc<SharedHandlers>,
    pub events: Arc<E>,
    pub settings: SharedSettings,
    pub status: StatusBoard,
    pub shutdown: Shutdown,
    /// Cuts a pause or an open long-poll short: claim now (see [`Wake`]).
    pub wake: Wake,
}

/// What the claim loop carries from one claim to the next.
struct LoopState {
    /// Pauses after failed calls.
    backoff: Backoff,
    /// Grows with each run in a row that ended released (see `after_run`).
    release_backoff: Backoff,
    runs_done: u64,
    idle_since: Instant,
    /// Whether to look for a lease held without a task on it: at start-up (a previous process
    /// may have died holding one) and after a claim answer may have been lost.
    check_orphans: bool,
    /// 409 "active run lease exists" answers since the last claim that was not one.
    held_conflicts: u32,
    max_runs: Option<u64>,
}

impl LoopState {
    fn new(settings: &WorkerSettings) -> Self {
        let backoff =
            Backoff::new(settings.initial_backoff, settings.max_backoff).with_jitter(0.75, 1.25);
        LoopState {
            release_backoff: backoff.clone(),
            backoff,
            runs_done: 0,
            idle_since: Instant::now(),
            check_orphans: true,
            held_conflicts: 0,
            // `--once` means one run: without this, a claimed run was followed by further
            // claims and only an empty claim ended the loop.
            max_runs: if settings.once {
                Some(1)
            } else {
                settings.max_runs
            },
        }
    }
}

/// What the loop does after its checks before a claim.
enum Next {
    Exit(WorkerExit),
    /// Start over (an orphan was handled, or a failed check was waited out).
    Again,
    Claim {
        idle_deadline: Option<Instant>,
    },
}

impl<A, E> std::fmt::Debug for ClaimLoop<A, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimLoop").finish_non_exhaustive()
    }
}

impl<A: AghApi, E: EventSink> ClaimLoop<A, E> {
    /// Runs until shutdown, max runs or idleness. Never returns while a lease is held.
    pub async fn run(&self) -> WorkerExit {
        let exit = self.run_loop().await;
        self.status.set_state(WorkerState::Stopped);
        exit
    }

    async fn run_loop(&self) -> WorkerExit {
        let mut state = LoopState::new(&self.settings.get());
        // The loop stays visibly alive (health, systemd watchdog) while a long-poll is open. One
        // timer for the whole loop: an interval made per claim registered a new timer each time,
        // and a timer due before the runtime's next wake-up makes it wake a parked thread (an
        // eventfd write and a context switch), about a sixth of a no-op run's time.
        let mut alive = tokio::time::interval(LOOP_TICK);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A reload (SIGHUP) takes effect from the next claim on.
            let settings = self.settings.get();
            let idle_deadline = match self.before_claim(&settings, &mut state).await {
                Next::Exit(exit) => return exit,
                Next::Again => continue,
                Next::Claim { idle_deadline } => idle_deadline,
            };
            let claim_sent = Instant::now();
            let answer = match self.claim(&settings, idle_deadline, &mut alive).await {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    // The long-poll given up for a wake may have committed as it went: the
                    // orphan check adopts (or releases) what the session now holds.
                    state.check_orphans = true;
                    continue;
                }
                Err(exit) => return exit,
            };
            if let Some(exit) = self
                .after_claim(answer, &settings, &mut state, claim_sent, idle_deadline)
                .await
            {
                return exit;
            }
        }
    }

    /// Everything before a claim: stop if asked or done, recover orphaned leases, and work out
    /// how long the claim may wait before the idle exit.
    async fn before_claim(&self, settings: &WorkerSettings, state: &mut LoopState) -> Next {
        if self.shutdown.is_stopping() {
            return Next::Exit(WorkerExit::Shutdown);
        }
        if state.max_runs.is_some_and(|max| state.runs_done >= max) {
            return Next::Exit(WorkerExit::MaxRuns);
        }
        if state.check_orphans {
            match self.recover_orphans().await {
                Ok(Some(adopted)) => {
                    state.check_orphans = false;
                    state.held_conflicts = 0;
                    // Only an adopted lease was a run this worker handled. Counting a released
                    // orphan too made `--once` / `--max-runs 1` exit right after giving the
                    // orphan back, without handling any run at all.
                    if let Some(end) = adopted {
                        state.runs_done += 1;
                        self.after_run(end, &mut state.release_backoff).await;
                    }
                    state.idle_since = Instant::now();
                    state.backoff.reset();
                    return Next::Again;
                }
                Ok(None) => state.check_orphans = false,
                Err(err) => {
                    if let Some(exit) = self.after_error(&err, &mut state.backoff).await {
                        return Next::Exit(exit);
                    }
                    return Next::Again;
                }
            }
        }
        self.status.set_state(WorkerState::Idle);
        let idle_deadline = settings.idle_exit.map(|idle| state.idle_since + idle);
        if idle_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Next::Exit(WorkerExit::Idle);
        }
        Next::Claim { idle_deadline }
    }

    /// One claim, given up at shutdown or the idle deadline. A claim given up may have committed
    /// at that instant: whatever the session then holds is released before the loop exits.
    /// A long-poll given up for a wake answers `None`: claim again at once.
    async fn claim(
        &self,
        settings: &WorkerSettings,
        idle_deadline: Option<Instant>,
        alive: &mut tokio::time::Interval,
    ) -> Result<Option<Result<ClaimOutcome, ApiError>>, WorkerExit> {
        let request = ClaimRequest {
            wait: settings.claim_wait,
            lease_seconds: Some(settings.lease.as_secs().max(1) as i64),
            required_capabilities: settings.required_capabilities.clone(),
            priority_min: settings.priority_min,
            workspace_id: None,
        };
        let mut claim = Box::pin(self.api.claim_next(&request));
        let mut woken = false;
        let answer = loop {
            tokio::select! {
                answer = &mut claim => break Some(answer),
                _ = self.shutdown.stopping() => break None,
                _ = sleep_until_option(idle_deadline) => break None,
                // Only a long-poll is worth giving up: a plain claim answers at once.
                _ = self.wake.woken(), if settings.claim_wait => {
                    woken = true;
                    break None;
                }
                _ = alive.tick() => self.status.tick(),
            }
        };
        // An abandoned claim must be gone before `me` is asked what it may have committed.
        drop(claim);
        if let Some(answer) = answer {
            return Ok(Some(answer));
        }
        if woken && !self.shutdown.is_stopping() {
            tracing::debug!("woken: giving up the open long-poll to claim again at once");
            return Ok(None);
        }
        if let Err(err) = self
            .release_anything_held("the worker stopped waiting for work")
            .await
        {
            if err.kind == ErrorKind::IdentityStale {
                // A stopping session (AGH's stop, `acp`): nothing can be asked or released now,
                // and whatever the abandoned claim committed expires with its lease.
                tracing::info!(error = %err, "the session is stopping; an abandoned claim's lease, if any, expires by itself");
            } else {
                tracing::warn!(error = %err, "could not check for a lease after abandoning a claim");
            }
        }
        if self.shutdown.is_stopping() {
            return Err(WorkerExit::Shutdown);
        }
        Err(WorkerExit::Idle)
    }

    /// Acts on a claim's answer: run what was claimed, wait when there was nothing, recover or
    /// back off after an error. Answers an exit when the loop must stop.
    async fn after_claim(
        &self,
        answer: Result<ClaimOutcome, ApiError>,
        settings: &WorkerSettings,
        state: &mut LoopState,
        claim_sent: Instant,
        idle_deadline: Option<Instant>,
    ) -> Option<WorkerExit> {
        match answer {
            Ok(ClaimOutcome::Claimed(claim)) => {
                state.held_conflicts = 0;
                self.status.run_claimed();
                state.backoff.reset();
                let end = lease::run_lease(self, *claim, claim_sent, lease::Origin::Claimed).await;
                self.wake.forget();
                state.runs_done += 1;
                self.after_run(end, &mut state.release_backoff).await;
                state.idle_since = Instant::now();
            }
            Ok(ClaimOutcome::NothingToDo) => {
                state.held_conflicts = 0;
                state.release_backoff.reset();
                self.status.identity_confirmed();
                state.backoff.reset();
                if settings.once {
                    return Some(WorkerExit::Idle);
                }
                if !settings.claim_wait {
                    self.pause(settings.poll_interval, idle_deadline).await;
                }
            }
            Ok(ClaimOutcome::DeadlineReached) => {
                // The next claim doubles as the check for a claim lost at the deadline: if one
                // committed, the daemon answers 409 "active run lease exists" at once.
                state.held_conflicts = 0;
                // The daemon accepted the claim and held it open for the whole wait, as it does
                // when there is no work: count that as contact, or an idle worker in long polls
                // would look unready (and stale) after one wait with nothing to do.
                self.status.contact();
                state.backoff.reset();
                if settings.once {
                    if let Err(err) = self
                        .release_anything_held("the worker is exiting (--once)")
                        .await
                    {
                        tracing::warn!(error = %err, "could not check for a lease before exiting");
                    }
                    return Some(WorkerExit::Idle);
                }
            }
            Err(err) => return self.after_claim_error(&err, state).await,
        }
        None
    }

    /// A claim failed: a lease the session may hold is recovered, the rest backs off.
    async fn after_claim_error(&self, err: &ApiError, state: &mut LoopState) -> Option<WorkerExit> {
        self.status.claim_failed(err.status.is_some());
        match err.kind {
            ErrorKind::LeaseAlreadyHeld => {
                tracing::warn!("the daemon says this session already holds a lease; recovering it");
                state.check_orphans = true;
                state.held_conflicts += 1;
                // The first 409 is recovered at once through `me`. Another right after
                // means `me` showed no lease to recover (a lagging read, or a lease the
                // session holds in a form `me` does not list): without a pause the loop
                // would spin claim → me → claim with no delay at all.
                if state.held_conflicts > 1
                    && let Some(exit) = self.after_error(err, &mut state.backoff).await
                {
                    return Some(exit);
                }
            }
            ErrorKind::Transport | ErrorKind::MalformedBody | ErrorKind::Timeout => {
                // The answer was lost: the claim may have committed without us seeing it.
                state.check_orphans = true;
                if let Some(exit) = self.after_error(err, &mut state.backoff).await {
                    // Shutdown came during the backoff, before the check above could
                    // run: exiting straight away left such a claim to expire instead of
                    // giving it back.
                    if let Err(err) = self
                        .release_anything_held("the worker is shutting down")
                        .await
                    {
                        tracing::warn!(error = %err, "could not check for a lease after a lost claim answer");
                    }
                    return Some(exit);
                }
            }
            _ => {
                if let Some(exit) = self.after_error(err, &mut state.backoff).await {
                    return Some(exit);
                }
            }
        }
        None
    }

    /// After a run: a released run is back in the queue and, AGH preferring the oldest run, is
    /// most likely the very next claim. Claiming again at once made a handler that keeps giving
    /// a run back (or a run no handler matches) a hot loop of claim → release; each release in a
    /// row now waits a little longer, and any other end resets the wait.
    async fn after_run(&self, end: RunEnd, release_backoff: &mut Backoff) {
        if end != RunEnd::Released {
            release_backoff.reset();
            return;
        }
        let delay = release_backoff.next_delay();
        tracing::debug!(
            pause_ms = delay.as_millis() as u64,
            "the run was released; pausing before the next claim"
        );
        // Shutdown cuts the pause short; the loop's head then exits.
        self.pause(delay, None).await;
    }

    /// Reacts to a failed call: identity problems wait for the session, the rest back off.
    /// Returns an exit when shutdown arrived meanwhile.
    async fn after_error(&self, err: &ApiError, backoff: &mut Backoff) -> Option<WorkerExit> {
        if err.kind.is_identity() {
            return self.wait_for_identity(err).await;
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "AGH call failed; backing off");
        self.status.set_state(WorkerState::BackingOff);
        if self.pause(delay, None).await {
            return Some(WorkerExit::Shutdown);
        }
        None
    }

    /// The session is stopped, unknown or mismatched: stop claiming, probe `me` slowly until it
    /// answers again. Never a tight loop, never an exit (systemd would only restart into the same state).
    async fn wait_for_identity(&self, first: &ApiError) -> Option<WorkerExit> {
        tracing::error!(error = %first, probe_every_s = self.settings.get().identity_probe.as_secs(), "identity rejected; not claiming until the session is active again");
        self.status.identity_rejected();
        loop {
            if self.pause(self.settings.get().identity_probe, None).await {
                return Some(WorkerExit::Shutdown);
            }
            match self.api.me().await {
                Ok(_) => {
                    self.status.identity_confirmed();
                    tracing::info!("identity accepted again; resuming");
                    return None;
                }
                Err(err) => {
                    if err.status.is_some() {
                        self.status.contact();
                    }
                    self.status.tick();
                    tracing::debug!(error = %err, "identity probe failed");
                }
            }
        }
    }

    /// Sleeps for `delay` (cut short by an idle deadline or a wake); answers true when shutdown
    /// began meanwhile.
    async fn pause(&self, delay: Duration, until: Option<Instant>) -> bool {
        let wake = match until {
            Some(deadline) => (Instant::now() + delay).min(deadline),
            None => Instant::now() + delay,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => self.shutdown.is_stopping(),
            _ = self.wake.woken() => self.shutdown.is_stopping(),
            _ = self.shutdown.stopping() => true,
        }
    }
}
