//! `agh-worker run` as a child process against the rig, and what `/proc/<pid>/…` says about it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;
use tokio::process::{Child, Command};

use super::rig::Rig;

/// `agh-worker run` as a child process, configured through the environment only.
pub(super) struct ChildWorker {
    child: Child,
    pid: u32,
    health: SocketAddr,
    http: reqwest::Client,
}

impl ChildWorker {
    pub(super) fn spawn(
        exe: &Path,
        rig: &Rig,
        handlers: serde_json::Value,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<ChildWorker> {
        let health = free_loopback_port()?;
        let mut command = Command::new(exe);
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AGH_SESSION_ID", &rig.session.session_id)
            .env("AGH_AGENT", &rig.session.agent_name)
            .env("AGH_WORKER__AGH__ENDPOINT", rig.server.base_url())
            .env("AGH_WORKER__HANDLERS", handlers.to_string())
            .env("AGH_WORKER__HEALTH__LISTEN", health.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} run", exe.display()))?;
        let pid = child.id().context("the worker exited at once")?;
        Ok(ChildWorker {
            child,
            pid,
            health,
            http: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    /// Waits for `/readyz` to answer 200.
    pub(super) async fn ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.health);
        let give_up = Instant::now() + within;
        loop {
            if let Ok(answer) = self.http.get(&url).send().await
                && answer.status().as_u16() == 200
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("the worker exited before it was ready: {status}");
            }
            ensure!(
                Instant::now() < give_up,
                "the worker was not ready within {} s",
                within.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The worker's own request counts from `/metrics`: (claim-next, all calls).
    pub(super) async fn requests(&self) -> anyhow::Result<(u64, u64)> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.health))
            .send()
            .await?
            .text()
            .await?;
        let mut claims = 0;
        let mut all = 0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("agh_worker_api_requests_total{") else {
                continue;
            };
            let value: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            all += value as u64;
            if rest.contains("endpoint=\"claim-next\"") {
                claims += value as u64;
            }
        }
        Ok((claims, all))
    }

    pub(super) fn memory(&self) -> anyhow::Result<ProcStatus> {
        proc_status(self.pid)
    }

    /// Sends SIGTERM and waits for the exit; answers the time from the signal to the exit.
    pub(super) async fn terminate(mut self, within: Duration) -> anyhow::Result<(Duration, i32)> {
        let sent = signal(self.pid, "TERM").await?;
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .context("the worker did not exit after SIGTERM")??;
        Ok((sent.elapsed(), status.code().unwrap_or(-1)))
    }
}

pub(super) fn noop_handlers_json() -> serde_json::Value {
    json!([{"name": "noop", "kind": "noop"}])
}

/// A loopback port that was free a moment ago (the health server binds it right after).
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Sends a signal with `kill(1)` and answers when it was delivered (the command returned).
async fn signal(pid: u32, name: &str) -> anyhow::Result<Instant> {
    let status = Command::new("kill")
        .arg("-s")
        .arg(name)
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill")?;
    let delivered = Instant::now();
    ensure!(status.success(), "kill -s {name} {pid} failed: {status}");
    Ok(delivered)
}

/// What `/proc/<pid>/…` says about a process.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProcStatus {
    pub(super) rss_kib: u64,
    pub(super) hwm_kib: u64,
    pub(super) threads: u64,
    pub(super) fds: u64,
    /// utime + stime, in clock ticks.
    pub(super) cpu_ticks: u64,
}

pub(super) fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    // After it come state (field 3) … utime (14) and stime (15), i.e. indexes 11 and 12 here.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count() as u64;
    Ok(ProcStatus {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        fds,
        cpu_ticks: tick(11) + tick(12),
    })
}

/// Clock ticks per second for `/proc/<pid>/stat` (USER_HZ; 100 on every common Linux build).
pub(super) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_status_of_this_process_is_readable() {
        let status = proc_status(std::process::id()).expect("own /proc entry");
        assert!(status.rss_kib > 0);
        assert!(status.threads >= 1);
        assert!(status.fds >= 1);
    }
}
