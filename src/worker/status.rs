//! The worker's live state as others read it: health, readiness, `/status`, `/metrics`, the
//! demo's progress. It is written only through the [`StatusBoard`]'s named methods, one per
//! fact (a claim, a renewal, a message sent, a child spawned…), so each fact is recorded in one
//! place: the claim loop and lease tasks, the listener, the outbox and the spawner call them and
//! never touch the state itself. Handlers write one part, their own health record
//! ([`HandlerHealth`]), and read nothing back.

use crate::handler::health::{HandlerHealth, UnhealthyHandler};
use crate::util::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

// tokio's clock, so paused-time tests see the loop's ticks move with tokio time.
use tokio::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use super::counters::Counters;

/// What the loop is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Starting,
    /// Waiting for a run (a claim is open or about to be).
    Idle,
    /// A run is in hand.
    Running,
    /// The daemon failed; waiting out a backoff.
    BackingOff,
    /// The session is stopped or unknown; probing slowly until it is active again.
    IdentityStale,
    /// Shutting down: no new claims, the run in hand drains.
    Draining,
    Stopped,
}

/// The run in hand.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CurrentRun {
    pub run_id: String,
    pub task_id: String,
    pub attempt: i64,
    pub handler: String,
    #[serde(with = "unix_seconds")]
    pub started_at: SystemTime,
    /// When the lease ends unless renewed, as the worker reckons it (conservatively).
    #[serde(with = "unix_seconds")]
    pub lease_deadline: SystemTime,
    /// While the task is paused (no new claims; this run goes on): the operator's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_paused: Option<String>,
}

/// A child session this worker created and that has not reached its TTL.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChildSession {
    pub session_id: String,
    pub agent_name: String,
    /// The run whose handler asked for it.
    pub run_id: String,
    #[serde(with = "unix_seconds")]
    pub ttl_expires_at: SystemTime,
}

/// How runs ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    Completed,
    Failed,
    Released,
    /// The lease was lost (expired, taken, session gone): no terminal call took effect.
    LeaseLost,
    /// The terminal call could not be delivered within its budget.
    TerminalCallFailed,
    /// An operator cancelled the run (the task stream said so): the handler was stopped and no
    /// terminal call made.
    Canceled,
}

/// A run that ended, as `/status` lists the most recent ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndedRun {
    pub run_id: String,
    pub task_id: String,
    pub end: RunEnd,
    #[serde(with = "unix_seconds")]
    pub ended_at: SystemTime,
    /// The operator's reason when the task was paused as the run ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_paused: Option<String>,
}

/// How many ended runs `/status` lists.
const RECENT_RUNS: usize = 16;

/// Why a lease was lost, for the per-reason counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseLostReason {
    /// The daemon answered that the lease was no longer ours (expired, not held, session gone).
    Rejected,
    /// Renewals kept failing and the reckoned lease end came within the safety margin.
    Deadline,
}

/// Claim-to-start latency and handler duration histograms, observed as each run records them so
/// a scrape sees every run (the sample rings in [`WorkerStatus`] keep only the most recent).
#[derive(Clone, Debug)]
pub struct RunHistograms {
    /// Claim answer → handler start, in seconds.
    pub start_latency: Histogram,
    /// Handler start → handler return, in seconds.
    pub handler_duration: Histogram,
}

/// Bucket bounds of [`RunHistograms::start_latency`], in seconds: 100 µs to 10 s.
pub const START_LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// Bucket bounds of [`RunHistograms::handler_duration`], in seconds: 10 ms to 1 h.
pub const HANDLER_DURATION_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

impl Default for RunHistograms {
    fn default() -> Self {
        RunHistograms {
            start_latency: Histogram::new(START_LATENCY_BUCKETS),
            handler_duration: Histogram::new(HANDLER_DURATION_BUCKETS),
        }
    }
}

/// A snapshot of the worker's state.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStatus {
    pub state: WorkerState,
    pub identity_ok: bool,
    pub current: Option<CurrentRun>,
    #[serde(with = "unix_seconds_option")]
    pub last_contact: Option<SystemTime>,
    pub counters: Counters,
    /// The most recent runs that ended, oldest first.
    pub recent_runs: VecDeque<EndedRun>,
    /// Live child sessions (from the board's ledger, which the spawner writes).
    pub children: Vec<ChildSession>,
    #[serde(skip)]
    pub last_tick: Instant,
    #[serde(skip)]
    pub last_contact_instant: Option<Instant>,
    /// Claim-answer → handler-start latencies of the most recent runs, in microseconds.
    #[serde(skip)]
    pub start_latencies_us: VecDeque<u64>,
    /// Handler durations of the most recent runs, in milliseconds.
    #[serde(skip)]
    pub handler_durations_ms: VecDeque<u64>,
    /// Handlers that cannot work until a person acts, by name, copied from the
    /// [`HandlerHealth`] record when the snapshot is taken. `/status` shows them through its
    /// readiness part, with their age.
    #[serde(skip)]
    pub unhealthy_handlers: Vec<UnhealthyHandler>,
}

const LATENCY_SAMPLES: usize = 4096;

/// Shared, cheaply cloned handle on the status.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    inner: Arc<Mutex<WorkerStatus>>,
    histograms: RunHistograms,
    handler_health: HandlerHealth,
    /// The child sessions this worker created, with when each reaches its TTL: kept here once;
    /// the spawner counts them against the budget, `/status` lists them.
    children: Arc<Mutex<Vec<(ChildSession, Instant)>>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            inner: Arc::new(Mutex::new(WorkerStatus {
                state: WorkerState::Starting,
                identity_ok: false,
                current: None,
                last_contact: None,
                counters: Counters::default(),
                recent_runs: VecDeque::new(),
                children: Vec::new(),
                last_tick: Instant::now(),
                last_contact_instant: None,
                start_latencies_us: VecDeque::new(),
                handler_durations_ms: VecDeque::new(),
                unhealthy_handlers: Vec::new(),
            })),
            histograms: RunHistograms::default(),
            handler_health: HandlerHealth::default(),
            children: Arc::default(),
        }
    }
}

impl StatusBoard {
    /// A fresh board whose run histograms are `histograms` (shared: a resident worker's slots
    /// observe into one pair, which `/metrics` shows).
    pub fn with_histograms(histograms: RunHistograms) -> Self {
        StatusBoard {
            histograms,
            ..StatusBoard::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, WorkerStatus> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        lock(&self.inner)
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> WorkerStatus {
        let mut snapshot = self.lock().clone();
        snapshot.children = self.live_children();
        snapshot.unhealthy_handlers = self.handler_health.unhealthy();
        snapshot
    }

    /// The handlers' health record (shared: the handler table writes into the same one).
    pub fn handler_health(&self) -> &HandlerHealth {
        &self.handler_health
    }

    /// Applies a change. Private: every fact has its method below, so each is written in one place.
    fn update(&self, change: impl FnOnce(&mut WorkerStatus)) {
        change(&mut self.lock());
    }

    /// The daemon accepted the identity (any successful call as the session).
    pub fn identity_confirmed(&self) {
        self.contact();
        self.update(|s| s.identity_ok = true);
    }

    /// The daemon refused the identity: no claims until it is accepted again.
    pub fn identity_rejected(&self) {
        self.update(|s| {
            s.identity_ok = false;
            s.state = WorkerState::IdentityStale;
            s.last_tick = Instant::now();
        });
    }

    /// A claim answered with a run.
    pub fn run_claimed(&self) {
        self.identity_confirmed();
        self.update(|s| s.counters.runs_claimed += 1);
    }

    /// An orphaned lease was adopted.
    pub fn run_adopted(&self) {
        self.update(|s| s.counters.runs_adopted += 1);
    }

    /// A claim failed; `answered` when the daemon answered it (it is reachable).
    pub fn claim_failed(&self, answered: bool) {
        if answered {
            self.contact();
        }
        self.update(|s| s.counters.claim_errors += 1);
    }

    /// A run is in hand.
    pub fn run_started(&self, run: CurrentRun) {
        self.update(|s| {
            s.state = WorkerState::Running;
            s.current = Some(run);
            s.last_tick = Instant::now();
        });
    }

    /// The task of the run `run_id` was paused (`Some(reason)`) or resumed (`None`).
    pub fn task_paused(&self, run_id: &str, reason: Option<String>) {
        self.update(|s| {
            if let Some(current) = s.current.as_mut().filter(|c| c.run_id == run_id) {
                current.task_paused = reason;
            }
        });
    }

    /// The handler chosen for the run `run_id`.
    pub fn run_handler(&self, run_id: &str, handler: &str) {
        self.update(|s| {
            if let Some(current) = s.current.as_mut().filter(|c| c.run_id == run_id) {
                current.handler = handler.to_string();
            }
        });
    }

    /// A renewal moved the lease deadline of `run_id`.
    pub fn lease_deadline(&self, run_id: &str, deadline: SystemTime) {
        self.update(|s| {
            if let Some(current) = s.current.as_mut().filter(|c| c.run_id == run_id) {
                current.lease_deadline = deadline;
            }
        });
    }

    /// A heartbeat renewed the lease.
    pub fn heartbeat_ok(&self) {
        self.contact();
        self.update(|s| s.counters.heartbeats_ok += 1);
    }

    /// A heartbeat failed; `answered` when the daemon answered it (else the keeper is still alive
    /// and retrying, which `/healthz` must not call wedged).
    pub fn heartbeat_failed(&self, answered: bool) {
        if answered {
            self.contact();
        } else {
            self.tick();
        }
        self.update(|s| s.counters.heartbeats_failed += 1);
    }

    /// A channel message was handed to a run.
    pub fn message_received(&self) {
        self.update(|s| s.counters.messages_received += 1);
    }

    /// A message or reply was sent for a handler.
    pub fn message_sent(&self) {
        self.update(|s| s.counters.messages_sent += 1);
    }

    /// A message or reply for a handler could not be sent.
    pub fn message_send_failed(&self) {
        self.update(|s| s.counters.message_send_failures += 1);
    }

    /// A child session was created; it counts as live until its TTL passes.
    pub fn child_spawned(&self, child: ChildSession, expires_at: Instant) {
        self.update(|s| s.counters.spawns_created += 1);
        lock(&self.children).push((child, expires_at));
    }

    /// A spawn was refused, locally or by the daemon.
    pub fn spawn_refused(&self) {
        self.update(|s| s.counters.spawns_refused += 1);
    }

    /// Child sessions whose TTL has not passed.
    pub fn live_children(&self) -> Vec<ChildSession> {
        let now = Instant::now();
        let mut children = lock(&self.children);
        children.retain(|(_, expires_at)| *expires_at > now);
        children.iter().map(|(child, _)| child.clone()).collect()
    }

    /// Sets the state and ticks.
    pub fn set_state(&self, state: WorkerState) {
        self.update(|s| {
            s.state = state;
            s.last_tick = Instant::now();
        });
    }

    /// The loop is alive.
    pub fn tick(&self) {
        self.update(|s| s.last_tick = Instant::now());
    }

    /// The daemon answered (any HTTP answer counts: it is reachable).
    pub fn contact(&self) {
        self.update(|s| {
            s.last_contact = Some(SystemTime::now());
            s.last_contact_instant = Some(Instant::now());
            s.last_tick = Instant::now();
        });
    }

    /// The histograms the metrics endpoint exports (shared: clones observe into the same ones).
    pub fn histograms(&self) -> &RunHistograms {
        &self.histograms
    }

    /// Records a claim-to-start latency.
    pub fn record_start_latency(&self, latency: Duration) {
        self.histograms.start_latency.observe(latency.as_secs_f64());
        self.update(|s| {
            if s.start_latencies_us.len() == LATENCY_SAMPLES {
                s.start_latencies_us.pop_front();
            }
            s.start_latencies_us.push_back(latency.as_micros() as u64);
        });
    }

    /// Records how long a handler ran.
    pub fn record_handler_duration(&self, duration: Duration) {
        self.histograms
            .handler_duration
            .observe(duration.as_secs_f64());
        self.update(|s| {
            if s.handler_durations_ms.len() == LATENCY_SAMPLES {
                s.handler_durations_ms.pop_front();
            }
            s.handler_durations_ms
                .push_back(duration.as_millis() as u64);
        });
    }

    /// Counts why a lease was lost; the run itself is counted by [`StatusBoard::run_ended`].
    pub fn lease_lost(&self, reason: LeaseLostReason) {
        self.update(|s| match reason {
            LeaseLostReason::Rejected => s.counters.leases_lost_rejected += 1,
            LeaseLostReason::Deadline => s.counters.leases_lost_deadline += 1,
        });
    }

    /// Counts a finished run.
    pub fn run_ended(&self, end: RunEnd) {
        self.update(|s| {
            match end {
                RunEnd::Completed => s.counters.runs_completed += 1,
                RunEnd::Failed => s.counters.runs_failed += 1,
                RunEnd::Released => s.counters.runs_released += 1,
                RunEnd::LeaseLost => s.counters.leases_lost += 1,
                RunEnd::TerminalCallFailed => s.counters.terminal_call_failures += 1,
                RunEnd::Canceled => s.counters.runs_canceled += 1,
            }
            if let Some(run) = s.current.take() {
                if s.recent_runs.len() == RECENT_RUNS {
                    s.recent_runs.pop_front();
                }
                s.recent_runs.push_back(EndedRun {
                    run_id: run.run_id,
                    task_id: run.task_id,
                    end,
                    ended_at: SystemTime::now(),
                    task_paused: run.task_paused,
                });
            }
            s.last_tick = Instant::now();
        });
    }
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let seconds = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        serializer.serialize_f64(seconds)
    }
}

mod unix_seconds_option {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(
        time: &Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::unix_seconds::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_latencies_feed_the_histograms_and_the_rings() {
        let board = StatusBoard::default();
        board.record_start_latency(Duration::from_millis(2));
        board.record_handler_duration(Duration::from_secs(3));
        board.record_handler_duration(Duration::from_secs(5));
        // A clone observes into the same histograms: that is how the health server reads them.
        let clone = board.clone();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("start", "", clone.histograms().start_latency.clone());
        registry.register("handler", "", clone.histograms().handler_duration.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        for line in ["start_count 1", "handler_count 2", "handler_sum 8.0"] {
            assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
        }
        let snapshot = board.snapshot();
        assert_eq!(snapshot.start_latencies_us, VecDeque::from([2_000]));
        assert_eq!(
            snapshot.handler_durations_ms,
            VecDeque::from([3_000, 5_000])
        );
    }

    #[test]
    fn lost_leases_are_counted_by_reason_apart_from_the_run_end() {
        let board = StatusBoard::default();
        board.lease_lost(LeaseLostReason::Rejected);
        board.lease_lost(LeaseLostReason::Deadline);
        board.lease_lost(LeaseLostReason::Deadline);
        let counters = board.snapshot().counters;
        assert_eq!(counters.leases_lost_rejected, 1);
        assert_eq!(counters.leases_lost_deadline, 2);
        assert_eq!(counters.leases_lost, 0, "run_ended counts the run itself");
    }

    #[test]
    fn the_snapshot_carries_the_unhealthy_handlers_of_the_shared_record() {
        let board = StatusBoard::default();
        let health = board.handler_health().clone();
        health.configure([("coder", false)]);
        health.reporter("coder").unhealthy("refused");
        let snapshot = board.snapshot();
        assert_eq!(snapshot.unhealthy_handlers.len(), 1);
        assert_eq!(snapshot.unhealthy_handlers[0].reason, "refused");
    }
}
