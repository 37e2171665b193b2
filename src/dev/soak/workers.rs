//! The worker processes of the soak: starting one against the simulator, watching them exit,
//! killing one at random, and the session each process runs as.

use super::markers::Marker;
use super::*;

impl Rig {
    /// The settings every worker process of the soak runs with, `run` or `acp`, as environment
    /// (like a systemd unit): the handlers and the short timings.
    pub(super) fn worker_env(&self) -> Vec<(&'static str, String)> {
        let handlers = serde_json::json!([
            {
                "name": "exec",
                "kind": "exec",
                "match": {"title": "exec *"},
                "exec": {
                    "program": self.handler,
                    "kill_grace_ms": KILL_GRACE_MS,
                    "env": {"SOAK_MARKERS": self.markers},
                },
            },
            {"name": "noop", "kind": "noop"},
        ])
        .to_string();
        vec![
            (
                "AGH_WORKER__AGH__WORKSPACE_ID",
                DEFAULT_WORKSPACE.to_owned(),
            ),
            ("AGH_WORKER__HANDLERS", handlers),
            (
                "AGH_WORKER__WORKER__LEASE_SECONDS",
                LEASE_SECONDS.to_string(),
            ),
            (
                "AGH_WORKER__WORKER__HEARTBEAT_EVERY_SECONDS",
                HEARTBEAT_SECONDS.to_string(),
            ),
            (
                "AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS",
                DRAIN_SECONDS.to_string(),
            ),
            ("AGH_WORKER__WORKER__IDENTITY_PROBE_SECONDS", "1".to_owned()),
            (
                "AGH_WORKER__AGH__LONG_POLL_TIMEOUT_MS",
                LONG_POLL_MS.to_string(),
            ),
            (
                "AGH_WORKER__AGH__REQUEST_TIMEOUT_MS",
                REQUEST_TIMEOUT_MS.to_string(),
            ),
            ("AGH_WORKER__AGH__CONNECT_TIMEOUT_MS", "500".to_owned()),
            ("AGH_WORKER__RETRY__INITIAL_BACKOFF_MS", "20".to_owned()),
            ("AGH_WORKER__RETRY__MAX_BACKOFF_MS", "300".to_owned()),
            ("AGH_WORKER__RETRY__TERMINAL_BUDGET_MS", "3000".to_owned()),
            ("AGH_WORKER__RETRY__READ_BUDGET_MS", "3000".to_owned()),
            ("AGH_WORKER__COORDINATION__LISTEN", "false".to_owned()),
            ("AGH_WORKER__LOG__FORMAT", "text".to_owned()),
            ("AGH_WORKER__LOG__LEVEL", "info".to_owned()),
            // Several workers side by side: each health server takes a free port.
            ("AGH_WORKER__HEALTH__LISTEN", "127.0.0.1:0".to_owned()),
        ]
    }

    /// This binary with `args`, in an empty environment but `PATH`, its stderr piped (to
    /// [`follow_log`]); killed if the soak drops it.
    pub(super) fn worker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// `agh-worker run` for a slot, configured only by environment.
    pub(super) fn spawn_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let slot = &self.slots[index];
        let mut command = self.worker_command(&["run"]);
        command
            .env("HOME", &self.dir)
            .env("AGH_SESSION_ID", &slot.session.session_id)
            .env("AGH_AGENT", &slot.session.agent_name)
            .env("AGH_WORKER__AGH__ENDPOINT", &slot.endpoint)
            .env("AGH_WORKER__WORKER__ORPHAN_POLICY", slot.policy)
            .envs(self.worker_env());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start worker {}", slot.index))?;
        let (first_tx, first_rx) = watch::channel(None);
        // Every process of a slot appends to the same file, restarts included.
        let file = self
            .plan
            .log_dir
            .as_ref()
            .map(|dir| dir.join(format!("worker-{index}.log")));
        let tail = follow_log(&mut child, file, move |line| {
            if first_tx.borrow().is_none() && line.contains("run in hand") {
                first_tx.send_replace(Some(Instant::now()));
            }
        });
        if let Some(pid) = child.id() {
            self.pid_sessions
                .insert(pid, self.slots[index].session.session_id.clone());
        }
        let slot = &mut self.slots[index];
        slot.pid = child.id();
        slot.child = Some(child);
        slot.first_run = first_rx;
        slot.tail = tail;
        slot.restart_at = None;
        Ok(())
    }

    /// Restarts killed workers when due, times their recovery, and notices a worker that exited
    /// without being killed (that is a failure: the worker must ride out every fault).
    pub(super) async fn watch_processes(&mut self, now: Instant) -> anyhow::Result<()> {
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.child.is_none() {
                if slot.restart_at.is_some_and(|at| at <= now) {
                    self.spawn_worker(index)?;
                }
                continue;
            }
            if let (Some(killed_at), Some(first)) = (slot.killed_at, *slot.first_run.borrow()) {
                self.report.recoveries.push(first.duration_since(killed_at));
                slot.killed_at = None;
            }
            let exited = slot.child.as_mut().and_then(|child| child.try_wait().ok()?);
            if let Some(status) = exited {
                let tail = tail_text(&slot.tail);
                self.report.violations.push(format!(
                    "worker {} exited by itself ({status}); its last log lines:\n{tail}",
                    slot.index
                ));
                slot.child = None;
                slot.restart_at = Some(now);
            }
        }
        Ok(())
    }

    /// SIGKILLs one worker whose previous recovery is done; the restart comes a moment later
    /// with the same session, so the new process finds the orphaned lease.
    pub(super) async fn kill_one(&mut self, now: Instant) {
        // A restarted worker gets a second of work before it can be killed again; otherwise a
        // lone worker would be killed right after each recovery and never get anything done.
        let ready: Vec<usize> = self
            .slots
            .iter()
            .filter(|slot| slot.child.is_some() && slot.killed_at.is_none())
            .filter(|slot| {
                slot.first_run
                    .borrow()
                    .is_some_and(|first| now.duration_since(first) >= Duration::from_secs(1))
            })
            .map(|slot| slot.index)
            .collect();
        // Keep at least one worker up (unless there is only one), so work goes on meanwhile.
        let down = self
            .slots
            .iter()
            .filter(|slot| slot.child.is_none())
            .count();
        if ready.is_empty() || (self.slots.len() > 1 && down > 0) {
            return;
        }
        let index = ready[self.rng.usize(..ready.len())];
        let restart_after = Duration::from_millis(self.rng.u64(100..1_500));
        let slot = &mut self.slots[index];
        let Some(mut child) = slot.child.take() else {
            return;
        };
        // tokio's start_kill is SIGKILL: no drain, no release, like a crash or the OOM killer.
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        if let Some(pid) = slot.pid.take() {
            self.killed_pids.insert(pid);
        }
        slot.killed_at = Some(now);
        slot.restart_at = Some(now + restart_after);
        self.report.kills += 1;
    }

    /// Whether the soak started the worker process `pid`: a worker, an `acp` session's, or a
    /// resident worker.
    pub(super) fn knows_worker(&self, pid: u32) -> bool {
        self.pid_sessions.contains_key(&pid) || self.attached.is_resident(pid)
    }

    /// Whether the worker process of `marker` (current or killed) holds the marker's `run`: its
    /// session holds the lease, or for a resident worker, the session that claimed the run for
    /// the handler does (any session attached to it, until the handler has said which).
    pub(super) fn holds(&self, marker: &Marker, run: &RunSnapshot) -> bool {
        let pid = marker.worker_pid;
        let holder = run.session_id.as_deref();
        let ours = if self.attached.is_resident(pid) {
            holder.is_some_and(|session| match &marker.session {
                Some(claimed_by) => claimed_by == session && self.attached.serves(session),
                None => self.attached.serves(session),
            })
        } else {
            holder.is_some() && self.pid_sessions.get(&pid).map(String::as_str) == holder
        };
        run.status == "claimed" && ours
    }
}

/// Follows a child's stderr: each line to `file` (appended, when given) and to `read`; answers
/// the last 40 lines, kept as they come.
pub(super) fn follow_log(
    child: &mut Child,
    file: Option<PathBuf>,
    mut read: impl FnMut(&str) + Send + 'static,
) -> Arc<Mutex<VecDeque<String>>> {
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let Some(stderr) = child.stderr.take() else {
        return tail;
    };
    let kept = tail.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut file = file.and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(file) = file.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            read(&line);
            let mut tail = lock(&kept);
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    tail
}

pub(super) fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = lock(tail);
    tail.iter()
        .map(|line| format!("      {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
