//! The simulator's in-memory model and the AGH rules applied to it. Pure: every operation takes
//! "now" as an argument, so the rules are unit-testable without a clock or a server.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::clock::Timestamp;
use super::errors::{IdentityFailure, SimError, Transport};
use super::ledger::{Ledger, TransitionKind};
use super::requests::{
    ClaimRequest, MESSAGE_KINDS, ReplyRequest, SendRequest, SpawnRequest, contains_claim_material,
    is_empty_metadata, validate_coordination, validate_say_body,
};
use super::types::{
    DEFAULT_AGENT, DEFAULT_WORKSPACE, EnqueuedRun, MessageSpec, PermissionPolicy, RunSnapshot,
    SessionInfo, SessionSpec, SessionState, SpawnBudget, TaskScope, TaskSpec,
};

/// Terminal runs kept before the oldest are forgotten (bounded memory over long soaks).
const KEPT_FINISHED_RUNS: usize = 10_000;
/// Delivered messages kept per session so `reply` can still find a source message.
const KEPT_DELIVERED_MESSAGES: usize = 100;
/// Idempotency keys remembered for send/reply dedupe.
const KEPT_IDEMPOTENCY_KEYS: usize = 10_000;
/// External peers (senders of injected messages) remembered as live.
const KEPT_EXTERNAL_PEERS: usize = 1_000;
/// Runs requeued per sweep, like the daemon's batch.
pub(crate) const SWEEP_BATCH: usize = 100;
const CONTEXT_SECTION_LIMIT: usize = 8;
const RECENT_EVENTS_PER_TASK: usize = 50;
const PRIOR_ATTEMPTS: usize = 5;
const DEFAULT_MAX_CHILDREN: u32 = 5;
const DEFAULT_MAX_DEPTH: u32 = 1;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ATTEMPTS_CAP: u32 = 10;

/// Identity as asserted by request headers, already trimmed (empty = absent).
#[derive(Debug, Default, Clone)]
pub(crate) struct Credentials {
    pub session_id: Option<String>,
    pub agent: Option<String>,
    pub workspace_id: Option<String>,
}

#[derive(Debug, Clone)]
struct Lineage {
    parent_session_id: Option<String>,
    root_session_id: String,
    spawn_depth: u32,
    spawn_role: Option<String>,
    ttl_expires_at: Option<Timestamp>,
    auto_stop_on_parent: bool,
    budget: SpawnBudget,
    permissions: PermissionPolicy,
}

#[derive(Debug, Clone)]
struct Envelope {
    message_id: String,
    channel: String,
    from_peer: String,
    to_peer: Option<String>,
    body: Value,
    /// Valid coordination metadata; envelopes without it are invisible to `recv`.
    coordination: Option<Value>,
    claim_material: bool,
    sent_at: Timestamp,
}

#[derive(Debug)]
struct Session {
    id: String,
    agent_name: String,
    workspace_id: Option<String>,
    name: String,
    kind: &'static str,
    state: SessionState,
    channel: Option<String>,
    capabilities: Vec<String>,
    provider: Option<String>,
    model: Option<String>,
    lineage: Option<Lineage>,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// The run this session claimed most recently, while that run is still claimed by it.
    active_run: Option<String>,
    queue: VecDeque<Envelope>,
    delivered: VecDeque<Envelope>,
}

impl Session {
    fn peer_id(&self) -> String {
        peer_id(&self.agent_name, &self.id)
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            session_id: self.id.clone(),
            agent_name: self.agent_name.clone(),
            workspace_id: self.workspace_id.clone(),
            channel: self.channel.clone(),
            peer_id: self.peer_id(),
        }
    }

    fn effective_budget(&self) -> SpawnBudget {
        let stored = self
            .lineage
            .as_ref()
            .map(|lineage| lineage.budget)
            .unwrap_or_default();
        SpawnBudget {
            max_children: if stored.max_children == 0 {
                DEFAULT_MAX_CHILDREN
            } else {
                stored.max_children
            },
            max_depth: if stored.max_depth == 0 {
                DEFAULT_MAX_DEPTH
            } else {
                stored.max_depth
            },
            ..stored
        }
    }

    fn depth(&self) -> u32 {
        self.lineage
            .as_ref()
            .map_or(0, |lineage| lineage.spawn_depth)
    }
}

fn peer_id(agent_name: &str, session_id: &str) -> String {
    format!("{}.{session_id}", agent_name.to_lowercase())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStatus {
    Queued,
    Claimed,
    Completed,
    Failed,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Claimed => "claimed",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Run {
    id: String,
    task_id: String,
    attempt: u32,
    status: RunStatus,
    session_id: Option<String>,
    /// Never exposed; only its hash is.
    claim_token: Option<String>,
    claim_token_hash: Option<String>,
    lease_until: Option<Timestamp>,
    heartbeat_at: Option<Timestamp>,
    claimed_at: Option<Timestamp>,
    queued_at: Timestamp,
    ended_at: Option<Timestamp>,
    result: Option<Value>,
    error: Option<String>,
    coordination_channel_id: Option<String>,
    metadata: Value,
    origin: &'static str,
    claims: u32,
}

impl Run {
    fn holds_live_lease(&self, session_id: &str, now: Timestamp) -> bool {
        self.status == RunStatus::Claimed
            && self.session_id.as_deref() == Some(session_id)
            && self.lease_until.is_none_or(|until| until > now)
    }
}

#[derive(Debug)]
struct Task {
    id: String,
    identifier: String,
    title: String,
    priority: super::types::Priority,
    status: &'static str,
    global: bool,
    workspace_id: Option<String>,
    owner: Option<String>,
    paused: bool,
    metadata: Value,
    handoff_summary: Option<String>,
    max_runtime_seconds: u64,
    required_capabilities: Vec<String>,
    channel: Option<String>,
    max_attempts: u32,
    run_ids: Vec<String>,
    events: VecDeque<Value>,
    event_seq: u64,
}

/// Claim order: priority desc, then queued_at asc, then run id asc.
type QueueKey = (Reverse<i64>, Timestamp, String);

/// Settings of the model that come from [`super::SimConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateConfig {
    pub default_lease: Duration,
    pub max_queue_depth: usize,
}

/// The whole simulated daemon state.
#[derive(Debug)]
pub(crate) struct State {
    config: StateConfig,
    sessions: HashMap<String, Session>,
    tasks: HashMap<String, Task>,
    runs: HashMap<String, Run>,
    queue: BTreeSet<QueueKey>,
    claimed_runs: HashSet<String>,
    finished_runs: VecDeque<String>,
    idempotency_keys: HashSet<(String, String)>,
    idempotency_order: VecDeque<(String, String)>,
    external_peers: HashSet<String>,
    external_peer_order: VecDeque<String>,
    souls: HashMap<String, String>,
    task_counter: u64,
    pub ledger: Ledger,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        text.push_str(&format!("{:02x}", fastrand::u8(..)));
    }
    text
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(8))
}

fn new_claim_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let token: String = (0..43)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("agh_claim_{token}")
}

/// Lowercase run id with characters outside `[a-z0-9_-]` collapsed to `-`.
pub(crate) fn derived_coordination_channel(run_id: &str) -> String {
    let mut channel = String::with_capacity(run_id.len());
    for c in run_id.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            channel.push(c);
        } else if !channel.ends_with('-') {
            channel.push('-');
        }
    }
    channel
}

fn time(value: Option<Timestamp>) -> Value {
    value.map_or(Value::Null, |instant| Value::String(instant.to_rfc3339()))
}

/// Inserts `key: value` unless the value is null or an empty string (Go's `omitempty`).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

fn owner_payload(owner: &str) -> Value {
    let (kind, reference) = owner.split_once(':').unwrap_or(("pool", owner));
    json!({ "kind": kind, "ref": reference })
}

/// The outcome of a `recv` snapshot.
#[derive(Debug)]
pub(crate) struct RecvSnapshot {
    /// Whether any envelope on the channel is queued (the `wait` wake-up condition).
    pub any_on_channel: bool,
    pub messages: Vec<Value>,
}

impl State {
    pub fn new(config: StateConfig) -> State {
        State {
            config,
            sessions: HashMap::new(),
            tasks: HashMap::new(),
            runs: HashMap::new(),
            queue: BTreeSet::new(),
            claimed_runs: HashSet::new(),
            finished_runs: VecDeque::new(),
            idempotency_keys: HashSet::new(),
            idempotency_order: VecDeque::new(),
            external_peers: HashSet::new(),
            external_peer_order: VecDeque::new(),
            souls: HashMap::new(),
            task_counter: 0,
            ledger: Ledger::default(),
        }
    }

    // ---- sessions -------------------------------------------------------------------------

    pub fn create_session(&mut self, spec: SessionSpec, now: Timestamp) -> SessionInfo {
        let id = spec
            .session_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| new_id("sess"));
        let agent_name = if spec.agent_name.trim().is_empty() {
            DEFAULT_AGENT.to_owned()
        } else {
            spec.agent_name.trim().to_owned()
        };
        let lineage =
            (spec.spawn_budget.is_some() || spec.permission_policy.is_some()).then(|| Lineage {
                parent_session_id: None,
                root_session_id: id.clone(),
                spawn_depth: 0,
                spawn_role: None,
                ttl_expires_at: None,
                auto_stop_on_parent: false,
                budget: spec.spawn_budget.unwrap_or_default(),
                permissions: spec.permission_policy.unwrap_or_default(),
            });
        let session = Session {
            id: id.clone(),
            name: spec.name.unwrap_or_else(|| agent_name.clone()),
            agent_name,
            workspace_id: spec.workspace_id.filter(|ws| !ws.trim().is_empty()),
            kind: "user",
            state: spec.state,
            channel: spec.channel.filter(|channel| !channel.trim().is_empty()),
            capabilities: spec.capabilities,
            provider: spec.provider,
            model: spec.model,
            lineage,
            created_at: now,
            updated_at: now,
            active_run: None,
            queue: VecDeque::new(),
            delivered: VecDeque::new(),
        };
        let info = session.info();
        self.sessions.insert(id, session);
        info
    }

    pub fn session_info(&self, session_id: &str) -> Option<SessionInfo> {
        self.sessions.get(session_id).map(Session::info)
    }

    pub fn set_session_state(
        &mut self,
        session_id: &str,
        state: SessionState,
        now: Timestamp,
    ) -> bool {
        match self.sessions.get_mut(session_id) {
            Some(session) => {
                session.state = state;
                session.updated_at = now;
                true
            }
            None => false,
        }
    }

    /// Identity resolution in the daemon's order (§1.3); returns the caller's session id.
    pub fn resolve_identity(&self, credentials: &Credentials) -> Result<String, SimError> {
        let session_id = credentials
            .session_id
            .as_deref()
            .ok_or_else(|| IdentityFailure::SessionIdMissing.into_error())?;
        let agent = credentials
            .agent
            .as_deref()
            .ok_or_else(|| IdentityFailure::AgentMissing.into_error())?;
        let session = self
            .sessions
            .get(session_id)
            .ok_or_else(|| IdentityFailure::UnknownSession.into_error())?;
        if session.state != SessionState::Active {
            return Err(IdentityFailure::InactiveSession.into_error());
        }
        if session.agent_name != agent {
            return Err(IdentityFailure::AgentMismatch.into_error());
        }
        if let Some(workspace) = credentials.workspace_id.as_deref()
            && session.workspace_id.as_deref() != Some(workspace)
        {
            return Err(IdentityFailure::WorkspaceMismatch.into_error());
        }
        Ok(session.id.clone())
    }

    fn session(&self, session_id: &str) -> Result<&Session, SimError> {
        self.sessions.get(session_id).ok_or_else(|| {
            SimError::new(404, format!("session: session not found: {session_id:?}"))
        })
    }

    // ---- tasks and runs -------------------------------------------------------------------

    pub fn enqueue_task(&mut self, spec: TaskSpec, now: Timestamp) -> EnqueuedRun {
        self.task_counter += 1;
        let global = spec.scope == TaskScope::Global
            || spec
                .workspace_id
                .as_deref()
                .is_some_and(|ws| ws.trim().is_empty());
        let workspace_id = if global {
            None
        } else {
            Some(
                spec.workspace_id
                    .unwrap_or_else(|| DEFAULT_WORKSPACE.to_owned()),
            )
        };
        let task_id = new_id("task");
        let task = Task {
            id: task_id.clone(),
            identifier: spec
                .identifier
                .filter(|identifier| !identifier.is_empty())
                .unwrap_or_else(|| format!("T-{}", self.task_counter)),
            title: spec.title,
            priority: spec.priority,
            status: "ready",
            global,
            workspace_id,
            owner: spec.owner.filter(|owner| !owner.is_empty()),
            paused: spec.paused,
            metadata: spec.metadata,
            handoff_summary: spec.handoff_summary,
            max_runtime_seconds: spec.max_runtime_seconds,
            required_capabilities: spec.required_capabilities,
            channel: spec.channel.filter(|channel| !channel.is_empty()),
            max_attempts: match spec.max_attempts {
                0 => DEFAULT_MAX_ATTEMPTS,
                n => n.min(MAX_ATTEMPTS_CAP),
            },
            run_ids: Vec::new(),
            events: VecDeque::new(),
            event_seq: 0,
        };
        self.tasks.insert(task_id.clone(), task);
        let run_id = self.new_run(&task_id, now).unwrap_or_default();
        EnqueuedRun { task_id, run_id }
    }

    pub fn enqueue_run(&mut self, task_id: &str, now: Timestamp) -> Option<EnqueuedRun> {
        let run_id = self.new_run(task_id, now)?;
        Some(EnqueuedRun {
            task_id: task_id.to_owned(),
            run_id,
        })
    }

    fn new_run(&mut self, task_id: &str, now: Timestamp) -> Option<String> {
        let task = self.tasks.get_mut(task_id)?;
        let attempt = task
            .run_ids
            .iter()
            .filter_map(|id| self.runs.get(id))
            .map(|run| run.attempt)
            .max()
            .unwrap_or(0)
            + 1;
        if attempt > task.max_attempts {
            return None;
        }
        let run_id = new_id("run");
        let coordination_channel_id = if task.global {
            None
        } else {
            Some(
                task.channel
                    .clone()
                    .unwrap_or_else(|| derived_coordination_channel(&run_id)),
            )
        };
        let run = Run {
            id: run_id.clone(),
            task_id: task_id.to_owned(),
            attempt,
            status: RunStatus::Queued,
            session_id: None,
            claim_token: None,
            claim_token_hash: None,
            lease_until: None,
            heartbeat_at: None,
            claimed_at: None,
            queued_at: now,
            ended_at: None,
            result: None,
            error: None,
            coordination_channel_id,
            metadata: task.metadata.clone(),
            origin: "daemon",
            claims: 0,
        };
        task.run_ids.push(run_id.clone());
        task.status = "ready";
        self.queue
            .insert((Reverse(task.priority.weight()), now, run_id.clone()));
        self.runs.insert(run_id.clone(), run);
        self.task_event(task_id, "task.run_enqueued", &run_id, now);
        self.ledger
            .record(&run_id, TransitionKind::Enqueued, None, &now.to_rfc3339());
        Some(run_id)
    }

    fn task_event(&mut self, task_id: &str, event_type: &str, run_id: &str, now: Timestamp) {
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.event_seq += 1;
            if task.events.len() == RECENT_EVENTS_PER_TASK {
                task.events.pop_front();
            }
            task.events.push_back(json!({
                "event_id": new_id("evt"),
                "event_type": event_type,
                "sequence": task.event_seq,
                "timestamp": now.to_rfc3339(),
                "payload": { "run_id": run_id },
                "actor": { "kind": "daemon", "ref": "agh-sim" },
            }));
        }
    }

    fn is_claimable(
        &self,
        session: &Session,
        run: &Run,
        task: &Task,
        priority_min: i64,
        capabilities: &HashSet<&str>,
    ) -> bool {
        if run.status != RunStatus::Queued || task.paused || task.priority.weight() < priority_min {
            return false;
        }
        match (&session.workspace_id, task.global) {
            (Some(workspace), false)
                if task.workspace_id.as_deref() == Some(workspace.as_str()) => {}
            (None, true) => {}
            _ => return false,
        }
        if let Some(channel) = &session.channel
            && run.coordination_channel_id.as_deref() != Some(channel.as_str())
        {
            return false;
        }
        if !task
            .required_capabilities
            .iter()
            .all(|capability| capabilities.contains(capability.as_str()))
        {
            return false;
        }
        match task.owner.as_deref() {
            None => true,
            Some(owner) => {
                owner == format!("pool:{}", session.agent_name)
                    || owner == format!("agent_session:{}", session.id)
            }
        }
    }

    /// One claim attempt (§3.7): `Ok(None)` when nothing is claimable.
    pub fn claim_next(
        &mut self,
        session_id: &str,
        request: &ClaimRequest,
        transport: Transport,
        now: Timestamp,
    ) -> Result<Option<Value>, SimError> {
        let session = self.session(session_id)?;
        if session.state != SessionState::Active {
            return Err(SimError::new(
                403,
                format!("task: permission denied: agent session {session_id:?} is not active"),
            ));
        }
        if let Some(workspace) = request
            .workspace_id
            .as_deref()
            .map(str::trim)
            .filter(|ws| !ws.is_empty())
            && session.workspace_id.as_deref() != Some(workspace)
        {
            return Err(SimError::new(
                403,
                format!(
                    "task: permission denied: agent session {session_id:?} cannot claim workspace {workspace:?}"
                ),
            ));
        }
        if let Some(active) = session.active_run.as_deref()
            && self
                .runs
                .get(active)
                .is_some_and(|run| run.holds_live_lease(session_id, now))
        {
            return Err(SimError::new(
                409,
                format!(
                    "task: active run lease exists: session {session_id:?} already owns an active task-run lease"
                ),
            ));
        }
        let mut offered: Vec<&str> = session.capabilities.iter().map(String::as_str).collect();
        offered.sort_unstable();
        offered.truncate(CONTEXT_SECTION_LIMIT);
        let mut capabilities: HashSet<&str> = offered.into_iter().collect();
        capabilities.extend(request.required_capabilities.iter().map(String::as_str));
        let priority_min = request.priority_min.unwrap_or(0);
        let chosen = self
            .queue
            .iter()
            .find(|(_, _, run_id)| {
                let Some(run) = self.runs.get(run_id) else {
                    return false;
                };
                let Some(task) = self.tasks.get(&run.task_id) else {
                    return false;
                };
                self.is_claimable(session, run, task, priority_min, &capabilities)
            })
            .cloned();
        let Some(key) = chosen else {
            return Ok(None);
        };
        self.queue.remove(&key);
        let run_id = key.2;
        let lease = request.lease(self.config.default_lease);
        let Some(run) = self.runs.get_mut(&run_id) else {
            return Ok(None);
        };
        run.status = RunStatus::Claimed;
        run.session_id = Some(session_id.to_owned());
        run.claim_token = Some(new_claim_token());
        run.claim_token_hash = Some(format!("sha256:{}", random_hex(32)));
        run.lease_until = Some(now.plus(lease));
        run.heartbeat_at = Some(now);
        run.claimed_at = Some(now);
        run.origin = transport.as_str();
        run.claims += 1;
        let task_id = run.task_id.clone();
        self.claimed_runs.insert(run_id.clone());
        if let Some(session) = self.sessions.get_mut(session_id) {
            session.active_run = Some(run_id.clone());
        }
        if let Some(task) = self.tasks.get_mut(&task_id) {
            task.status = "in_progress";
        }
        self.task_event(&task_id, "task.run_claimed", &run_id, now);
        self.ledger.record(
            &run_id,
            TransitionKind::Claimed,
            Some(session_id),
            &now.to_rfc3339(),
        );
        Ok(Some(self.claim_payload(&run_id)))
    }

    /// Lease-handle resolution (§3.8 error table).
    fn check_lease(&self, session_id: &str, run_id: &str, now: Timestamp) -> Result<(), SimError> {
        let in_handle_list = self
            .runs
            .get(run_id)
            .is_some_and(|run| run.session_id.as_deref() == Some(session_id));
        if !in_handle_list {
            let holds_other = self
                .sessions
                .get(session_id)
                .and_then(|session| session.active_run.as_deref())
                .and_then(|active| self.runs.get(active))
                .is_some_and(|run| run.holds_live_lease(session_id, now));
            return Err(if holds_other {
                SimError::foreign_run(session_id, run_id)
            } else {
                SimError::no_active_lease(session_id, run_id)
            });
        }
        let active = self
            .runs
            .get(run_id)
            .is_some_and(|run| run.holds_live_lease(session_id, now) && run.claim_token.is_some());
        if active {
            Ok(())
        } else {
            Err(SimError::lease_expired(session_id, run_id))
        }
    }

    pub fn heartbeat(
        &mut self,
        session_id: &str,
        run_id: &str,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        self.check_lease(session_id, run_id, now)?;
        let task_id = match self.runs.get_mut(run_id) {
            Some(run) => {
                run.lease_until = Some(now.plus(lease));
                run.heartbeat_at = Some(now);
                run.task_id.clone()
            }
            None => return Err(SimError::new(404, "task: task run not found")),
        };
        self.task_event(&task_id, "task.run_lease_extended", run_id, now);
        self.ledger.record(
            run_id,
            TransitionKind::Heartbeat,
            Some(session_id),
            &now.to_rfc3339(),
        );
        Ok(json!({ "lease": self.lease_summary(run_id, false) }))
    }

    pub fn finish(
        &mut self,
        session_id: &str,
        run_id: &str,
        outcome: Finish,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        self.check_lease(session_id, run_id, now)?;
        let Some(run) = self.runs.get_mut(run_id) else {
            return Err(SimError::new(404, "task: task run not found"));
        };
        let task_id = run.task_id.clone();
        let attempt = run.attempt;
        run.claim_token = None;
        run.lease_until = None;
        run.heartbeat_at = None;
        run.ended_at = Some(now);
        let (kind, event) = match outcome {
            Finish::Complete { result } => {
                run.status = RunStatus::Completed;
                run.result = result;
                (TransitionKind::Completed, "task.run_completed")
            }
            Finish::Fail { error, metadata } => {
                run.status = RunStatus::Failed;
                run.error = Some(error);
                if let Some(metadata) = metadata {
                    run.metadata = json!({ "task": run.metadata.clone(), "failure": metadata });
                }
                (TransitionKind::Failed, "task.run_failed")
            }
        };
        self.claimed_runs.remove(run_id);
        if let Some(task) = self.tasks.get_mut(&task_id) {
            task.status = match kind {
                TransitionKind::Completed => "completed",
                _ if attempt >= task.max_attempts => "failed",
                _ => "ready",
            };
        }
        if let Some(session) = self.sessions.get_mut(session_id)
            && session.active_run.as_deref() == Some(run_id)
        {
            session.active_run = None;
        }
        self.task_event(&task_id, event, run_id, now);
        self.ledger
            .record(run_id, kind, Some(session_id), &now.to_rfc3339());
        let payload = json!({ "lease": self.lease_summary(run_id, false) });
        self.remember_finished(run_id);
        Ok(payload)
    }

    pub fn release(
        &mut self,
        session_id: &str,
        run_id: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        self.check_lease(session_id, run_id, now)?;
        self.requeue(run_id, TransitionKind::Released, reason, now);
        Ok(json!({ "lease": self.lease_summary(run_id, false) }))
    }

    /// Puts the same run (same id and attempt) back in the queue with every claim field cleared.
    fn requeue(
        &mut self,
        run_id: &str,
        kind: TransitionKind,
        reason: Option<&str>,
        now: Timestamp,
    ) {
        let Some(run) = self.runs.get_mut(run_id) else {
            return;
        };
        let holder = run.session_id.take();
        run.status = RunStatus::Queued;
        run.claim_token = None;
        run.claim_token_hash = None;
        run.lease_until = None;
        run.heartbeat_at = None;
        run.claimed_at = None;
        let task_id = run.task_id.clone();
        let queued_at = run.queued_at;
        self.claimed_runs.remove(run_id);
        if let Some(holder) = holder.as_deref()
            && let Some(session) = self.sessions.get_mut(holder)
            && session.active_run.as_deref() == Some(run_id)
        {
            session.active_run = None;
        }
        let weight = match self.tasks.get_mut(&task_id) {
            Some(task) => {
                task.status = "ready";
                task.priority.weight()
            }
            None => 0,
        };
        self.queue
            .insert((Reverse(weight), queued_at, run_id.to_owned()));
        let event = if kind == TransitionKind::Released {
            "task.run_released"
        } else {
            "task.run_lease_expired"
        };
        self.task_event(&task_id, event, run_id, now);
        if let Some(reason) = reason
            && let Some(last) = self
                .tasks
                .get_mut(&task_id)
                .and_then(|task| task.events.back_mut())
        {
            last["payload"]["reason"] = json!(reason);
        }
        self.ledger
            .record(run_id, kind, holder.as_deref(), &now.to_rfc3339());
    }

    fn remember_finished(&mut self, run_id: &str) {
        self.finished_runs.push_back(run_id.to_owned());
        while self.finished_runs.len() > KEPT_FINISHED_RUNS {
            let Some(oldest) = self.finished_runs.pop_front() else {
                break;
            };
            if let Some(run) = self.runs.remove(&oldest) {
                let task_empty = match self.tasks.get_mut(&run.task_id) {
                    Some(task) => {
                        task.run_ids.retain(|id| id != &oldest);
                        task.run_ids.is_empty()
                    }
                    None => false,
                };
                if task_empty {
                    self.tasks.remove(&run.task_id);
                }
            }
            self.ledger.forget_run(&oldest);
        }
    }

    /// Makes a claimed run's lease end now (it is then expired but not yet swept).
    pub fn expire_lease(&mut self, run_id: &str, now: Timestamp) -> bool {
        let Some(run) = self.runs.get_mut(run_id) else {
            return false;
        };
        if run.status != RunStatus::Claimed {
            return false;
        }
        run.lease_until = Some(now);
        let holder = run.session_id.clone();
        self.ledger.record(
            run_id,
            TransitionKind::Expired,
            holder.as_deref(),
            &now.to_rfc3339(),
        );
        true
    }

    /// Requeues up to [`SWEEP_BATCH`] runs whose lease has passed; returns how many.
    pub fn sweep(&mut self, now: Timestamp) -> usize {
        let mut expired: Vec<(Timestamp, String)> = self
            .claimed_runs
            .iter()
            .filter_map(|run_id| self.runs.get(run_id))
            .filter(|run| run.lease_until.is_some_and(|until| until <= now))
            .map(|run| (run.lease_until.unwrap_or(now), run.id.clone()))
            .collect();
        expired.sort();
        expired.truncate(SWEEP_BATCH);
        for (_, run_id) in &expired {
            self.requeue(
                run_id,
                TransitionKind::RequeuedBySweep,
                Some("scheduler_sweep"),
                now,
            );
        }
        expired.len()
    }

    /// Stops spawned sessions whose TTL passed or whose parent is gone; returns how many.
    pub fn reap_spawned(&mut self, now: Timestamp) -> usize {
        let doomed: Vec<(String, &'static str)> = self
            .sessions
            .values()
            .filter(|session| session.state.is_live())
            .filter_map(|session| {
                let lineage = session.lineage.as_ref()?;
                let parent_id = lineage.parent_session_id.as_deref()?;
                let ttl_passed = lineage.ttl_expires_at.is_some_and(|ttl| ttl <= now);
                let parent = self.sessions.get(parent_id);
                let parent_gone = parent.is_none()
                    || (lineage.auto_stop_on_parent && parent.is_some_and(|p| !p.state.is_live()));
                let reason = if parent.is_none() {
                    "orphaned"
                } else if ttl_passed {
                    "ttl_expired"
                } else {
                    "parent_stopped"
                };
                (ttl_passed || parent_gone).then(|| (session.id.clone(), reason))
            })
            .collect();
        for (session_id, reason) in &doomed {
            let reason = *reason;
            let active = self
                .sessions
                .get(session_id)
                .and_then(|s| s.active_run.clone());
            if let Some(run_id) = active
                && self
                    .runs
                    .get(&run_id)
                    .is_some_and(|run| run.status == RunStatus::Claimed)
            {
                self.requeue(&run_id, TransitionKind::ReleasedByReaper, Some(reason), now);
            }
            if let Some(session) = self.sessions.get_mut(session_id) {
                session.state = SessionState::Stopped;
                session.updated_at = now;
            }
        }
        doomed.len()
    }

    pub fn run_snapshot(&self, run_id: &str) -> Option<RunSnapshot> {
        let run = self.runs.get(run_id)?;
        let format = |instant: Option<Timestamp>| instant.map(Timestamp::to_rfc3339);
        Some(RunSnapshot {
            run_id: run.id.clone(),
            task_id: run.task_id.clone(),
            attempt: run.attempt,
            status: run.status.as_str().to_owned(),
            session_id: run.session_id.clone(),
            claim_token_hash: run.claim_token_hash.clone(),
            lease_until: format(run.lease_until),
            heartbeat_at: format(run.heartbeat_at),
            claimed_at: format(run.claimed_at),
            queued_at: run.queued_at.to_rfc3339(),
            ended_at: format(run.ended_at),
            result: run.result.clone(),
            error: run.error.clone(),
            coordination_channel_id: run.coordination_channel_id.clone(),
            claims: run.claims,
        })
    }

    pub fn runs_by_status(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for run in self.runs.values() {
            *counts.entry(run.status.as_str().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    // ---- payloads -------------------------------------------------------------------------

    fn task_ref(&self, task: &Task) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(task.id));
        map.insert("identifier".into(), json!(task.identifier));
        map.insert("title".into(), json!(task.title));
        map.insert("status".into(), json!(task.status));
        map.insert("priority".into(), json!(task.priority.as_str()));
        if let Some(owner) = &task.owner {
            map.insert("owner".into(), owner_payload(owner));
        }
        map.insert(
            "scope".into(),
            json!(if task.global { "global" } else { "workspace" }),
        );
        put(&mut map, "workspace_id", json!(task.workspace_id));
        map.insert("latest_event_seq".into(), json!(0));
        map.insert("paused".into(), json!(task.paused));
        map.insert("effective_paused".into(), json!(task.paused));
        Value::Object(map)
    }

    fn coordination_channel(&self, run: &Run, purpose: Option<&str>) -> Option<Value> {
        let channel = run.coordination_channel_id.as_ref()?;
        let task = self.tasks.get(&run.task_id);
        let mut map = Map::new();
        map.insert("id".into(), json!(channel));
        map.insert("channel".into(), json!(channel));
        put(
            &mut map,
            "workspace_id",
            json!(task.and_then(|t| t.workspace_id.clone())),
        );
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("run_id".into(), json!(run.id));
        if let Some(purpose) = purpose {
            map.insert("purpose".into(), json!(purpose));
        }
        map.insert("allowed_message_kinds".into(), json!(MESSAGE_KINDS));
        Some(Value::Object(map))
    }

    fn run_payload(&self, run: &Run, with_channel: bool) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(run.id));
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("status".into(), json!(run.status.as_str()));
        map.insert("attempt".into(), json!(run.attempt));
        if let Some(session_id) = &run.session_id {
            map.insert(
                "claimed_by".into(),
                json!({ "kind": "agent_session", "ref": session_id }),
            );
            map.insert("session_id".into(), json!(session_id));
        }
        map.insert(
            "origin".into(),
            json!({ "kind": run.origin, "ref": "agent.task.next" }),
        );
        put(&mut map, "claim_token_hash", json!(run.claim_token_hash));
        put(&mut map, "lease_until", time(run.lease_until));
        put(&mut map, "heartbeat_at", time(run.heartbeat_at));
        put(&mut map, "claimed_at", time(run.claimed_at));
        map.insert("queued_at".into(), json!(run.queued_at.to_rfc3339()));
        put(&mut map, "ended_at", time(run.ended_at));
        put(
            &mut map,
            "coordination_channel_id",
            json!(run.coordination_channel_id),
        );
        if with_channel && let Some(channel) = self.coordination_channel(run, None) {
            map.insert("coordination_channel".into(), channel);
        }
        map.insert("metadata".into(), run.metadata.clone());
        map.insert("result".into(), run.result.clone().unwrap_or(Value::Null));
        put(&mut map, "error", json!(run.error));
        if let Some(task) = self.tasks.get(&run.task_id) {
            map.insert("max_attempts".into(), json!(task.max_attempts));
        }
        Value::Object(map)
    }

    fn lease_summary(&self, run_id: &str, with_channel: bool) -> Value {
        let Some(run) = self.runs.get(run_id) else {
            return Value::Null;
        };
        let mut map = Map::new();
        map.insert("task_id".into(), json!(run.task_id));
        map.insert("run_id".into(), json!(run.id));
        map.insert("status".into(), json!(run.status.as_str()));
        if let Some(session_id) = &run.session_id {
            map.insert("session_id".into(), json!(session_id));
            map.insert(
                "claimed_by".into(),
                json!({ "kind": "agent_session", "ref": session_id }),
            );
        }
        put(&mut map, "claim_token_hash", json!(run.claim_token_hash));
        put(&mut map, "lease_until", time(run.lease_until));
        put(&mut map, "heartbeat_at", time(run.heartbeat_at));
        put(
            &mut map,
            "coordination_channel_id",
            json!(run.coordination_channel_id),
        );
        if with_channel
            && let Some(channel) = self.coordination_channel(run, Some("task_run_coordination"))
        {
            map.insert("coordination_channel".into(), channel);
        }
        Value::Object(map)
    }

    fn claim_payload(&self, run_id: &str) -> Value {
        let Some(run) = self.runs.get(run_id) else {
            return Value::Null;
        };
        let task = self.tasks.get(&run.task_id).map(|task| self.task_ref(task));
        let mut claim = Map::new();
        claim.insert("task".into(), task.unwrap_or(Value::Null));
        claim.insert("run".into(), self.run_payload(run, true));
        claim.insert("lease".into(), self.lease_summary(run_id, true));
        if let Some(channel) = self.coordination_channel(run, None) {
            claim.insert("coordination_channel".into(), channel);
        }
        json!({ "claim": claim })
    }

    fn lineage_payload(lineage: &Lineage) -> Value {
        let mut map = Map::new();
        put(
            &mut map,
            "parent_session_id",
            json!(lineage.parent_session_id),
        );
        map.insert("root_session_id".into(), json!(lineage.root_session_id));
        map.insert("spawn_depth".into(), json!(lineage.spawn_depth));
        put(&mut map, "spawn_role", json!(lineage.spawn_role));
        put(&mut map, "ttl_expires_at", time(lineage.ttl_expires_at));
        map.insert(
            "auto_stop_on_parent".into(),
            json!(lineage.auto_stop_on_parent),
        );
        map.insert("spawn_budget".into(), json!(lineage.budget));
        map.insert("permission_policy".into(), json!(lineage.permissions));
        Value::Object(map)
    }

    fn session_summary(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(session.id));
        map.insert("name".into(), json!(session.name));
        map.insert("type".into(), json!(session.kind));
        map.insert("state".into(), json!(session.state.as_str()));
        put(&mut map, "channel", json!(session.channel));
        if let Some(lineage) = &session.lineage {
            map.insert("lineage".into(), Self::lineage_payload(lineage));
        }
        map.insert("created_at".into(), json!(session.created_at.to_rfc3339()));
        map.insert("updated_at".into(), json!(session.updated_at.to_rfc3339()));
        Value::Object(map)
    }

    fn session_full(session: &Session) -> Value {
        let mut map = match Self::session_summary(session) {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("agent_name".into(), json!(session.agent_name));
        put(&mut map, "provider", json!(session.provider));
        put(&mut map, "model", json!(session.model));
        put(&mut map, "workspace_id", json!(session.workspace_id));
        map.insert("attachable".into(), json!(false));
        map.insert(
            "badge".into(),
            json!(if session.state.is_live() {
                "running"
            } else {
                "stopped"
            }),
        );
        Value::Object(map)
    }

    fn self_payload(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("session_id".into(), json!(session.id));
        map.insert("agent_name".into(), json!(session.agent_name));
        put(&mut map, "provider", json!(session.provider));
        put(&mut map, "model", json!(session.model));
        Value::Object(map)
    }

    fn workspace_payload(session: &Session) -> Value {
        match &session.workspace_id {
            Some(workspace) => json!({ "id": workspace, "name": workspace }),
            None => json!({}),
        }
    }

    fn capabilities(session: &Session) -> Vec<Value> {
        let mut capabilities: Vec<(&str, &str)> = session
            .capabilities
            .iter()
            .map(|id| {
                let source = if id.starts_with("skill:") {
                    "skill"
                } else {
                    "agent"
                };
                (source, id.as_str())
            })
            .collect();
        capabilities.sort_unstable();
        capabilities
            .into_iter()
            .map(|(source, id)| json!({ "id": id, "source": source }))
            .collect()
    }

    fn channel_payload(workspace: Option<&str>, channel: &str) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), json!(channel));
        map.insert("channel".into(), json!(channel));
        map.insert("purpose".into(), json!("network_channel"));
        put(&mut map, "workspace_id", json!(workspace));
        map.insert("allowed_message_kinds".into(), json!(MESSAGE_KINDS));
        Value::Object(map)
    }

    /// Runtime channels of the caller's workspace plus the caller's own channel (§3.3).
    pub fn channels(&self, session_id: &str) -> Result<Value, SimError> {
        let caller = self.session(session_id)?;
        let mut names: BTreeSet<&str> = self
            .sessions
            .values()
            .filter(|session| {
                session.state.is_live() && session.workspace_id == caller.workspace_id
            })
            .filter_map(|session| session.channel.as_deref())
            .collect();
        if let Some(channel) = caller.channel.as_deref() {
            names.insert(channel);
        }
        let channels: Vec<Value> = names
            .into_iter()
            .map(|name| Self::channel_payload(caller.workspace_id.as_deref(), name))
            .collect();
        Ok(json!({ "channels": channels }))
    }

    fn limits(&self) -> Value {
        json!({
            "max_children": DEFAULT_MAX_CHILDREN,
            "max_spawn_depth": DEFAULT_MAX_DEPTH,
            "max_active_task_leases": 1,
            "context_section_limit": CONTEXT_SECTION_LIMIT,
        })
    }

    fn active_run(&self, session: &Session) -> Option<&Run> {
        let run = self.runs.get(session.active_run.as_deref()?)?;
        (run.status == RunStatus::Claimed && run.session_id.as_deref() == Some(session.id.as_str()))
            .then_some(run)
    }

    pub fn me(&self, session_id: &str) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let mut capabilities = Self::capabilities(session);
        capabilities.truncate(CONTEXT_SECTION_LIMIT);
        let leases: Vec<Value> = self
            .active_run(session)
            .map(|run| self.lease_summary(&run.id, true))
            .into_iter()
            .collect();
        let mut channels = match self.channels(session_id)?["channels"].take() {
            Value::Array(channels) => channels,
            _ => Vec::new(),
        };
        // The context's coordination channel (the active run's) is merged in by id.
        if let Some(run_channel) = self
            .active_run(session)
            .and_then(|run| self.coordination_channel(run, Some("task_run_coordination")))
            && !channels
                .iter()
                .any(|channel| channel["id"] == run_channel["id"])
        {
            channels.push(run_channel);
            channels.sort_by(|a, b| {
                let key = |c: &Value| {
                    (
                        c["workspace_id"].as_str().unwrap_or("").to_owned(),
                        c["id"].as_str().unwrap_or("").to_owned(),
                    )
                };
                key(a).cmp(&key(b))
            });
        }
        Ok(json!({ "me": {
            "self": Self::self_payload(session),
            "workspace": Self::workspace_payload(session),
            "session": Self::session_summary(session),
            "capabilities": capabilities,
            "channels": channels,
            "active_task_leases": leases,
            "coordinator": Self::coordinator(session),
            "limits": self.limits(),
        }}))
    }

    fn coordinator(session: &Session) -> Value {
        let mut map = Map::new();
        map.insert("enabled".into(), json!(false));
        map.insert("agent_name".into(), json!("coordinator"));
        map.insert("default_ttl_seconds".into(), json!(7200));
        map.insert("max_children".into(), json!(5));
        map.insert("max_active_sessions_per_workspace".into(), json!(5));
        map.insert(
            "source".into(),
            json!(if session.workspace_id.is_some() {
                "workspace"
            } else {
                "global"
            }),
        );
        put(&mut map, "workspace_id", json!(session.workspace_id));
        Value::Object(map)
    }

    pub fn coordinator_config(&self, session_id: &str) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        Ok(json!({ "coordinator": Self::coordinator(session) }))
    }

    pub fn context(&self, session_id: &str, now: Timestamp) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let active = self.active_run(session);
        let task_section = match active.and_then(|run| Some((run, self.tasks.get(&run.task_id)?))) {
            Some((run, task)) => {
                let prior: Vec<Value> = task
                    .run_ids
                    .iter()
                    .filter_map(|id| self.runs.get(id))
                    .filter(|other| other.id != run.id && other.attempt < run.attempt)
                    .rev()
                    .take(PRIOR_ATTEMPTS)
                    .map(|other| self.run_payload(other, false))
                    .collect();
                let events: Vec<Value> = task.events.iter().cloned().collect();
                json!({
                    "available": true,
                    "task": self.task_ref(task),
                    "lease": self.lease_summary(&run.id, true),
                    "bundle": {
                        "task": self.task_ref(task),
                        "current_run": self.run_payload(run, false),
                        "prior_attempts": prior,
                        "recent_events": events,
                        "handoff_summary": task.handoff_summary.clone().unwrap_or_default(),
                        "latest_event_seq": task.event_seq,
                        "limits": {
                            "max_runtime_seconds": task.max_runtime_seconds,
                            "summary_max_bytes": 4096,
                            "context_body_max_bytes": 8192,
                        },
                    },
                })
            }
            None => json!({ "available": false }),
        };
        let coordination = match active
            .and_then(|run| self.coordination_channel(run, Some("task_run_coordination")))
        {
            Some(channel) => json!({ "available": true, "channel": channel }),
            None => match &session.channel {
                Some(channel) => json!({
                    "available": true,
                    "channel": Self::channel_payload(session.workspace_id.as_deref(), channel),
                }),
                None => json!({ "available": false }),
            },
        };
        let mut inbox: Vec<&Envelope> = session
            .queue
            .iter()
            .filter(|envelope| envelope.coordination.is_some() && !envelope.claim_material)
            .collect();
        inbox.sort_by(|a, b| {
            (b.sent_at.unix_seconds(), &b.message_id)
                .cmp(&(a.sent_at.unix_seconds(), &a.message_id))
        });
        let unread = inbox.len();
        let items: Vec<Value> = inbox
            .iter()
            .take(CONTEXT_SECTION_LIMIT)
            .map(|envelope| {
                let preview: String = envelope
                    .body
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .take(180)
                    .collect();
                let metadata = envelope.coordination.clone().unwrap_or(Value::Null);
                json!({
                    "message_id": envelope.message_id,
                    "channel_id": metadata.get("coordination_channel_id").cloned().unwrap_or(json!(envelope.channel)),
                    "kind": metadata.get("message_kind").cloned().unwrap_or(Value::Null),
                    "metadata": metadata,
                    "preview": preview,
                    "timestamp": envelope.sent_at.truncated_to_seconds().to_rfc3339(),
                })
            })
            .collect();
        let mut peers: Vec<Value> = match &session.channel {
            Some(channel) => {
                let mut peers: Vec<(String, &Session)> = self
                    .sessions
                    .values()
                    .filter(|other| {
                        other.id != session.id
                            && other.state == SessionState::Active
                            && other.channel.as_deref() == Some(channel.as_str())
                            && other.workspace_id == session.workspace_id
                    })
                    .map(|other| (other.peer_id(), other))
                    .collect();
                peers.sort_by(|a, b| a.0.cmp(&b.0));
                peers
                    .into_iter()
                    .map(|(peer, other)| {
                        json!({
                            "peer_id": peer,
                            "session_id": other.id,
                            "channel_id": channel,
                            "display_name": other.agent_name,
                            "capabilities": other.capabilities,
                        })
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let peer_total = peers.len();
        peers.truncate(CONTEXT_SECTION_LIMIT);
        let mut capabilities = Self::capabilities(session);
        let capability_total = capabilities.len();
        capabilities.truncate(CONTEXT_SECTION_LIMIT);
        let section = |returned: usize, total: usize| json!({ "limit": CONTEXT_SECTION_LIMIT, "returned": returned, "truncated": total > returned });
        let soul = self.soul_object(&session.agent_name, None, now);
        Ok(json!({ "context": {
            "self": Self::self_payload(session),
            "workspace": Self::workspace_payload(session),
            "session": Self::session_summary(session),
            "soul": {
                "enabled": soul["enabled"],
                "present": soul["present"],
                "active": soul["active"],
                "valid": soul["valid"],
                "validation_status": soul["validation_status"],
                "digest": soul["digest"],
                "truncated": false,
                "max_body_bytes": 32768,
                "max_bytes": 2048,
                "principles": [],
                "tone": [],
            },
            "task": task_section,
            "coordination_channel": coordination,
            "inbox_summary": {
                "items": items,
                "unread_count": unread,
                "section": section(items.len(), unread),
            },
            "peer_roster": { "peers": peers.clone(), "section": section(peers.len(), peer_total) },
            "capabilities": {
                "capabilities": capabilities.clone(),
                "section": section(capabilities.len(), capability_total),
            },
            "limits": self.limits(),
            "provenance": { "source": "daemon.situation", "generated_at": now.to_rfc3339() },
        }}))
    }

    // ---- souls ----------------------------------------------------------------------------

    pub fn set_soul(&mut self, agent_name: &str, body: Option<String>) {
        match body {
            Some(body) => {
                self.souls.insert(agent_name.to_owned(), body);
            }
            None => {
                self.souls.remove(agent_name);
            }
        }
    }

    /// The soul object; a body containing `INVALID` is deemed invalid (status 422).
    pub fn soul_object(
        &self,
        agent_name: &str,
        override_body: Option<&str>,
        now: Timestamp,
    ) -> Value {
        let body = override_body.or_else(|| self.souls.get(agent_name).map(String::as_str));
        let limits = json!({ "max_body_bytes": 32768, "context_projection_bytes": 2048, "max_bytes": 32768 });
        let provenance = json!({
            "digest": "sha256:sim",
            "source": "default",
            "enabled": true,
            "max_body_bytes": 32768,
            "context_projection_bytes": 2048,
        });
        let Some(body) = body else {
            return json!({
                "agent_name": agent_name,
                "enabled": true,
                "present": false,
                "active": false,
                "valid": true,
                "validation_status": "missing",
                "truncated": false,
                "limits": limits,
                "config_provenance": provenance,
                "diagnostics": [],
                "created_at": now.to_rfc3339(),
            });
        };
        let too_long = body.len() > 32_768;
        let invalid = body.contains("INVALID") || too_long;
        let diagnostics = if invalid {
            vec![json!({
                "code": if too_long { "soul_body_too_large" } else { "soul_invalid" },
                "severity": "error",
                "message": if too_long { "SOUL.md body exceeds 32768 bytes" } else { "SOUL.md failed validation" },
                "source_path": "SOUL.md",
            })]
        } else {
            Vec::new()
        };
        json!({
            "agent_name": agent_name,
            "enabled": true,
            "present": true,
            "active": !invalid,
            "valid": !invalid,
            "validation_status": if invalid { "invalid" } else { "valid" },
            "snapshot_id": format!("soul-{:016x}", body.len()),
            "digest": format!("sha256:{:064x}", body.len()),
            "source_path": "SOUL.md",
            "frontmatter": { "tone": [], "principles": [], "constraints": [], "collaboration": [], "memory_policy": [], "tags": [] },
            "body": body,
            "truncated": false,
            "limits": limits,
            "config_provenance": provenance,
            "diagnostics": diagnostics,
            "created_at": now.to_rfc3339(),
        })
    }

    pub fn soul(
        &self,
        session_id: &str,
        agent_override: Option<&str>,
        body_override: Option<&str>,
        now: Timestamp,
    ) -> Result<(u16, Value), SimError> {
        let session = self.session(session_id)?;
        if session.workspace_id.is_none() {
            return Err(SimError::bad_request("workspace_id is required"));
        }
        let agent = agent_override.unwrap_or(&session.agent_name);
        let soul = self.soul_object(agent, body_override, now);
        let status = if soul["valid"] == json!(false) {
            422
        } else {
            200
        };
        Ok((status, soul))
    }

    // ---- channels -------------------------------------------------------------------------

    fn deliver(&mut self, session_id: &str, envelope: Envelope) {
        let depth = self.config.max_queue_depth.max(1);
        if let Some(session) = self.sessions.get_mut(session_id) {
            while session.queue.len() >= depth {
                session.queue.pop_front();
            }
            session.queue.push_back(envelope);
        }
    }

    fn remember_external_peer(&mut self, peer: &str) {
        if self.external_peers.insert(peer.to_owned()) {
            self.external_peer_order.push_back(peer.to_owned());
            if self.external_peer_order.len() > KEPT_EXTERNAL_PEERS
                && let Some(oldest) = self.external_peer_order.pop_front()
            {
                self.external_peers.remove(&oldest);
            }
        }
    }

    /// Records an idempotency key; false when it was already used in this workspace.
    fn first_use_of_key(&mut self, workspace: &str, message_id: &str) -> bool {
        let key = (workspace.to_owned(), message_id.to_owned());
        if self.idempotency_keys.contains(&key) {
            return false;
        }
        self.idempotency_keys.insert(key.clone());
        self.idempotency_order.push_back(key);
        if self.idempotency_order.len() > KEPT_IDEMPOTENCY_KEYS
            && let Some(oldest) = self.idempotency_order.pop_front()
        {
            self.idempotency_keys.remove(&oldest);
        }
        true
    }

    pub fn inject_message(
        &mut self,
        to_session_id: &str,
        spec: MessageSpec,
        now: Timestamp,
    ) -> String {
        let message_id = spec
            .message_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| new_id("msg"));
        let coordination = spec
            .metadata
            .clone()
            .filter(|metadata| validate_coordination(metadata).is_ok());
        let claim_material = contains_claim_material(&spec.body)
            || spec.metadata.as_ref().is_some_and(contains_claim_material);
        if !spec.from_peer.is_empty() {
            self.remember_external_peer(&spec.from_peer);
        }
        let envelope = Envelope {
            message_id: message_id.clone(),
            channel: spec.channel,
            from_peer: spec.from_peer,
            to_peer: spec.to_peer,
            body: spec.body,
            coordination,
            claim_material,
            sent_at: now,
        };
        self.deliver(to_session_id, envelope);
        message_id
    }

    /// The daemon handing the queue to the agent turn: the messages leave the queue.
    pub fn dequeue_messages(&mut self, session_id: &str) -> usize {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return 0;
        };
        let count = session.queue.len();
        while let Some(envelope) = session.queue.pop_front() {
            if session.delivered.len() == KEPT_DELIVERED_MESSAGES {
                session.delivered.pop_front();
            }
            session.delivered.push_back(envelope);
        }
        count
    }

    /// Channel queues live in memory only; a daemon restart loses them.
    pub fn drop_channel_queues(&mut self) {
        for session in self.sessions.values_mut() {
            session.queue.clear();
        }
    }

    /// Non-destructive snapshot of the caller's queue for one channel (§5.1).
    pub fn recv(
        &self,
        session_id: &str,
        channel: &str,
        limit: Option<usize>,
    ) -> Result<RecvSnapshot, SimError> {
        let session = self.session(session_id)?;
        let on_channel: Vec<&Envelope> = session
            .queue
            .iter()
            .filter(|envelope| envelope.channel == channel)
            .collect();
        let any_on_channel = !on_channel.is_empty();
        let mut visible: Vec<&Envelope> = on_channel
            .into_iter()
            .filter(|envelope| envelope.coordination.is_some() && !envelope.claim_material)
            .collect();
        visible.sort_by(|a, b| {
            (a.sent_at.unix_seconds(), &a.message_id)
                .cmp(&(b.sent_at.unix_seconds(), &b.message_id))
        });
        let messages = visible
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|envelope| {
                let metadata = envelope.coordination.clone().unwrap_or(Value::Null);
                let mut map = Map::new();
                map.insert("message_id".into(), json!(envelope.message_id));
                map.insert(
                    "channel_id".into(),
                    metadata
                        .get("coordination_channel_id")
                        .cloned()
                        .unwrap_or_else(|| json!(envelope.channel)),
                );
                map.insert("from_session_id".into(), json!(envelope.from_peer));
                put(&mut map, "to_session_id", json!(envelope.to_peer));
                map.insert("body".into(), envelope.body.clone());
                map.insert("metadata".into(), metadata);
                map.insert(
                    "timestamp".into(),
                    json!(envelope.sent_at.truncated_to_seconds().to_rfc3339()),
                );
                Value::Object(map)
            })
            .collect();
        Ok(RecvSnapshot {
            any_on_channel,
            messages,
        })
    }

    fn local_peer_error(session: &Session, channel: &str) -> SimError {
        SimError::new(
            404,
            format!(
                "network: local peer not found: session={} channel={channel}",
                session.id
            ),
        )
    }

    pub fn send(
        &mut self,
        session_id: &str,
        channel: &str,
        request: SendRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        if session.channel.as_deref() != Some(channel) || session.state != SessionState::Active {
            return Err(Self::local_peer_error(session, channel));
        }
        validate_say_body(request.body.as_ref())?;
        let body = request.body.unwrap_or(Value::Null);
        if contains_claim_material(&body) {
            return Err(SimError::bad_request(
                "network: invalid body: body must not contain raw lease credentials",
            ));
        }
        let metadata = request.metadata.unwrap_or(Value::Null);
        let workspace = session.workspace_id.clone().unwrap_or_default();
        let from_peer = session.peer_id();
        let message_id = match request.idempotency_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => new_id("msg"),
        };
        if self.first_use_of_key(&workspace, &message_id) {
            let recipients: Vec<String> = self
                .sessions
                .values()
                .filter(|other| {
                    other.id != session_id
                        && other.state.is_live()
                        && other.channel.as_deref() == Some(channel)
                        && other.workspace_id.as_deref().unwrap_or_default() == workspace
                })
                .map(|other| other.id.clone())
                .collect();
            for recipient in recipients {
                self.deliver(
                    &recipient,
                    Envelope {
                        message_id: message_id.clone(),
                        channel: channel.to_owned(),
                        from_peer: from_peer.clone(),
                        to_peer: None,
                        body: body.clone(),
                        coordination: Some(metadata.clone()),
                        claim_material: false,
                        sent_at: now,
                    },
                );
            }
        }
        let channel_id = metadata
            .get("coordination_channel_id")
            .cloned()
            .unwrap_or_else(|| json!(channel));
        Ok(json!({ "message": {
            "message_id": message_id,
            "channel_id": channel_id,
            "from_session_id": session_id,
            "body": body,
            "metadata": metadata,
            "timestamp": now.to_rfc3339(),
        }}))
    }

    pub fn reply(
        &mut self,
        session_id: &str,
        request: ReplyRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let session = self.session(session_id)?;
        let source_id = request.reply_to_message_id.trim();
        let source = session
            .queue
            .iter()
            .chain(session.delivered.iter())
            .find(|envelope| envelope.message_id == source_id)
            .cloned()
            .ok_or_else(|| {
                SimError::new(
                    404,
                    format!("network: target peer not found: message_id={source_id:?}"),
                )
            })?;
        if source.channel.is_empty()
            || source.from_peer.is_empty()
            || session.workspace_id.is_none()
        {
            return Err(SimError::bad_request(
                "network: invalid field: source message has no workspace, channel or sender",
            ));
        }
        validate_say_body(request.body.as_ref())?;
        let metadata = if is_empty_metadata(request.metadata.as_ref()) {
            let Some(mut inherited) = source.coordination.clone() else {
                return Err(SimError::bad_request(
                    "metadata is required when the source message has no coordination metadata",
                ));
            };
            inherited["message_kind"] = json!("reply");
            inherited
        } else {
            let metadata = request.metadata.unwrap_or(Value::Null);
            validate_coordination(&metadata).map_err(SimError::bad_request)?;
            if metadata.get("message_kind").and_then(Value::as_str) != Some("reply") {
                return Err(SimError::bad_request(
                    "contract: invalid coordination message metadata: reply message_kind must be \"reply\"",
                ));
            }
            metadata
        };
        if session.channel.as_deref() != Some(source.channel.as_str())
            || session.state != SessionState::Active
        {
            return Err(Self::local_peer_error(session, &source.channel));
        }
        let caller_peer = session.peer_id();
        if source.from_peer == caller_peer {
            return Err(SimError::bad_request(
                "network: invalid field: direct room peers must differ",
            ));
        }
        let target_session = self
            .sessions
            .values()
            .find(|other| other.peer_id() == source.from_peer)
            .map(|other| {
                (
                    other.id.clone(),
                    other.state == SessionState::Active
                        && other.channel.as_deref() == Some(source.channel.as_str()),
                )
            });
        let target_present = match &target_session {
            Some((_, live)) => *live,
            None => self.external_peers.contains(&source.from_peer),
        };
        if !target_present {
            return Err(SimError::new(
                404,
                format!(
                    "network: target peer not found: peer_id={:?}",
                    source.from_peer
                ),
            ));
        }
        let workspace = session.workspace_id.clone().unwrap_or_default();
        let message_id = match request.idempotency_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => new_id("msg"),
        };
        let body = request.body.unwrap_or(Value::Null);
        if self.first_use_of_key(&workspace, &message_id)
            && let Some((target_id, _)) = &target_session
        {
            self.deliver(
                target_id,
                Envelope {
                    message_id: message_id.clone(),
                    channel: source.channel.clone(),
                    from_peer: caller_peer,
                    to_peer: Some(source.from_peer.clone()),
                    body: body.clone(),
                    coordination: Some(metadata.clone()),
                    claim_material: false,
                    sent_at: now,
                },
            );
        }
        let channel_id = metadata
            .get("coordination_channel_id")
            .cloned()
            .unwrap_or_else(|| json!(source.channel));
        Ok(json!({ "message": {
            "message_id": message_id,
            "channel_id": channel_id,
            "from_session_id": session_id,
            "to_session_id": source.from_peer,
            "body": body,
            "metadata": metadata,
            "timestamp": now.to_rfc3339(),
        }}))
    }

    // ---- spawn ----------------------------------------------------------------------------

    pub fn spawn(
        &mut self,
        session_id: &str,
        request: SpawnRequest,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let parent = self.session(session_id)?;
        if parent.state != SessionState::Active {
            return Err(SimError::new(
                422,
                format!(
                    "session: spawn validation failed: parent session {session_id:?} is not active"
                ),
            ));
        }
        let budget = parent.effective_budget();
        let child_depth = parent.depth() + 1;
        if child_depth > budget.max_depth {
            return Err(SimError::new(
                409,
                format!(
                    "session: spawn limit exceeded: child depth {child_depth} exceeds max_depth {}",
                    budget.max_depth
                ),
            ));
        }
        let live_children = self
            .sessions
            .values()
            .filter(|session| {
                session.state.is_live()
                    && session.lineage.as_ref().is_some_and(|lineage| {
                        lineage.parent_session_id.as_deref() == Some(session_id)
                    })
            })
            .count();
        if live_children >= budget.max_children as usize {
            return Err(SimError::new(
                409,
                format!(
                    "session: spawn limit exceeded: parent session {session_id:?} has {live_children} live children (max_children {})",
                    budget.max_children
                ),
            ));
        }
        let root = parent.lineage.as_ref().map_or_else(
            || parent.id.clone(),
            |lineage| lineage.root_session_id.clone(),
        );
        if budget.max_active_per_workspace > 0 {
            let live_in_workspace = self
                .sessions
                .values()
                .filter(|session| {
                    session.state.is_live()
                        && session.workspace_id == parent.workspace_id
                        && (session.id == root
                            || session
                                .lineage
                                .as_ref()
                                .is_some_and(|lineage| lineage.root_session_id == root))
                })
                .count();
            if live_in_workspace >= budget.max_active_per_workspace as usize {
                return Err(SimError::new(
                    409,
                    format!(
                        "session: spawn limit exceeded: workspace has {live_in_workspace} live sessions (max_active_per_workspace {})",
                        budget.max_active_per_workspace
                    ),
                ));
            }
        }
        let requested = request.permissions.clone().unwrap_or_default();
        let parent_policy = parent
            .lineage
            .as_ref()
            .map(|lineage| lineage.permissions.clone())
            .unwrap_or_default();
        for ((category, child_atoms), (_, parent_atoms)) in requested
            .categories()
            .into_iter()
            .zip(parent_policy.categories())
        {
            if let Some(atom) = child_atoms.iter().find(|atom| !parent_atoms.contains(atom)) {
                return Err(SimError::new(
                    403,
                    format!(
                        "session: spawn permission denied: child {category} permission atom {atom:?} widens parent permissions"
                    ),
                ));
            }
        }
        let role = request.role();
        let ttl = request.ttl_seconds.unsigned_abs();
        let lineage = Lineage {
            parent_session_id: Some(session_id.to_owned()),
            root_session_id: root,
            spawn_depth: child_depth,
            spawn_role: Some(role.clone()),
            ttl_expires_at: Some(now.plus(Duration::from_secs(ttl))),
            auto_stop_on_parent: request.auto_stop_on_parent.unwrap_or(true),
            budget: SpawnBudget {
                ttl_seconds: ttl,
                ..budget
            },
            permissions: requested.clone(),
        };
        let child_id = new_id("sess");
        let agent_name = request.agent_name.trim().to_owned();
        let child = Session {
            id: child_id.clone(),
            name: request
                .name
                .clone()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| agent_name.clone()),
            agent_name,
            workspace_id: parent.workspace_id.clone(),
            kind: "spawned",
            state: SessionState::Active,
            channel: if role == "memory-extractor" {
                None
            } else {
                parent.channel.clone()
            },
            capabilities: Vec::new(),
            provider: request
                .provider
                .clone()
                .filter(|provider| !provider.is_empty()),
            model: None,
            lineage: Some(lineage.clone()),
            created_at: now,
            updated_at: now,
            active_run: None,
            queue: VecDeque::new(),
            delivered: VecDeque::new(),
        };
        let payload = json!({ "spawn": {
            "session": Self::session_full(&child),
            "lineage": Self::lineage_payload(&lineage),
            "permissions": requested,
        }});
        self.sessions.insert(child_id, child);
        Ok(payload)
    }
}

/// How a lease ends with a terminal call.
#[derive(Debug)]
pub(crate) enum Finish {
    Complete {
        result: Option<Value>,
    },
    Fail {
        error: String,
        metadata: Option<Value>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::sim::types::Priority;

    const T0: Timestamp = Timestamp(1_700_000_000_000_000_000);

    fn state() -> (State, String) {
        let mut state = State::new(StateConfig {
            default_lease: Duration::from_secs(300),
            max_queue_depth: 100,
        });
        let session = state.create_session(
            SessionSpec::for_agent("worker", Some(DEFAULT_WORKSPACE)),
            T0,
        );
        (state, session.session_id)
    }

    fn claim(state: &mut State, session: &str, now: Timestamp) -> Option<String> {
        let claimed = state
            .claim_next(session, &ClaimRequest::default(), Transport::Unix, now)
            .expect("claim attempt");
        claimed.and_then(|claim| claim["claim"]["run"]["id"].as_str().map(str::to_owned))
    }

    #[test]
    fn derived_coordination_channels_are_lowercase_with_collapsed_separators() {
        assert_eq!(derived_coordination_channel("run-ABC.12"), "run-abc-12");
        assert_eq!(derived_coordination_channel("run..x"), "run-x");
    }

    #[test]
    fn claims_are_ordered_by_priority_then_queue_time_then_run_id() {
        let (mut state, session) = state();
        let low = state.enqueue_task(
            TaskSpec {
                priority: Priority::Low,
                ..TaskSpec::titled("low")
            },
            T0,
        );
        let first_high = state.enqueue_task(
            TaskSpec {
                priority: Priority::High,
                ..TaskSpec::titled("a")
            },
            T0.plus(Duration::from_secs(1)),
        );
        let second_high = state.enqueue_task(
            TaskSpec {
                priority: Priority::High,
                ..TaskSpec::titled("b")
            },
            T0.plus(Duration::from_secs(2)),
        );
        let mut order = Vec::new();
        for _ in 0..3 {
            let run = claim(&mut state, &session, T0).expect("a run");
            state
                .finish(&session, &run, Finish::Complete { result: None }, T0)
                .expect("complete");
            order.push(run);
        }
        assert_eq!(
            order,
            vec![first_high.run_id, second_high.run_id, low.run_id]
        );
    }

    #[test]
    fn lease_errors_follow_the_autonomy_table() {
        let (mut state, session) = state();
        let run = state.enqueue_task(TaskSpec::titled("x"), T0).run_id;
        let no_lease = state.heartbeat(&session, "run-other", Duration::from_secs(1), T0);
        assert_eq!(no_lease.map_err(|e| e.status), Err(409));
        claim(&mut state, &session, T0);
        let foreign = state.heartbeat(&session, "run-other", Duration::from_secs(1), T0);
        assert!(
            foreign.is_err_and(|e| e.status == 403 && e.message.contains("AUTONOMY_FOREIGN_RUN"))
        );
        let later = T0.plus(Duration::from_secs(301));
        let expired = state.heartbeat(&session, &run, Duration::from_secs(1), later);
        assert!(
            expired.is_err_and(|e| e.status == 409 && e.message.contains("AUTONOMY_LEASE_EXPIRED"))
        );
        assert_eq!(state.sweep(later), 1);
        let swept = state.heartbeat(&session, &run, Duration::from_secs(1), later);
        assert!(swept.is_err_and(|e| e.message.contains("AUTONOMY_NO_ACTIVE_LEASE")));
    }

    #[test]
    fn a_sweep_requeues_at_most_one_hundred_runs() {
        let (mut state, _) = state();
        for index in 0..150 {
            let session = state
                .create_session(
                    SessionSpec::for_agent(&format!("w{index}"), Some(DEFAULT_WORKSPACE)),
                    T0,
                )
                .session_id;
            state.enqueue_task(TaskSpec::titled("x"), T0);
            claim(&mut state, &session, T0);
        }
        let later = T0.plus(Duration::from_secs(400));
        assert_eq!(state.sweep(later), SWEEP_BATCH);
        assert_eq!(state.sweep(later), 50);
        assert_eq!(state.runs_by_status().get("queued"), Some(&150));
    }

    #[test]
    fn finished_runs_beyond_the_retention_window_are_forgotten() {
        let (mut state, session) = state();
        for _ in 0..KEPT_FINISHED_RUNS + 10 {
            state.enqueue_task(TaskSpec::titled("x"), T0);
            let run = claim(&mut state, &session, T0).expect("run");
            state
                .finish(&session, &run, Finish::Complete { result: None }, T0)
                .expect("complete");
        }
        assert_eq!(state.runs.len(), KEPT_FINISHED_RUNS);
        assert_eq!(state.tasks.len(), KEPT_FINISHED_RUNS);
        assert_eq!(state.ledger.snapshot(BTreeMap::new()).violations_total, 0);
    }

    #[test]
    fn attempts_are_numbered_per_task_and_capped_by_max_attempts() {
        let (mut state, _) = state();
        let task = state.enqueue_task(
            TaskSpec {
                max_attempts: 2,
                ..TaskSpec::titled("x")
            },
            T0,
        );
        let second = state
            .enqueue_run(&task.task_id, T0)
            .expect("second attempt");
        assert_eq!(
            state.run_snapshot(&second.run_id).map(|run| run.attempt),
            Some(2)
        );
        assert!(state.enqueue_run(&task.task_id, T0).is_none());
    }

    #[test]
    fn owned_tasks_are_offered_only_to_their_pool_or_session() {
        let (mut state, session) = state();
        state.enqueue_task(
            TaskSpec {
                owner: Some("pool:reviewer".to_owned()),
                ..TaskSpec::titled("x")
            },
            T0,
        );
        assert_eq!(claim(&mut state, &session, T0), None);
        let mine = state.enqueue_task(
            TaskSpec {
                owner: Some(format!("agent_session:{session}")),
                ..TaskSpec::titled("y")
            },
            T0,
        );
        assert_eq!(claim(&mut state, &session, T0), Some(mine.run_id));
    }

    #[test]
    fn required_capabilities_must_be_offered_by_the_session_or_the_request() {
        let (mut state, session) = state();
        let run = state.enqueue_task(
            TaskSpec {
                required_capabilities: vec!["rust".to_owned()],
                ..TaskSpec::titled("x")
            },
            T0,
        );
        assert_eq!(claim(&mut state, &session, T0), None);
        let offering = ClaimRequest {
            required_capabilities: vec!["rust".to_owned()],
            ..ClaimRequest::default()
        };
        let claimed = state
            .claim_next(&session, &offering, Transport::Unix, T0)
            .expect("claim attempt")
            .expect("claimed");
        assert_eq!(claimed["claim"]["run"]["id"], run.run_id);
    }
}
