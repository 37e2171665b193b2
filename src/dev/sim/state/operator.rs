//! What an operator does to a task from outside the agent API: cancel it, pause it, resume it
//! (`POST /api/tasks/{id}/cancel|pause|resume`: `internal/api/httpapi/routes.go` ~286-293,
//! `internal/api/core/tasks.go` ~572-613, `internal/api/core/scheduler.go` ~13-86).
//!
//! Cancel (`internal/task/manager.go` ~481-515, 1017-1068, 3208-3275): each open run becomes
//! `canceled` with its claim token cleared and its session, lease and hash kept, so its holder's
//! next heartbeat or terminal call is refused with 409 `AUTONOMY_LEASE_EXPIRED`
//! (`task/lease_manager.go` ~428-453); one `task.run_canceled` per run, then `task.canceled`
//! listing them. Pause only blocks new claims (`task/scheduler_controls.go` ~82-127): the run in
//! hand heartbeats and completes as before.

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::errors::SimError;
use super::super::ledger::TransitionKind;
use super::{RunStatus, SimState};

const TERMINAL_TASK: [&str; 3] = ["completed", "failed", "canceled"];

impl SimState {
    /// Cancels `task_id` and its open runs; answers `{"task": …}`.
    pub(crate) fn cancel_task(
        &mut self,
        task_id: &str,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let task = self.open_task(task_id, "cancel")?;
        let open: Vec<String> = task
            .run_ids
            .iter()
            .filter(|id| {
                self.runs
                    .get(*id)
                    .is_some_and(|run| matches!(run.status, RunStatus::Queued | RunStatus::Claimed))
            })
            .cloned()
            .collect();
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.status = "canceled";
        }
        for run_id in &open {
            let Some(run) = self.runs.get_mut(run_id) else {
                continue;
            };
            let was_claimed = run.status == RunStatus::Claimed;
            run.status = RunStatus::Canceled;
            run.claim_token = None;
            run.result = None;
            run.error = None;
            run.ended_at = Some(now);
            let session_id = run.session_id.clone();
            let queued_key = (run.queued_at, run.id.clone());
            self.queue
                .retain(|(_, at, id)| (*at, id.clone()) != queued_key);
            self.claimed_runs.remove(run_id);
            let mut payload = json!({ "status": "canceled", "task_status": "canceled" });
            if let Some(reason) = reason {
                payload["reason"] = json!(reason);
            }
            if let Some(session_id) = &session_id {
                payload["session_id"] = json!(session_id);
            }
            self.record_task_event(task_id, Some(run_id), "task.run_canceled", payload, now);
            let holder = session_id.as_deref().filter(|_| was_claimed);
            self.ledger
                .record(run_id, TransitionKind::Canceled, holder, &now.to_rfc3339());
        }
        let mut payload = json!({ "status": "canceled", "canceled_run_ids": open });
        if let Some(reason) = reason {
            payload["reason"] = json!(reason);
        }
        self.record_task_event(task_id, None, "task.canceled", payload, now);
        Ok(self.task_answer(task_id))
    }

    /// Pauses `task_id`: its runs are not claimed until it is resumed. A reason is required.
    pub(crate) fn pause_task(
        &mut self,
        task_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(SimError::bad_request(
                "task: Task pause requires a reason: provide --reason so the pause audit event explains why new claims were stopped",
            ));
        }
        self.set_paused(task_id, true, Some(reason), now)
    }

    /// Lifts the pause of `task_id`.
    pub(crate) fn resume_task(&mut self, task_id: &str, now: Timestamp) -> Result<Value, SimError> {
        self.set_paused(task_id, false, None, now)
    }

    fn set_paused(
        &mut self,
        task_id: &str,
        paused: bool,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Value, SimError> {
        let previous = if paused {
            self.open_task(task_id, "pause")?.paused
        } else {
            self.known_task(task_id)?.paused
        };
        if let Some(task) = self.tasks.get_mut(task_id) {
            task.paused = paused;
        }
        let mut payload = json!({
            "manual": true, "actor_kind": "human", "actor_id": "operator",
            "previous_paused": previous, "paused": paused,
        });
        if let Some(reason) = reason {
            payload["reason"] = json!(reason);
        }
        let event_type = if paused {
            "task.paused"
        } else {
            "task.resumed"
        };
        self.record_task_event(task_id, None, event_type, payload, now);
        Ok(self.task_answer(task_id))
    }

    fn known_task(&self, task_id: &str) -> Result<&super::Task, SimError> {
        self.tasks
            .get(task_id)
            .ok_or_else(|| SimError::new(404, "task: task not found"))
    }

    /// The task, unless it has already ended (AGH answers 409 for a terminal task).
    fn open_task(&self, task_id: &str, action: &str) -> Result<&super::Task, SimError> {
        let task = self.known_task(task_id)?;
        if TERMINAL_TASK.contains(&task.status) {
            return Err(SimError::new(
                409,
                format!(
                    "task: invalid status transition: cannot {action} task {task_id:?} in status {:?}",
                    task.status
                ),
            ));
        }
        Ok(task)
    }

    /// `{"task": …}` as the operator calls answer (the reference fields of AGH's `TaskPayload`).
    fn task_answer(&self, task_id: &str) -> Value {
        let task = self.tasks.get(task_id).map(|task| self.task_ref(task));
        json!({ "task": task })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::types::TaskSpec;
    use super::super::Finish;
    use super::super::testing::{T0, claim, state};

    #[test]
    fn a_cancelled_claimed_run_keeps_its_holder_but_refuses_its_heartbeat_and_completion() {
        let (mut state, session) = state();
        let task = state.enqueue_task(TaskSpec::titled("x"), T0);
        let run = claim(&mut state, &session, T0).expect("a run");
        state
            .cancel_task(&task.task_id, Some("not needed"), T0)
            .expect("cancel");
        let snapshot = state.run_snapshot(&run).expect("run");
        assert_eq!(snapshot.status, "canceled");
        assert_eq!(snapshot.session_id.as_deref(), Some(session.as_str()));
        assert!(snapshot.lease_until.is_some() && snapshot.claim_token_hash.is_some());
        let beat = state.heartbeat(&session, &run, Duration::from_secs(60), T0);
        assert!(
            beat.is_err_and(|e| e.status == 409 && e.message.contains("AUTONOMY_LEASE_EXPIRED"))
        );
        let done = state.finish(&session, &run, Finish::Complete { result: None }, T0);
        assert!(done.is_err_and(|e| e.message.contains("AUTONOMY_LEASE_EXPIRED")));
        let types: Vec<_> = state.tasks[&task.task_id]
            .events
            .iter()
            .map(|event| event["event_type"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            types[types.len() - 2..],
            ["task.run_canceled", "task.canceled"]
        );
        assert!(
            state
                .cancel_task(&task.task_id, None, T0)
                .is_err_and(|e| e.status == 409)
        );
        assert_eq!(
            state.ledger.snapshot(Default::default()).violations_total,
            0
        );
    }

    #[test]
    fn a_paused_task_is_not_claimed_but_its_run_in_hand_goes_on() {
        let (mut state, session) = state();
        let first = state.enqueue_task(TaskSpec::titled("x"), T0);
        let run = claim(&mut state, &session, T0).expect("a run");
        assert!(
            state
                .pause_task(&first.task_id, " ", T0)
                .is_err_and(|e| e.status == 400)
        );
        state
            .pause_task(&first.task_id, "incident", T0)
            .expect("pause");
        state
            .heartbeat(&session, &run, Duration::from_secs(60), T0)
            .expect("heartbeat goes on");
        state
            .release(&session, &run, None, T0)
            .expect("release goes on");
        assert_eq!(claim(&mut state, &session, T0), None, "paused: no claim");
        state.resume_task(&first.task_id, T0).expect("resume");
        assert_eq!(claim(&mut state, &session, T0), Some(run));
    }
}
