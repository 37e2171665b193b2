//! What a followed session's events mean for the run: the ones that end it or restart the quiet
//! period, and the milestones forwarded as throttled progress lines.

use tokio::time::Instant;

use super::config::seconds;
use super::{Run, SessionEnd};
use crate::agentuity::HubEvent;

/// Milestones kept for the next progress line; older ones are dropped (the count is reported).
const MAX_PENDING_MILESTONES: usize = 20;
/// The longest progress line sent.
const MAX_PROGRESS_CHARS: usize = 600;

impl Run<'_> {
    pub(super) async fn progress(&mut self, text: String, force: bool) {
        let now = Instant::now();
        self.pending.push(text);
        if self.pending.len() > MAX_PENDING_MILESTONES {
            let extra = self.pending.len() - MAX_PENDING_MILESTONES;
            self.pending.drain(..extra);
            self.dropped += extra;
        }
        let interval = seconds(self.config.progress_interval_seconds, 15.0);
        if !force && self.last_progress.is_some_and(|at| now - at < interval) {
            return;
        }
        self.flush_progress().await;
    }

    pub(super) async fn progress_due(&mut self) {
        let interval = seconds(self.config.progress_interval_seconds, 15.0);
        if self.last_progress.is_none_or(|at| at.elapsed() >= interval) {
            self.flush_progress().await;
        }
    }

    pub(super) async fn flush_progress(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut line = self.pending.join("; ");
        if self.dropped > 0 {
            line = format!("(+{} earlier) {line}", self.dropped);
        }
        if line.chars().count() > MAX_PROGRESS_CHARS {
            line = line.chars().take(MAX_PROGRESS_CHARS).collect::<String>() + "…";
        }
        self.pending.clear();
        self.dropped = 0;
        self.last_progress = Some(Instant::now());
        self.context.progress(format!("coder: {line}")).await;
    }

    /// One event of the session; `live` when it came over the stream as it happened (not read
    /// from the history later).
    pub(super) async fn on_event(&mut self, event: &HubEvent, live: bool) {
        let name = event.event.as_str();
        let payload_text = |key: &str| {
            event.payload.get(key).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| (!v.is_null()).then(|| v.to_string()))
            })
        };
        let agent = event
            .agent
            .clone()
            .or_else(|| payload_text("agentName"))
            .or_else(|| payload_text("agent"));
        let who = agent.clone().unwrap_or_else(|| "lead".into());
        match name {
            "session_complete" => {
                self.session_ended = Some(SessionEnd::Complete {
                    status: "session_complete".into(),
                    summary: payload_text("summary").or_else(|| payload_text("result")),
                });
            }
            "session_error" => {
                let error = payload_text("error")
                    .or_else(|| payload_text("message"))
                    .unwrap_or_else(|| "the session reported an error".into());
                self.session_ended = Some(SessionEnd::Fail(error));
            }
            "agent_end" if event.task_id.is_none() => {
                self.lead_ended_at = Some(Instant::now());
                self.lead_end_live = live;
            }
            "agent_start"
            | "turn_start"
            | "task_start"
            | "tool_execution_start"
            | "message_start" => {
                // The lead (or a sub-agent) is working again: the quiet period starts over.
                self.lead_ended_at = None;
            }
            _ => {}
        }
        let milestone = match name {
            "session_complete" => Some("session complete".to_string()),
            "session_error" => Some(format!(
                "session error: {}",
                payload_text("error").unwrap_or_default()
            )),
            "session_shutdown" => Some("session shut down".into()),
            "task_start" => Some(format!("{who} started a task")),
            "task_complete" => Some(format!("{who} finished a task")),
            "task_error" => Some(format!(
                "{who} task failed: {}",
                payload_text("error").unwrap_or_default()
            )),
            "agent_end" if event.task_id.is_none() => Some(format!("{who} finished its turn")),
            "tool_execution_start" | "tool_call" => Some(format!(
                "{who}: {}",
                payload_text("toolName")
                    .or_else(|| payload_text("name"))
                    .unwrap_or_else(|| "tool".into())
            )),
            "loop_completed" => Some("loop completed".into()),
            "loop_blocked" => Some("loop blocked".into()),
            "loop_cancelled" => Some("loop cancelled".into()),
            "agent_progress" => match payload_text("status").as_deref() {
                Some("tool_start") => Some(format!(
                    "{who}: {}",
                    payload_text("currentTool").unwrap_or_else(|| "tool".into())
                )),
                Some(status @ ("completed" | "failed")) => Some(format!("{who} {status}")),
                _ => None,
            },
            _ => None,
        };
        if let Some(milestone) = milestone {
            self.progress(milestone, false).await;
        }
    }
}
