//! The follower of a run's task stream: while a run is in hand, it reads the task's live events
//! (`GET /api/tasks/{id}/stream`) so an operator's cancel stops the handler at once instead of
//! at the next heartbeat, and a pause of the task shows on the board.
//!
//! One follower per run, polled beside the lease keeper in the run's own task (`lease.rs`), so
//! it ends with the run and never holds more than one stream. It starts after the task view's
//! `latest_event_seq` (read beside the bundle; AGH's claim reference never fills it in): without a
//! cursor AGH replays the task's whole history, old claims and expiries included. A cancel that
//! came before that read is in the view itself: the run is listed as canceled. When the stream ends (AGH drops a subscriber whose 256-event buffer fills)
//! or fails, it reconnects after the last event seen, backing off. A daemon without the stream
//! (404, 405) or one that refuses it is not asked again for that run; the heartbeat still
//! catches a cancel there (409 `AUTONOMY_LEASE_EXPIRED`).

use std::sync::Arc;
use std::time::Duration;

use super::{AghApi, StatusBoard};
use crate::api::types::{Claim, RunSignal, RunStatus, TaskStreamEvent, TaskView};
use crate::api::{ApiError, ErrorKind, TaskEventStream};
use crate::util::backoff::Backoff;

/// The first pause before reconnecting; doubles up to [`RECONNECT_MAX`].
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// The daemon said the run in hand was cancelled.
#[derive(Clone, Debug, PartialEq)]
pub struct OperatorCancel {
    /// `task.run_canceled` or `task.canceled`.
    pub event_type: String,
    /// The sequence of the event that said so.
    pub sequence: i64,
    /// The operator's reason, when one was given.
    pub reason: Option<String>,
}

impl std::fmt::Display for OperatorCancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an operator cancelled the run ({}", self.event_type)?;
        match &self.reason {
            Some(reason) if !reason.trim().is_empty() => write!(f, ": {reason})"),
            _ => f.write_str(")"),
        }
    }
}

/// What the follower watches: the run in hand, its task, and where the task's history stood at
/// the claim.
#[derive(Clone, Debug)]
pub(super) struct Followed {
    task_id: String,
    run_id: String,
    after: Option<i64>,
}

/// Where the follower starts, from the task view read at the claim.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct StreamStart {
    after: Option<i64>,
    canceled: bool,
}

impl StreamStart {
    /// From the task view (none when it could not be read): the task's latest event, and whether
    /// the view already lists `run_id` as canceled.
    pub(super) fn from_view(view: Option<&TaskView>, run_id: &str) -> StreamStart {
        let Some(view) = view else {
            return StreamStart::default();
        };
        StreamStart {
            after: view.task.latest_event_seq.filter(|seq| *seq > 0),
            canceled: view
                .runs
                .iter()
                .any(|run| run.id == run_id && run.status == Some(RunStatus::Canceled)),
        }
    }
}

impl Followed {
    /// Where to start: after the view's latest event when it was read (else after the claim's,
    /// when it named one); a run the view shows canceled is the cancel itself.
    pub(super) fn starting(mut self, start: StreamStart) -> Result<Followed, OperatorCancel> {
        if start.canceled {
            return Err(OperatorCancel {
                event_type: "task view: run canceled".to_string(),
                sequence: start.after.unwrap_or_default(),
                reason: None,
            });
        }
        if start.after.is_some() {
            self.after = start.after;
        }
        Ok(self)
    }

    /// The run of `claim`, or `None` when the claim names no task to follow.
    pub(super) fn of(claim: &Claim) -> Option<Followed> {
        let task_id = [Some(claim.task.id.as_str()), claim.run.task_id.as_deref()]
            .into_iter()
            .flatten()
            .find(|id| !id.is_empty())?
            .to_owned();
        Some(Followed {
            task_id,
            run_id: claim.run.id.clone(),
            after: claim.task.latest_event_seq.filter(|seq| *seq > 0),
        })
    }
}

/// Follows the run's task stream until it says the run was cancelled. Never returns otherwise:
/// a run that ends first drops it.
pub(super) async fn follow<A: AghApi>(
    api: Arc<A>,
    followed: Followed,
    status: StatusBoard,
) -> OperatorCancel {
    let mut cursor = followed.after;
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX).with_jitter(0.75, 1.25);
    loop {
        match api.task_events(&followed.task_id, cursor).await {
            Ok(stream) => {
                let read = read_stream(stream, &followed, &mut cursor, &status).await;
                match read {
                    Read::Canceled(cancel) => return cancel,
                    Read::Ended { any_event } => {
                        if any_event {
                            backoff.reset();
                        }
                        tracing::debug!(
                            after = cursor,
                            "the task stream ended; reconnecting after the last event seen"
                        );
                    }
                    Read::Failed(err) => {
                        tracing::warn!(error = %err, after = cursor, "the task stream failed; reconnecting")
                    }
                }
            }
            Err(err) if !err.is_retryable() => {
                tracing::info!(
                    error = %err,
                    "the task stream is not available for this run; an operator cancel will be found by the next heartbeat"
                );
                return std::future::pending().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not open the task stream; trying again")
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// How one connection of the stream ended.
enum Read {
    Canceled(OperatorCancel),
    Ended { any_event: bool },
    Failed(ApiError),
}

async fn read_stream(
    mut stream: TaskEventStream,
    followed: &Followed,
    cursor: &mut Option<i64>,
    status: &StatusBoard,
) -> Read {
    let mut any_event = false;
    loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Read::Ended { any_event },
            // One unreadable event is skipped: the stream goes on after it.
            Err(err) if err.kind == ErrorKind::MalformedBody => {
                tracing::warn!(error = %err, "skipped an unreadable task event");
                continue;
            }
            Err(err) => return Read::Failed(err),
        };
        any_event = true;
        if event.sequence > cursor.unwrap_or(0) {
            *cursor = Some(event.sequence);
        }
        if let Some(cancel) = act_on(&event, followed, status) {
            return Read::Canceled(cancel);
        }
    }
}

/// Applies one event to the run; answers the cancel when the event is one.
fn act_on(
    event: &TaskStreamEvent,
    followed: &Followed,
    status: &StatusBoard,
) -> Option<OperatorCancel> {
    match event.signal_for(&followed.task_id, &followed.run_id) {
        Ok(Some(RunSignal::Canceled { event_type, reason })) => Some(OperatorCancel {
            event_type,
            sequence: event.sequence,
            reason,
        }),
        Ok(Some(RunSignal::Paused { reason })) => {
            tracing::info!(
                reason = reason.as_deref().unwrap_or(""),
                "the task was paused: no new claims of it; this run goes on"
            );
            status.task_paused(&followed.run_id, Some(reason.unwrap_or_default()));
            None
        }
        Ok(Some(RunSignal::Resumed)) => {
            tracing::info!("the task was resumed");
            status.task_paused(&followed.run_id, None);
            None
        }
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(error = %err, "skipped a task event");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::TaskRef;
    use serde_json::json;

    fn followed() -> Followed {
        Followed {
            task_id: "task-1".into(),
            run_id: "run-1".into(),
            after: Some(10),
        }
    }

    fn view(latest: i64, run_status: &str) -> TaskView {
        serde_json::from_value(json!({
            "task": {"id": "task-1", "latest_event_seq": latest},
            "runs": [{"id": "run-1", "status": run_status}],
        }))
        .unwrap()
    }

    #[test]
    fn the_stream_starts_after_the_task_views_latest_event() {
        let start = StreamStart::from_view(Some(&view(42, "claimed")), "run-1");
        assert_eq!(followed().starting(start).unwrap().after, Some(42));
        // No view: the claim's cursor (AGH's is empty; then the whole history is replayed).
        let start = StreamStart::from_view(None, "run-1");
        assert_eq!(followed().starting(start).unwrap().after, Some(10));
    }

    #[test]
    fn a_run_the_task_view_shows_canceled_is_cancelled_without_a_stream() {
        let start = StreamStart::from_view(Some(&view(42, "canceled")), "run-1");
        let cancel = followed().starting(start).unwrap_err();
        assert_eq!(cancel.sequence, 42);
        let other = StreamStart::from_view(Some(&view(42, "canceled")), "run-2");
        assert!(
            followed().starting(other).is_ok(),
            "another run's cancel is not ours"
        );
    }

    fn event(
        sequence: i64,
        event_type: &str,
        run: Option<&str>,
        payload: serde_json::Value,
    ) -> TaskStreamEvent {
        serde_json::from_value(json!({
            "sequence": sequence,
            "type": event_type,
            "timeline": {
                "task": {"id": "task-1"},
                "run": run.map(|id| json!({"id": id})),
                "payload": payload,
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_claims_event_sequence_is_where_following_starts() {
        let claim = Claim {
            task: TaskRef {
                id: "task-1".into(),
                latest_event_seq: Some(41),
                ..Default::default()
            },
            ..Default::default()
        };
        let followed = Followed::of(&claim).unwrap();
        assert_eq!(followed.after, Some(41));
        assert!(Followed::of(&Claim::default()).is_none());
    }

    #[test]
    fn a_pause_and_a_resume_show_on_the_board_and_a_cancel_of_the_run_is_returned() {
        let status = StatusBoard::default();
        status.run_started(crate::worker::CurrentRun {
            run_id: "run-1".into(),
            task_id: "task-1".into(),
            attempt: 1,
            handler: String::new(),
            started_at: std::time::SystemTime::now(),
            lease_deadline: std::time::SystemTime::now(),
            task_paused: None,
        });
        let paused = event(
            11,
            "task.paused",
            None,
            json!({"paused": true, "reason": "incident"}),
        );
        assert_eq!(act_on(&paused, &followed(), &status), None);
        let current = status.snapshot().current.unwrap();
        assert_eq!(current.task_paused.as_deref(), Some("incident"));
        let resumed = event(12, "task.resumed", None, json!({"paused": false}));
        assert_eq!(act_on(&resumed, &followed(), &status), None);
        assert_eq!(status.snapshot().current.unwrap().task_paused, None);
        let other = event(
            13,
            "task.run_canceled",
            Some("run-2"),
            json!({"status": "canceled"}),
        );
        assert_eq!(act_on(&other, &followed(), &status), None);
        let mine = event(
            14,
            "task.run_canceled",
            Some("run-1"),
            json!({"status": "canceled"}),
        );
        assert_eq!(
            act_on(&mine, &followed(), &status),
            Some(OperatorCancel {
                event_type: "task.run_canceled".into(),
                sequence: 14,
                reason: None,
            })
        );
    }
}
