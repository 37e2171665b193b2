//! A resident worker with attached sessions. One resident (`agh-worker run --attach
//! unix:<soak dir>/attach.sock`, the soak's timings in its environment, its health server on a
//! Unix socket) and four sessions the simulator starts as AGH does, whose provider command runs
//! the thin `agh-worker acp --attach` process. Their agent is their own ([`AGENT`]), so the
//! simulator launches the thin process for them and `acp` for the other sessions; the tasks
//! are nobody's, so every session claims from the one queue.
//!
//! Faults, seeded: SIGKILL of one thin process (AGH sees it exit and the session ends; a new one
//! starts in its place), SIGKILL of the resident (restarted after a pause; the thin processes
//! attach again and the new slots adopt their sessions' leases), and AGH's stop of an attached
//! session (stdin closed).
//!
//! Checked: after a session's end, the resident's handler groups working for it are gone within
//! [`SLOT_STOP`] and [`HANDLERS_GONE`], and its slot is no longer listed in `/status` after
//! [`SLOT_LISTED`]; a stopped thin process exits by itself within AGH's grace; after a resident's
//! restart the thin processes attach again within [`REATTACH_WITHIN`] and, once one has, the
//! handler groups the dead resident left are gone within [`HANDLERS_GONE`] (parent-death signal,
//! then the new resident's sweep); the resident never exits by itself and drains on SIGTERM.
//! The calls of a stopping session are checked with every other session's (`sessions.rs`).

mod ends;
mod figures;
mod resident;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinHandle;

pub(super) use self::figures::AttachedFigures;

use self::ends::Ended;
use self::resident::{ResidentLog, Sweep};
use super::markers::{group_alive, read_markers};
use super::sessions::{
    HANDLERS_GONE, Live, StopCounts, Stopping, WAIT_FOR_WORK, quoted, start_task, started_sessions,
};
use super::*;
use crate::dev::sim::acp::AgentProvider;

/// The attached sessions' agent.
const AGENT: &str = "worker-attached";
/// How many attached sessions run at once.
const SESSIONS: usize = 4;
/// Room for the sessions and for slots still stopping while their successors attach.
const MAX_SLOTS: usize = 2 * SESSIONS;
/// How long a slot takes to stop once its session ends: the resident's stop budget.
const SLOT_STOP: Duration = Duration::from_millis(1_500);
/// When after a session's end the resident's `/status` must no longer list its slot.
const SLOT_LISTED: Duration = Duration::from_secs(3);
/// How soon after a resident's restart a thin process must have attached again: its retries
/// start at 100 ms and double up to 5 s.
const REATTACH_WITHIN: Duration = Duration::from_secs(10);
/// The pause between a resident's SIGKILL and its restart, in ms.
const RESTART_PAUSE: Range<u64> = 200..1_200;

/// A handler group of a resident at work on a run a session claimed.
#[derive(Clone, Debug)]
struct Work {
    session: String,
    /// The session still holds the run.
    holds: bool,
    run: String,
    group: u32,
    /// The resident worker process whose handler it is.
    resident: u32,
}

/// The resident process and the attached sessions.
pub(super) struct Attached {
    socket: PathBuf,
    health: PathBuf,
    resident: Option<Child>,
    pid: Option<u32>,
    /// Every resident process started.
    pids: HashSet<u32>,
    restart_at: Option<Instant>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// When the current resident first attached a session.
    first_attach: watch::Receiver<Option<Instant>>,
    sweep: Option<Sweep>,
    live: Vec<Live>,
    starting: Vec<JoinHandle<Result<SessionInfo, String>>>,
    stopping: Vec<Stopping>,
    ended: Vec<Ended>,
    /// The handler groups a session's slot had at work when its stop or kill began.
    at_work: HashMap<String, Vec<Work>>,
    in_hand: Vec<(String, String)>,
    next: [Option<Instant>; 3],
    named: usize,
}

/// The faults of the resident and its sessions, in the order of [`Attached::next`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    ThinKill,
    ResidentKill,
    Stop,
}

const TROUBLES: [Trouble; 3] = [Trouble::ThinKill, Trouble::ResidentKill, Trouble::Stop];

impl Attached {
    pub(super) fn new(dir: &Path) -> Attached {
        Attached {
            socket: dir.join("attach.sock"),
            health: dir.join("resident-health.sock"),
            resident: None,
            pid: None,
            pids: HashSet::new(),
            restart_at: None,
            tail: Arc::default(),
            first_attach: watch::channel(None).1,
            sweep: None,
            live: Vec::new(),
            starting: Vec::new(),
            stopping: Vec::new(),
            ended: Vec::new(),
            at_work: HashMap::new(),
            in_hand: Vec::new(),
            next: [None; 3],
            named: 0,
        }
    }

    /// Whether `pid` is (or was) a resident worker process.
    pub(super) fn is_resident(&self, pid: u32) -> bool {
        self.pids.contains(&pid)
    }

    /// Whether `session_id` is an attached session still up (or being stopped).
    pub(super) fn serves(&self, session_id: &str) -> bool {
        self.live.iter().any(|live| live.session_id == session_id)
            || self
                .stopping
                .iter()
                .any(|stop| stop.live.session_id == session_id)
    }
}

/// The gaps between faults, in ms, in the order of [`TROUBLES`].
fn gaps(quick: bool) -> [Range<u64>; 3] {
    if quick {
        [2_000..5_000, 5_000..9_000, 2_000..5_000]
    } else {
        [5_000..15_000, 20_000..40_000, 5_000..15_000]
    }
}

impl Rig {
    /// The provider of the attached sessions: the thin process, its stderr to a file per session.
    pub(super) fn set_thin_provider(&self) {
        let logs = self.acp_log_dir();
        let endpoint = format!("unix:{}", self.dir.join("sim.sock").display());
        self.sim.set_agent_provider(AgentProvider {
            command: format!(
                r#"/bin/sh -c 'exec "$0" acp --attach "unix:$2" 2>>"$1/thin-$AGH_SESSION_ID.log"' {} {} {}"#,
                quoted(&self.binary),
                quoted(&logs),
                quoted(&self.attached.socket)
            ),
            env: self.agent_env(&endpoint),
            agh_home: None,
            agents: vec![AGENT.into()],
            workspace_root: Some(self.dir.clone()),
        });
    }

    /// Whether every fault of the attached sessions has happened (the quick soak goes on
    /// until it has).
    pub(super) fn attached_covered(&self) -> bool {
        self.report.attached.covered()
    }

    /// One tick: the resident's life, sessions started and stopped, the checks that are due,
    /// the wanted number of sessions, and the faults that are due.
    pub(super) async fn tend_attached(&mut self, now: Instant) -> anyhow::Result<()> {
        self.watch_resident(now)?;
        for info in started_sessions(&mut self.attached.starting, "attached").await? {
            self.add_attached(info)?;
        }
        self.take_stopped_attached(false).await;
        self.notice_thin_exits(now);
        self.check_ended(now).await;
        self.check_sweep(now);
        while self.attached.live.len() + self.attached.starting.len() < SESSIONS {
            let spec = SessionSpec {
                agent_name: AGENT.into(),
                workspace_id: Some(DEFAULT_WORKSPACE.into()),
                name: Some(format!("soak-attached-{}", self.attached.named)),
                ..SessionSpec::default()
            };
            self.attached.named += 1;
            let task = start_task(&self.sim, spec, &self.dir);
            self.attached.starting.push(task);
        }
        let gaps = gaps(self.plan.quick);
        for (index, gap) in gaps.into_iter().enumerate() {
            let due = *self.attached.next[index]
                .get_or_insert_with(|| now + Duration::from_millis(self.rng.u64(gap.clone())));
            if now >= due && self.attached_fault(TROUBLES[index], now >= due + WAIT_FOR_WORK, now) {
                self.attached.next[index] = Some(now + Duration::from_millis(self.rng.u64(gap)));
            }
        }
        Ok(())
    }

    fn add_attached(&mut self, info: SessionInfo) -> anyhow::Result<()> {
        let pid = self
            .sim
            .agent_pid(&info.session_id)
            .context("the simulator knows no process of the attached session it started")?;
        self.attached.live.push(Live {
            session_id: info.session_id,
            pid,
        });
        self.report.attached.started += 1;
        Ok(())
    }

    /// The resident's handler groups at work, each for the session whose claim it works on.
    fn attached_work(&self) -> Vec<Work> {
        let Some(pid) = self.attached.pid else {
            return Vec::new();
        };
        read_markers(&self.markers)
            .into_iter()
            .filter(|marker| marker.worker_pid == pid && group_alive(marker.pid))
            .filter_map(|marker| {
                let run = self.sim.run(&marker.run_id)?;
                let holder = run.session_id.filter(|_| run.status == "claimed");
                // The session the handler's run was claimed by, or until it has said, the holder.
                let session = marker.session.or_else(|| holder.clone())?;
                Some(Work {
                    holds: holder.as_deref() == Some(session.as_str()),
                    session,
                    run: marker.run_id,
                    group: marker.pid,
                    resident: pid,
                })
            })
            .collect()
    }

    /// Injects `fault` if it can: at a session (or resident) with a handler at work, or at any
    /// with `any`; answers whether it did.
    fn attached_fault(&mut self, fault: Trouble, any: bool, now: Instant) -> bool {
        let work = self.attached_work();
        if fault == Trouble::ResidentKill {
            let ready = self.attached.resident.is_some()
                && self.attached.sweep.is_none()
                && !self.attached.live.is_empty();
            if !ready || (!work.iter().any(|work| work.holds) && !any) {
                return false;
            }
            self.kill_resident(now);
            return true;
        }
        if self.attached.live.is_empty() {
            return false;
        }
        let working: Vec<usize> = (0..self.attached.live.len())
            .filter(|&index| {
                let session = &self.attached.live[index].session_id;
                work.iter()
                    .any(|work| work.holds && work.session == *session)
            })
            .collect();
        let index = match (working.is_empty(), any) {
            (false, _) => working[self.rng.usize(..working.len())],
            (true, true) => self.rng.usize(..self.attached.live.len()),
            (true, false) => return false,
        };
        let live = self.attached.live.swap_remove(index);
        let groups: Vec<Work> = work
            .into_iter()
            .filter(|work| work.session == live.session_id)
            .collect();
        for work in groups.iter().filter(|work| work.holds) {
            self.attached
                .in_hand
                .push((work.run.clone(), live.session_id.clone()));
            self.report.attached.runs_in_hand += 1;
        }
        self.attached
            .at_work
            .insert(live.session_id.clone(), groups);
        if fault == Trouble::ThinKill {
            // AGH sees the process exit and ends the session.
            if let Some(pid) = i32::try_from(live.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            self.report.attached.thin_killed += 1;
            self.session_ended(live.session_id, now);
        } else {
            let stop = Stopping::start(&self.sim, live, false);
            self.attached.stopping.push(stop);
        }
        true
    }

    /// A session has ended: what its slot had at work must stop, and the slot must go.
    fn session_ended(&mut self, session_id: String, now: Instant) {
        let mut groups = self
            .attached
            .at_work
            .remove(&session_id)
            .unwrap_or_default();
        groups.extend(
            self.attached_work()
                .into_iter()
                .filter(|work| work.session == session_id),
        );
        self.attached.ended.push(Ended {
            session_id,
            groups,
            groups_by: Some(now + SLOT_STOP + HANDLERS_GONE),
            slot_by: Some(now + SLOT_LISTED),
        });
    }

    /// A thin process that exited while nobody stopped or killed it: a violation.
    fn notice_thin_exits(&mut self, now: Instant) {
        let sim = &self.sim;
        let (gone, live): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.attached.live)
            .into_iter()
            .partition(|live| sim.agent_exited(&live.session_id));
        self.attached.live = live;
        for live in gone {
            let tail = self.agent_log_tail(&format!("thin-{}.log", live.session_id));
            self.report.violations.push(format!(
                "the thin process of attached session {} (pid {}) exited without being stopped; its last log lines:\n{tail}",
                live.session_id, live.pid
            ));
            self.session_ended(live.session_id, now);
        }
    }

    /// AGH's stops that are over (all of them, waiting, with `wait`).
    async fn take_stopped_attached(&mut self, wait: bool) {
        let (done, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attached.stopping)
            .into_iter()
            .partition(|stop| wait || stop.is_finished());
        self.attached.stopping = pending;
        for stop in done {
            let at_end = stop.at_end;
            let (live, outcome) = stop.outcome().await;
            if let Err(problem) = self.report.attached.stops.count(at_end, outcome) {
                let tail = self.agent_log_tail(&format!("thin-{}.log", live.session_id));
                self.report
                    .violations
                    .push(format!("{problem}; its last log lines:\n{tail}"));
            }
            self.session_ended(live.session_id, Instant::now());
        }
    }

    /// At the end: AGH stops every attached session, their checks run, then the resident gets
    /// SIGTERM and must drain.
    pub(super) async fn stop_attached_at_end(&mut self) {
        for task in std::mem::take(&mut self.attached.starting) {
            match task.await {
                Ok(Ok(info)) => {
                    if let Err(err) = self.add_attached(info) {
                        self.report.violations.push(format!("{err:#}"));
                    }
                }
                Ok(Err(err)) => self
                    .report
                    .violations
                    .push(format!("an attached session did not start: {err}")),
                Err(err) => self.report.violations.push(format!(
                    "the task starting an attached session failed: {err}"
                )),
            }
        }
        for live in std::mem::take(&mut self.attached.live) {
            let stop = Stopping::start(&self.sim, live, true);
            self.attached.stopping.push(stop);
        }
        self.take_stopped_attached(true).await;
        while !self.attached.ended.is_empty() {
            let now = Instant::now();
            self.check_ended(now).await;
            self.check_sweep(now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop_resident().await;
    }

    /// Once the runs are settled: no run an ended session held was finished by it.
    pub(super) fn check_attached_at_end(&mut self) {
        for (run_id, ended) in std::mem::take(&mut self.attached.in_hand) {
            match self.run_after_end(&run_id, &ended) {
                Ok(Some("canceled") | None) => {}
                Ok(Some(_)) => self.report.attached.finished_elsewhere += 1,
                Err(violation) => self.report.violations.push(violation),
            }
        }
    }
}
