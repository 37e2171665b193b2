//! The resident worker process: its start, its log, its SIGKILL and restart, the sweep of
//! what a killed one left, its `/status`, and its drain at the end.

use super::*;

/// What the residents' logs said, over every resident process.
#[derive(Default)]
pub(super) struct ResidentLog {
    pub(super) attaches: AtomicU64,
    /// Attaches of a session that had been attached before (to a resident since killed).
    pub(super) reattaches: AtomicU64,
    /// Runs a slot adopted, and those the first run of a session attached again was.
    pub(super) adopted: AtomicU64,
    pub(super) adopted_on_reattach: AtomicU64,
    pub(super) seen: Mutex<HashSet<String>>,
    /// Sessions attached again whose slot has had no run in hand yet.
    pub(super) fresh: Mutex<HashSet<String>>,
}

impl ResidentLog {
    /// Takes in one line; answers whether it says a session attached.
    fn read(&self, line: &str) -> bool {
        let session = line
            .split("session_id=")
            .nth(1)
            .and_then(|rest| rest.split([' ', '}', ':']).next())
            .unwrap_or_default();
        if line.contains("run in hand") {
            let adopted = line.contains("origin=Adopted");
            if adopted {
                self.adopted.fetch_add(1, Ordering::Relaxed);
            }
            if lock(&self.fresh).remove(session) && adopted {
                self.adopted_on_reattach.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !line.contains("session attached") {
            return false;
        }
        self.attaches.fetch_add(1, Ordering::Relaxed);
        if !lock(&self.seen).insert(session.to_owned()) {
            self.reattaches.fetch_add(1, Ordering::Relaxed);
            lock(&self.fresh).insert(session.to_owned());
        }
        true
    }
}

/// A killed resident whose handler groups the next one must sweep.
pub(super) struct Sweep {
    pub(super) pid: u32,
    pub(super) groups: Vec<u32>,
    pub(super) restarted: Option<Instant>,
}

impl Rig {
    /// The resident worker, configured like the others by environment.
    pub(in crate::dev::soak) fn start_resident(&mut self) -> anyhow::Result<()> {
        let endpoint = format!("unix:{}", self.dir.join("sim.sock").display());
        let socket = format!("unix:{}", self.attached.socket.display());
        let mut command = self.worker_command(&["run", "--attach", &socket]);
        command
            .envs(self.agent_env(&endpoint))
            .env("AGH_WORKER__WORKER__MAX_SLOTS", MAX_SLOTS.to_string())
            .env("AGH_WORKER__HEALTH__SOCKET", &self.attached.health);
        let mut child = command
            .spawn()
            .context("cannot start the resident worker")?;
        let (first_tx, first_rx) = watch::channel(None);
        let log = self.report.attached.log.clone();
        let file = self
            .plan
            .log_dir
            .as_ref()
            .map(|dir| dir.join("resident.log"));
        let tail = follow_log(&mut child, file, move |line| {
            if log.read(line) && first_tx.borrow().is_none() {
                first_tx.send_replace(Some(Instant::now()));
            }
        });
        let attached = &mut self.attached;
        attached.pid = child.id();
        attached.pids.extend(child.id());
        attached.resident = Some(child);
        attached.tail = tail;
        attached.first_attach = first_rx;
        attached.restart_at = None;
        Ok(())
    }

    /// Restarts a killed resident when due; a resident that exited by itself is a violation.
    pub(super) fn watch_resident(&mut self, now: Instant) -> anyhow::Result<()> {
        let attached = &mut self.attached;
        if attached.resident.is_none() {
            if attached.restart_at.is_some_and(|at| at <= now) {
                self.start_resident()?;
                self.report.attached.resident_restarts += 1;
                if let Some(sweep) = self.attached.sweep.as_mut() {
                    sweep.restarted = Some(now);
                }
            }
            return Ok(());
        }
        let exited = attached
            .resident
            .as_mut()
            .and_then(|child| child.try_wait().ok()?);
        if let Some(status) = exited {
            self.report.violations.push(format!(
                "the resident worker exited by itself ({status}); its last log lines:\n{}",
                tail_text(&attached.tail)
            ));
            attached.resident = None;
            attached.pid = None;
            attached.restart_at = Some(now);
        }
        Ok(())
    }

    pub(super) fn kill_resident(&mut self, now: Instant) {
        let attached = &mut self.attached;
        let Some(mut child) = attached.resident.take() else {
            return;
        };
        let _ = child.start_kill();
        let pid = attached.pid.take().unwrap_or_default();
        self.killed_pids.insert(pid);
        let groups = read_markers(&self.markers)
            .into_iter()
            .filter(|marker| marker.worker_pid == pid && group_alive(marker.pid))
            .map(|marker| marker.pid)
            .collect();
        attached.sweep = Some(Sweep {
            pid,
            groups,
            restarted: None,
        });
        attached.restart_at = Some(now + Duration::from_millis(self.rng.u64(RESTART_PAUSE)));
        self.report.attached.resident_kills += 1;
        // Reaped in the background: the restart does not wait for it.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }

    /// After a resident's restart: a thin process attaches again, and the dead resident's
    /// handler groups are gone soon after.
    pub(super) fn check_sweep(&mut self, now: Instant) {
        let Some(restarted) = self
            .attached
            .sweep
            .as_ref()
            .and_then(|sweep| sweep.restarted)
        else {
            return;
        };
        let first_attach = *self.attached.first_attach.borrow();
        let due = match first_attach {
            Some(at) => at + HANDLERS_GONE,
            None if self.attached.live.is_empty() => restarted + REATTACH_WITHIN,
            None if now >= restarted + REATTACH_WITHIN => {
                self.report.violations.push(format!(
                    "no thin process attached to the restarted resident worker within {} s; its last log lines:\n{}",
                    REATTACH_WITHIN.as_secs(),
                    tail_text(&self.attached.tail)
                ));
                now
            }
            None => return,
        };
        if now < due {
            return;
        }
        let Some(sweep) = self.attached.sweep.take() else {
            return;
        };
        let alive: Vec<u32> = sweep
            .groups
            .iter()
            .copied()
            .filter(|group| group_alive(*group))
            .collect();
        if alive.is_empty() {
            self.report.attached.groups_swept += sweep.groups.len() as u64;
        } else {
            self.report.violations.push(format!(
                "handler groups {alive:?} of the SIGKILLed resident worker (pid {}) still run after the restarted one attached a session",
                sweep.pid
            ));
        }
    }

    /// SIGTERM to the resident, which must drain and exit 0.
    pub(super) async fn stop_resident(&mut self) {
        // A resident killed just before the end: its groups are left to the final marker check.
        self.attached.sweep = None;
        let Some(mut child) = self.attached.resident.take() else {
            return;
        };
        if let Some(pid) = self.attached.pid {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let within = Duration::from_secs(DRAIN_SECONDS + 10);
        let problem = match tokio::time::timeout(within, child.wait()).await {
            Ok(Ok(status)) if status.success() => return,
            Ok(Ok(status)) => format!("exited with {status} after SIGTERM"),
            Ok(Err(err)) => format!("cannot be waited for: {err}"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                format!("did not stop within {} s of SIGTERM", within.as_secs())
            }
        };
        self.report.violations.push(format!(
            "the resident worker {problem}; its last log lines:\n{}",
            tail_text(&self.attached.tail)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(session: &str, message: &str) -> String {
        format!(
            "2026-12-07T10:47:10.594141Z  INFO resident{{socket=/tmp/s/attach.sock}}:slot{{session_id={session} thin_pid=7}}: agh_worker::attach::resident::connection: {message}"
        )
    }

    #[test]
    fn a_session_attached_again_counts_as_a_reattach_and_its_first_run_as_adopted_when_it_was() {
        let log = ResidentLog::default();
        assert!(log.read(&line("sess-a", "session attached slot=1 agent=w")));
        assert!(log.read(&line("sess-b", "session attached slot=2 agent=w")));
        assert!(!log.read(&line("sess-a", "run in hand origin=Adopted title=\"x\"")));
        // The resident restarts; both sessions attach again.
        assert!(log.read(&line("sess-a", "session attached slot=1 agent=w")));
        assert!(log.read(&line("sess-b", "session attached slot=2 agent=w")));
        log.read(&line("sess-a", "run in hand origin=Adopted title=\"x\""));
        log.read(&line("sess-b", "run in hand origin=Claimed title=\"y\""));
        // Only the first run of a slot attached again counts.
        log.read(&line("sess-b", "run in hand origin=Adopted title=\"z\""));
        let count = |value: &AtomicU64| value.load(Ordering::Relaxed);
        assert_eq!(count(&log.attaches), 4);
        assert_eq!(count(&log.reattaches), 2);
        assert_eq!(count(&log.adopted), 3);
        assert_eq!(count(&log.adopted_on_reattach), 1);
    }
}
