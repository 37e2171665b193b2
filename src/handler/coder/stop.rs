//! A run stopped by the worker (lease lost, shutdown) or by its time limit while its session is
//! live: archive it or leave it running for the next claim, within a budget that fits the
//! worker's grace.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::config::StopPolicy;
use super::finish::FINISH_ARCHIVE_AFTER_CANCEL;
use super::request::run_tag;
use super::summary::{best_usage, usage_json};
use super::{LOG_TARGET, Run};
use crate::handler::{CANCEL_GRACE, FORCED_STOP_GRACE, Outcome};

/// Everything a stopped run does (find an interrupted create's session, archive, read the final
/// usage) shares this budget. The lease task abandons a cancelled handler after
/// [`CANCEL_GRACE`] (10 s), and after a forced stop (a second `SIGTERM`) after
/// [`FORCED_STOP_GRACE`] (3 s); 8 s leaves 2 s of the grace to report the outcome. The archive
/// is sent first, at once when the session is known, so a forced stop still archives whenever
/// the Hub answers within its 3 s; the usage read only gets what the archive left.
const STOP_BUDGET: Duration = Duration::from_secs(8);
/// The part of [`STOP_BUDGET`] spent looking for a session whose create was interrupted; short
/// of a forced stop's grace, so the archive can follow.
const STOP_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of [`STOP_BUDGET`] the final usage read takes, after the archive.
const STOP_READ_TIMEOUT: Duration = Duration::from_secs(2);
// The stop path's arithmetic, checked where the constants live.
const _: () = assert!(
    STOP_BUDGET.as_millis() + 2000 <= CANCEL_GRACE.as_millis()
        && STOP_LOOKUP_TIMEOUT.as_millis() < FORCED_STOP_GRACE.as_millis()
        && STOP_LOOKUP_TIMEOUT.as_millis() + STOP_READ_TIMEOUT.as_millis()
            < STOP_BUDGET.as_millis()
        && FINISH_ARCHIVE_AFTER_CANCEL.as_millis() < FORCED_STOP_GRACE.as_millis()
);
/// A stop this close to the run's time limit is the time limit. The worker's clock for it starts
/// a moment before the handler's, so when the handler keeps no margin (or the margin is longer
/// than the limit) the worker's cancellation arrives just before the handler's own deadline; taken
/// for an ordinary stop, it left the session running under `leave_running` although a run failed
/// on its time limit is never claimed again.
const TIME_LIMIT_SLACK: Duration = Duration::from_secs(1);

impl Run<'_> {
    /// The run was stopped (cancel token or deadline). `id` is `None` before a session exists.
    /// Everything here fits in [`STOP_BUDGET`], the archive first.
    pub(super) async fn stopped(&mut self, id: Option<&str>) -> Outcome {
        let until = Instant::now() + STOP_BUDGET;
        let mut id = id.map(str::to_string).or_else(|| self.session_id.clone());
        if id.is_none() {
            // Stopped mid-create: the session may exist anyway; find it so it is not orphaned.
            id = tokio::time::timeout(STOP_LOOKUP_TIMEOUT, self.find_for_run())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        }
        let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d)
            || self
                .context
                .time_limit
                .is_some_and(|limit| self.started.elapsed() + TIME_LIMIT_SLACK >= limit);
        let Some(id) = id else {
            return if past_deadline {
                Outcome::Fail {
                    error: "coder: the time limit passed before a session existed".into(),
                    metadata: None,
                }
            } else {
                Outcome::Release("coder: stopped before a session existed".into())
            };
        };
        if past_deadline {
            tracing::warn!(target: LOG_TARGET, session_id = %id, "the run reached its time limit; archiving the coder session");
            let archived = self.archive_by(&id, until).await;
            let read_until = until.min(Instant::now() + STOP_READ_TIMEOUT);
            let after = tokio::time::timeout_at(read_until, self.client.get_session(&id))
                .await
                .ok()
                .and_then(Result::ok);
            let usage = best_usage([after.as_ref(), self.last_session.as_ref()]);
            return Outcome::Fail {
                error: format!(
                    "coder session {id}: the time limit passed; {}",
                    if archived {
                        "the session was archived"
                    } else {
                        "archiving the session failed (its sandbox timeouts bound it)"
                    }
                ),
                metadata: Some(json!({
                    "coder_session_id": id,
                    "usage": usage_json(usage.as_ref()),
                    "duration_ms": self.duration_ms(),
                    "archived": archived,
                })),
            };
        }
        match self.config.on_stop {
            StopPolicy::Archive => {
                tracing::info!(target: LOG_TARGET, session_id = %id, "the run was stopped; archiving the coder session");
                Outcome::Release(if self.archive_by(&id, until).await {
                    format!("coder: the run was stopped; coder session {id} was archived")
                } else {
                    format!(
                        "coder: the run was stopped; archiving coder session {id} failed (its sandbox timeouts bound it)"
                    )
                })
            }
            StopPolicy::LeaveRunning => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "the run was stopped; the coder session is left running for the next claim to adopt");
                Outcome::Release(format!(
                    "coder: worker stopped; coder session {id} left running (tag {}) for the next claim to adopt",
                    run_tag(&self.document().run_id)
                ))
            }
        }
    }
}
