//! The resident rig: the simulator on a Unix socket in an `$AGH_HOME` of its own, a resident
//! worker process (`agh-worker run --attach unix:…`, health on a Unix socket) and the sessions
//! the simulator starts through its agent provider, each a thin `agh-worker acp --attach unix:…`
//! process, as AGH runs them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

use super::super::child::proc_status;
use crate::dev::sim::acp::AgentProvider;
use crate::dev::sim::{
    DEFAULT_WORKSPACE, Route, SessionInfo, SessionSpec, SimConfig, SimServer, Simulator, TaskSpec,
    TransitionKind,
};

/// The agent whose sessions the provider runs.
const AGENT: &str = "agh-worker";

/// The most slots the rows use: the resident is started with this `worker.max_slots`.
pub(super) const MAX_SLOTS: usize = 8;

/// How long a process start, an attachment or a stop may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A scratch folder of this process's, removed when dropped.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new(name: &str) -> anyhow::Result<Scratch> {
        // Short: the Unix sockets below must fit in `sun_path` (108 bytes).
        let dir = std::env::temp_dir().join(format!("agh-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A simulator served on `<dir>/agh-home/daemon.sock`, where the worker finds it through
/// `$AGH_HOME` as the `agh` CLI finds the daemon.
pub(super) async fn serve_sim(
    dir: &Path,
    config: SimConfig,
) -> anyhow::Result<(Simulator, SimServer)> {
    let home = dir.join("agh-home");
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let sim = Simulator::new(SimConfig {
        create_default_session: false,
        ..config
    });
    let server = sim
        .serve_unix(&home.join("daemon.sock"))
        .await
        .context("serving the simulator on a Unix socket")?;
    Ok((sim, server))
}

/// A session of the bench's agent in the default workspace, made by hand (no agent process).
pub(super) fn session_spec() -> SessionSpec {
    SessionSpec::for_agent(AGENT, Some(DEFAULT_WORKSPACE))
}

/// Queues `count` runs any of the bench's sessions may claim.
pub(super) fn enqueue(sim: &Simulator, count: u64) -> Vec<String> {
    (0..count)
        .map(|index| {
            sim.enqueue_task(TaskSpec {
                workspace_id: Some(DEFAULT_WORKSPACE.into()),
                ..TaskSpec::titled(&format!("slot bench task {index}"))
            })
            .run_id
        })
        .collect()
}

pub(super) fn completed(sim: &Simulator) -> u64 {
    sim.ledger().transitions_of(TransitionKind::Completed)
}

/// Waits until the simulator shows `count` runs completed, checking every few milliseconds (a
/// ledger snapshot after every request would take the simulator's lock thousands of times a
/// second, slowing what is measured); answers when it saw them.
pub(super) async fn until_completed(
    sim: &Simulator,
    count: u64,
    within: Duration,
) -> anyhow::Result<Instant> {
    let give_up = Instant::now() + within;
    loop {
        let done = completed(sim);
        if done >= count {
            return Ok(Instant::now());
        }
        ensure!(
            Instant::now() < give_up,
            "{done} of {count} runs completed within {} s",
            within.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The simulator, a resident worker attached to it, and the sessions it serves.
pub(super) struct SlotRig {
    pub(super) sim: Simulator,
    server: SimServer,
    resident: Child,
    pid: u32,
    health: reqwest::Client,
    sessions: Vec<SessionInfo>,
    dir: Scratch,
}

impl SlotRig {
    /// Starts the simulator and a resident worker with `handlers` (the `[[handlers]]` table as
    /// JSON), and waits until the resident serves `/status`.
    pub(super) async fn start(
        exe: &Path,
        name: &str,
        config: SimConfig,
        handlers: &Value,
    ) -> anyhow::Result<SlotRig> {
        let dir = Scratch::new(name)?;
        let (sim, server) = serve_sim(dir.path(), config).await?;
        let attach = format!("unix:{}", dir.path().join("attach.sock").display());
        let health = dir.path().join("health.sock");
        let log = std::fs::File::create(dir.path().join("resident.log"))?;
        let mut command = Command::new(exe);
        command
            .args(["run", "--attach", &attach])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("AGH_HOME", dir.path().join("agh-home"))
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .env("AGH_WORKER__WORKER__MAX_SLOTS", MAX_SLOTS.to_string())
            .env("AGH_WORKER__HEALTH__SOCKET", &health)
            .env("AGH_WORKER__HANDLERS", handlers.to_string())
            // As the in-process rows: the worker measured, not its per-run info lines.
            .env("AGH_WORKER__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let resident = command
            .spawn()
            .with_context(|| format!("starting {} run --attach", exe.display()))?;
        let pid = resident
            .id()
            .context("the resident worker exited at once")?;
        sim.set_agent_provider(AgentProvider {
            command: format!("{} acp --attach {attach}", quoted(exe)),
            env: vec![
                ("HOME".into(), dir.path().display().to_string()),
                (
                    "STATE_DIRECTORY".into(),
                    dir.path().join("thin-state").display().to_string(),
                ),
                ("AGH_WORKER__ACP__LOG_FILE".into(), "off".into()),
                ("AGH_WORKER__LOG__LEVEL".into(), "warn".into()),
            ],
            agh_home: Some(dir.path().join("agh-home")),
            agents: vec![AGENT.into()],
            workspace_root: Some(dir.path().to_path_buf()),
        });
        let mut rig = SlotRig {
            sim,
            server,
            resident,
            pid,
            health: reqwest::Client::builder()
                .no_proxy()
                .unix_socket(health)
                .build()?,
            sessions: Vec::new(),
            dir,
        };
        rig.until("the resident worker to serve /status", |_| true)
            .await?;
        Ok(rig)
    }

    /// `GET /status` of the resident.
    pub(super) async fn status(&self) -> anyhow::Result<Value> {
        let answer = self.health.get("http://resident/status").send().await?;
        Ok(serde_json::from_slice(&answer.bytes().await?)?)
    }

    /// Waits until `/status` answers and satisfies `ready`; fails with the resident's log when
    /// the resident exits or `PATIENCE` passes first.
    async fn until(
        &mut self,
        what: &str,
        mut ready: impl FnMut(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let give_up = Instant::now() + PATIENCE;
        loop {
            if let Ok(status) = self.status().await
                && ready(&status)
            {
                return Ok(());
            }
            if let Ok(Some(exit)) = self.resident.try_wait() {
                bail!(
                    "the resident worker exited ({exit}) while waiting for {what}: {}",
                    self.log_tail()
                );
            }
            ensure!(
                Instant::now() < give_up,
                "timed out waiting for {what}: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("resident.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        if tail.is_empty() {
            "the resident logged nothing".into()
        } else {
            format!("the resident's last lines:\n{tail}")
        }
    }

    /// Starts `count` more sessions, as AGH does (a thin process each), and waits until the
    /// resident has a slot for each and every slot waits in an open claim long-poll.
    pub(super) async fn attach(&mut self, count: usize) -> anyhow::Result<()> {
        for _ in 0..count {
            let session = self
                .sim
                .start_agent_session(session_spec(), self.dir.path())
                .await
                .map_err(|err| anyhow::anyhow!("a thin process did not start: {err}"))?;
            self.sessions.push(session);
        }
        let wanted = self.sessions.len();
        self.until(&format!("{wanted} slots attached"), |status| {
            status["slots_attached"].as_u64() == Some(wanted as u64)
        })
        .await?;
        self.until_idle().await
    }

    /// Waits until every slot waits in an open claim long-poll.
    pub(super) async fn until_idle(&self) -> anyhow::Result<()> {
        let wanted = self.sessions.len();
        tokio::time::timeout(
            PATIENCE,
            self.sim.wait_for_waiters(Route::ClaimNext, wanted),
        )
        .await
        .with_context(|| format!("the {wanted} slots did not all open a claim long-poll"))
    }

    pub(super) fn sessions(&self) -> &[SessionInfo] {
        &self.sessions
    }

    /// The resident's resident set size, in KiB.
    pub(super) fn rss_kib(&self) -> anyhow::Result<u64> {
        Ok(proc_status(self.pid)?.rss_kib)
    }

    /// Stops every session as AGH does, then the resident with SIGTERM, then the simulator;
    /// fails when the simulator saw a broken rule of AGH's on the way.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        let stops = self
            .sessions
            .iter()
            .map(|session| self.sim.stop_agent_session(&session.session_id));
        for stop in futures_util::future::join_all(stops).await {
            stop.map_err(|err| anyhow::anyhow!("stopping a session: {err}"))?;
        }
        let _ = Command::new("kill")
            .arg(self.pid.to_string())
            .status()
            .await;
        tokio::time::timeout(PATIENCE, self.resident.wait())
            .await
            .context("the resident worker did not exit after SIGTERM")??;
        let violations = self.sim.ledger().violations;
        self.server.shutdown().await;
        ensure!(
            violations.is_empty(),
            "the simulator saw AGH's rules broken: {violations:?}"
        );
        Ok(())
    }
}

/// A word for the provider command, quoted as the simulator (and AGH) split it.
fn quoted(word: &Path) -> String {
    format!("'{}'", word.display().to_string().replace('\'', r"'\''"))
}
