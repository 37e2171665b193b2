//! Following a session to its end: listen to its live event stream (or poll while there is none),
//! read its detail, its loop state and the tail of its event history; decide completion by
//! `session_complete`/`session_error`, the loop's terminal states, the session going to history,
//! or in standard mode the lead's `agent_end` with no task running (at once when the stream said
//! so; after a quiet period confirmed by a re-read when only the history did); wake a paused
//! session within the allowed resumes.

use tokio::time::Instant;

use super::config::seconds;
use super::hub::explain;
use super::live::{Live, SUBSCRIBE};
use super::{LOG_TARGET, Run, SessionEnd};
use crate::agentuity::{
    AgentuityError, HubEvent, LoopStatus, Session, SessionStatus, StreamMessage, StreamRead,
    WorkflowMode,
};
use crate::handler::Outcome;
use crate::util::time::sleep_until_option;

/// Consecutive failed reads of the session before the run fails.
const MAX_READ_FAILURES: u32 = 10;
/// Event history pages read in one poll: more new events than this many pages hold between two
/// polls are not news any more, and a bound keeps a Hub that pages wrongly from holding a poll.
const MAX_EVENT_PAGES: u32 = 10;

/// What the follower does next.
enum Next {
    Stop,
    Read,
    Connect,
    Heard(Result<StreamRead, AgentuityError>),
    Silent,
}

impl Run<'_> {
    /// Follows the session to its end: its live event stream when it can be opened (reading the
    /// session at once on every (re)open, to catch up, and now and then after), polling while it
    /// is down or when following by polling.
    pub(super) async fn follow(&mut self, id: &str) -> Outcome {
        let cancel = self.context.cancel.clone();
        let deadline = self.deadline;
        let mut live = Live::new(self.config, self.poll);
        let mut read_at = Instant::now();
        let subscribe: Vec<String> = SUBSCRIBE.iter().map(|s| s.to_string()).collect();
        loop {
            let blocked_until = self.blocked_until();
            let connect_at = live.connect_at();
            let silent_at = live.silent_at();
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => Next::Stop,
                _ = sleep_until_option(deadline) => Next::Stop,
                heard = live.next(), if live.is_open() => Next::Heard(heard),
                _ = sleep_until_option(connect_at), if connect_at.is_some() => Next::Connect,
                _ = sleep_until_option(silent_at), if silent_at.is_some() => Next::Silent,
                _ = tokio::time::sleep_until(read_at) => Next::Read,
                _ = sleep_until_option(blocked_until), if blocked_until.is_some() => Next::Read,
            };
            // Every Hub call can be interrupted: a stop must not wait for a slow answer.
            let step = async {
                match next {
                    Next::Stop => None,
                    Next::Read => {
                        let history = !live.is_open();
                        let end = self.poll_once(id, history).await;
                        read_at = self.next_read(&live);
                        Some(end)
                    }
                    Next::Connect => match self.client.session_events(id, &subscribe).await {
                        Ok(stream) => {
                            live.opened(stream);
                            // What happened before the stream opened (or while it was down) is
                            // read now: the session and its event history.
                            let end = self.poll_once(id, true).await;
                            read_at = self.next_read(&live);
                            Some(end)
                        }
                        Err(err) => {
                            live.lost(&err.to_string());
                            Some(None)
                        }
                    },
                    Next::Silent => {
                        live.lost("silent for too long");
                        read_at = Instant::now();
                        Some(None)
                    }
                    Next::Heard(Ok(StreamRead::Message(message))) => {
                        Some(self.on_message(id, message).await)
                    }
                    Next::Heard(Ok(StreamRead::Alive)) => Some(None),
                    Next::Heard(Ok(StreamRead::Ended)) => {
                        live.lost("the hub closed it");
                        read_at = Instant::now();
                        Some(None)
                    }
                    Next::Heard(Err(err)) => {
                        live.lost(&err.to_string());
                        read_at = Instant::now();
                        Some(None)
                    }
                }
            };
            let step = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                _ = sleep_until_option(deadline) => None,
                step = step => step,
            };
            match step {
                None => return self.stopped(Some(id)).await,
                Some(Some(end)) => return self.finish(id, end).await,
                Some(None) => {}
            }
        }
    }

    /// When to read the session next: at the poll cadence while it provisions (no broadcast says
    /// when that ends) or while the stream is down, rarely while the stream is live.
    fn next_read(&self, live: &Live) -> Instant {
        let provisioning = self
            .last_session
            .as_ref()
            .is_none_or(Session::is_provisioning);
        Instant::now()
            + if provisioning {
                self.poll
            } else {
                live.read_interval()
            }
    }

    /// When a blocked loop's grace runs out, so it is read again then.
    fn blocked_until(&self) -> Option<Instant> {
        self.blocked_since
            .map(|since| since + seconds(self.config.blocked_grace_seconds, 120.0))
    }

    /// A message of the live stream: a broadcast is read like an event of the history; one that
    /// decides (or may decide) the run's end is confirmed by reading the session at once.
    async fn on_message(&mut self, id: &str, message: StreamMessage) -> Option<SessionEnd> {
        let StreamMessage::Broadcast(broadcast) = message else {
            return None;
        };
        let event = broadcast.to_event();
        self.on_event(&event, true).await;
        if let Some(end) = self.session_ended.take() {
            return Some(end);
        }
        let decisive = matches!(
            event.event.as_str(),
            "session_shutdown"
                | "loop_state_updated"
                | "loop_started"
                | "loop_resumed"
                | "loop_paused"
                | "loop_blocked"
                | "loop_completed"
                | "loop_cancelled"
        ) || (event.event == "agent_end" && self.lead_ended_at.is_some());
        if decisive {
            return self.poll_once(id, false).await;
        }
        self.progress_due().await;
        None
    }

    /// One read: the session (and, when `history`, the new events of its history), and whether
    /// it is done.
    async fn poll_once(&mut self, id: &str, history: bool) -> Option<SessionEnd> {
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
        if history {
            self.read_events(id).await;
        }
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
            self.on_event(&event, false).await;
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
        if self.lead_ended_at.is_some() && self.lead_end_live && !tasks_running(session) {
            // The live broadcast is authoritative, and the read just made shows the session idle
            // (as the SDK's own consumers judge it): no quiet period to wait out.
            return Some(SessionEnd::Complete {
                status: "idle".into(),
                summary: None,
            });
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
