//! The claim loop: claim a run, hand its lease to [`lease`], repeat; recover orphaned leases,
//! back off from a failing daemon, wait out a stale identity, stop on shutdown, max runs or idleness.
//!
//! One run at a time: AGH allows one active lease per session, so more throughput means more
//! sessions, not more tasks here.

pub mod lease;
pub mod payload;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::types::{
    AgentContext, ChannelMessage, ClaimRequest, CompleteRequest, FailRequest, HeartbeatRequest,
    LeaseSummary, Me, ReleaseRequest,
};
use crate::api::{AghClient, ApiError, ClaimOutcome, ErrorKind};
use crate::config::{Config, OrphanPolicy};
use crate::handler::{HandlerEvent, TaskDocument};
use crate::util::backoff::Backoff;
use crate::util::time::sleep_until_option;

pub use crate::handler::health::{HandlerHealth, HandlerHealthReporter, UnhealthyHandler};
pub use crate::handler::{CANCEL_GRACE, Handlers};
pub use status::{
    CurrentRun, LeaseLostReason, RunEnd, RunHistograms, StatusBoard, WorkerState, WorkerStatus,
};

/// How often the loop shows it is alive while it waits on a long-poll.
pub const LOOP_TICK: Duration = Duration::from_secs(5);

/// The AGH calls the worker makes. The real client implements it; tests use an in-memory fake
/// so timer-heavy behaviour can run on paused tokio time.
pub trait AghApi: Send + Sync + 'static {
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send;
    fn context(&self) -> impl Future<Output = Result<AgentContext, ApiError>> + Send;
    fn claim_next(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<ClaimOutcome, ApiError>> + Send;
    fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
    fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send;
}

impl AghApi for AghClient {
    fn me(&self) -> impl Future<Output = Result<Me, ApiError>> + Send {
        AghClient::me(self)
    }
    fn context(&self) -> impl Future<Output = Result<AgentContext, ApiError>> + Send {
        AghClient::context(self)
    }
    fn claim_next(
        &self,
        request: &ClaimRequest,
    ) -> impl Future<Output = Result<ClaimOutcome, ApiError>> + Send {
        AghClient::claim_next(self, request)
    }
    fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::heartbeat(self, run_id, request)
    }
    fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::complete(self, run_id, request)
    }
    fn fail(
        &self,
        run_id: &str,
        request: &FailRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::fail(self, run_id, request)
    }
    fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> impl Future<Output = Result<LeaseSummary, ApiError>> + Send {
        AghClient::release(self, run_id, request)
    }
}

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

/// The two shutdown phases: stop taking work (drain), and stop now.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// First SIGTERM/SIGINT: no new claims; the run in hand may finish until the drain deadline.
    pub drain: CancellationToken,
    /// Second signal, SIGQUIT, or the drain deadline: cancel the run in hand and release it.
    pub force: CancellationToken,
}

impl Shutdown {
    /// Whether the loop must take no new work. A stop-now without a drain first (SIGQUIT) counts
    /// too: watching only `drain` let the loop claim again after a forced release, and every new
    /// run was cancelled and released at once, in a tight loop.
    pub fn is_stopping(&self) -> bool {
        self.drain.is_cancelled() || self.force.is_cancelled()
    }

    /// Resolves when either phase begins.
    pub async fn stopping(&self) {
        tokio::select! {
            _ = self.drain.cancelled() => {}
            _ = self.force.cancelled() => {}
        }
    }
}

/// The loop's settings, from the configuration and the command line.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub lease: Duration,
    pub heartbeat_every: Duration,
    pub claim_wait: bool,
    pub orphan_policy: OrphanPolicy,
    pub drain_timeout: Duration,
    /// Ceiling on any handler's time; `None` = only the bundle's limit applies.
    pub max_runtime: Option<Duration>,
    pub max_runs: Option<u64>,
    pub idle_exit: Option<Duration>,
    /// `--once`: one run, or one empty claim wait, then exit.
    pub once: bool,
    pub identity_probe: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a cancelled handler gets to return before it is abandoned.
    pub cancel_grace: Duration,
    /// Pause between claims when `claim_wait` is off and nothing was claimable.
    pub poll_interval: Duration,
    pub required_capabilities: Vec<String>,
    pub priority_min: Option<i64>,
}

impl WorkerSettings {
    /// Settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        let worker = &config.worker;
        WorkerSettings {
            lease: worker.lease(),
            heartbeat_every: worker.heartbeat_every(),
            claim_wait: worker.claim_wait,
            orphan_policy: worker.orphan_policy,
            drain_timeout: worker.drain_timeout(),
            max_runtime: worker.max_runtime(),
            max_runs: worker.max_runs(),
            idle_exit: worker.idle_exit(),
            once: false,
            identity_probe: worker.identity_probe(),
            initial_backoff: config.retry.initial_backoff(),
            max_backoff: config.retry.max_backoff(),
            cancel_grace: CANCEL_GRACE,
            poll_interval: Duration::from_secs(1),
            required_capabilities: worker.required_capabilities.clone(),
            priority_min: (worker.priority_min > 0).then_some(worker.priority_min as i64),
        }
    }

    /// The local safety margin: the handler is cancelled this long before the reckoned lease end.
    pub fn lease_margin(&self) -> Duration {
        (self.lease / 6).max(Duration::from_secs(1))
    }
}

/// The settings in force, replaceable while the worker runs (SIGHUP reload). The loop reads
/// them at each claim; a run keeps the settings it started with.
#[derive(Clone, Debug)]
pub struct SharedSettings {
    current: Arc<std::sync::RwLock<WorkerSettings>>,
}

impl SharedSettings {
    pub fn new(settings: WorkerSettings) -> Self {
        SharedSettings {
            current: Arc::new(std::sync::RwLock::new(settings)),
        }
    }

    /// A copy of the settings in force.
    pub fn get(&self) -> WorkerSettings {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the settings for what starts from now on.
    pub fn replace(&self, settings: WorkerSettings) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
    }
}

impl From<WorkerSettings> for SharedSettings {
    fn from(settings: WorkerSettings) -> Self {
        SharedSettings::new(settings)
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
pub struct Worker<A, H, E> {
    pub api: Arc<A>,
    pub handlers: Arc<H>,
    pub events: Arc<E>,
    pub settings: SharedSettings,
    pub status: StatusBoard,
    pub shutdown: Shutdown,
}

impl<A, H, E> std::fmt::Debug for Worker<A, H, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl<A: AghApi, H: Handlers, E: EventSink> Worker<A, H, E> {
    /// Runs until shutdown, max runs or idleness. Never returns while a lease is held.
    pub async fn run(&self) -> WorkerExit {
        let exit = self.run_loop().await;
        self.status.set_state(WorkerState::Stopped);
        exit
    }

    async fn run_loop(&self) -> WorkerExit {
        let mut settings = self.settings.get();
        let mut backoff =
            Backoff::new(settings.initial_backoff, settings.max_backoff).with_jitter(0.75, 1.25);
        // Grows with each run in a row that ended released (see `after_run`).
        let mut release_backoff =
            Backoff::new(settings.initial_backoff, settings.max_backoff).with_jitter(0.75, 1.25);
        let mut runs_done: u64 = 0;
        let mut idle_since = Instant::now();
        // Start-up: a previous process may have died holding a lease.
        let mut check_orphans = true;
        // 409 "active run lease exists" answers since the last claim that was not one.
        let mut held_conflicts: u32 = 0;
        // `--once` means one run: without this, a claimed run was followed by further claims and
        // only an empty claim ended the loop.
        let max_runs = if settings.once {
            Some(1)
        } else {
            settings.max_runs
        };
        // The loop stays visibly alive (health, systemd watchdog) while a long-poll is open. One
        // timer for the whole loop: an interval made per claim registered a new timer each time,
        // and a timer due before the runtime's next wake-up makes it wake a parked thread (an
        // eventfd write and a context switch), about a sixth of a no-op run's time.
        let mut alive = tokio::time::interval(LOOP_TICK);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A reload (SIGHUP) takes effect from the next claim on.
            settings = self.settings.get();
            if self.shutdown.is_stopping() {
                return WorkerExit::Shutdown;
            }
            if max_runs.is_some_and(|max| runs_done >= max) {
                return WorkerExit::MaxRuns;
            }
            if check_orphans {
                match self.recover_orphans().await {
                    Ok(recovered) => {
                        check_orphans = false;
                        if let Some(adopted) = recovered {
                            held_conflicts = 0;
                            // Only an adopted lease was a run this worker handled. Counting a
                            // released orphan too made `--once` / `--max-runs 1` exit right after
                            // giving the orphan back, without handling any run at all.
                            if let Some(end) = adopted {
                                runs_done += 1;
                                self.after_run(end, &mut release_backoff).await;
                            }
                            idle_since = Instant::now();
                            backoff.reset();
                            continue;
                        }
                    }
                    Err(err) => {
                        if let Some(exit) = self.after_error(&err, &mut backoff).await {
                            return exit;
                        }
                        continue;
                    }
                }
            }
            self.status.set_state(WorkerState::Idle);
            let idle_deadline = settings.idle_exit.map(|idle| idle_since + idle);
            if idle_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return WorkerExit::Idle;
            }
            let request = ClaimRequest {
                wait: settings.claim_wait,
                lease_seconds: Some(settings.lease.as_secs().max(1) as i64),
                required_capabilities: settings.required_capabilities.clone(),
                priority_min: settings.priority_min,
                workspace_id: None,
            };
            let claim_sent = Instant::now();
            let mut claim = Box::pin(self.api.claim_next(&request));
            let answer = loop {
                tokio::select! {
                    answer = &mut claim => break Some(answer),
                    _ = self.shutdown.stopping() => break None,
                    _ = sleep_until_option(idle_deadline) => break None,
                    _ = alive.tick() => self.status.tick(),
                }
            };
            // An abandoned claim must be gone before `me` is asked what it may have committed.
            drop(claim);
            let Some(answer) = answer else {
                // The open claim was abandoned; it may have committed at that instant.
                if let Err(err) = self
                    .release_anything_held("the worker stopped waiting for work")
                    .await
                {
                    tracing::warn!(error = %err, "could not check for a lease after abandoning a claim");
                }
                if self.shutdown.is_stopping() {
                    return WorkerExit::Shutdown;
                }
                return WorkerExit::Idle;
            };
            match answer {
                Ok(ClaimOutcome::Claimed(claim)) => {
                    held_conflicts = 0;
                    self.status.contact();
                    backoff.reset();
                    self.status.update(|s| {
                        s.counters.runs_claimed += 1;
                        s.identity_ok = true;
                    });
                    let end =
                        lease::run_lease(self, *claim, claim_sent, lease::Origin::Claimed).await;
                    runs_done += 1;
                    self.after_run(end, &mut release_backoff).await;
                    idle_since = Instant::now();
                }
                Ok(ClaimOutcome::NothingToDo) => {
                    held_conflicts = 0;
                    release_backoff.reset();
                    self.status.contact();
                    self.status.update(|s| s.identity_ok = true);
                    backoff.reset();
                    if settings.once {
                        return WorkerExit::Idle;
                    }
                    if !settings.claim_wait {
                        self.pause(settings.poll_interval, idle_deadline).await;
                    }
                }
                Ok(ClaimOutcome::DeadlineReached) => {
                    // The next claim doubles as the check for a claim lost at the deadline: if one
                    // committed, the daemon answers 409 "active run lease exists" at once.
                    held_conflicts = 0;
                    // The daemon accepted the claim and held it open for the whole wait, as it does
                    // when there is no work: count that as contact, or an idle worker in long polls
                    // would look unready (and stale) after one wait with nothing to do.
                    self.status.contact();
                    backoff.reset();
                    if settings.once {
                        if let Err(err) = self
                            .release_anything_held("the worker is exiting (--once)")
                            .await
                        {
                            tracing::warn!(error = %err, "could not check for a lease before exiting");
                        }
                        return WorkerExit::Idle;
                    }
                }
                Err(err) => {
                    self.status.update(|s| s.counters.claim_errors += 1);
                    if err.status.is_some() {
                        self.status.contact();
                    }
                    match err.kind {
                        ErrorKind::LeaseAlreadyHeld => {
                            tracing::warn!(
                                "the daemon says this session already holds a lease; recovering it"
                            );
                            check_orphans = true;
                            held_conflicts += 1;
                            // The first 409 is recovered at once through `me`. Another right after
                            // means `me` showed no lease to recover (a lagging read, or a lease the
                            // session holds in a form `me` does not list): without a pause the loop
                            // would spin claim → me → claim with no delay at all.
                            if held_conflicts > 1
                                && let Some(exit) = self.after_error(&err, &mut backoff).await
                            {
                                return exit;
                            }
                        }
                        ErrorKind::Transport | ErrorKind::MalformedBody | ErrorKind::Timeout => {
                            // The answer was lost: the claim may have committed without us seeing it.
                            check_orphans = true;
                            if let Some(exit) = self.after_error(&err, &mut backoff).await {
                                // Shutdown came during the backoff, before the check above could
                                // run: exiting straight away left such a claim to expire instead of
                                // giving it back.
                                if let Err(err) = self
                                    .release_anything_held("the worker is shutting down")
                                    .await
                                {
                                    tracing::warn!(error = %err, "could not check for a lease after a lost claim answer");
                                }
                                return exit;
                            }
                        }
                        _ => {
                            if let Some(exit) = self.after_error(&err, &mut backoff).await {
                                return exit;
                            }
                        }
                    }
                }
            }
        }
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
        self.status.update(|s| {
            s.identity_ok = false;
            s.state = WorkerState::IdentityStale;
        });
        loop {
            if self.pause(self.settings.get().identity_probe, None).await {
                return Some(WorkerExit::Shutdown);
            }
            match self.api.me().await {
                Ok(_) => {
                    self.status.contact();
                    self.status.update(|s| s.identity_ok = true);
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

    /// Finds a lease this session holds without a task owning it, and adopts or releases it per
    /// `orphan_policy`. Answers `None` when there was none, `Some(None)` when it was released,
    /// and `Some(Some(end))` when it was adopted and run to `end`.
    async fn recover_orphans(&self) -> Result<Option<Option<RunEnd>>, ApiError> {
        let me = self.api.me().await?;
        self.status.contact();
        self.status.update(|s| s.identity_ok = true);
        if let Some(limits) = &me.limits
            && limits.max_active_task_leases > 1
        {
            tracing::info!(
                max_active_task_leases = limits.max_active_task_leases,
                "the daemon allows several leases per session; this worker still runs one at a time"
            );
        }
        let Some(orphan) = me.active_task_leases.into_iter().next() else {
            return Ok(None);
        };
        if orphan.run_id.is_empty() {
            return Ok(None);
        }
        match self.settings.get().orphan_policy {
            OrphanPolicy::Release => {
                tracing::warn!(run_id = %orphan.run_id, "releasing a lease this session held without a worker on it");
                let request = ReleaseRequest {
                    reason: Some(
                        "agh-worker: orphaned lease released (worker.orphan_policy = release)"
                            .into(),
                    ),
                };
                match self.api.release(&orphan.run_id, &request).await {
                    Ok(_) => self.status.run_ended(RunEnd::Released),
                    Err(err) if err.kind.is_lease_lost() || err.kind == ErrorKind::Conflict => {
                        tracing::info!(run_id = %orphan.run_id, error = %err, "the orphaned lease had already ended");
                    }
                    Err(err) => return Err(err),
                }
                Ok(Some(None))
            }
            OrphanPolicy::Adopt => {
                tracing::warn!(run_id = %orphan.run_id, "adopting a lease this session held without a worker on it");
                let claim = lease::claim_from_orphan(self.api.as_ref(), orphan).await;
                self.status.update(|s| s.counters.runs_adopted += 1);
                let end =
                    lease::run_lease(self, claim, Instant::now(), lease::Origin::Adopted).await;
                Ok(Some(Some(end)))
            }
        }
    }

    /// Releases whatever lease the session holds (used when the loop stops with a claim open).
    async fn release_anything_held(&self, reason: &str) -> Result<(), ApiError> {
        let me = self.api.me().await?;
        for lease in me.active_task_leases {
            if lease.run_id.is_empty() {
                continue;
            }
            tracing::warn!(run_id = %lease.run_id, "a claim committed as the worker stopped waiting; releasing it");
            let request = ReleaseRequest {
                reason: Some(format!("agh-worker: {reason}")),
            };
            match self.api.release(&lease.run_id, &request).await {
                Ok(_) => self.status.run_ended(RunEnd::Released),
                Err(err) if err.kind.is_lease_lost() => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Sleeps for `delay` (cut short by an idle deadline); answers true when shutdown began meanwhile.
    async fn pause(&self, delay: Duration, until: Option<Instant>) -> bool {
        let wake = match until {
            Some(deadline) => (Instant::now() + delay).min(deadline),
            None => Instant::now() + delay,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => self.shutdown.is_stopping(),
            _ = self.shutdown.stopping() => true,
        }
    }
}
