//! A resident worker process (`agh-worker run --attach unix:…`) beside an [`acp_rig::Rig`]
//! whose provider runs thin `agh-worker acp --attach unix:…` processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::acp_rig::Rig;
use super::binary::PATIENCE;

/// The provider's subcommand for the resident at `socket`.
pub(crate) fn thin_subcommand(socket: &std::path::Path) -> String {
    format!("acp --attach unix:{}", socket.display())
}

/// The attach socket of `rig`'s resident worker.
pub(crate) fn attach_socket(rig: &Rig) -> PathBuf {
    rig.path("attach.sock")
}

pub(crate) struct Resident {
    child: Child,
    pub(crate) socket: PathBuf,
    health: PathBuf,
}

impl Resident {
    /// Starts a resident worker for `rig` serving at most `max_slots` sessions, with short leases
    /// (6 s, heartbeats every 2 s), and waits until it serves its health socket.
    pub(crate) async fn start(rig: &Rig, max_slots: u64) -> Resident {
        Resident::start_with(rig, max_slots, &[]).await
    }

    /// [`Resident::start`] with more `--set KEY=VALUE` settings.
    pub(crate) async fn start_with(rig: &Rig, max_slots: u64, sets: &[&str]) -> Resident {
        let socket = attach_socket(rig);
        let health = rig.path("resident-health.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_agh-worker"))
            .arg("--config")
            .arg(rig.config_file())
            .args(["--set", &format!("worker.max_slots={max_slots}")])
            .args(["--set", "acp.lease_seconds=6"])
            .args(sets.iter().flat_map(|set| ["--set", set]))
            .args(["--set", "health.enabled=true"])
            .args(["--set", &format!("health.socket={}", health.display())])
            .args(["run", "--attach", &format!("unix:{}", socket.display())])
            .env("AGH_HOME", rig.agh_home())
            .env("STATE_DIRECTORY", rig.path("state"))
            .env_remove("AGH_SESSION_ID")
            .env_remove("AGH_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the resident worker starts");
        let resident = Resident {
            child,
            socket,
            health,
        };
        resident
            .until("the resident worker to serve /status", |_| true)
            .await;
        resident
    }

    /// `GET /status` on the health socket, or `None` while it does not answer.
    pub(crate) async fn status(&self) -> Option<Value> {
        let client = reqwest::Client::builder()
            .unix_socket(self.health.clone())
            .build()
            .ok()?;
        let response = client.get("http://resident/status").send().await.ok()?;
        let body = response.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// The session ids of the live slots.
    pub(crate) async fn slot_sessions(&self) -> Vec<String> {
        let Some(status) = self.status().await else {
            return Vec::new();
        };
        status["slots"]
            .as_array()
            .map(|slots| {
                slots
                    .iter()
                    .filter_map(|slot| slot["identity"]["session_id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `/status` answers and satisfies `ready`.
    pub(crate) async fn until(&self, what: &str, mut ready: impl FnMut(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.status().await
                && ready(&status)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; /status: {:?}",
            self.status().await
        );
    }

    /// SIGHUP: reload the configuration.
    pub(crate) async fn reload(&self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .await;
        }
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, and the exit status once it has drained.
    pub(crate) async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
        }
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the resident worker drains in time")
            .expect("an exit status")
    }
}
