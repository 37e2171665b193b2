//! Leases on claimed runs: the lease-handle checks, heartbeat, complete/fail/release, expiry and
//! the sweep that requeues expired leases, plus run snapshots for the admin surface.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::super::ledger::TransitionKind;
use super::super::types::RunSnapshot;
use super::{Run, RunStatus, SimState};

/// Terminal runs kept before the oldest are forgotten (bounded memory over long soaks).
const KEPT_FINISHED_RUNS: usize = 10_000;
/// Runs requeued per sweep, like the daemon's batch.
const SWEEP_BATCH: usize = 100;

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

impl Run {
    pub(super) fn holds_live_lease(&self, session_id: &str, now: Timestamp) -> bool {
        self.status == RunStatus::Claimed
            && self.session_id.as_deref() == Some(session_id)
            && self.lease_until.is_none_or(|until| until > now)
    }
}

impl SimState {
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

    pub(crate) fn heartbeat(
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
        self.record_transition(
            &task_id,
            run_id,
            TransitionKind::Heartbeat,
            Some(session_id),
            None,
            now,
        );
        Ok(json!({ "lease": self.lease_summary(run_id, false) }))
    }

    pub(crate) fn finish(
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
        let kind = match outcome {
            Finish::Complete { result } => {
                run.status = RunStatus::Completed;
                run.result = result;
                TransitionKind::Completed
            }
            Finish::Fail { error, metadata } => {
                run.status = RunStatus::Failed;
                run.error = Some(error);
                if let Some(metadata) = metadata {
                    run.metadata = json!({ "task": run.metadata.clone(), "failure": metadata });
                }
                TransitionKind::Failed
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
        self.record_transition(&task_id, run_id, kind, Some(session_id), None, now);
        let payload = json!({ "lease": self.lease_summary(run_id, false) });
        self.remember_finished(run_id);
        Ok(payload)
    }

    pub(crate) fn release(
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
    pub(super) fn requeue(
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
        self.record_transition(&task_id, run_id, kind, holder.as_deref(), reason, now);
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
    pub(crate) fn expire_lease(&mut self, run_id: &str, now: Timestamp) -> bool {
        let Some(run) = self.runs.get_mut(run_id) else {
            return false;
        };
        if run.status != RunStatus::Claimed {
            return false;
        }
        run.lease_until = Some(now);
        let (task_id, holder) = (run.task_id.clone(), run.session_id.clone());
        self.record_transition(
            &task_id,
            run_id,
            TransitionKind::Expired,
            holder.as_deref(),
            None,
            now,
        );
        true
    }

    /// Requeues up to [`SWEEP_BATCH`] runs whose lease has passed; returns how many.
    pub(crate) fn sweep(&mut self, now: Timestamp) -> usize {
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

    pub(crate) fn run_snapshot(&self, run_id: &str) -> Option<RunSnapshot> {
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

    pub(crate) fn runs_by_status(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for run in self.runs.values() {
            *counts.entry(run.status.as_str().to_owned()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::types::{DEFAULT_WORKSPACE, SessionSpec, TaskSpec};
    use super::super::testing::{T0, claim, state};
    use super::*;

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
}
