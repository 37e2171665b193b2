//! Following a session to its end: poll its detail, its loop state and the tail of its event
//! history; decide completion by the loop's terminal states, or in standard mode by the session
//! going to history or the lead's `agent_end` followed by a quiet period confirmed by a re-read;
//! wake a paused session within the allowed resumes.

use tokio::time::Instant;

use super::config::seconds;
use super::hub::explain;
use super::{LOG_TARGET, Run, SessionEnd};
use crate::agentuity::{HubEvent, LoopStatus, Session, SessionStatus, WorkflowMode};
use crate::handler::Outcome;
use crate::util::time::sleep_until_option;

/// Consecutive failed reads of the session before the run fails.
const MAX_READ_FAILURES: u32 = 10;
/// Event history pages read in one poll: more new events than this many pages hold between two
/// polls are not news any more, and a bound keeps a Hub that pages wrongly from holding a poll.
const MAX_EVENT_PAGES: u32 = 10;

impl Run<'_> {
    pub(super) async fn follow(&mut self, id: &str) -> Outcome {
        let cancel = self.context.cancel.clone();
        let deadline = self.deadline;
        let mut first = true;
        loop {
            // Every Hub call of a poll can be interrupted: a stop must not wait for a slow answer.
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                _ = sleep_until_option(deadline) => None,
                end = self.poll_once(id, first) => Some(end),
            };
            first = false;
            match step {
                None => return self.stopped(Some(id)).await,
                Some(Some(end)) => return self.finish(id, end).await,
                Some(None) => {}
            }
        }
    }

    /// One poll: waits the cadence (except the first time), reads the session and its events,
    /// and says whether it is done.
    async fn poll_once(&mut self, id: &str, first: bool) -> Option<SessionEnd> {
        if !first {
            tokio::time::sleep(self.poll).await;
        }
        let provisioning_limit = seconds(self.config.provisioning_timeout_seconds, 300.0);
        let session = match self.client.get_session(id).await {
            Ok(session) => {
                self.read_failures = 0;
                session
            }
            // A just-created session may not be readable yet (the SDK tolerates a 404 while it
            // waits too): until it has been read once, gone counts as a failed read.
            Err(err) if err.is_gone() && self.last_session.is_some() => {
                return Some(SessionEnd::Fail(format!("the session disappeared: {err}")));
            }
            Err(err) if err.is_fatal() => {
                return Some(SessionEnd::Fail(format!(
                    "reading the session: {}",
                    explain(self.config, &err)
                )));
            }
            Err(err) => {
                self.read_failures += 1;
                tracing::warn!(target: LOG_TARGET, error = %err, failures = self.read_failures, "reading the coder session failed");
                if self.read_failures >= MAX_READ_FAILURES {
                    return Some(SessionEnd::Fail(format!(
                        "reading the session failed {} times: {err}",
                        self.read_failures
                    )));
                }
                return None;
            }
        };
        if let Some(SessionStatus::Other(status)) = &session.status {
            tracing::debug!(target: LOG_TARGET, status, "the coder session has a status this build does not know");
        }
        if session.is_provisioning() {
            let since = *self.provisioning_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= provisioning_limit {
                return Some(SessionEnd::Fail(format!(
                    "the session was still {} after {} s",
                    session.status_str(),
                    provisioning_limit.as_secs()
                )));
            }
            self.last_session = Some(session);
            return None;
        }
        self.read_events(id).await;
        let end = self.decide(id, &session).await;
        if let Some(cost) = session.usage.as_ref().and_then(|u| u.cost_usd)
            && self
                .reported_cost
                .is_none_or(|last| (cost - last).abs() >= 0.01)
        {
            self.reported_cost = Some(cost);
            self.pending.push(format!("${cost:.2} so far"));
        }
        self.last_session = Some(session);
        let end = end.or_else(|| self.session_ended.take());
        if end.is_none() {
            // Milestones wait for the throttle, not for the next event.
            self.progress_due().await;
        }
        end
    }

    /// Reads events newer than the last seen, paging back with `beforeId` when a whole page is new,
    /// at most [`MAX_EVENT_PAGES`] pages a poll.
    pub(super) async fn read_events(&mut self, id: &str) {
        let limit = self.config.event_page_size.max(1);
        let mut fresh: Vec<HubEvent> = Vec::new();
        let mut before = None;
        let mut pages = 0;
        loop {
            let page = match self.client.event_history(id, Some(limit), before).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::debug!(target: LOG_TARGET, error = %err, "reading the event history failed; trying again next poll");
                    return;
                }
            };
            pages += 1;
            let count = page.events.len();
            let mut new: Vec<HubEvent> = page
                .events
                .into_iter()
                .filter(|e| match (e.id, self.last_event_id) {
                    (Some(event), Some(seen)) => event > seen,
                    (_, None) => true,
                    (None, Some(_)) => false,
                })
                .collect();
            let all_new = !new.is_empty() && new.len() == count;
            let oldest = new.iter().filter_map(|e| e.id).min();
            // A Hub that ignores `beforeId` answers the same page again: paging on would never end.
            if let Some(before) = before
                && oldest.is_none_or(|oldest| oldest >= before)
            {
                tracing::debug!(target: LOG_TARGET, before, pages, "the event history did not page back past the oldest event read; older new events of this poll are skipped");
                break;
            }
            fresh.append(&mut new);
            // A first read takes one page only: older history is not news.
            if !(all_new && self.last_event_id.is_some() && count as u32 >= limit) {
                break;
            }
            let Some(oldest) = oldest else { break };
            if pages >= MAX_EVENT_PAGES {
                tracing::debug!(target: LOG_TARGET, pages, oldest, "read the most event pages a poll reads; older new events of this poll are skipped");
                break;
            }
            before = Some(oldest);
        }
        fresh.sort_by_key(|e| e.id.unwrap_or(i64::MIN));
        fresh.dedup_by_key(|e| e.id);
        for event in fresh {
            if let Some(event_id) = event.id {
                self.last_event_id = Some(self.last_event_id.map_or(event_id, |s| s.max(event_id)));
            }
            self.on_event(&event).await;
        }
    }

    async fn decide(&mut self, id: &str, session: &Session) -> Option<SessionEnd> {
        if let Some(error) = session.failure() {
            return Some(SessionEnd::Fail(error));
        }
        let loop_mode = session.workflow_mode == Some(WorkflowMode::Loop)
            || self.config.mode() == WorkflowMode::Loop
            || session.loop_status.is_some();
        if loop_mode {
            let state = match self.client.loop_state(id).await {
                Ok(answer) => answer.loop_state,
                Err(err) => {
                    tracing::debug!(target: LOG_TARGET, error = %err, "reading the loop state failed");
                    None
                }
            }
            .or_else(|| session.loop_state.clone());
            let status = state
                .as_ref()
                .and_then(|s| s.status.clone())
                .or_else(|| session.loop_status.clone());
            if status != self.last_loop.as_ref().and_then(|s| s.status.clone())
                && let Some(status) = &status
            {
                let iteration = state
                    .as_ref()
                    .and_then(|s| s.iteration)
                    .or(session.loop_iteration);
                self.progress(
                    format!(
                        "loop {status}{}",
                        iteration
                            .map(|i| format!(" (iteration {i})"))
                            .unwrap_or_default()
                    ),
                    false,
                )
                .await;
            }
            if let Some(state) = state.clone() {
                self.last_loop = Some(state);
            }
            let summary = state.as_ref().and_then(|s| s.summary.clone());
            match status {
                Some(LoopStatus::Completed) => {
                    return Some(SessionEnd::Complete {
                        status: "completed".into(),
                        summary,
                    });
                }
                Some(LoopStatus::Cancelled) => {
                    return Some(SessionEnd::Fail(format!(
                        "the loop was cancelled{}",
                        summary.map(|s| format!(": {s}")).unwrap_or_default()
                    )));
                }
                Some(status @ (LoopStatus::Blocked | LoopStatus::AwaitingInput)) => {
                    let since = *self.blocked_since.get_or_insert_with(Instant::now);
                    let grace = seconds(self.config.blocked_grace_seconds, 120.0);
                    if since.elapsed() >= grace {
                        let mut why =
                            vec![format!("the loop is {status} and no one can answer it")];
                        if let Some(state) = &state {
                            why.extend(state.summary.clone());
                            if !state.blockers.is_empty() {
                                why.push(format!("blockers: {}", state.blockers.join("; ")));
                            }
                            why.extend(
                                state.last_error.clone().map(|e| format!("last error: {e}")),
                            );
                        }
                        return Some(SessionEnd::Fail(why.join(" — ")));
                    }
                    return None;
                }
                Some(LoopStatus::Paused) => {
                    self.blocked_since = None;
                    self.wake(id, session).await;
                }
                _ => self.blocked_since = None,
            }
            if session.is_over() {
                return Some(SessionEnd::Fail(format!(
                    "the session ended ({}) before its loop completed",
                    session.status_str()
                )));
            }
            return None;
        }
        if session.is_over() {
            return Some(SessionEnd::Complete {
                status: session.status_str().to_string(),
                summary: None,
            });
        }
        if session.status == Some(SessionStatus::Paused) {
            self.wake(id, session).await;
        }
        let quiet = seconds(self.config.quiet_seconds, 45.0);
        if let Some(ended) = self.lead_ended_at
            && ended.elapsed() >= quiet
            && !tasks_running(session)
        {
            // Confirm with a fresh read: nothing newer happened and no task started meanwhile.
            let seen = self.last_event_id;
            self.read_events(id).await;
            if self.last_event_id == seen && self.lead_ended_at.is_some() {
                match self.client.get_session(id).await {
                    Ok(again) if !tasks_running(&again) && again.failure().is_none() => {
                        return Some(SessionEnd::Complete {
                            status: "idle".into(),
                            summary: None,
                        });
                    }
                    Ok(again) => {
                        if let Some(error) = again.failure() {
                            return Some(SessionEnd::Fail(error));
                        }
                    }
                    Err(err) => {
                        tracing::debug!(target: LOG_TARGET, error = %err, "the confirming read failed")
                    }
                }
            }
        }
        None
    }

    async fn wake(&mut self, id: &str, session: &Session) {
        if session.wake_available == Some(true) && self.resumes < self.config.max_resumes {
            self.resumes += 1;
            match self.client.resume_session(id).await {
                Ok(_) => {
                    self.progress(
                        format!(
                            "woke the paused session ({} of {})",
                            self.resumes, self.config.max_resumes
                        ),
                        false,
                    )
                    .await
                }
                Err(err) => {
                    tracing::warn!(target: LOG_TARGET, error = %err, "waking the paused coder session failed")
                }
            }
        }
    }
}

fn tasks_running(session: &Session) -> bool {
    session
        .tasks
        .iter()
        .any(|t| t.status.as_deref() == Some("running"))
}
