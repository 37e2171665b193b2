//! What AGH's task-role runtime and scheduler read of the state: the worker sessions pool-owned
//! runs call for, and which queued run an idle session may be woken about.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::super::clock::Timestamp;
use super::super::types::{SessionSpec, SessionState};
use super::{CONTEXT_SECTION_LIMIT, Session, SimState};

/// A worker session a queued pool-owned run calls for, as AGH's task-role runtime starts it
/// (`internal/daemon/task_role_runtime.go` ~262-297, 343-368, 520-563).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleActivation {
    pub agent_name: String,
    /// `None` for a global task.
    pub workspace_id: Option<String>,
    /// The run's coordination channel (a per-run one unless the task has a network channel).
    pub channel: Option<String>,
    /// `task-role:<agent>:<channel or "default">`.
    pub name: String,
}

impl RoleActivation {
    /// The session to create for it: a system session of the pool's agent on the run's channel.
    pub(crate) fn spec(&self) -> SessionSpec {
        SessionSpec {
            name: Some(self.name.clone()),
            channel: self.channel.clone(),
            ..SessionSpec::for_agent(&self.agent_name, self.workspace_id.as_deref())
        }
    }

    /// Identifies the activation among the ones being started.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}@{}",
            self.name,
            self.workspace_id.as_deref().unwrap_or("")
        )
    }

    /// AGH reuses a `starting` or `active` session of the same agent, channel, name and
    /// workspace (`task_role_runtime.go` ~520-553).
    fn reusable(&self, session: &Session) -> bool {
        matches!(session.state, SessionState::Starting | SessionState::Active)
            && session.agent_name == self.agent_name
            && session.channel == self.channel
            && session.name == self.name
            && session.workspace_id == self.workspace_id
    }
}

impl SimState {
    /// The worker sessions queued pool-owned runs call for and no live session answers yet.
    pub(crate) fn role_activations(&self) -> Vec<RoleActivation> {
        let mut seen = HashSet::new();
        let mut activations = Vec::new();
        for (_, _, run_id) in &self.queue {
            let Some(run) = self.runs.get(run_id) else {
                continue;
            };
            let Some(task) = self.tasks.get(&run.task_id) else {
                continue;
            };
            let Some(agent_name) = task
                .owner
                .as_deref()
                .and_then(|owner| owner.strip_prefix("pool:"))
                .map(str::trim)
                .filter(|agent| !agent.is_empty())
            else {
                continue;
            };
            let channel = run.coordination_channel_id.clone();
            let activation = RoleActivation {
                agent_name: agent_name.to_owned(),
                workspace_id: task.workspace_id.clone(),
                name: format!(
                    "task-role:{agent_name}:{}",
                    channel.as_deref().unwrap_or("default")
                ),
                channel,
            };
            if seen.insert(activation.key())
                && !self
                    .sessions
                    .values()
                    .any(|session| activation.reusable(session))
            {
                activations.push(activation);
            }
        }
        activations
    }

    /// The queued run the scheduler would wake `session_id` about: the session is active and
    /// holds no live lease, and the run is one it could claim (`internal/scheduler/scheduler.go`
    /// ~682-793). Whether a turn is open is the caller's to know.
    pub(crate) fn wake_candidate(
        &self,
        session_id: &str,
        now: Timestamp,
    ) -> Option<(String, String)> {
        let session = self.sessions.get(session_id)?;
        if session.state != SessionState::Active {
            return None;
        }
        if session
            .active_run
            .as_deref()
            .and_then(|run_id| self.runs.get(run_id))
            .is_some_and(|run| run.holds_live_lease(session_id, now))
        {
            return None;
        }
        let mut offered: Vec<&str> = session.capabilities.iter().map(String::as_str).collect();
        offered.sort_unstable();
        offered.truncate(CONTEXT_SECTION_LIMIT);
        let capabilities: HashSet<&str> = offered.into_iter().collect();
        self.queue.iter().find_map(|(_, _, run_id)| {
            let run = self.runs.get(run_id)?;
            let task = self.tasks.get(&run.task_id)?;
            self.is_claimable(session, run, task, 0, &capabilities)
                .then(|| (task.id.clone(), run.id.clone()))
        })
    }

    /// `{"session": SessionPayload}` as `POST /api/sessions` answers it
    /// (`internal/api/contract/contract.go` ~90-120, `responses.go` ~13).
    pub(crate) fn session_response(&self, session_id: &str) -> Option<Value> {
        let session = self.sessions.get(session_id)?;
        Some(json!({ "session": Self::session_full(session) }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::types::TaskSpec;
    use super::super::testing::{T0, claim, state};
    use super::*;

    fn pool_task(agent: &str, channel: Option<&str>) -> TaskSpec {
        TaskSpec {
            owner: Some(format!("pool:{agent}")),
            channel: channel.map(str::to_owned),
            ..TaskSpec::titled("pooled")
        }
    }

    #[test]
    fn a_queued_pool_owned_run_calls_for_a_task_role_session_on_its_channel_until_one_exists() {
        let (mut state, _) = state();
        state.enqueue_task(pool_task("agh-worker", Some("lane")), T0);
        state.enqueue_task(pool_task("agh-worker", Some("lane")), T0);
        state.enqueue_task(TaskSpec::titled("unowned"), T0);
        let activations = state.role_activations();
        assert_eq!(activations.len(), 1, "{activations:?}");
        let activation = &activations[0];
        assert_eq!(activation.name, "task-role:agh-worker:lane");
        assert_eq!(activation.channel.as_deref(), Some("lane"));
        assert_eq!(activation.workspace_id.as_deref(), Some("ws-default"));
        state.create_session(
            SessionSpec {
                state: SessionState::Starting,
                ..activation.spec()
            },
            T0,
        );
        assert!(state.role_activations().is_empty());
    }

    #[test]
    fn each_run_without_a_network_channel_calls_for_its_own_session() {
        let (mut state, _) = state();
        state.enqueue_task(pool_task("agh-worker", None), T0);
        state.enqueue_task(pool_task("agh-worker", None), T0);
        assert_eq!(state.role_activations().len(), 2);
    }

    #[test]
    fn a_session_is_woken_about_a_run_it_could_claim_only_while_it_holds_none() {
        let (mut state, session) = state();
        assert_eq!(state.wake_candidate(&session, T0), None);
        state.enqueue_task(TaskSpec::titled("one"), T0);
        state.enqueue_task(TaskSpec::titled("two"), T0);
        let (_, announced) = state.wake_candidate(&session, T0).expect("a candidate");
        assert_eq!(
            claim(&mut state, &session, T0),
            Some(announced),
            "the run announced is the one a claim takes"
        );
        assert_eq!(state.wake_candidate(&session, T0), None, "it holds a lease");
        let other = state.create_session(SessionSpec::for_agent("reviewer", None), T0);
        assert_eq!(
            state.wake_candidate(&other.session_id, T0),
            None,
            "a global session cannot claim a workspace run"
        );
    }
}
