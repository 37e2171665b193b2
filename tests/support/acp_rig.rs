//! A simulator that launches the real binary as `agh-worker acp`, as AGH launches its agents.

use std::path::PathBuf;

use agh_worker::dev::sim::acp::AgentProvider;
use agh_worker::dev::sim::{
    SessionInfo, SessionSpec, SimConfig, SimServer, Simulator, TaskSpec, TransitionKind,
};
use serde_json::Value;

use super::binary::PATIENCE;
use super::client_rig::Transport;

/// The agent whose sessions the provider runs.
pub(crate) const AGENT: &str = "agh-worker";

/// A simulator serving over `transport`, found by the worker through `$AGH_HOME` as the `agh`
/// CLI finds the daemon (the socket `daemon.sock`, or the port in `daemon.json`), and a provider
/// running the real binary with `handlers` (TOML) in its config file.
pub(crate) struct Rig {
    pub(crate) sim: Simulator,
    _server: SimServer,
    pub(crate) dir: tempfile::TempDir,
    /// Where the simulator listens, for the operator routes.
    pub(crate) base_url: Option<String>,
}

impl Rig {
    pub(crate) async fn start(transport: Transport, config: SimConfig, handlers: &str) -> Rig {
        Rig::start_running(transport, config, handlers, "acp").await
    }

    /// The rig with the provider running `agh-worker --config FILE <subcommand>` (`acp`, or
    /// `acp --attach unix:…`).
    pub(crate) async fn start_running(
        transport: Transport,
        config: SimConfig,
        handlers: &str,
        subcommand: &str,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let home = dir.path().join("agh-home");
        std::fs::create_dir_all(&home).expect("AGH home");
        let sim = Simulator::new(SimConfig {
            create_default_session: false,
            ..config
        });
        let mut base_url = None;
        let server = match transport {
            Transport::Tcp => {
                let server = sim
                    .serve_tcp("127.0.0.1:0".parse().expect("loopback"))
                    .await
                    .expect("serve over tcp");
                let port = server.local_addr().expect("a tcp address").port();
                let daemon = format!(
                    r#"{{"pid":1,"port":{port},"started_at":"2026-01-01T00:00:00Z","network":"tcp"}}"#
                );
                std::fs::write(home.join("daemon.json"), daemon).expect("daemon.json");
                base_url = Some(server.base_url());
                server
            }
            Transport::Unix => sim
                .serve_unix(&home.join("daemon.sock"))
                .await
                .expect("serve over a unix socket"),
        };
        let config_file = dir.path().join("agh-worker.toml");
        let log = dir.path().join("acp.log");
        std::fs::write(
            &config_file,
            format!(
                "[agh]\nlong_poll_timeout_ms = 60000\n\n[health]\nenabled = false\n\n[acp]\nlog_file = {log:?}\n\n{handlers}"
            ),
        )
        .expect("config file");
        sim.set_agent_provider(AgentProvider {
            command: format!(
                "{} --config '{}' {subcommand}",
                env!("CARGO_BIN_EXE_agh-worker"),
                config_file.display()
            ),
            env: vec![
                (
                    "STATE_DIRECTORY".into(),
                    dir.path().join("state").display().to_string(),
                ),
                // As AGH's own environment would carry it: stripped before the launch.
                (
                    "AGENTUITY_SDK_KEY".into(),
                    "must-not-reach-the-agent".into(),
                ),
            ],
            agh_home: Some(home),
            agents: vec![AGENT.into()],
            workspace_root: Some(dir.path().to_path_buf()),
        });
        Rig {
            sim,
            _server: server,
            dir,
            base_url,
        }
    }

    pub(crate) async fn session(&self) -> SessionInfo {
        self.sim
            .start_agent_session(
                SessionSpec::for_agent(AGENT, Some("ws-default")),
                self.dir.path(),
            )
            .await
            .expect("the agent answers initialize and session/new")
    }

    pub(crate) fn enqueue(&self, title: &str) -> String {
        self.sim
            .enqueue_task(TaskSpec {
                title: title.into(),
                workspace_id: Some("ws-default".into()),
                ..TaskSpec::default()
            })
            .run_id
    }

    pub(crate) async fn until(&self, what: &str, ready: impl FnMut(&Simulator) -> bool) {
        assert!(
            self.sim.wait_until(PATIENCE, ready).await,
            "timed out waiting for {what}; ledger: {:?}",
            self.sim.ledger()
        );
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The worker's config file (the provider's, and a resident worker's).
    pub(crate) fn config_file(&self) -> PathBuf {
        self.path("agh-worker.toml")
    }

    /// `$AGH_HOME`, where the worker finds the simulator.
    pub(crate) fn agh_home(&self) -> PathBuf {
        self.path("agh-home")
    }
}

pub(crate) const NOOP: &str = "[[handlers]]\nname = \"main\"\nkind = \"noop\"\n";

pub(crate) fn completed(sim: &Simulator) -> u64 {
    sim.ledger().transitions_of(TransitionKind::Completed)
}

pub(crate) fn total_requests(sim: &Simulator) -> u64 {
    sim.ledger().requests.iter().map(|count| count.count).sum()
}

/// The calls `session_id` made after it knew of AGH's stop: any later than `window` after its
/// stdin closed, and any terminal call after the close (the stop's own cancel of the run in hand
/// would otherwise send a release, which AGH refuses). Calls before the close, or in flight when
/// the agent read the end of stdin, are AGH's to refuse with 401; no agent can avoid them.
pub(crate) fn calls_after_knowing_of_the_stop(
    sim: &Simulator,
    session_id: &str,
    window: std::time::Duration,
) -> Vec<agh_worker::dev::sim::acp::CallAfterStop> {
    use agh_worker::dev::sim::Route;
    sim.calls_after_stop()
        .0
        .into_iter()
        .filter(|call| call.session_id == session_id)
        .filter(|call| {
            call.since_stdin_closed.is_some_and(|after| {
                after > window
                    || matches!(call.route, Route::Complete | Route::Fail | Route::Release)
            })
        })
        .collect()
}

pub(crate) fn assert_only_json_rpc(lines: &[String]) {
    assert!(!lines.is_empty(), "the agent wrote nothing on stdout");
    for line in lines {
        let message: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("a stdout line that is not JSON ({err}): {line}"));
        assert_eq!(message["jsonrpc"], "2.0", "not JSON-RPC 2.0: {line}");
        assert!(
            message.get("id").is_some() || message.get("method").is_some(),
            "neither an id nor a method: {line}"
        );
    }
}
