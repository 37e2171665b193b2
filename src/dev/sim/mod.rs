//! The AGH simulator: an in-memory, AGH-compatible agent API server for tests, benchmarks and the
//! demo, with a controllable clock, fault injection and a ledger of lease invariants.
//!
//! The default session (created when [`SimConfig::create_default_session`] is set) is agent
//! `worker` in workspace `ws-default` **without** a network channel, so it can claim every
//! workspace run of `ws-default` (channel-bound sessions only claim runs of their own channel).
//! Create sessions with a channel via [`Simulator::create_session`] to exercise send/reply.
//!
//! Besides the agent API, every server answers an admin surface (no identity headers), JSON in
//! and out, mirroring the Rust API so scripts and other processes can drive it:
//! `GET /sim/session` (the default session), `POST /sim/sessions` ([`SessionSpec`]),
//! `POST /sim/sessions/{id}/state` (`{"state":"stopped"}`), `POST /sim/sessions/{id}/dequeue`,
//! `POST /sim/tasks` ([`TaskSpec`]), `POST /sim/tasks/{id}/runs`, `POST /sim/messages`
//! ([`MessageSpec`] plus `to_session_id`), `POST /sim/faults`
//! (`{"route":"claim_next","kind":{"type":"status","status":500,"error":"boom"},"times":1}`;
//! kinds `status`, `delay` (`millis`), `drop_after_commit`, `garbage`, `truncated`, `oversize`
//! (`bytes`)), `DELETE /sim/faults`, `POST /sim/clock/advance` (`{"seconds":…}` or
//! `{"millis":…}`), `POST /sim/runs/{id}/expire`, `POST /sim/sweep`, `POST /sim/reap`,
//! `POST /sim/souls/{agent}` (`{"body":…|null}`), `GET /sim/ledger`, `GET /sim/runs/{id}`,
//! `POST /sim/spawn-delay` (`{"seconds":…}` or `{"millis":…}`: how long each spawn takes).
//!
//! Beyond the agent API it serves what a worker reads of AGH's operator API: `GET /api/sessions`
//! (no identity read, as in AGH) and `GET /api/task-runs/{id}`. A spawn whose answer is lost after
//! the child was made is the `drop_after_commit` fault on route `spawn`.
//! `POST /sim/tasks/{id}/cancel|pause|resume` (`{"reason":…}`; AGH's own
//! `POST /api/tasks/{id}/…` routes are served too) and `POST /sim/tasks/{id}/streams/drop`.

pub mod acp;
mod admin;
mod clock;
mod errors;
mod faults;
mod http;
mod ledger;
mod requests;
mod server;
mod state;
mod task_stream;
mod types;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::util::sync::lock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use clock::Timestamp;
pub use faults::{Fault, FaultKind, Route};
pub use ledger::{LedgerSnapshot, RequestCount, TransitionEvent, TransitionKind, Violation};
pub use server::SimServer;
pub use state::StreamOpen;
pub use types::{
    DEFAULT_AGENT, DEFAULT_WORKSPACE, EnqueuedRun, MessageSpec, PermissionPolicy, Priority,
    RunSnapshot, SessionInfo, SessionSpec, SessionState, SpawnBudget, TaskScope, TaskSpec,
};

use clock::SimClock;
use errors::SimError;
use faults::FaultTable;
use state::{SimState, StateConfig};

/// Simulator settings; the defaults match the real daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// How often a `claim-next` with `wait: true` re-checks for work.
    pub poll_interval: Duration,
    /// How often expired leases are swept back to the queue.
    pub sweep_interval: Duration,
    /// Lease given when a claim or heartbeat asks for 0 / nothing.
    pub default_lease: Duration,
    /// Pending-delivery queue bound per session; the oldest message is dropped beyond it.
    pub max_queue_depth: usize,
    /// Create the `worker` session in `ws-default` at start.
    pub create_default_session: bool,
    /// How often the spawn reaper stops children past their TTL or without a live parent.
    pub reap_interval: Duration,
    /// How long a spawn takes before the child exists: AGH starts the child's agent process and
    /// its ACP handshake inside the request. A client that gives up first makes no child.
    /// Changed at run time with [`Simulator::set_spawn_delay`] or `POST /sim/spawn-delay`.
    pub spawn_delay: Duration,
    /// Wake idle sessions of the provider's agents about queued runs they could claim, at
    /// enqueue and on every tick, as AGH's scheduler does. Off: only `wake_agent` sends one.
    pub wake_idle_sessions: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            poll_interval: Duration::from_millis(100),
            sweep_interval: Duration::from_secs(15),
            default_lease: Duration::from_secs(300),
            max_queue_depth: 100,
            create_default_session: true,
            reap_interval: Duration::from_secs(5),
            spawn_delay: Duration::ZERO,
            wake_idle_sessions: true,
        }
    }
}

pub(crate) struct Inner {
    config: SimConfig,
    clock: SimClock,
    state: Mutex<SimState>,
    faults: Mutex<FaultTable>,
    /// Woken whenever a message lands in any queue, so `recv?wait=true` can re-check.
    messages: Notify,
    background: CancellationToken,
    background_started: AtomicBool,
    default_session: Option<SessionInfo>,
    /// Requests currently blocked in a `claim-next` wait or a `recv` wait.
    claim_waiters: AtomicUsize,
    recv_waiters: AtomicUsize,
    /// Task streams being served.
    open_streams: AtomicUsize,
    waiters_changed: Notify,
    /// Background sweeps completed, so tests can wait for one without sleeping.
    background_sweeps: AtomicU64,
    background_sweep_done: Notify,
    spawn_delay: Mutex<Duration>,
    /// Sessions whose agent process the simulator launched (see [`acp`]).
    agents: acp::AgentSessions,
    /// Woken after every agent API request is answered, so tests can wait on the outcome.
    requests_seen: Notify,
}

impl Inner {
    pub(crate) fn spawn_delay(&self) -> Duration {
        *lock(&self.spawn_delay)
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SimState> {
        lock(&self.state)
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, FaultTable> {
        lock(&self.faults)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn waiter_count(&self, route: Route) -> Option<&AtomicUsize> {
        match route {
            Route::ClaimNext => Some(&self.claim_waiters),
            Route::ChannelRecv => Some(&self.recv_waiters),
            Route::TaskStream => Some(&self.open_streams),
            _ => None,
        }
    }

    /// Counts a request as blocked in a long poll (or a task stream as open) until the guard
    /// is dropped.
    pub(crate) fn waiter(self: &Arc<Self>, route: Route) -> WaiterGuard {
        if let Some(count) = self.waiter_count(route) {
            count.fetch_add(1, Ordering::SeqCst);
            self.waiters_changed.notify_waiters();
        }
        WaiterGuard {
            inner: self.clone(),
            route,
        }
    }
}

pub(crate) struct WaiterGuard {
    inner: Arc<Inner>,
    route: Route,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(count) = self.inner.waiter_count(self.route) {
            count.fetch_sub(1, Ordering::SeqCst);
            self.inner.waiters_changed.notify_waiters();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.background.cancel();
    }
}

/// A handle on one simulated AGH daemon; clones share the same state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Simulator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    pub fn new(config: SimConfig) -> Simulator {
        let clock = SimClock::default();
        let mut state = SimState::new(StateConfig {
            default_lease: config.default_lease,
            max_queue_depth: config.max_queue_depth,
        });
        let default_session = config.create_default_session.then(|| {
            state.create_session(
                SessionSpec::for_agent(DEFAULT_AGENT, Some(DEFAULT_WORKSPACE)),
                clock.now(),
            )
        });
        let spawn_delay = config.spawn_delay;
        Simulator {
            inner: Arc::new(Inner {
                config,
                clock,
                state: Mutex::new(state),
                faults: Mutex::new(FaultTable::default()),
                messages: Notify::new(),
                background: CancellationToken::new(),
                background_started: AtomicBool::new(false),
                default_session,
                claim_waiters: AtomicUsize::new(0),
                recv_waiters: AtomicUsize::new(0),
                open_streams: AtomicUsize::new(0),
                waiters_changed: Notify::new(),
                background_sweeps: AtomicU64::new(0),
                background_sweep_done: Notify::new(),
                spawn_delay: Mutex::new(spawn_delay),
                agents: acp::AgentSessions::default(),
                requests_seen: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Serves the agent API and the `/sim/…` admin surface over TCP (`addr` may use port 0).
    pub async fn serve_tcp(&self, addr: SocketAddr) -> std::io::Result<SimServer> {
        self.start_background();
        SimServer::start_tcp(self.inner.clone(), addr).await
    }

    /// Serves over a Unix socket: removes a stale socket file, listens, chmods it 0600.
    pub async fn serve_unix(&self, path: &Path) -> std::io::Result<SimServer> {
        self.start_background();
        SimServer::start_unix(self.inner.clone(), path.to_path_buf()).await
    }

    pub fn default_session(&self) -> Option<SessionInfo> {
        self.inner.default_session.clone()
    }

    pub fn create_session(&self, spec: SessionSpec) -> SessionInfo {
        let now = self.inner.now();
        self.inner.state().create_session(spec, now)
    }

    pub fn session(&self, session_id: &str) -> Option<SessionInfo> {
        self.inner.state().session_info(session_id)
    }

    /// Stops or restarts a session; a non-active session's identity is stale (401).
    pub fn set_session_state(&self, session_id: &str, state: SessionState) -> bool {
        let now = self.inner.now();
        self.inner.state().set_session_state(session_id, state, now)
    }

    /// Enqueues a task and its first run; a pool-owned run may start a session, and an idle
    /// agent session may be woken about it (see [`acp`]).
    pub fn enqueue_task(&self, spec: TaskSpec) -> EnqueuedRun {
        let now = self.inner.now();
        let run = self.inner.state().enqueue_task(spec, now);
        acp::schedule(&self.inner);
        run
    }

    /// Enqueues a new attempt of an existing task; `None` if unknown or attempts are exhausted.
    pub fn enqueue_run(&self, task_id: &str) -> Option<EnqueuedRun> {
        let now = self.inner.now();
        let run = self.inner.state().enqueue_run(task_id, now);
        acp::schedule(&self.inner);
        run
    }

    /// Places a message in a session's pending-delivery queue; returns its message id.
    pub fn inject_message(&self, to_session_id: &str, spec: MessageSpec) -> String {
        let now = self.inner.now();
        let id = self.inner.state().inject_message(to_session_id, spec, now);
        self.inner.messages.notify_waiters();
        id
    }

    /// The daemon delivering a session's queue to its agent turn: the messages leave the queue.
    pub fn dequeue_messages(&self, session_id: &str) -> usize {
        self.inner.state().dequeue_messages(session_id)
    }

    pub fn inject_fault(&self, fault: Fault) {
        self.inner.faults().add(fault);
    }

    pub fn clear_faults(&self) {
        self.inner.faults().clear();
    }

    /// Every session as `GET /api/sessions` lists it (`{"sessions":[…]}`, each with its
    /// `lineage`).
    pub fn sessions_listed(&self) -> serde_json::Value {
        self.inner.state().sessions_list()
    }

    /// How long each spawn takes from now on (see [`SimConfig::spawn_delay`]).
    pub fn set_spawn_delay(&self, delay: Duration) {
        *lock(&self.inner.spawn_delay) = delay;
    }

    /// Moves the simulator's "now" forward (leases, TTLs and timestamps follow it).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// Ends a claimed run's lease now, without sweeping it.
    pub fn expire_lease(&self, run_id: &str) -> bool {
        let now = self.inner.now();
        self.inner.state().expire_lease(run_id, now)
    }

    /// Runs the expired-lease sweep now; returns how many runs were requeued.
    pub fn sweep_now(&self) -> usize {
        let now = self.inner.now();
        self.inner.state().sweep(now)
    }

    /// An operator's `cancel`, `pause` or `resume` of a task, as `POST /api/tasks/{id}/…`
    /// does it (a pause needs a reason); answers `{"task": …}`.
    pub(crate) fn operate(
        &self,
        task_id: &str,
        action: &str,
        reason: Option<&str>,
    ) -> Result<serde_json::Value, SimError> {
        let now = self.inner.now();
        let mut state = self.inner.state();
        match action {
            "cancel" => state.cancel_task(task_id, reason, now),
            "pause" => state.pause_task(task_id, reason.unwrap_or(""), now),
            _ => state.resume_task(task_id, now),
        }
    }

    /// Cancels a task and its open runs, as an operator would; `false` if unknown or ended.
    pub fn cancel_task(&self, task_id: &str, reason: Option<&str>) -> bool {
        self.operate(task_id, "cancel", reason).is_ok()
    }

    /// Pauses a task (no new claims of its runs); `false` if unknown or ended.
    pub fn pause_task(&self, task_id: &str, reason: &str) -> bool {
        self.operate(task_id, "pause", Some(reason)).is_ok()
    }

    /// Lifts a task's pause; `false` if unknown.
    pub fn resume_task(&self, task_id: &str) -> bool {
        self.operate(task_id, "resume", None).is_ok()
    }

    /// Ends every open stream of a task, as AGH does to a subscriber whose buffer fills.
    pub fn drop_task_streams(&self, task_id: &str) -> usize {
        self.inner.state().drop_task_streams(task_id)
    }

    /// The task streams asked for most recently (up to a thousand), with their cursors, oldest
    /// first.
    pub fn stream_opens(&self) -> Vec<StreamOpen> {
        self.inner.state().stream_opens()
    }

    /// Runs the spawn reaper now; returns how many child sessions were stopped.
    pub fn reap_now(&self) -> usize {
        let now = self.inner.now();
        self.inner.state().reap_spawned(now)
    }

    /// Sets (or with `None` removes) the SOUL.md body of an agent.
    pub fn set_soul(&self, agent_name: &str, body: Option<String>) {
        self.inner.state().set_soul(agent_name, body);
    }

    /// How many requests are blocked in a long poll of `route` (`ClaimNext` or `ChannelRecv`),
    /// or how many task streams are open (`TaskStream`).
    pub fn waiters(&self, route: Route) -> usize {
        self.inner
            .waiter_count(route)
            .map_or(0, |count| count.load(Ordering::SeqCst))
    }

    /// Resolves once at least `count` requests are blocked in a long poll of `route`, so tests
    /// can act "while the client waits" without sleeping.
    pub async fn wait_for_waiters(&self, route: Route, count: usize) {
        loop {
            let changed = self.inner.waiters_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.waiters(route) >= count {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once `ready` holds, checked now and after every agent API request; answers
    /// false when `within` passed first. Tests wait on what a worker did without sleeping.
    pub async fn wait_until(
        &self,
        within: Duration,
        mut ready: impl FnMut(&Simulator) -> bool,
    ) -> bool {
        let check = async {
            loop {
                let seen = self.inner.requests_seen.notified();
                tokio::pin!(seen);
                seen.as_mut().enable();
                if ready(self) {
                    return;
                }
                seen.await;
            }
        };
        tokio::time::timeout(within, check).await.is_ok()
    }

    /// Resolves after `count` more background sweeps (every `sweep_interval`) have completed.
    /// Only meaningful once the simulator is being served (the sweeper starts with serving).
    pub async fn wait_for_background_sweeps(&self, count: u64) {
        let target = self.inner.background_sweeps.load(Ordering::SeqCst) + count;
        loop {
            let done = self.inner.background_sweep_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.inner.background_sweeps.load(Ordering::SeqCst) >= target {
                return;
            }
            done.await;
        }
    }

    pub fn ledger(&self) -> LedgerSnapshot {
        let state = self.inner.state();
        state.ledger.snapshot(state.runs_by_status())
    }

    pub fn run(&self, run_id: &str) -> Option<RunSnapshot> {
        self.inner.state().run_snapshot(run_id)
    }

    fn start_background(&self) {
        if self.inner.background_started.swap(true, Ordering::SeqCst) {
            return;
        }
        // The boot sweep happens here, before serving, like the daemon's `orphaned_on_boot`
        // pass; the periodic ones start one interval later. (A first sweep left to the spawned
        // task raced with the first requests: it could requeue a lease a test had just expired.)
        {
            let now = self.inner.now();
            self.inner.state().sweep(now);
        }
        let token = self.inner.background.clone();
        spawn_periodic(
            Arc::downgrade(&self.inner),
            token.clone(),
            self.inner.config.sweep_interval,
            |inner| {
                let now = inner.now();
                inner.state().sweep(now);
                inner.background_sweeps.fetch_add(1, Ordering::SeqCst);
                inner.background_sweep_done.notify_waiters();
            },
        );
        spawn_periodic(
            Arc::downgrade(&self.inner),
            token.clone(),
            self.inner.config.reap_interval,
            |inner| {
                let now = inner.now();
                inner.state().reap_spawned(now);
            },
        );
        // Runs requeued by a sweep, a release or an expiry call for sessions and wakes too.
        spawn_periodic(
            Arc::downgrade(&self.inner),
            token,
            self.inner.config.poll_interval,
            acp::schedule,
        );
    }
}

/// Runs `tick` every `period` until the token is cancelled or the simulator is dropped.
fn spawn_periodic(
    inner: Weak<Inner>,
    stop: CancellationToken,
    period: Duration,
    tick: fn(&Arc<Inner>),
) {
    let period = period.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            tick(&inner);
        }
    });
}

/// Serves a simulator until `shutdown` resolves. Prints one JSON line to stdout at start:
/// `{"listen":…,"socket":…,"session_id":…,"agent":…,"workspace_id":…}`.
pub async fn run_standalone(
    listen: Option<SocketAddr>,
    socket: Option<PathBuf>,
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let simulator = Simulator::new(config);
    let tcp = match listen {
        Some(addr) => Some(simulator.serve_tcp(addr).await?),
        None => None,
    };
    let unix = match &socket {
        Some(path) => Some(simulator.serve_unix(path).await?),
        None => None,
    };
    let session = simulator.default_session();
    let line = serde_json::json!({
        "listen": tcp.as_ref().and_then(SimServer::local_addr).map(|addr| addr.to_string()),
        "socket": socket.as_ref().map(|path| path.display().to_string()),
        "session_id": session.as_ref().map(|s| s.session_id.clone()),
        "agent": session.as_ref().map(|s| s.agent_name.clone()),
        "workspace_id": session.as_ref().and_then(|s| s.workspace_id.clone()),
    });
    println!("{line}");
    shutdown.await;
    if let Some(server) = tcp {
        server.shutdown().await;
    }
    if let Some(server) = unix {
        server.shutdown().await;
    }
    Ok(())
}
