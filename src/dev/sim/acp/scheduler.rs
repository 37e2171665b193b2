//! AGH's two ways of bringing queued runs to agent sessions, played by the simulator for the
//! sessions whose agent it launches: the task-role runtime, which starts a worker session for a
//! queued pool-owned run (`internal/daemon/task_role_runtime.go` ~262-297, 520-563), and the
//! scheduler, which sends an idle eligible session a synthetic wake prompt about a run it could
//! claim (`internal/daemon/scheduler_runtime.go` ~586-620, `internal/scheduler/scheduler.go`
//! ~682-793). Both run at enqueue and on every tick.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::state::RoleActivation;
use super::super::{Inner, Simulator};
use super::{AgentSession, wake_params};
use crate::util::sync::lock;

/// One pass: starts the sessions pool-owned runs call for and wakes idle sessions. Does nothing
/// without a provider or outside a Tokio runtime (a simulator driven only through its state).
pub(crate) fn schedule(inner: &Arc<Inner>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    if lock(&inner.agents.providers).is_empty() {
        return;
    }
    let simulator = Simulator {
        inner: inner.clone(),
    };
    let activations = inner.state().role_activations();
    for activation in activations {
        let provider = lock(&inner.agents.providers)
            .for_agent(&activation.agent_name)
            .cloned();
        if let Some(provider) = provider
            && lock(&inner.agents.role_starts).insert(activation.key())
        {
            tokio::spawn(start_role_session(
                simulator.clone(),
                activation,
                provider.workspace_root(),
            ));
        }
    }
    if inner.config.wake_idle_sessions {
        wake_idle_sessions(&simulator);
    }
}

async fn start_role_session(
    simulator: Simulator,
    activation: RoleActivation,
    cwd: std::path::PathBuf,
) {
    let started = simulator.start_agent_session(activation.spec(), &cwd).await;
    match started {
        // Free for the next activation of the same name once this session has ended.
        Ok(_) => {
            lock(&simulator.inner.agents.role_starts).remove(&activation.key());
        }
        // Left marked: a command that cannot start is not launched again on every tick.
        Err(err) => lock(&simulator.inner.agents.errors).push(format!(
            "the session {} of agent {:?} did not start: {err}",
            activation.name, activation.agent_name
        )),
    }
}

fn wake_idle_sessions(simulator: &Simulator) {
    let sessions: Vec<(String, Arc<AgentSession>)> = lock(&simulator.inner.agents.running)
        .iter()
        .filter(|(_, session)| !session.process.has_exited())
        .map(|(id, session)| (id.clone(), session.clone()))
        .collect();
    let now = simulator.inner.now();
    for (session_id, session) in sessions {
        if session.prompting.load(Ordering::SeqCst) {
            continue;
        }
        let candidate = simulator.inner.state().wake_candidate(&session_id, now);
        let Some((task_id, run_id)) = candidate else {
            continue;
        };
        if !lock(&simulator.inner.agents.woken).insert((session_id.clone(), run_id.clone())) {
            continue;
        }
        // Taken here, not in the spawned task, so the next pass sees the turn open.
        if session
            .prompting
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            continue;
        }
        let params = wake_params(&session.acp_session_id, &task_id, &run_id);
        tokio::spawn(async move {
            // A wake the agent does not answer changes nothing: the run stays queued.
            let _ = session.turn(params).await;
        });
    }
}
