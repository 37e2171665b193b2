//! An in-memory AGH daemon for worker tests on paused tokio time: a run queue, one lease per
//! session, lease expiry and a lagging sweep, scripted faults per call, a timestamped call log and
//! a ledger that flags every terminal call the lease rules (agh-protocol.md §3.8, §4) forbid.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agh_worker::api::types::{
    AgentContext, AgentLimits, BundleLimits, Claim, ClaimRequest, CompleteRequest, FailRequest,
    HeartbeatRequest, LeaseSummary, Me, ReleaseRequest, RunStatus, SelfInfo, TaskBundle,
    TaskRecord, TaskRef, TaskRun, TaskRunDetail, TaskSection, TaskView,
};
use agh_worker::api::{ApiError, ClaimOutcome, ErrorKind};
use agh_worker::worker::AghApi;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The worker's session.
pub(crate) const SESSION: &str = "sess-worker";
/// Another session of the same agent, which may take runs the worker lost.
pub(crate) const OTHER: &str = "sess-other";
/// The daemon's cap for a result or failure metadata.
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;

/// The calls of the AGH API the worker makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Me,
    Context,
    Claim,
    Heartbeat,
    Complete,
    Fail,
    Release,
    /// `GET /api/task-runs/{id}`.
    TaskRun,
    /// `GET /api/tasks/{id}`.
    Task,
}

impl Op {
    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, Op::Complete | Op::Fail | Op::Release)
    }

    fn call(self) -> &'static str {
        match self {
            Op::Me => "me",
            Op::Context => "context",
            Op::Claim => "claim-next",
            Op::Heartbeat => "heartbeat",
            Op::Complete => "complete",
            Op::Fail => "fail",
            Op::Release => "release",
            Op::TaskRun => "task-run",
            Op::Task => "task",
        }
    }
}

/// One call as the fake saw it.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// Tokio time since the fake was created, when the call arrived.
    pub at: Duration,
    pub op: Op,
    pub run_id: Option<String>,
    /// `lease_seconds` of a claim or heartbeat.
    pub lease_seconds: Option<i64>,
    /// The request body of a terminal call.
    pub body: Option<Value>,
    /// `ok`, `claimed <run>`, `nothing`, `deadline`, `abandoned`, `pending` or the error.
    pub outcome: String,
}

impl Call {
    pub(crate) fn ok(&self) -> bool {
        self.outcome == "ok" || self.outcome.starts_with("claimed")
    }
}

/// A scripted answer that replaces the fake's own.
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Answer this error; nothing changes.
    Error(ApiError),
    /// Claim: commit the claim, then answer this error (the answer was lost on the way).
    CommitThenError(ApiError),
    /// Claim: wait until the client deadline, commit a claim at that instant, answer `DeadlineReached`.
    CommitAtDeadline,
    /// Terminal call: apply it, then answer this error (as a client retry would after a lost answer).
    ApplyThenError(ApiError),
    /// Never answer (a hung daemon); the caller must give up on its own.
    Hang,
    /// Terminal call: take this long, then answer this error without applying the call (an
    /// answer lost only after the client's retries ran out).
    ErrorAfter(Duration, ApiError),
}

/// A rule consulted on every call of one kind: (run id, time since start, call number) → fault.
pub(crate) type Rule = Box<dyn FnMut(Option<&str>, Duration, usize) -> Option<Fault> + Send>;

/// One claim of one run by one session.
#[derive(Clone, Debug)]
pub(crate) struct Holding {
    pub run_id: String,
    pub session: String,
    pub generation: u64,
    pub claimed_at: Instant,
    pub lease_until: Instant,
    /// The worker was answered "lease lost" for this holding.
    pub told_lost: bool,
    /// The test took the lease away (the worker could not have known).
    pub forced: bool,
    /// The lease ended: terminal call, release, sweep or force.
    pub ended: bool,
    pub accepted_terminals: u32,
}

/// Where a run is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RunState {
    Queued,
    /// Held; the index of the holding.
    Held(usize),
    Completed(Value),
    Failed(String),
}

/// A task run of the fake.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub id: String,
    pub task_id: String,
    pub title: String,
    pub attempt: i64,
    pub state: RunState,
    pub max_runtime_seconds: i64,
    pub handoff_summary: String,
    pub releases: u32,
}

/// A terminal call and what the fake made of it.
#[derive(Clone, Debug)]
pub(crate) struct TerminalRecord {
    pub at: Duration,
    pub op: Op,
    pub run_id: String,
    pub generation: Option<u64>,
    pub accepted: bool,
    pub detail: String,
}

/// Every terminal call, and every breach of the lease rules by the worker.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    pub terminals: Vec<TerminalRecord>,
    pub violations: Vec<String>,
}

impl Ledger {
    pub(crate) fn accepted(&self, run_id: &str) -> Vec<&TerminalRecord> {
        self.terminals
            .iter()
            .filter(|t| t.run_id == run_id && t.accepted)
            .collect()
    }
}

struct State {
    start: Instant,
    runs: Vec<Run>,
    holdings: Vec<Holding>,
    next_generation: u64,
    calls: Vec<Call>,
    ledger: Ledger,
    faults: HashMap<Op, VecDeque<Fault>>,
    rules: HashMap<Op, Rule>,
    counts: HashMap<Op, usize>,
    identity_stale_until: Option<Instant>,
    /// The client's long-poll deadline for a waiting claim.
    claim_deadline: Duration,
    /// How long after `lease_until` the sweep requeues an expired lease.
    sweep_lag: Duration,
    /// A run that becomes claimable, and is committed, the instant the client drops a claim.
    commit_on_abandon: Option<String>,
    /// Claims seen at the current instant (storm detector).
    storm: (Instant, usize),
}

/// The fake daemon; clones share the state.
#[derive(Clone)]
pub(crate) struct FakeAgh {
    state: Arc<Mutex<State>>,
}

impl Default for FakeAgh {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeAgh {
    pub(crate) fn new() -> Self {
        FakeAgh {
            state: Arc::new(Mutex::new(State {
                start: Instant::now(),
                runs: Vec::new(),
                holdings: Vec::new(),
                next_generation: 1,
                calls: Vec::new(),
                ledger: Ledger::default(),
                faults: HashMap::new(),
                rules: HashMap::new(),
                counts: HashMap::new(),
                identity_stale_until: None,
                claim_deadline: Duration::from_secs(30),
                sweep_lag: Duration::from_secs(15),
                commit_on_abandon: None,
                storm: (Instant::now(), 0),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- setup -------------------------------------------------------------------------

    /// Enqueues a run (task `task-<n>`); answers its id.
    pub(crate) fn enqueue(&self, run_id: &str) -> String {
        self.enqueue_with(run_id, 0)
    }

    /// Enqueues a run whose bundle says `max_runtime_seconds`.
    pub(crate) fn enqueue_with(&self, run_id: &str, max_runtime_seconds: i64) -> String {
        let mut s = self.lock();
        let n = s.runs.len() + 1;
        s.runs.push(Run {
            id: run_id.to_string(),
            task_id: format!("task-{n}"),
            title: format!("Task {n}"),
            attempt: 1,
            state: RunState::Queued,
            max_runtime_seconds,
            handoff_summary: format!("handoff for {run_id}"),
            releases: 0,
        });
        run_id.to_string()
    }

    /// Makes `session` hold `run_id` (already enqueued) with `lease` left, as if it claimed it.
    pub(crate) fn hold(&self, run_id: &str, session: &str, lease: Duration) {
        let mut s = self.lock();
        let now = Instant::now();
        s.take(run_id, session, now, lease);
    }

    /// Takes the lease away from the worker: requeued (`requeue`) or left expired until the sweep.
    pub(crate) fn revoke(&self, run_id: &str, requeue: bool) {
        let mut s = self.lock();
        let now = Instant::now();
        let idx = s.run_index(run_id).expect("no such run");
        if let RunState::Held(h) = s.runs[idx].state {
            s.holdings[h].forced = true;
            s.holdings[h].lease_until = now;
            if requeue {
                s.holdings[h].ended = true;
                s.runs[idx].state = RunState::Queued;
            }
        }
    }

    /// Another session takes the run after it was taken from the worker.
    pub(crate) fn steal(&self, run_id: &str) {
        self.revoke(run_id, true);
        let mut s = self.lock();
        let now = Instant::now();
        s.take(run_id, OTHER, now, Duration::from_secs(300));
    }

    /// Queues a fault for the next call of `op`.
    pub(crate) fn fault(&self, op: Op, fault: Fault) {
        self.lock().faults.entry(op).or_default().push_back(fault);
    }

    /// Queues `n` copies of a fault.
    pub(crate) fn faults(&self, op: Op, n: usize, fault: Fault) {
        for _ in 0..n {
            self.fault(op, fault.clone());
        }
    }

    /// Installs a rule consulted on every call of `op` (after the queued faults).
    pub(crate) fn rule(&self, op: Op, rule: Rule) {
        self.lock().rules.insert(op, rule);
    }

    /// Every call answers 401 identity_stale until `until` (time since start).
    pub(crate) fn identity_stale_until(&self, until: Duration) {
        let mut s = self.lock();
        let at = s.start + until;
        s.identity_stale_until = Some(at);
    }

    pub(crate) fn set_claim_deadline(&self, deadline: Duration) {
        self.lock().claim_deadline = deadline;
    }

    /// When the client next drops a waiting claim, `run_id` is enqueued and committed to the
    /// worker at that instant (the claim the client never sees).
    pub(crate) fn commit_on_abandon(&self, run_id: &str) {
        self.lock().commit_on_abandon = Some(run_id.to_string());
    }

    // ----- inspection --------------------------------------------------------------------

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub(crate) fn calls_of(&self, op: Op) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op == op)
            .cloned()
            .collect()
    }

    pub(crate) fn count(&self, op: Op) -> usize {
        self.calls_of(op).len()
    }

    pub(crate) fn terminal_calls(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op.is_terminal())
            .cloned()
            .collect()
    }

    pub(crate) fn ledger(&self) -> Ledger {
        self.lock().ledger.clone()
    }

    pub(crate) fn runs(&self) -> Vec<Run> {
        let mut s = self.lock();
        let now = Instant::now();
        s.sweep(now);
        s.runs.clone()
    }

    pub(crate) fn run(&self, run_id: &str) -> Run {
        self.runs()
            .into_iter()
            .find(|r| r.id == run_id)
            .expect("no such run")
    }

    pub(crate) fn holdings(&self) -> Vec<Holding> {
        self.lock().holdings.clone()
    }

    /// Tokio time since the fake was created.
    pub(crate) fn now(&self) -> Duration {
        Instant::now() - self.lock().start
    }

    /// Panics with the call log when the ledger holds a violation.
    pub(crate) fn assert_clean(&self) {
        let s = self.lock();
        assert!(
            s.ledger.violations.is_empty(),
            "lease rule violations: {:#?}\ncalls: {:#?}",
            s.ledger.violations,
            s.calls
        );
    }

    /// A readable call log for assertion messages.
    pub(crate) fn log(&self) -> String {
        self.lock()
            .calls
            .iter()
            .map(|c| {
                format!(
                    "{:>9.3}s {:?} {} {}",
                    c.at.as_secs_f64(),
                    c.op,
                    c.run_id.as_deref().unwrap_or("-"),
                    c.outcome
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    // ----- call plumbing -----------------------------------------------------------------

    /// Logs the call and answers the scripted fault or identity error, if any.
    fn begin(
        &self,
        op: Op,
        run_id: Option<&str>,
        lease_seconds: Option<i64>,
        body: Option<Value>,
    ) -> (usize, Option<Fault>) {
        let mut s = self.lock();
        let now = Instant::now();
        let at = now - s.start;
        if op == Op::Claim {
            if s.storm.0 == now {
                s.storm.1 += 1;
                assert!(
                    s.storm.1 < 50,
                    "request storm: 50 claims at the same instant {at:?}"
                );
            } else {
                s.storm = (now, 1);
            }
        }
        s.calls.push(Call {
            at,
            op,
            run_id: run_id.map(str::to_string),
            lease_seconds,
            body,
            outcome: "pending".into(),
        });
        let index = s.calls.len() - 1;
        let number = {
            let n = s.counts.entry(op).or_default();
            *n += 1;
            *n
        };
        let mut fault = s.faults.get_mut(&op).and_then(|q| q.pop_front());
        if fault.is_none()
            && let Some(rule) = s.rules.get_mut(&op)
        {
            fault = rule(run_id, at, number);
        }
        if fault.is_none() && s.identity_stale_until.is_some_and(|until| now < until) {
            fault = Some(Fault::Error(identity_stale(op.call())));
        }
        (index, fault)
    }

    /// Applies a scripted fault to a read: its error, or no answer at all.
    async fn read_fault(&self, index: usize, fault: Option<Fault>) -> Result<(), ApiError> {
        match fault {
            None => Ok(()),
            Some(Fault::Error(err)) => self.finish_err(index, err),
            Some(Fault::Hang) => {
                self.end(index, "hung");
                std::future::pending().await
            }
            Some(other) => panic!("fault {other:?} does not fit a read"),
        }
    }

    fn end(&self, index: usize, outcome: impl Into<String>) {
        self.lock().calls[index].outcome = outcome.into();
    }

    fn finish_err<T>(&self, index: usize, err: ApiError) -> Result<T, ApiError> {
        self.end(index, format!("error {}: {}", err.kind, err.message));
        Err(err)
    }

    async fn lease_op(
        &self,
        op: Op,
        run_id: &str,
        lease_seconds: Option<i64>,
        body: Option<Value>,
    ) -> Result<LeaseSummary, ApiError> {
        let (index, fault) = self.begin(op, Some(run_id), lease_seconds, body.clone());
        if let Some(Fault::Hang) = fault {
            self.end(index, "hung");
            return std::future::pending().await;
        }
        if let Some(Fault::ErrorAfter(delay, err)) = fault {
            // Judged when it arrived, answered later.
            if op.is_terminal() {
                let mut s = self.lock();
                let now = Instant::now();
                s.sweep(now);
                s.check_terminal_attempt(op, run_id, now);
                s.record_terminal(op, run_id, now, false, format!("injected: {err}"));
            }
            tokio::time::sleep(delay).await;
            return self.finish_err(index, err);
        }
        let mut s = self.lock();
        let now = Instant::now();
        s.sweep(now);
        if op.is_terminal() {
            s.check_terminal_attempt(op, run_id, now);
        }
        let answer_after_apply = match fault {
            Some(Fault::Error(err)) => {
                if op.is_terminal() {
                    s.record_terminal(op, run_id, now, false, format!("injected: {err}"));
                } else if err.kind.is_lease_lost() || err.kind.is_identity() {
                    s.mark_told_lost(run_id);
                }
                drop(s);
                return self.finish_err(index, err);
            }
            Some(Fault::ApplyThenError(err)) => Some(err),
            Some(other) => panic!("fault {other:?} does not fit {op:?}"),
            None => None,
        };
        let result = match op {
            Op::Heartbeat => s.heartbeat(run_id, lease_seconds, now),
            _ => s.terminal(op, run_id, body.unwrap_or(Value::Null), now),
        };
        if result.as_ref().is_err_and(|e| e.kind.is_lease_lost()) {
            s.mark_told_lost(run_id);
        }
        drop(s);
        match (result, answer_after_apply) {
            (Ok(_), Some(err)) => self.finish_err(index, err),
            (Ok(summary), None) => {
                self.end(index, "ok");
                Ok(summary)
            }
            (Err(err), _) => self.finish_err(index, err),
        }
    }
}

/// Marks a claim that the client dropped; may commit it (the daemon did not see the disconnect).
struct AbandonGuard {
    fake: FakeAgh,
    index: usize,
    lease: Duration,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut s = self.fake.lock();
        let now = Instant::now();
        let mut outcome = "abandoned".to_string();
        if !s.holds_active(SESSION, now)
            && let Some(id) = s.commit_on_abandon.take()
        {
            drop(s);
            self.fake.enqueue(&id);
            s = self.fake.lock();
            s.take(&id, SESSION, now, self.lease);
            outcome = format!("abandoned (committed {id})");
        }
        s.calls[self.index].outcome = outcome;
    }
}

impl State {
    fn run_index(&self, run_id: &str) -> Option<usize> {
        self.runs.iter().position(|r| r.id == run_id)
    }

    fn take(&mut self, run_id: &str, session: &str, now: Instant, lease: Duration) -> usize {
        let idx = self.run_index(run_id).expect("no such run");
        let generation = self.next_generation;
        self.next_generation += 1;
        self.holdings.push(Holding {
            run_id: run_id.to_string(),
            session: session.to_string(),
            generation,
            claimed_at: now,
            lease_until: now + lease,
            told_lost: false,
            forced: false,
            ended: false,
            accepted_terminals: 0,
        });
        let h = self.holdings.len() - 1;
        self.runs[idx].state = RunState::Held(h);
        h
    }

    /// Requeues leases that expired longer than the sweep lag ago.
    fn sweep(&mut self, now: Instant) {
        for run in &mut self.runs {
            if let RunState::Held(h) = run.state {
                let holding = &mut self.holdings[h];
                if holding.lease_until + self.sweep_lag <= now {
                    holding.ended = true;
                    run.state = RunState::Queued;
                }
            }
        }
    }

    /// Whether `session` holds an unexpired lease (what blocks a claim, §4.3).
    fn holds_active(&self, session: &str, now: Instant) -> bool {
        self.runs.iter().any(|r| match r.state {
            RunState::Held(h) => {
                self.holdings[h].session == session && self.holdings[h].lease_until > now
            }
            _ => false,
        })
    }

    /// The worker's latest holding of `run_id`.
    fn our_holding(&self, run_id: &str) -> Option<usize> {
        self.holdings
            .iter()
            .rposition(|h| h.run_id == run_id && h.session == SESSION)
    }

    fn mark_told_lost(&mut self, run_id: &str) {
        if let Some(h) = self.our_holding(run_id) {
            self.holdings[h].told_lost = true;
        }
    }

    fn claim_queued(&mut self, lease: Duration, now: Instant) -> Option<Claim> {
        let idx = self.runs.iter().position(|r| r.state == RunState::Queued)?;
        let id = self.runs[idx].id.clone();
        let h = self.take(&id, SESSION, now, lease);
        Some(self.claim_of(idx, h))
    }

    fn summary(&self, idx: usize, h: usize, status: RunStatus) -> LeaseSummary {
        let run = &self.runs[idx];
        let holding = &self.holdings[h];
        LeaseSummary {
            run_id: run.id.clone(),
            task_id: Some(run.task_id.clone()),
            status: Some(status),
            session_id: Some(holding.session.clone()),
            lease_until: Some(format!(
                "+{}s",
                (holding.lease_until - self.start).as_secs()
            )),
            claim_token_hash: Some(format!("sha256:{}", holding.generation)),
            ..Default::default()
        }
    }

    fn task_run(&self, idx: usize, h: usize) -> TaskRun {
        let run = &self.runs[idx];
        TaskRun {
            id: run.id.clone(),
            task_id: Some(run.task_id.clone()),
            status: Some(RunStatus::Claimed),
            attempt: Some(run.attempt),
            session_id: Some(self.holdings[h].session.clone()),
            ..Default::default()
        }
    }

    fn task_ref(&self, idx: usize) -> TaskRef {
        let run = &self.runs[idx];
        TaskRef {
            id: run.task_id.clone(),
            title: Some(run.title.clone()),
            ..Default::default()
        }
    }

    fn claim_of(&self, idx: usize, h: usize) -> Claim {
        Claim {
            task: self.task_ref(idx),
            run: self.task_run(idx, h),
            lease: self.summary(idx, h, RunStatus::Claimed),
            coordination_channel: None,
        }
    }

    /// The worker's held (not yet swept) run, if any.
    fn our_held(&self) -> Option<(usize, usize)> {
        self.runs
            .iter()
            .enumerate()
            .find_map(|(idx, r)| match r.state {
                RunState::Held(h) if self.holdings[h].session == SESSION => Some((idx, h)),
                _ => None,
            })
    }

    /// Resolves the worker's lease on `run_id` the way the daemon does (§3.8 error table).
    fn resolve(&self, call: &'static str, run_id: &str, now: Instant) -> Result<usize, ApiError> {
        let idx = self.run_index(run_id);
        if let Some(idx) = idx
            && let RunState::Held(h) = self.runs[idx].state
            && self.holdings[h].session == SESSION
        {
            if self.holdings[h].lease_until > now {
                return Ok(h);
            }
            return Err(lease_expired(call, run_id));
        }
        // Ended by a terminal call but still in the session's list: "not an active lease".
        if let Some(idx) = idx
            && matches!(
                self.runs[idx].state,
                RunState::Completed(_) | RunState::Failed(_)
            )
            && self
                .our_holding(run_id)
                .is_some_and(|h| self.holdings[h].accepted_terminals > 0)
        {
            return Err(lease_expired(call, run_id));
        }
        if self.holds_active(SESSION, now) {
            return Err(foreign_run(call, run_id));
        }
        Err(no_active_lease(call, run_id))
    }

    fn heartbeat(
        &mut self,
        run_id: &str,
        lease_seconds: Option<i64>,
        now: Instant,
    ) -> Result<LeaseSummary, ApiError> {
        let h = self.resolve("heartbeat", run_id, now)?;
        let seconds = match lease_seconds {
            None | Some(0) => 300,
            Some(s) => s as u64,
        };
        self.holdings[h].lease_until = now + Duration::from_secs(seconds);
        let idx = self.run_index(run_id).unwrap();
        Ok(self.summary(idx, h, RunStatus::Claimed))
    }

    fn check_terminal_attempt(&mut self, op: Op, run_id: &str, now: Instant) {
        let Some(h) = self.our_holding(run_id) else {
            self.ledger
                .violations
                .push(format!("{op:?} on {run_id}, which the worker never held"));
            return;
        };
        let holding = self.holdings[h].clone();
        let at = now - self.start;
        if holding.told_lost {
            self.ledger.violations.push(format!(
                "{op:?} on {run_id} (generation {}) at {at:?} after the worker was told the lease was lost",
                holding.generation
            ));
        }
        if holding.accepted_terminals > 0 {
            self.ledger.violations.push(format!(
                "{op:?} on {run_id} (generation {}) at {at:?} after a terminal call was accepted",
                holding.generation
            ));
        } else if !holding.forced && holding.lease_until <= now {
            self.ledger.violations.push(format!(
                "{op:?} on {run_id} (generation {}) at {at:?} after its lease ended at {:?}",
                holding.generation,
                holding.lease_until - self.start
            ));
        }
        if !holding.forced
            && let Some(idx) = self.run_index(run_id)
            && let RunState::Held(other) = self.runs[idx].state
            && self.holdings[other].session != SESSION
        {
            self.ledger.violations.push(format!(
                "{op:?} on {run_id} at {at:?} while {} holds it",
                self.holdings[other].session
            ));
        }
    }

    fn record_terminal(
        &mut self,
        op: Op,
        run_id: &str,
        now: Instant,
        accepted: bool,
        detail: String,
    ) {
        let generation = self
            .our_holding(run_id)
            .map(|h| self.holdings[h].generation);
        self.ledger.terminals.push(TerminalRecord {
            at: now - self.start,
            op,
            run_id: run_id.to_string(),
            generation,
            accepted,
            detail,
        });
    }

    fn terminal(
        &mut self,
        op: Op,
        run_id: &str,
        body: Value,
        now: Instant,
    ) -> Result<LeaseSummary, ApiError> {
        let call = op.call();
        // Validation comes after the lease lookup in the daemon; either order is an error.
        let checked = self.resolve(call, run_id, now).and_then(|h| {
            validate_terminal(op, &body)?;
            Ok(h)
        });
        let h = match checked {
            Ok(h) => h,
            Err(err) => {
                self.record_terminal(op, run_id, now, false, format!("refused: {err}"));
                return Err(err);
            }
        };
        let idx = self.run_index(run_id).unwrap();
        let summary;
        match op {
            Op::Complete => {
                summary = self.summary(idx, h, RunStatus::Completed);
                self.runs[idx].state = RunState::Completed(body["result"].clone());
            }
            Op::Fail => {
                summary = self.summary(idx, h, RunStatus::Failed);
                self.runs[idx].state =
                    RunState::Failed(body["error"].as_str().unwrap_or_default().to_string());
            }
            _ => {
                summary = LeaseSummary {
                    run_id: run_id.to_string(),
                    status: Some(RunStatus::Queued),
                    ..Default::default()
                };
                self.runs[idx].state = RunState::Queued;
                self.runs[idx].releases += 1;
            }
        }
        let holding = &mut self.holdings[h];
        holding.ended = true;
        holding.accepted_terminals += 1;
        let twice = holding.accepted_terminals > 1;
        let generation = holding.generation;
        if twice {
            self.ledger.violations.push(format!(
                "two accepted terminal calls for {run_id} generation {generation}"
            ));
        }
        self.record_terminal(op, run_id, now, true, "accepted".into());
        Ok(summary)
    }

    /// The run detail: the run where it is, bound to the session that last held it (a
    /// release or a sweep clears that, as in the daemon).
    fn run_detail(&self, run_id: &str) -> Result<TaskRunDetail, ApiError> {
        let idx = self
            .run_index(run_id)
            .ok_or_else(|| error("task-run", 404, "task: task run not found"))?;
        let run = &self.runs[idx];
        let last_holder = self
            .holdings
            .iter()
            .rfind(|h| h.run_id == run_id)
            .map(|h| h.session.clone());
        let (status, session_id, result, error) = match &run.state {
            RunState::Queued => (RunStatus::Queued, None, None, None),
            RunState::Held(h) => (
                RunStatus::Claimed,
                Some(self.holdings[*h].session.clone()),
                None,
                None,
            ),
            RunState::Completed(result) => (
                RunStatus::Completed,
                last_holder,
                Some(result.clone()),
                None,
            ),
            RunState::Failed(error) => (RunStatus::Failed, last_holder, None, Some(error.clone())),
        };
        Ok(TaskRunDetail {
            run: TaskRun {
                id: run.id.clone(),
                task_id: Some(run.task_id.clone()),
                status: Some(status),
                attempt: Some(run.attempt),
                session_id,
                result,
                error,
                ..Default::default()
            },
            task: self.task_ref(idx),
            ..Default::default()
        })
    }

    /// The task view of `task_id`: its description is `about <title>`, its runs those enqueued.
    fn task_view(&self, task_id: &str) -> Result<TaskView, ApiError> {
        let runs: Vec<TaskRun> = self
            .runs
            .iter()
            .filter(|run| run.task_id == task_id)
            .map(|run| TaskRun {
                id: run.id.clone(),
                task_id: Some(run.task_id.clone()),
                attempt: Some(run.attempt),
                ..Default::default()
            })
            .collect();
        let title = self
            .runs
            .iter()
            .find(|run| run.task_id == task_id)
            .map(|run| run.title.clone())
            .ok_or_else(|| error("task", 404, "task: task not found"))?;
        Ok(TaskView {
            task: TaskRecord {
                id: task_id.to_string(),
                description: Some(format!("about {title}")),
                title: Some(title),
                ..Default::default()
            },
            runs,
            ..Default::default()
        })
    }

    fn context(&self) -> AgentContext {
        let task = match self.our_held() {
            Some((idx, h)) => {
                let run = &self.runs[idx];
                TaskSection {
                    available: true,
                    task: Some(self.task_ref(idx)),
                    lease: Some(self.summary(idx, h, RunStatus::Claimed)),
                    bundle: Some(TaskBundle {
                        task: Some(self.task_ref(idx)),
                        current_run: Some(self.task_run(idx, h)),
                        handoff_summary: Some(run.handoff_summary.clone()),
                        limits: Some(BundleLimits {
                            max_runtime_seconds: run.max_runtime_seconds,
                            summary_max_bytes: 4096,
                            context_body_max_bytes: 8192,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
            None => TaskSection::default(),
        };
        AgentContext {
            task: Some(task),
            ..Default::default()
        }
    }

    fn me(&self) -> Me {
        Me {
            self_info: SelfInfo {
                session_id: SESSION.into(),
                agent_name: "coder".into(),
                ..Default::default()
            },
            active_task_leases: self
                .our_held()
                .map(|(idx, h)| self.summary(idx, h, RunStatus::Claimed))
                .into_iter()
                .collect(),
            limits: Some(AgentLimits {
                max_children: 5,
                max_spawn_depth: 1,
                max_active_task_leases: 1,
                context_section_limit: 8,
            }),
            ..Default::default()
        }
    }
}

fn validate_terminal(op: Op, body: &Value) -> Result<(), ApiError> {
    let call = op.call();
    let payload = match op {
        Op::Complete => body.get("result"),
        Op::Fail => body.get("metadata"),
        _ => None,
    };
    if let Some(payload) = payload {
        if serde_json::to_string(payload).unwrap().len() > MAX_PAYLOAD {
            return Err(error(
                call,
                413,
                "task: payload too large: result exceeds 65536 bytes",
            ));
        }
        if has_claim_token(payload) {
            return Err(error(
                call,
                422,
                "task: validation failed: result must not contain claim_token",
            ));
        }
    }
    if op == Op::Fail && body["error"].as_str().is_none_or(|e| e.trim().is_empty()) {
        return Err(error(
            call,
            422,
            "task: validation failed: error is required",
        ));
    }
    Ok(())
}

/// Whether a `claim_token` key appears at any depth.
pub(crate) fn has_claim_token(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "claim_token" || has_claim_token(v)),
        Value::Array(items) => items.iter().any(has_claim_token),
        _ => false,
    }
}

impl AghApi for FakeAgh {
    fn session_id(&self) -> &str {
        SESSION
    }

    async fn task(&self, task_id: &str) -> Result<TaskView, ApiError> {
        let (index, fault) = self.begin(Op::Task, None, None, None);
        self.read_fault(index, fault).await?;
        let view = self.lock().task_view(task_id);
        match view {
            Ok(view) => {
                self.end(index, "ok");
                Ok(view)
            }
            Err(err) => self.finish_err(index, err),
        }
    }

    async fn task_run(&self, run_id: &str) -> Result<TaskRunDetail, ApiError> {
        let (index, fault) = self.begin(Op::TaskRun, Some(run_id), None, None);
        self.read_fault(index, fault).await?;
        let detail = {
            let mut s = self.lock();
            s.sweep(Instant::now());
            s.run_detail(run_id)
        };
        match detail {
            Ok(detail) => {
                let status = detail.run.status.as_ref().map(RunStatus::to_string);
                self.end(index, format!("ok {}", status.unwrap_or_default()));
                Ok(detail)
            }
            Err(err) => self.finish_err(index, err),
        }
    }

    async fn me(&self) -> Result<Me, ApiError> {
        let (index, fault) = self.begin(Op::Me, None, None, None);
        if let Some(Fault::Error(err)) = fault {
            return self.finish_err(index, err);
        }
        let me = {
            let mut s = self.lock();
            let now = Instant::now();
            s.sweep(now);
            s.me()
        };
        let held = me
            .active_task_leases
            .first()
            .map(|l| format!("ok holding {}", l.run_id))
            .unwrap_or_else(|| "ok".into());
        self.end(index, held);
        Ok(me)
    }

    async fn context(&self) -> Result<AgentContext, ApiError> {
        let (index, fault) = self.begin(Op::Context, None, None, None);
        if let Some(Fault::Error(err)) = fault {
            return self.finish_err(index, err);
        }
        let context = {
            let mut s = self.lock();
            let now = Instant::now();
            s.sweep(now);
            s.context()
        };
        self.end(index, "ok");
        Ok(context)
    }

    async fn claim_next(&self, request: &ClaimRequest) -> Result<ClaimOutcome, ApiError> {
        let (index, fault) = self.begin(Op::Claim, None, request.lease_seconds, None);
        let lease = Duration::from_secs(match request.lease_seconds {
            None | Some(0) => 300,
            Some(s) => s as u64,
        });
        let started = Instant::now();
        let deadline = started + self.lock().claim_deadline;
        match fault {
            None => {}
            Some(Fault::Error(err)) => return self.finish_err(index, err),
            Some(Fault::CommitThenError(err)) => {
                let mut s = self.lock();
                let now = Instant::now();
                s.sweep(now);
                let claimed = s.claim_queued(lease, now).map(|c| c.run.id);
                drop(s);
                let err = ApiError {
                    message: format!("{} (claim of {claimed:?} committed)", err.message),
                    ..err
                };
                return self.finish_err(index, err);
            }
            Some(Fault::CommitAtDeadline) => {
                tokio::time::sleep_until(deadline).await;
                let mut s = self.lock();
                let now = Instant::now();
                s.sweep(now);
                let claimed = s.claim_queued(lease, now).map(|c| c.run.id);
                drop(s);
                self.end(index, format!("deadline (committed {claimed:?})"));
                return Ok(ClaimOutcome::DeadlineReached);
            }
            Some(other) => panic!("fault {other:?} does not fit a claim"),
        }
        let mut guard = AbandonGuard {
            fake: self.clone(),
            index,
            lease,
            armed: true,
        };
        loop {
            {
                let mut s = self.lock();
                let now = Instant::now();
                s.sweep(now);
                // A wait poll that finds the session stopped answers 403 (agh-protocol.md §3.7).
                if s.identity_stale_until.is_some_and(|until| now < until) {
                    drop(s);
                    guard.armed = false;
                    let message = format!("agent session \"{SESSION}\" is not active");
                    return self.finish_err(index, error("claim-next", 403, &message));
                }
                if s.holds_active(SESSION, now) {
                    drop(s);
                    guard.armed = false;
                    return self.finish_err(index, lease_exists());
                }
                if let Some(claim) = s.claim_queued(lease, now) {
                    drop(s);
                    guard.armed = false;
                    self.end(index, format!("claimed {}", claim.run.id));
                    return Ok(ClaimOutcome::Claimed(Box::new(claim)));
                }
            }
            if !request.wait {
                guard.armed = false;
                self.end(index, "nothing");
                return Ok(ClaimOutcome::NothingToDo);
            }
            if Instant::now() >= deadline {
                guard.armed = false;
                self.end(index, "deadline");
                return Ok(ClaimOutcome::DeadlineReached);
            }
            // The daemon polls every 100 ms until the request ends (agh-protocol.md §3.7).
            let wake = (Instant::now() + Duration::from_millis(100)).min(deadline);
            tokio::time::sleep_until(wake).await;
        }
    }

    async fn heartbeat(
        &self,
        run_id: &str,
        request: &HeartbeatRequest,
    ) -> Result<LeaseSummary, ApiError> {
        self.lease_op(Op::Heartbeat, run_id, request.lease_seconds, None)
            .await
    }

    async fn complete(
        &self,
        run_id: &str,
        request: &CompleteRequest,
    ) -> Result<LeaseSummary, ApiError> {
        let body = serde_json::to_value(request).unwrap();
        self.lease_op(Op::Complete, run_id, None, Some(body)).await
    }

    async fn fail(&self, run_id: &str, request: &FailRequest) -> Result<LeaseSummary, ApiError> {
        let body = serde_json::to_value(request).unwrap();
        self.lease_op(Op::Fail, run_id, None, Some(body)).await
    }

    async fn release(
        &self,
        run_id: &str,
        request: &ReleaseRequest,
    ) -> Result<LeaseSummary, ApiError> {
        let body = serde_json::to_value(request).unwrap();
        self.lease_op(Op::Release, run_id, None, Some(body)).await
    }
}

// ----- daemon error answers (strings as agh-protocol.md §2.1, §3.7, §3.8 give them) ----------

/// A JSON error envelope answer.
pub(crate) fn error(call: &'static str, status: u16, message: &str) -> ApiError {
    ApiError::from_response(
        call,
        status,
        json!({ "error": message }).to_string().as_bytes(),
    )
}

pub(crate) fn lease_expired(call: &'static str, run_id: &str) -> ApiError {
    error(
        call,
        409,
        &format!(
            "task: autonomy lease rejected: AUTONOMY_LEASE_EXPIRED: task: lease expired: run \"{run_id}\" is not an active lease for session \"{SESSION}\""
        ),
    )
}

pub(crate) fn no_active_lease(call: &'static str, run_id: &str) -> ApiError {
    error(
        call,
        409,
        &format!(
            "task: autonomy lease rejected: AUTONOMY_NO_ACTIVE_LEASE: task: invalid claim token: session \"{SESSION}\" holds no active lease for run \"{run_id}\""
        ),
    )
}

pub(crate) fn foreign_run(call: &'static str, run_id: &str) -> ApiError {
    error(
        call,
        403,
        &format!(
            "task: autonomy lease rejected: AUTONOMY_FOREIGN_RUN: task: permission denied: run \"{run_id}\" is not leased to session \"{SESSION}\""
        ),
    )
}

pub(crate) fn lease_exists() -> ApiError {
    error(
        "claim-next",
        409,
        &format!(
            "task: active run lease exists: session \"{SESSION}\" already owns an active task-run lease"
        ),
    )
}

pub(crate) fn identity_stale(call: &'static str) -> ApiError {
    let body = json!({
        "error": "agent session identity is not active: start or resume the AGH session, then retry",
        "diagnostic": {"code": "identity_stale", "category": "session", "severity": "error"},
    });
    ApiError::from_response(call, 401, body.to_string().as_bytes())
}

/// A 5xx over TCP: the text is masked to the reason phrase.
pub(crate) fn server_error(call: &'static str, status: u16) -> ApiError {
    let phrase = if status == 503 {
        "Service Unavailable"
    } else {
        "Internal Server Error"
    };
    error(call, status, phrase)
}

pub(crate) fn transport(call: &'static str) -> ApiError {
    ApiError::local(call, ErrorKind::Transport, "connection reset by peer")
}
