//! The claim line: the filters AGH applies when this session claims, read from `me` and the
//! worker's settings, and a warning when nothing (or no more than one run) could ever match.
//!
//! AGH builds the claim criteria from the caller's session (`internal/api/core/agent_tasks.go`
//! ~333-380: workspace, agent name, session id, channel, the agent's catalog capabilities plus the
//! requested ones) and filters queued runs in SQL (`internal/store/globaldb/global_db_task_claim.go`
//! ~496-563: not paused, scope and workspace, coordination channel, required capabilities,
//! priority; ~640-656: owner). The agent API lists no queue, so `check` says what the session can
//! take and warns only about what is certain from the session alone.

use super::{CheckLine, Status};
use crate::api::types::Me;
use crate::config::WorkerConfig;

/// AGH's per-run coordination channel prefix: a workspace run enqueued without a
/// `network_channel` gets `coord-<run id>` (`global_db_task_aux.go` ~836-844, 912-941).
const PER_RUN_CHANNEL_PREFIX: &str = "coord-";

/// The claim line from `me` (`None`: AGH did not answer, nothing to say).
pub(super) fn claim_check(me: Option<&Me>, worker: &WorkerConfig) -> CheckLine {
    let Some(me) = me else {
        return CheckLine::new(
            "claim",
            Status::Skip,
            "claim filters: unknown without an answer to /api/agent/me (see the identity line)",
        );
    };
    let filters = ClaimFilters::from_me(me, worker);
    let warnings = filters.warnings();
    let mut details = filters.describe();
    details.extend(warnings.iter().map(|warning| format!("warning: {warning}")));
    let summary = match warnings.first() {
        None => {
            "claim filters: this session claims the runs below (AGH applies these in claim-next)"
                .to_string()
        }
        Some(_) if filters.workspace.is_none() => {
            "nothing could ever be claimed by this session: see the warning".to_string()
        }
        Some(_) => {
            "at most one run could ever be claimed by this session: see the warning".to_string()
        }
    };
    let status = if warnings.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    CheckLine::new("claim", status, summary).with_details(details)
}

/// What decides which queued runs this session can claim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimFilters {
    session_id: String,
    agent: String,
    workspace: Option<String>,
    channel: Option<String>,
    /// The run the session's channel belongs to, when it is a per-run channel.
    channel_run: Option<String>,
    /// The agent's catalog capabilities.
    catalog: Vec<String>,
    /// `worker.required_capabilities`, offered on top of the catalog.
    offered: Vec<String>,
    priority_min: u64,
}

impl ClaimFilters {
    fn from_me(me: &Me, worker: &WorkerConfig) -> ClaimFilters {
        let session = me.session.as_ref();
        let channel = session
            .and_then(|s| s.channel.as_deref())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        let channel_run = channel.as_deref().and_then(|channel| {
            me.channels
                .iter()
                .find(|c| c.id.as_deref() == Some(channel) || c.channel.as_deref() == Some(channel))
                .and_then(|c| c.run_id.clone())
                .filter(|run| !run.is_empty())
                .or_else(|| {
                    channel
                        .starts_with(PER_RUN_CHANNEL_PREFIX)
                        .then(|| "(the run it was made for)".to_string())
                })
        });
        ClaimFilters {
            session_id: me.self_info.session_id.clone(),
            agent: me.self_info.agent_name.clone(),
            workspace: me
                .workspace
                .as_ref()
                .and_then(|w| w.id.clone())
                .filter(|id| !id.trim().is_empty()),
            channel,
            channel_run,
            catalog: me
                .capabilities
                .iter()
                .map(|c| c.id.trim().to_string())
                .filter(|id| !id.is_empty())
                .collect(),
            offered: worker.required_capabilities.clone(),
            priority_min: worker.priority_min,
        }
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            match &self.workspace {
                Some(workspace) => format!(
                    "workspace: tasks of workspace {workspace} only (a workspace session never claims global tasks)"
                ),
                None => "workspace: none, so global tasks only".to_string(),
            },
            match &self.channel {
                Some(channel) => format!(
                    "channel: runs whose coordination channel is {channel} only (tasks enqueued with network_channel {channel}); the session's channel decides, not the worker"
                ),
                None => "channel: none, so runs of any coordination channel".to_string(),
            },
            format!(
                "owners: unowned tasks, pool tasks of agent {agent} (owner {{kind: pool, ref: {agent}}}), and tasks owned by this session {session}; pool tasks of another agent and tasks of another session never",
                agent = self.agent,
                session = self.session_id
            ),
        ];
        let mut capabilities = self.catalog.clone();
        capabilities.extend(self.offered.iter().cloned());
        lines.push(if capabilities.is_empty() {
            "capabilities: none offered, so only runs that require no capability (add them to the agent's catalog, or worker.required_capabilities)".to_string()
        } else {
            format!(
                "capabilities: a run is claimed only when every capability it requires is among {} (the agent's catalog{})",
                capabilities.join(", "),
                if self.offered.is_empty() {
                    ""
                } else {
                    " and worker.required_capabilities"
                }
            )
        });
        if self.priority_min > 0 {
            lines.push(format!(
                "priority: weight at least {} (worker.priority_min; low 10, medium 20, high 30, urgent 40)",
                self.priority_min
            ));
        }
        lines.push(
            "paused: runs of a paused task (or under a paused parent, or while the scheduler is paused) wait until resumed"
                .to_string(),
        );
        lines
    }

    /// What is certain from the session alone: the cause, then the fix.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (Some(channel), None) = (&self.channel, &self.workspace) {
            warnings.push(format!(
                "the session has channel {channel} but no workspace: it claims global tasks only, and global runs carry no coordination channel, so none can ever match; start the session in a workspace (agh session new --workspace W --channel {channel}) or without a channel"
            ));
        } else if let (Some(channel), Some(run)) = (&self.channel, &self.channel_run) {
            warnings.push(format!(
                "the session's channel {channel} is the per-run channel AGH made for run {run} (a workspace run enqueued without network_channel gets coord-<run id>): this session can claim that run and no other; for a worker that takes many runs, enqueue them on a shared network_channel and start the session on it, or start it without a channel"
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{
        Capability, CoordinationChannel, SelfInfo, SessionSummary, WorkspaceInfo,
    };

    fn me(workspace: Option<&str>, channel: Option<&str>) -> Me {
        Me {
            self_info: SelfInfo {
                session_id: "sess-1".into(),
                agent_name: "builder".into(),
                ..Default::default()
            },
            workspace: workspace.map(|id| WorkspaceInfo {
                id: Some(id.into()),
                ..Default::default()
            }),
            session: Some(SessionSummary {
                id: "sess-1".into(),
                channel: channel.map(str::to_string),
                ..Default::default()
            }),
            capabilities: vec![Capability {
                id: "rust".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_filters_name_the_workspace_channel_owners_and_capabilities() {
        let worker = WorkerConfig {
            required_capabilities: vec!["gpu".into()],
            priority_min: 30,
            ..WorkerConfig::default()
        };
        let line = claim_check(Some(&me(Some("ws-1"), Some("builders"))), &worker);
        assert_eq!(line.status, Status::Pass, "{line:?}");
        let text = line.details.join("\n");
        for expected in [
            "tasks of workspace ws-1 only",
            "coordination channel is builders only",
            "pool tasks of agent builder",
            "owned by this session sess-1",
            "among rust, gpu (the agent's catalog and worker.required_capabilities)",
            "weight at least 30",
        ] {
            assert!(text.contains(expected), "no {expected:?} in\n{text}");
        }
    }

    #[test]
    fn a_channel_without_a_workspace_is_warned_about_with_its_fix() {
        let line = claim_check(Some(&me(None, Some("builders"))), &WorkerConfig::default());
        assert_eq!(line.status, Status::Warn, "{line:?}");
        assert!(line.summary.starts_with("nothing could ever be claimed"));
        let warning = line.details.last().cloned().unwrap_or_default();
        assert!(
            warning.contains("no workspace") && warning.contains("agh session new --workspace"),
            "{warning}"
        );
    }

    #[test]
    fn a_per_run_channel_is_warned_about_naming_its_run() {
        let mut answer = me(Some("ws-1"), Some("coord-run-7"));
        answer.channels = vec![CoordinationChannel {
            id: Some("coord-run-7".into()),
            run_id: Some("run-7".into()),
            ..Default::default()
        }];
        let line = claim_check(Some(&answer), &WorkerConfig::default());
        assert_eq!(line.status, Status::Warn, "{line:?}");
        assert!(line.summary.starts_with("at most one run"), "{line:?}");
        assert!(
            line.details
                .iter()
                .any(|d| d.contains("made for run run-7")),
            "{line:?}"
        );
        // Without the channel listed, the prefix alone tells.
        let line = claim_check(
            Some(&me(Some("ws-1"), Some("coord-x"))),
            &WorkerConfig::default(),
        );
        assert_eq!(line.status, Status::Warn, "{line:?}");
    }

    #[test]
    fn a_session_without_a_channel_or_capabilities_is_told_what_it_takes() {
        let mut answer = me(Some("ws-1"), None);
        answer.capabilities.clear();
        let line = claim_check(Some(&answer), &WorkerConfig::default());
        assert_eq!(line.status, Status::Pass);
        let text = line.details.join("\n");
        assert!(text.contains("runs of any coordination channel"), "{text}");
        assert!(
            text.contains("only runs that require no capability"),
            "{text}"
        );
        assert_eq!(
            claim_check(None, &WorkerConfig::default()).status,
            Status::Skip
        );
    }
}
