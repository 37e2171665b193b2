//! The simulator's in-memory model and the AGH rules applied to it. Pure: every operation takes
//! "now" as an argument, so the rules are unit-testable without a clock or a server. This file
//! holds the model itself (sessions, tasks, runs, envelopes, ids); each rule set has its own file.

mod channels;
mod events;
mod leases;
mod operator;
mod queue;
mod render;
mod roles;
mod sessions;
mod souls;
mod spawn;
mod views;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;

use super::clock::Timestamp;
use super::ledger::Ledger;
use super::types::{PermissionPolicy, SessionState, SpawnBudget};

pub use events::StreamOpen;
pub(crate) use leases::Finish;
pub(crate) use roles::RoleActivation;
pub(crate) use sessions::Credentials;

/// How many items a context section (capabilities, inbox, peers) lists at most.
const CONTEXT_SECTION_LIMIT: usize = 8;
const DEFAULT_MAX_CHILDREN: u32 = 5;
const DEFAULT_MAX_DEPTH: u32 = 1;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStatus {
    Queued,
    Claimed,
    Completed,
    Failed,
    /// Cancelled by an operator (`POST /api/tasks/{id}/cancel`).
    Canceled,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Claimed => "claimed",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
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
    description: Option<String>,
    /// What each run of the task is enqueued with.
    run_metadata: Value,
    /// The task's own metadata, shown only by the task view.
    metadata: Value,
    created_at: Timestamp,
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
pub(crate) struct SimState {
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
    events: events::EventLog,
    pub ledger: Ledger,
}

impl SimState {
    pub(crate) fn new(config: StateConfig) -> SimState {
        SimState {
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
            events: events::EventLog::default(),
            ledger: Ledger::default(),
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        text.push_str(&format!("{:02x}", fastrand::u8(..)));
    }
    text
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(8))
}

/// A state with one `worker` session in the default workspace, for the rule tests.
#[cfg(test)]
mod testing {
    use std::time::Duration;

    use super::super::errors::Transport;
    use super::super::requests::ClaimRequest;
    use super::super::types::{DEFAULT_WORKSPACE, SessionSpec};
    use super::{SimState, StateConfig, Timestamp};

    pub(super) const T0: Timestamp = Timestamp(1_700_000_000_000_000_000);

    pub(super) fn state() -> (SimState, String) {
        let mut state = SimState::new(StateConfig {
            default_lease: Duration::from_secs(300),
            max_queue_depth: 100,
        });
        let session = state.create_session(
            SessionSpec::for_agent("worker", Some(DEFAULT_WORKSPACE)),
            T0,
        );
        (state, session.session_id)
    }

    /// One claim attempt by `session`; the claimed run's id.
    pub(super) fn claim(state: &mut SimState, session: &str, now: Timestamp) -> Option<String> {
        let claimed = state
            .claim_next(session, &ClaimRequest::default(), Transport::Unix, now)
            .expect("claim attempt");
        claimed.and_then(|claim| claim["claim"]["run"]["id"].as_str().map(str::to_owned))
    }
}
