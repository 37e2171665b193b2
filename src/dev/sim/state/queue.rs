//! The task queue: enqueuing tasks and runs (attempts), the claim order and who may claim what,
//! and `claim-next` itself.

use std::cmp::Reverse;
use std::collections::{HashSet, VecDeque};

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::{SimError, Transport};
use super::super::ledger::TransitionKind;
use super::super::requests::ClaimRequest;
use super::super::types::{DEFAULT_WORKSPACE, EnqueuedRun, SessionState, TaskScope, TaskSpec};
use super::{CONTEXT_SECTION_LIMIT, Run, RunStatus, Session, SimState, Task, new_id, random_hex};

const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ATTEMPTS_CAP: u32 = 10;

fn new_claim_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let token: String = (0..43)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("agh_claim_{token}")
}

/// Lowercase run id with characters outside `[a-z0-9_-]` collapsed to `-`.
fn derived_coordination_channel(run_id: &str) -> String {
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

/// Merges the claim's `soul` entry into a run's metadata as AGH does: into the object, or as the
/// only key of a new one (`global_db_task_claim.go` ~727-768).
fn merge_soul_entry(metadata: &mut Value, soul: Value) {
    match metadata {
        Value::Object(map) => {
            map.insert("soul".into(), soul);
        }
        _ => *metadata = json!({ "soul": soul }),
    }
}

impl SimState {
    pub(crate) fn enqueue_task(&mut self, spec: TaskSpec, now: Timestamp) -> EnqueuedRun {
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
            description: spec.description.filter(|d| !d.trim().is_empty()),
            run_metadata: spec.metadata,
            metadata: spec.task_metadata,
            created_at: now,
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

    pub(crate) fn enqueue_run(&mut self, task_id: &str, now: Timestamp) -> Option<EnqueuedRun> {
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
            // The enqueue request's metadata only; the task's own metadata never reaches a run
            // (AGH `internal/task/manager.go` ~683-688, `EnqueueRun` ~1662-1711).
            metadata: task.run_metadata.clone(),
            origin: "daemon",
            claims: 0,
        };
        task.run_ids.push(run_id.clone());
        task.status = "ready";
        self.queue
            .insert((Reverse(task.priority.weight()), now, run_id.clone()));
        self.runs.insert(run_id.clone(), run);
        self.record_transition(task_id, &run_id, TransitionKind::Enqueued, None, None, now);
        Some(run_id)
    }

    /// Records a run's transition where both watchers see it: the task's recent events (what
    /// the context bundle shows; a forced expiry is not one) and the ledger.
    pub(super) fn record_transition(
        &mut self,
        task_id: &str,
        run_id: &str,
        kind: TransitionKind,
        holder: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) {
        let event_type = match kind {
            TransitionKind::Enqueued => Some("task.run_enqueued"),
            TransitionKind::Claimed => Some("task.run_claimed"),
            TransitionKind::Heartbeat => Some("task.run_lease_extended"),
            TransitionKind::Completed => Some("task.run_completed"),
            TransitionKind::Failed => Some("task.run_failed"),
            TransitionKind::Released => Some("task.run_released"),
            TransitionKind::RequeuedBySweep | TransitionKind::ReleasedByReaper => {
                Some("task.run_lease_expired")
            }
            // A cancel records its own events, with their payloads (`operator.rs`).
            TransitionKind::Expired | TransitionKind::Canceled => None,
        };
        if let Some(event_type) = event_type {
            let payload = reason.map_or_else(|| json!({}), |reason| json!({ "reason": reason }));
            self.record_task_event(task_id, Some(run_id), event_type, payload, now);
        }
        self.ledger.record(run_id, kind, holder, &now.to_rfc3339());
    }

    pub(super) fn is_claimable(
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
    pub(crate) fn claim_next(
        &mut self,
        session_id: &str,
        request: &ClaimRequest,
        transport: Transport,
        now: Timestamp,
    ) -> Result<Option<Value>, SimError> {
        let session = self.session(session_id)?;
        let agent = session.agent_name.clone();
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
        if let Some(soul) = self.claim_soul_entry(&agent, now)
            && let Some(run) = self.runs.get_mut(&run_id)
        {
            merge_soul_entry(&mut run.metadata, soul);
        }
        self.claimed_runs.insert(run_id.clone());
        if let Some(session) = self.sessions.get_mut(session_id) {
            session.active_run = Some(run_id.clone());
        }
        if let Some(task) = self.tasks.get_mut(&task_id) {
            task.status = "in_progress";
        }
        self.record_transition(
            &task_id,
            &run_id,
            TransitionKind::Claimed,
            Some(session_id),
            None,
            now,
        );
        Ok(Some(self.claim_payload(&run_id)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::types::Priority;
    use super::super::Finish;
    use super::super::testing::{T0, claim, state};
    use super::*;

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

    #[test]
    fn every_transition_but_a_forced_expiry_is_a_task_event_and_a_release_keeps_its_reason() {
        let (mut state, session) = state();
        let enqueued = state.enqueue_task(TaskSpec::titled("x"), T0);
        let run = claim(&mut state, &session, T0).expect("a run");
        state
            .release(&session, &run, Some("handoff"), T0)
            .expect("release");
        claim(&mut state, &session, T0).expect("claimed again");
        assert!(state.expire_lease(&run, T0));
        let events: Vec<(String, Value)> = state.tasks[&enqueued.task_id]
            .events
            .iter()
            .map(|event| (event["event_type"].to_string(), event["payload"].clone()))
            .collect();
        let run_only = json!({ "run_id": run });
        assert_eq!(
            events,
            vec![
                (r#""task.run_enqueued""#.to_owned(), run_only.clone()),
                (r#""task.run_claimed""#.to_owned(), run_only.clone()),
                (
                    r#""task.run_released""#.to_owned(),
                    json!({ "run_id": run, "reason": "handoff" })
                ),
                (r#""task.run_claimed""#.to_owned(), run_only),
            ]
        );
        assert_eq!(
            state.ledger.snapshot(Default::default()).violations_total,
            0
        );
    }
}
