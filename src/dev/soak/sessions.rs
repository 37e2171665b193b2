//! AGH stopping and starting sessions. Beside the `run` workers, some of the soak's workers are
//! `agh-worker acp` processes the simulator launches as AGH launches its agents (the provider
//! command runs this binary's `acp`, with the soak's timings in its environment). Now and then
//! AGH stops one — the session turns `stopping` (every call of its identity answers 401),
//! `session/cancel`, stdin closed, and after the 5 s grace SIGTERM and SIGKILL to its process
//! group — and starts a new session in its place.
//!
//! For each stop: no call with the session's identity once its stdin has closed (but for one
//! already on its way, [`IN_FLIGHT`]), no handler group of its worker left [`HANDLERS_GONE`]
//! after the worker exited, the worker gone by itself within AGH's grace (a stop that needed
//! AGH's signals is a violation), and the run it had in hand requeued when its lease expired and
//! finished by another session (the ledger's invariants, and a check of that run at the end).

use std::ops::Range;

use tokio::task::JoinHandle;

use super::markers::{group_alive, read_markers};
use super::*;
use crate::dev::sim::acp::{AgentProvider, AgentStop, STOP_GRACE};

/// How long after stdin closed a call of the stopped session may still arrive: one the worker
/// sent just before it read the end of its stdin. Later ones were sent after it knew.
const IN_FLIGHT: Duration = Duration::from_millis(250);

/// How long a stopped worker's handler groups may outlive its exit: it ends them itself before
/// exiting (SIGTERM, 250 ms, SIGKILL); what is left is reaped a moment later.
pub(super) const HANDLERS_GONE: Duration = Duration::from_secs(1);

/// How long a due stop waits for a session with a handler at work before it stops any.
pub(super) const WAIT_FOR_WORK: Duration = Duration::from_secs(2);

/// The agent the sessions run as: the same as the `run` workers', so they share the queue.
const AGENT: &str = "worker";

/// The figures of AGH's stops and starts.
#[derive(Default)]
pub(super) struct SessionFigures {
    pub(super) started: u64,
    pub(super) stops: StopCounts,
    /// Runs a stopped worker's handler was working on, and how many another session finished.
    pub(super) runs_in_hand: u64,
    pub(super) finished_elsewhere: u64,
    /// Of those, how many an operator canceled meanwhile.
    pub(super) canceled: u64,
    /// Calls with a stopping session's identity: before its stdin closed (it could not know),
    /// within [`IN_FLIGHT`] of the close, and later (violations).
    pub(super) calls_before_close: u64,
    pub(super) calls_in_flight: u64,
    pub(super) calls_late: u64,
    /// The latest of the calls within [`IN_FLIGHT`], after the close.
    pub(super) latest_in_flight: Duration,
    /// Every call after a stop, by route.
    pub(super) call_routes: BTreeMap<&'static str, u64>,
}

impl SessionFigures {
    pub(super) fn print(&self) {
        println!(
            "  acp sessions started  {:>8}  (agh-worker acp, launched by the simulator as AGH launches agents)",
            self.started
        );
        println!(
            "  acp sessions stopped  {:>8}  ({})",
            self.stops.stopped,
            self.stops.text()
        );
        println!(
            "  runs in hand at a stop{:>8}  (requeued at lease expiry and finished by another session: {}, canceled: {})",
            self.runs_in_hand, self.finished_elsewhere, self.canceled
        );
        let routes = super::report::counts_text(&self.call_routes);
        println!(
            "  calls after a stop    {:>8}  (acp and attached sessions; before stdin closed: {}, within {} ms of the close: {} (the latest {} ms after), later: {}; {routes})",
            self.calls_before_close + self.calls_in_flight + self.calls_late,
            self.calls_before_close,
            IN_FLIGHT.as_millis(),
            self.calls_in_flight,
            self.latest_in_flight.as_millis(),
            self.calls_late
        );
    }
}

/// AGH's stops of one kind of session.
#[derive(Default)]
pub(super) struct StopCounts {
    /// Stops while the soak ran, and those at its end.
    pub(super) stopped: u64,
    pub(super) stopped_at_end: u64,
    /// Agent processes that exited by themselves within AGH's grace, and the longest it took.
    pub(super) exited_in_grace: u64,
    pub(super) slowest_exit: Duration,
}

impl StopCounts {
    /// The figures but the count of stops.
    pub(super) fn text(&self) -> String {
        format!(
            "+{} at the end; exited by themselves within AGH's {} ms grace: {}, slowest {} ms",
            self.stopped_at_end,
            STOP_GRACE.as_millis(),
            self.exited_in_grace,
            self.slowest_exit.as_millis()
        )
    }

    /// Counts a stop; passes on the problem of one that went wrong.
    pub(super) fn count(
        &mut self,
        at_end: bool,
        outcome: Result<AgentStop, String>,
    ) -> Result<(), String> {
        if at_end {
            self.stopped_at_end += 1;
        } else {
            self.stopped += 1;
        }
        let how = outcome?;
        self.exited_in_grace += 1;
        self.slowest_exit = self.slowest_exit.max(how.waited);
        Ok(())
    }
}

/// A session whose agent process runs.
pub(super) struct Live {
    pub(super) session_id: String,
    pub(super) pid: u32,
}

/// A stop under way: the simulator's `stop_agent_session`, which takes up to AGH's grace.
pub(super) struct Stopping {
    pub(super) live: Live,
    pub(super) at_end: bool,
    task: JoinHandle<Result<AgentStop, String>>,
}

impl Stopping {
    /// Starts AGH's stop of `live`'s session.
    pub(super) fn start(sim: &Simulator, live: Live, at_end: bool) -> Stopping {
        let sim = sim.clone();
        let session_id = live.session_id.clone();
        let task = tokio::spawn(async move { sim.stop_agent_session(&session_id).await });
        Stopping { live, at_end, task }
    }

    pub(super) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The stopped session, and how its stop went: an agent AGH had to signal is an error that
    /// says so.
    pub(super) async fn outcome(self) -> (Live, Result<AgentStop, String>) {
        let live = self.live;
        let outcome = match self.task.await {
            Ok(Ok(how)) if how.exited_by_itself => Ok(how),
            Ok(Ok(_)) => Err(format!(
                "the agent process of session {} (pid {}) still ran {} ms after its stdin closed: AGH had to signal its group",
                live.session_id,
                live.pid,
                STOP_GRACE.as_millis()
            )),
            Ok(Err(err)) => Err(format!(
                "AGH's stop of session {} failed: {err}",
                live.session_id
            )),
            Err(err) => Err(format!(
                "the task stopping session {} failed: {err}",
                live.session_id
            )),
        };
        (live, outcome)
    }
}

/// The sessions of `kind` whose start is over, taken from `tasks`; a start that failed is an
/// error.
pub(super) async fn started_sessions(
    tasks: &mut Vec<JoinHandle<Result<SessionInfo, String>>>,
    kind: &str,
) -> anyhow::Result<Vec<SessionInfo>> {
    let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(tasks)
        .into_iter()
        .partition(JoinHandle::is_finished);
    *tasks = pending;
    let mut started = Vec::new();
    for task in done {
        let info = task
            .await
            .with_context(|| format!("the task starting an {kind} session failed"))?
            .map_err(|err| anyhow::anyhow!("an {kind} session did not start: {err}"))?;
        started.push(info);
    }
    Ok(started)
}

/// Starts a session of `spec` as AGH does, its agent process in `cwd`.
pub(super) fn start_task(
    sim: &Simulator,
    spec: SessionSpec,
    cwd: &Path,
) -> JoinHandle<Result<SessionInfo, String>> {
    let sim = sim.clone();
    let cwd = cwd.to_path_buf();
    tokio::spawn(async move { sim.start_agent_session(spec, &cwd).await })
}

/// The sessions the simulator launches for the soak.
pub(super) struct AcpSessions {
    /// How many run at once.
    wanted: usize,
    /// Where the workers find the simulator.
    endpoint: String,
    live: Vec<Live>,
    starting: Vec<JoinHandle<Result<SessionInfo, String>>>,
    stopping: Vec<Stopping>,
    /// Stopped workers (pid, session) whose handler groups must be gone by the instant.
    exited: Vec<(u32, String, Instant)>,
    /// Runs in hand at a stop, with the stopped session.
    in_hand: Vec<(String, String)>,
    next_stop: Option<Instant>,
    named: usize,
}

impl AcpSessions {
    pub(super) fn new(wanted: usize, endpoint: String) -> AcpSessions {
        AcpSessions {
            wanted,
            endpoint,
            live: Vec::new(),
            starting: Vec::new(),
            stopping: Vec::new(),
            exited: Vec::new(),
            in_hand: Vec::new(),
            next_stop: None,
            named: 0,
        }
    }
}

/// A word for the provider command, quoted as the simulator (and AGH) split it.
pub(super) fn quoted(word: &Path) -> String {
    format!("'{}'", word.display().to_string().replace('\'', r"'\''"))
}

impl Rig {
    /// The provider that runs the sessions: this binary's `acp` behind a shell that sends its
    /// stderr to a file per session (the simulator would pass it to the soak's own stderr).
    pub(super) fn set_acp_provider(&self) {
        let logs = self.acp_log_dir();
        let env = self.agent_env(&self.acp.endpoint);
        self.sim.set_agent_provider(AgentProvider {
            command: format!(
                r#"/bin/sh -c 'exec "$0" acp 2>>"$1/acp-$AGH_SESSION_ID.log"' {} {}"#,
                quoted(&self.binary),
                quoted(&logs)
            ),
            env,
            agh_home: None,
            agents: vec![AGENT.into()],
            workspace_root: Some(self.dir.clone()),
        });
    }

    /// The environment of the agent processes the simulator launches: the soak's worker
    /// settings and `acp`'s own, against the simulator at `endpoint`.
    pub(super) fn agent_env(&self, endpoint: &str) -> Vec<(String, String)> {
        let state = self.dir.join(".local/state/agh-worker");
        let mut env: Vec<(String, String)> = self
            .worker_env()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        env.extend([
            ("HOME".into(), self.dir.display().to_string()),
            // The `run` workers' state directory: a start sweeps what a dead worker left.
            ("STATE_DIRECTORY".into(), state.display().to_string()),
            ("AGH_WORKER__AGH__ENDPOINT".into(), endpoint.to_owned()),
            (
                "AGH_WORKER__ACP__LEASE_SECONDS".into(),
                ACP_LEASE_SECONDS.to_string(),
            ),
            ("AGH_WORKER__ACP__LOG_FILE".into(), "off".into()),
            ("AGH_WORKER__WORKER__ORPHAN_POLICY".into(), "adopt".into()),
        ]);
        env
    }

    pub(super) fn acp_log_dir(&self) -> PathBuf {
        self.plan
            .log_dir
            .clone()
            .unwrap_or_else(|| self.dir.clone())
    }

    /// The last lines a session's worker logged.
    fn acp_tail(&self, session_id: &str) -> String {
        self.agent_log_tail(&format!("acp-{session_id}.log"))
    }

    /// The last lines of an agent process's log file `name`.
    pub(super) fn agent_log_tail(&self, name: &str) -> String {
        let path = self.acp_log_dir().join(name);
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..]
            .iter()
            .map(|line| format!("      {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One tick: takes in started and stopped sessions, checks stopped workers' handlers,
    /// keeps the wanted number of sessions, and stops one when due.
    pub(super) async fn tend_sessions(
        &mut self,
        now: Instant,
        gap: Range<u64>,
    ) -> anyhow::Result<()> {
        self.take_started().await?;
        self.take_stopped(now, false).await;
        self.check_stopped_handlers(now);
        // A worker that exited while nobody stopped it: AGH would end its session.
        let sim = &self.sim;
        let (gone, live): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.acp.live)
            .into_iter()
            .partition(|live| sim.agent_exited(&live.session_id));
        self.acp.live = live;
        for live in gone {
            self.report.violations.push(format!(
                "the acp worker of session {} (pid {}) exited without being stopped; its last log lines:\n{}",
                live.session_id,
                live.pid,
                self.acp_tail(&live.session_id)
            ));
            self.acp
                .exited
                .push((live.pid, live.session_id, now + HANDLERS_GONE));
        }
        while self.acp.live.len() + self.acp.starting.len() < self.acp.wanted {
            self.start_session();
        }
        let next_stop = *self
            .acp
            .next_stop
            .get_or_insert_with(|| now + Duration::from_millis(self.rng.u64(gap.clone())));
        if now >= next_stop
            && self.acp.stopping.is_empty()
            && !self.acp.live.is_empty()
            && self.stop_one(now >= next_stop + WAIT_FOR_WORK)
        {
            self.acp.next_stop = Some(now + Duration::from_millis(self.rng.u64(gap)));
        }
        Ok(())
    }

    fn start_session(&mut self) {
        let spec = SessionSpec {
            agent_name: AGENT.into(),
            workspace_id: Some(DEFAULT_WORKSPACE.into()),
            name: Some(format!("soak-acp-{}", self.acp.named)),
            ..SessionSpec::default()
        };
        self.acp.named += 1;
        let task = start_task(&self.sim, spec, &self.dir);
        self.acp.starting.push(task);
    }

    /// Sessions whose start is over; one that failed ends the soak (no worker, nothing to soak).
    async fn take_started(&mut self) -> anyhow::Result<()> {
        for info in started_sessions(&mut self.acp.starting, "acp").await? {
            self.add_live(info)?;
        }
        Ok(())
    }

    /// A session whose start is over, with its worker's pid.
    fn add_live(&mut self, info: SessionInfo) -> anyhow::Result<()> {
        let pid = self
            .sim
            .agent_pid(&info.session_id)
            .context("the simulator knows no process of the session it started")?;
        self.pid_sessions.insert(pid, info.session_id.clone());
        self.acp.live.push(Live {
            session_id: info.session_id,
            pid,
        });
        self.report.sessions.started += 1;
        Ok(())
    }

    /// Starts AGH's stop of a session whose exec handler works on a run it holds (the worker
    /// must end that handler, and the run must be finished by someone else), or of any session
    /// with `any`; answers whether it did.
    fn stop_one(&mut self, any: bool) -> bool {
        let working: Vec<(usize, String)> = read_markers(&self.markers)
            .into_iter()
            .filter_map(|marker| {
                let index = self
                    .acp
                    .live
                    .iter()
                    .position(|live| live.pid == marker.worker_pid)?;
                let run = self.sim.run(&marker.run_id)?;
                let holder = run.session_id.as_deref() == Some(&self.acp.live[index].session_id);
                (run.status == "claimed" && holder).then_some((index, marker.run_id))
            })
            .collect();
        let (index, run) = if working.is_empty() {
            if !any {
                return false;
            }
            (self.rng.usize(..self.acp.live.len()), None)
        } else {
            let (index, run) = working[self.rng.usize(..working.len())].clone();
            (index, Some(run))
        };
        let live = self.acp.live.swap_remove(index);
        if let Some(run) = run {
            self.acp.in_hand.push((run, live.session_id.clone()));
            self.report.sessions.runs_in_hand += 1;
        }
        self.spawn_stop(live, false);
        true
    }

    fn spawn_stop(&mut self, live: Live, at_end: bool) {
        let stop = Stopping::start(&self.sim, live, at_end);
        self.acp.stopping.push(stop);
    }

    /// Stops that are over (all of them, waiting, with `wait`): counted and checked.
    async fn take_stopped(&mut self, now: Instant, wait: bool) {
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.acp.stopping)
            .into_iter()
            .partition(|stop| wait || stop.is_finished());
        self.acp.stopping = pending;
        for stop in done {
            let at_end = stop.at_end;
            let (live, outcome) = stop.outcome().await;
            if let Err(problem) = self.report.sessions.stops.count(at_end, outcome) {
                let tail = self.acp_tail(&live.session_id);
                self.report
                    .violations
                    .push(format!("{problem}; its last log lines:\n{tail}"));
            }
            self.acp.exited.push((
                live.pid,
                live.session_id,
                now.max(Instant::now()) + HANDLERS_GONE,
            ));
        }
    }

    /// A stopped worker's handler groups still alive past [`HANDLERS_GONE`] are a violation.
    fn check_stopped_handlers(&mut self, now: Instant) {
        if self.acp.exited.is_empty() {
            return;
        }
        let markers = read_markers(&self.markers);
        let mut kept = Vec::new();
        for (pid, session_id, deadline) in std::mem::take(&mut self.acp.exited) {
            let alive: Vec<&super::markers::Marker> = markers
                .iter()
                .filter(|marker| marker.worker_pid == pid && group_alive(marker.pid))
                .collect();
            if alive.is_empty() {
                continue;
            }
            if now < deadline {
                kept.push((pid, session_id, deadline));
                continue;
            }
            let groups: Vec<u32> = alive.iter().map(|marker| marker.pid).collect();
            for marker in alive {
                self.reported.insert(marker.file.clone());
            }
            self.report.violations.push(format!(
                "handler groups {groups:?} of the stopped session {session_id} still run {} ms after its worker (pid {pid}) exited",
                HANDLERS_GONE.as_millis()
            ));
        }
        self.acp.exited = kept;
    }

    /// At the end AGH stops every session, with the checks of any stop.
    pub(super) async fn stop_sessions_at_end(&mut self) {
        for task in std::mem::take(&mut self.acp.starting) {
            let started = match task.await {
                Ok(Ok(info)) => self.add_live(info),
                Ok(Err(err)) => Err(anyhow::anyhow!("an acp session did not start: {err}")),
                Err(err) => Err(anyhow::anyhow!(
                    "the task starting an acp session failed: {err}"
                )),
            };
            if let Err(err) = started {
                self.report.violations.push(format!("{err:#}"));
            }
        }
        for live in std::mem::take(&mut self.acp.live) {
            self.spawn_stop(live, true);
        }
        self.take_stopped(Instant::now(), true).await;
        // Each stopped worker's handlers get their moment, then must be gone.
        while !self.acp.exited.is_empty() {
            self.check_stopped_handlers(Instant::now());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Once the runs are settled: the calls made after stops, and the runs in hand at a stop.
    pub(super) fn check_sessions_at_end(&mut self) {
        let (calls, total) = self.sim.calls_after_stop();
        let figures = &mut self.report.sessions;
        for call in &calls {
            *figures.call_routes.entry(call.route.as_str()).or_insert(0) += 1;
            match call.since_stdin_closed {
                None => figures.calls_before_close += 1,
                Some(after) if after <= IN_FLIGHT => {
                    figures.calls_in_flight += 1;
                    figures.latest_in_flight = figures.latest_in_flight.max(after);
                }
                Some(after) => {
                    figures.calls_late += 1;
                    self.report.violations.push(format!(
                        "session {} called {} {} ms after its stdin closed (AGH was stopping it)",
                        call.session_id,
                        call.route.as_str(),
                        after.as_millis()
                    ));
                }
            }
        }
        let unkept = total.saturating_sub(calls.len() as u64);
        if unkept > 0 {
            self.report.sessions.calls_late += unkept;
            self.report.violations.push(format!(
                "{unkept} more calls came from stopping sessions (past the simulator's record)"
            ));
        }
        for (run_id, stopped) in std::mem::take(&mut self.acp.in_hand) {
            match self.run_after_end(&run_id, &stopped) {
                Ok(Some("canceled")) => self.report.sessions.canceled += 1,
                Ok(Some(_)) => self.report.sessions.finished_elsewhere += 1,
                Ok(None) => {}
                Err(violation) => self.report.violations.push(violation),
            }
        }
    }

    /// What became of a run `session_id` held when it ended: finished by another session, or
    /// canceled (its status), still open (`None`), or finished by the ended session (a
    /// violation).
    pub(super) fn run_after_end(
        &self,
        run_id: &str,
        session_id: &str,
    ) -> Result<Option<&'static str>, String> {
        let Some(run) = self.sim.run(run_id) else {
            return Ok(None);
        };
        let status = match run.status.as_str() {
            "completed" => "completed",
            "failed" => "failed",
            "canceled" => return Ok(Some("canceled")),
            _ => return Ok(None),
        };
        if run.session_id.as_deref() == Some(session_id) {
            return Err(format!(
                "run {run_id} was {status} by session {session_id}, which had ended while it held it"
            ));
        }
        Ok(Some(status))
    }
}
