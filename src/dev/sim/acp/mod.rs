//! The simulator as AGH towards its agents: a provider command per agent, sessions whose agent process it
//! launches and speaks ACP to, wake prompts, and AGH's stop. A session is `starting` until its
//! agent has answered `initialize` and `session/new`, `active` after (only then is its identity
//! accepted), `stopping` from the start of a stop, and `stopped` once its process has exited.

mod agent;
mod api;
mod command;
mod scheduler;
mod stops;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use agent::{
    AgentProcess, credential_shaped, initialize_params, method_not_found, prompt_params,
};
pub(crate) use api::serve as serve_sessions_api;
pub use command::split as split_command;
pub(crate) use scheduler::schedule;
pub use stops::CallAfterStop;
pub(crate) use stops::StopRecords;

use super::types::{SessionInfo, SessionSpec, SessionState};
use super::{Inner, Simulator};
use crate::util::sync::lock;

/// AGH's wait between closing an agent's stdin and SIGTERM to its group (`client.go` ~33).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// AGH's wait between SIGTERM and SIGKILL to the group (`process.go` ~405-486).
const TERM_TO_KILL: Duration = Duration::from_millis(250);

/// The agent AGH launches for a session: a `[providers.NAME]` entry's command.
#[derive(Clone, Debug, Default)]
pub struct AgentProvider {
    /// The command line, split shell-style.
    pub command: String,
    /// Added to the simulator's own environment (which stands for the daemon's) before
    /// credential-shaped names are stripped, as AGH strips them.
    pub env: Vec<(String, String)>,
    /// Given as `AGH_HOME` (AGH passes its own when it has one).
    pub agh_home: Option<PathBuf>,
    /// The agents whose sessions this command runs (`POST /api/sessions`, pool-owned runs);
    /// empty: every agent.
    pub agents: Vec<String>,
    /// The root of every workspace the simulator knows by id: the agent's working directory
    /// for sessions in a workspace. `None`: the simulator's own working directory.
    pub workspace_root: Option<PathBuf>,
}

impl AgentProvider {
    fn workspace_root(&self) -> PathBuf {
        self.workspace_root
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}

/// The providers of one simulator: those that name their agents, and at most one for every
/// other agent.
#[derive(Debug, Default)]
struct Providers {
    named: Vec<AgentProvider>,
    others: Option<AgentProvider>,
}

impl Providers {
    fn set(&mut self, provider: AgentProvider) {
        if provider.agents.is_empty() {
            self.others = Some(provider);
            return;
        }
        self.named.retain(|known| {
            !known
                .agents
                .iter()
                .any(|agent| provider.agents.contains(agent))
        });
        self.named.push(provider);
    }

    /// The provider that runs `agent_name`'s sessions, if one does.
    fn for_agent(&self, agent_name: &str) -> Option<&AgentProvider> {
        self.named
            .iter()
            .find(|provider| provider.agents.iter().any(|agent| agent == agent_name))
            .or(self.others.as_ref())
    }

    fn is_empty(&self) -> bool {
        self.named.is_empty() && self.others.is_none()
    }
}

/// How a stop went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStop {
    /// The process exited before the grace ran out: no signal was needed.
    pub exited_by_itself: bool,
    /// From closing stdin to the exit (or to the SIGKILL).
    pub waited: Duration,
}

/// The agent sessions of one simulator.
#[derive(Debug, Default)]
pub(crate) struct AgentSessions {
    providers: Mutex<Providers>,
    running: Mutex<HashMap<String, Arc<AgentSession>>>,
    /// Task-role sessions being started (or whose start failed, so it is not retried on every
    /// tick), by name and workspace.
    role_starts: Mutex<HashSet<String>>,
    /// (session, run) pairs a wake prompt was sent about: each run is announced once per session.
    woken: Mutex<HashSet<(String, String)>>,
    /// Why sessions the simulator started by itself failed to start.
    errors: Mutex<Vec<String>>,
    /// The stops and the calls made with a stopping session's identity.
    pub(crate) stops: StopRecords,
}

#[derive(Debug)]
struct AgentSession {
    process: AgentProcess,
    acp_session_id: String,
    /// A turn is open: AGH's scheduler wakes no session that is prompting.
    prompting: AtomicBool,
}

impl AgentSession {
    async fn prompt(&self, params: Value) -> Result<Value, String> {
        self.prompting.store(true, Ordering::SeqCst);
        self.turn(params).await
    }

    /// A turn whose `prompting` flag the caller has set; cleared when it ends.
    async fn turn(&self, params: Value) -> Result<Value, String> {
        let answer = self.process.request("session/prompt", params).await;
        self.prompting.store(false, Ordering::SeqCst);
        answer
    }
}

impl Simulator {
    /// A provider whose command [`Simulator::start_agent_session`] launches for the agents it
    /// names (every agent no other provider names, when it names none), in place of any provider
    /// set before for one of those agents: as in AGH, each agent has its provider.
    pub fn set_agent_provider(&self, provider: AgentProvider) {
        lock(&self.inner.agents.providers).set(provider);
    }

    /// Starts a session as AGH does: the session is created `starting`, its agent is launched in
    /// `cwd` with the session's variables, `initialize` and `session/new` are sent, and the
    /// session turns `active`. Fails (and stops the session) when the agent does not answer.
    pub async fn start_agent_session(
        &self,
        spec: SessionSpec,
        cwd: &Path,
    ) -> Result<SessionInfo, String> {
        let provider = self
            .agent_provider(&spec.agent_name)
            .ok_or_else(|| format!("no agent provider runs agent {:?}", spec.agent_name))?;
        agent::check_cwd(cwd)?;
        let info = self.create_session(SessionSpec {
            state: SessionState::Starting,
            ..spec
        });
        let launch = agent::Launch {
            argv: split_command(&provider.command)?,
            cwd: cwd.to_path_buf(),
            inherited: std::env::vars().chain(provider.env.clone()).collect(),
            session_vars: session_vars(&info, provider.agh_home.as_deref()),
        };
        let weak = Arc::downgrade(&self.inner);
        let session_id = info.session_id.clone();
        let process = AgentProcess::launch(&launch, move || {
            if let Some(inner) = weak.upgrade() {
                ended(&inner, &session_id);
            }
        })?;
        match handshake(&process, cwd).await {
            Ok(acp_session_id) => {
                let session = Arc::new(AgentSession {
                    process,
                    acp_session_id,
                    prompting: AtomicBool::new(false),
                });
                lock(&self.inner.agents.running).insert(info.session_id.clone(), session);
                self.set_session_state(&info.session_id, SessionState::Active);
                Ok(info)
            }
            Err(err) => {
                self.set_session_state(&info.session_id, SessionState::Stopped);
                process.close_stdin().await;
                process.signal_group(rustix::process::Signal::KILL);
                Err(err)
            }
        }
    }

    /// The provider that runs `agent_name`'s sessions, if one does.
    fn agent_provider(&self, agent_name: &str) -> Option<AgentProvider> {
        lock(&self.inner.agents.providers)
            .for_agent(agent_name)
            .cloned()
    }

    /// The sessions whose agent process the simulator launched, by session id.
    pub fn agent_sessions(&self) -> Vec<SessionInfo> {
        let ids: Vec<String> = lock(&self.inner.agents.running).keys().cloned().collect();
        let mut sessions: Vec<SessionInfo> = ids.iter().filter_map(|id| self.session(id)).collect();
        sessions.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        sessions
    }

    /// Why sessions the simulator started by itself (for pool-owned runs) failed to start.
    pub fn agent_errors(&self) -> Vec<String> {
        lock(&self.inner.agents.errors).clone()
    }

    fn agent_session(&self, session_id: &str) -> Result<Arc<AgentSession>, String> {
        lock(&self.inner.agents.running)
            .get(session_id)
            .cloned()
            .ok_or_else(|| format!("no agent process for session {session_id}"))
    }

    /// A user turn: answers the agent's `session/prompt` result (`stopReason`, …).
    pub async fn prompt_agent(&self, session_id: &str, text: &str) -> Result<Value, String> {
        let session = self.agent_session(session_id)?;
        let params = prompt_params(&session.acp_session_id, text, None);
        session.prompt(params).await
    }

    /// The scheduler's wake prompt about a run the session could claim
    /// (`internal/daemon/scheduler_runtime.go` ~586-620, 768-796).
    pub async fn wake_agent(
        &self,
        session_id: &str,
        task_id: &str,
        task_run_id: &str,
    ) -> Result<Value, String> {
        let session = self.agent_session(session_id)?;
        let params = wake_params(&session.acp_session_id, task_id, task_run_id);
        session.prompt(params).await
    }

    /// AGH's stop: the session turns `stopping`, `session/cancel`, stdin closed, up to
    /// [`STOP_GRACE`] for the process to exit, then SIGTERM, 250 ms, SIGKILL to its group; what
    /// is left in the group after the exit is killed too.
    pub async fn stop_agent_session(&self, session_id: &str) -> Result<AgentStop, String> {
        let session = self.agent_session(session_id)?;
        let stops = &self.inner.agents.stops;
        stops.began(session_id);
        self.set_session_state(session_id, SessionState::Stopping);
        let cancel = json!({"sessionId": session.acp_session_id});
        let _ = session.process.notify("session/cancel", cancel).await;
        session.process.close_stdin().await;
        stops.stdin_closed(session_id);
        let started = Instant::now();
        let exited_by_itself = session.process.wait_exit(STOP_GRACE).await;
        if !exited_by_itself {
            session.process.signal_group(rustix::process::Signal::TERM);
            if !session.process.wait_exit(TERM_TO_KILL).await {
                session.process.signal_group(rustix::process::Signal::KILL);
                session.process.wait_exit(TERM_TO_KILL).await;
            }
        }
        let waited = started.elapsed();
        session.process.signal_group(rustix::process::Signal::KILL);
        // The exit's own notice may come a moment later; the stop is over now.
        self.set_session_state(session_id, SessionState::Stopped);
        Ok(AgentStop {
            exited_by_itself,
            waited,
        })
    }

    /// The calls made with the identity of a session whose stop had begun, oldest first (the
    /// first thousand), and how many there were in all.
    pub fn calls_after_stop(&self) -> (Vec<CallAfterStop>, u64) {
        let stops = &self.inner.agents.stops;
        (stops.calls(), stops.calls_total())
    }

    /// The process id of the session's agent (the leader of its process group).
    pub fn agent_pid(&self, session_id: &str) -> Option<u32> {
        self.agent_session(session_id)
            .ok()
            .map(|session| session.process.pid())
    }

    /// Every line the session's agent wrote on stdout.
    pub fn agent_stdout(&self, session_id: &str) -> Vec<String> {
        self.agent_session(session_id)
            .map(|session| session.process.stdout_lines())
            .unwrap_or_default()
    }

    /// Whether the session's agent process has exited.
    pub fn agent_exited(&self, session_id: &str) -> bool {
        self.agent_session(session_id)
            .is_ok_and(|session| session.process.has_exited())
    }
}

/// A scheduler wake's `session/prompt` params (`scheduler_runtime.go` ~586-620, 768-796).
fn wake_params(acp_session_id: &str, task_id: &str, task_run_id: &str) -> Value {
    let synthetic = json!({
        "task_id": task_id,
        "task_run_id": task_run_id,
        "reason": "pending_task_run",
        "summary": format!("Task run {task_run_id} is queued")
    });
    let text = format!(
        "Task run {task_run_id} may be claimable by this session. This notice does not assign ownership; claim it through the task API if appropriate."
    );
    prompt_params(acp_session_id, &text, Some(synthetic))
}

/// The agent's variables (`internal/session/manager_start.go` ~654-686).
fn session_vars(info: &SessionInfo, agh_home: Option<&Path>) -> Vec<(String, String)> {
    let mut vars = vec![
        ("AGH_SESSION_ID".to_string(), info.session_id.clone()),
        ("AGH_AGENT".to_string(), info.agent_name.clone()),
        ("AGH_AGENT_NAME".to_string(), info.agent_name.clone()),
    ];
    if let Some(channel) = &info.channel {
        vars.push(("AGH_SESSION_CHANNEL".to_string(), channel.clone()));
        vars.push(("AGH_PEER_ID".to_string(), info.peer_id.clone()));
    }
    if let Some(home) = agh_home {
        vars.push(("AGH_HOME".to_string(), home.display().to_string()));
    }
    vars
}

/// `initialize` then `session/new`; answers the ACP session id.
async fn handshake(process: &AgentProcess, cwd: &Path) -> Result<String, String> {
    process.request("initialize", initialize_params()).await?;
    let created = process
        .request(
            "session/new",
            json!({"cwd": cwd.display().to_string(), "mcpServers": []}),
        )
        .await?;
    created
        .get("sessionId")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("session/new answered without a sessionId: {created}"))
}

/// The agent process has exited: its session ends.
fn ended(inner: &Inner, session_id: &str) {
    let now = inner.now();
    inner
        .state()
        .set_session_state(session_id, SessionState::Stopped, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(command: &str, agents: &[&str]) -> AgentProvider {
        AgentProvider {
            command: command.into(),
            agents: agents.iter().map(|agent| agent.to_string()).collect(),
            ..AgentProvider::default()
        }
    }

    fn command_for(providers: &Providers, agent: &str) -> Option<String> {
        providers
            .for_agent(agent)
            .map(|provider| provider.command.clone())
    }

    #[test]
    fn each_agent_gets_the_provider_that_names_it_and_the_others_the_one_naming_none() {
        let mut providers = Providers::default();
        assert!(providers.is_empty());
        providers.set(provider("acp", &["worker"]));
        assert_eq!(command_for(&providers, "worker").as_deref(), Some("acp"));
        assert_eq!(command_for(&providers, "coder"), None);
        providers.set(provider("acp --attach", &["attached"]));
        providers.set(provider("any", &[]));
        assert_eq!(command_for(&providers, "worker").as_deref(), Some("acp"));
        assert_eq!(
            command_for(&providers, "attached").as_deref(),
            Some("acp --attach")
        );
        assert_eq!(command_for(&providers, "coder").as_deref(), Some("any"));
    }

    #[test]
    fn a_provider_set_again_for_an_agent_replaces_the_one_before() {
        let mut providers = Providers::default();
        providers.set(provider("old", &["worker", "coder"]));
        providers.set(provider("new", &["worker"]));
        assert_eq!(command_for(&providers, "worker").as_deref(), Some("new"));
        // The replaced provider is gone for every agent it named.
        assert_eq!(command_for(&providers, "coder"), None);
        providers.set(provider("any", &[]));
        providers.set(provider("any again", &[]));
        assert_eq!(
            command_for(&providers, "coder").as_deref(),
            Some("any again")
        );
    }
}
