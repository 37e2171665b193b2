//! Finishing a run whose session is done: archive it when configured, read the final usage and
//! answer, and build the outcome, all within a budget that a cancellation cuts short.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::summary::{best_usage, final_message, usage_json};
use super::{LOG_TARGET, Run, SessionEnd};
use crate::handler::Outcome;

/// The longest a finished run spends archiving and reading its final usage and answer.
const FINISH_BUDGET_MAX: Duration = Duration::from_secs(20);
/// The least a finished run gets for that, even at its deadline: the worker's own limit comes
/// later (the deadline margin, then the cancel grace), and its cancellation cuts the reads.
const FINISH_BUDGET_MIN: Duration = Duration::from_secs(5);
/// How long an archive already sent may still take once the worker cancels a finishing run;
/// within the forced stop's grace.
pub(super) const FINISH_ARCHIVE_AFTER_CANCEL: Duration = Duration::from_secs(2);

impl Run<'_> {
    /// How long finishing may take: the time left to the deadline, within
    /// [`FINISH_BUDGET_MIN`]..[`FINISH_BUDGET_MAX`].
    fn finish_budget(&self) -> Duration {
        finish_budget(self.deadline, Instant::now())
    }

    /// Archives when configured, reads the final usage and answer, and builds the outcome, all
    /// within [`Self::finish_budget`]. The outcome is decided: a cancellation meanwhile (the
    /// worker's time limit, a shutdown) cuts the reads short and the outcome is reported with
    /// what is known, which the lease task keeps for a completed run.
    pub(super) async fn finish(&mut self, id: &str, end: SessionEnd) -> Outcome {
        let until = Instant::now() + self.finish_budget();
        let cancel = self.context.cancel.clone();
        let archived = if self.config.archive_on_finish {
            self.archive_while_finishing(id, until, &cancel).await
        } else {
            false
        };
        let known = match &end {
            SessionEnd::Complete {
                summary: Some(s), ..
            } if !s.trim().is_empty() => Some(s.clone()),
            _ => self.last_loop.as_ref().and_then(|l| l.summary.clone()),
        };
        let mut after = None;
        let mut replayed = None;
        if !cancel.is_cancelled() {
            let client = &self.client;
            let (after_slot, replayed_slot) = (&mut after, &mut replayed);
            let reads = async {
                tokio::join!(
                    async { *after_slot = client.get_session(id).await.ok() },
                    async {
                        if known.is_none() {
                            *replayed_slot = final_message(client, id).await;
                        }
                    },
                )
            };
            tokio::select! {
                biased;
                _ = reads => {}
                _ = cancel.cancelled() => {
                    tracing::info!(target: LOG_TARGET, session_id = %id, "the run was stopped while finishing; reporting its outcome with what is known");
                }
                _ = tokio::time::sleep_until(until) => {
                    tracing::warn!(target: LOG_TARGET, session_id = %id, "the final reads of the coder session took too long; reporting with what is known");
                }
            }
        }
        let summary = known.or(replayed).or_else(|| {
            after
                .as_ref()
                .or(self.last_session.as_ref())
                .and_then(|s| s.tasks.iter().rev().find_map(|t| t.result.clone()))
        });
        // The last milestones ("session complete") still go out, but a stopped run does not
        // wait long on a full event channel.
        let flush_until = if cancel.is_cancelled() {
            until.min(Instant::now() + Duration::from_secs(1))
        } else {
            until
        };
        let _ = tokio::time::timeout_at(flush_until, self.flush_progress()).await;
        let usage = best_usage([after.as_ref(), self.last_session.as_ref()]);
        match end {
            SessionEnd::Complete { status, .. } => Outcome::Complete(json!({
                "summary": summary.unwrap_or_default(),
                "status": status,
                "coder_session_id": id,
                "usage": usage_json(usage.as_ref()),
                "duration_ms": self.duration_ms(),
                "archived": archived,
            })),
            SessionEnd::Fail(error) => Outcome::Fail {
                error: format!("coder session {id}: {error}"),
                metadata: Some(json!({
                    "coder_session_id": id,
                    "summary": summary,
                    "usage": usage_json(usage.as_ref()),
                    "duration_ms": self.duration_ms(),
                    "archived": archived,
                })),
            },
        }
    }

    /// Archives by `until`; once `cancel` fires, an archive under way gets at most
    /// [`FINISH_ARCHIVE_AFTER_CANCEL`] more. Whether the session is archived.
    async fn archive_while_finishing(
        &self,
        id: &str,
        until: Instant,
        cancel: &CancellationToken,
    ) -> bool {
        let archiving = self.archive(id);
        tokio::pin!(archiving);
        let until = tokio::select! {
            biased;
            archived = &mut archiving => return archived,
            _ = tokio::time::sleep_until(until) => until,
            _ = cancel.cancelled() => until.min(Instant::now() + FINISH_ARCHIVE_AFTER_CANCEL),
        };
        match tokio::time::timeout_at(until, archiving).await {
            Ok(archived) => archived,
            Err(_) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "archiving the coder session took too long; its sandbox timeouts bound it");
                false
            }
        }
    }

    /// Archives, giving up at `until`. Whether the session is archived.
    pub(super) async fn archive_by(&self, id: &str, until: Instant) -> bool {
        match tokio::time::timeout_at(until, self.archive(id)).await {
            Ok(archived) => archived,
            Err(_) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, "archiving the coder session took too long; its sandbox timeouts bound it");
                false
            }
        }
    }

    /// Archives the session: whether it is archived now (already gone counts as archived).
    async fn archive(&self, id: &str) -> bool {
        match self.client.archive_session(id).await {
            Ok(_) => true,
            Err(err) if err.is_gone() => true,
            Err(err) => {
                tracing::warn!(target: LOG_TARGET, session_id = %id, error = %err, "archiving the coder session failed; its sandbox timeouts bound it");
                false
            }
        }
    }
}

/// How long finishing at `now` may take with the run's `deadline`.
fn finish_budget(deadline: Option<Instant>, now: Instant) -> Duration {
    deadline
        .map_or(FINISH_BUDGET_MAX, |d| d.saturating_duration_since(now))
        .clamp(FINISH_BUDGET_MIN, FINISH_BUDGET_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::CANCEL_GRACE;

    #[test]
    fn finishing_takes_the_time_left_to_the_deadline_within_bounds() {
        let now = Instant::now();
        assert_eq!(finish_budget(None, now), FINISH_BUDGET_MAX);
        let left = Duration::from_secs(12);
        assert_eq!(finish_budget(Some(now + left), now), left);
        assert_eq!(
            finish_budget(Some(now + Duration::from_secs(3600)), now),
            FINISH_BUDGET_MAX
        );
        // At or past the deadline there is still time to archive: the worker's limit is later.
        assert_eq!(finish_budget(Some(now), now), FINISH_BUDGET_MIN);
        assert!(FINISH_BUDGET_MIN + FINISH_ARCHIVE_AFTER_CANCEL < CANCEL_GRACE);
    }
}
