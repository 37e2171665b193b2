//! What a prompt from AGH means to a worker, and what the worker answers: a worker is not a chat
//! partner, so every turn ends at once with a line saying what it is doing. The one prompt that
//! changes anything is the scheduler's wake (`_meta.synthetic` naming a run it could claim),
//! which makes the claim loop claim now; it never assigns the run (AGH's text says so too).
//!
//! The wake's shape: AGH's `internal/acp/types.go` ~197-239 (`SyntheticPromptMeta`) and
//! `internal/daemon/scheduler_runtime.go` ~586-620, 768-796 (`reason = "pending_task_run"`).

use serde_json::{Map, Value};

use crate::worker::{WorkerState, WorkerStatus};

/// The wake reason of AGH's scheduler.
pub const PENDING_TASK_RUN: &str = "pending_task_run";

/// A prompt, as far as a worker cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The scheduler says a run may be claimable: claim now.
    Wake {
        task_id: String,
        task_run_id: String,
    },
    /// Anything else: a person, another synthetic turn, a network message.
    Other,
}

impl Turn {
    /// Reads a prompt's `_meta`.
    pub fn from_meta(meta: Option<&Map<String, Value>>) -> Turn {
        let Some(synthetic) = meta
            .and_then(|meta| meta.get("synthetic"))
            .and_then(Value::as_object)
        else {
            return Turn::Other;
        };
        let text = |key: &str| {
            synthetic
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        if text("reason") != PENDING_TASK_RUN {
            return Turn::Other;
        }
        Turn::Wake {
            task_id: text("task_id"),
            task_run_id: text("task_run_id"),
        }
    }
}

/// The worker's state as one line, for a turn's answer.
pub fn describe(status: &WorkerStatus) -> String {
    if status.state == WorkerState::Starting {
        return "agh-worker: starting; claiming begins once this session is active.".into();
    }
    let counts = &status.counters;
    let tally = format!(
        "{} completed, {} failed, {} released so far",
        counts.runs_completed, counts.runs_failed, counts.runs_released
    );
    let doing = match (&status.current, status.state) {
        (Some(run), _) => format!(
            "working on run {} (task {}, attempt {}) with handler {}",
            run.run_id, run.task_id, run.attempt, run.handler
        ),
        (None, WorkerState::IdentityStale) => {
            "not claiming: AGH does not accept this session now".into()
        }
        (None, WorkerState::BackingOff) => "waiting out a failed call to AGH".into(),
        (None, WorkerState::Draining | WorkerState::Stopped) => "stopping".into(),
        (None, _) => "waiting for a run to claim".into(),
    };
    format!("agh-worker: {doing}; {tally}.")
}

/// The answer to a turn: what it did, then `state` (what [`describe`] says, or a resident
/// worker's slot line).
pub fn answer(turn: &Turn, state: &str) -> String {
    match turn {
        Turn::Wake { task_run_id, .. } if !task_run_id.is_empty() => format!(
            "Woken about run {task_run_id}: claiming now (a wake does not assign the run). {state}"
        ),
        Turn::Wake { .. } => format!("Woken: claiming now. {state}"),
        Turn::Other => format!(
            "This session is an agh-worker: it claims task runs of its agent and hands them to \
             its handlers; it does not chat. {state}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_scheduler_wake_names_the_run_it_is_about() {
        let meta = meta(json!({
            "turn_source": "synthetic",
            "synthetic": {"task_id": "task-1", "task_run_id": "run-1", "reason": "pending_task_run", "summary": "…"}
        }));
        assert_eq!(
            Turn::from_meta(Some(&meta)),
            Turn::Wake {
                task_id: "task-1".into(),
                task_run_id: "run-1".into()
            }
        );
    }

    #[test]
    fn a_synthetic_turn_for_another_reason_is_not_a_wake() {
        let meta = meta(json!({"synthetic": {"task_id": "t", "reason": "heartbeat"}}));
        assert_eq!(Turn::from_meta(Some(&meta)), Turn::Other);
        assert_eq!(Turn::from_meta(None), Turn::Other);
        let odd = meta_of_wrong_type();
        assert_eq!(Turn::from_meta(Some(&odd)), Turn::Other);
    }

    fn meta_of_wrong_type() -> Map<String, Value> {
        meta(json!({"synthetic": "pending_task_run"}))
    }

    #[test]
    fn the_answer_says_what_the_worker_is_doing_and_never_claims_ownership() {
        let mut status = crate::worker::StatusBoard::default().snapshot();
        status.state = WorkerState::Idle;
        status.counters.runs_completed = 2;
        let text = answer(
            &Turn::Wake {
                task_id: "t".into(),
                task_run_id: "run-9".into(),
            },
            &describe(&status),
        );
        assert!(text.contains("run-9"), "{text}");
        assert!(text.contains("does not assign"), "{text}");
        assert!(text.contains("2 completed"), "{text}");
        let starting = crate::worker::StatusBoard::default().snapshot();
        assert!(describe(&starting).contains("starting"));
    }
}
