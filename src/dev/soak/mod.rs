//! `agh-worker soak`: the built-in simulator in-process, several real worker processes against
//! it, and a seeded storm of faults (5xx, delays past the client deadlines, answers dropped after
//! a commit, garbage bodies, forced lease expiry, simulator restarts), SIGKILLs of workers, and
//! AGH stopping the sessions of `acp` workers it launched and starting new ones (`sessions.rs`),
//! and a resident worker whose attached sessions' thin processes, and itself, are SIGKILLed
//! (`attached/`);
//! at the end the simulator's ledger and the handlers' marker files must show that every run
//! finished exactly once (or is still queued), never had two holders, never took a terminal call
//! after a lease loss, and that no handler kept running for a run its worker no longer held.
//!
//! Handler check, and why markers: the exec handler script writes `<run>.<worker pid>.<pid>` into
//! a marker directory when it starts and removes it when it exits (on TERM, HUP and PIPE too).
//! `ps` would also see handler processes, but it cannot say which run a process works on, and a
//! process that exited between two looks is indistinguishable from one that never ran. The marker
//! names the run, the worker process and the handler process, so the soak can ask the simulator
//! whether that run is still held and `/proc` whether that handler still lives.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::cli::SoakArgs;
use crate::dev::sim::{
    DEFAULT_WORKSPACE, Fault, FaultKind, Route, RunSnapshot, SessionInfo, SessionSpec, SimConfig,
    SimServer, Simulator, TaskSpec, TransitionKind,
};
use crate::util::sync::lock;

/// Worker timing: short enough that losses and recoveries happen many times in a soak.
mod attached;
mod chaos;
mod markers;
mod operator;
mod report;
mod sessions;
mod workers;

use markers::{group_alive, read_markers};
use report::Report;
use workers::{follow_log, tail_text};

const LEASE_SECONDS: u64 = 4;
/// The `acp` workers' lease: the shortest `acp.lease_seconds` allows (heartbeats every third of
/// it need whole seconds).
const ACP_LEASE_SECONDS: u64 = 6;
const HEARTBEAT_SECONDS: u64 = 1;
const LONG_POLL_MS: u64 = 1_000;
const REQUEST_TIMEOUT_MS: u64 = 1_000;
const DRAIN_SECONDS: u64 = 5;
const KILL_GRACE_MS: u64 = 500;
/// How long a handler may outlive its run's lease before that counts as a leak: the worker
/// learns of a loss at the next heartbeat or, when heartbeats fail, at its local lease deadline,
/// then gives the handler `KILL_GRACE_MS` to stop. The longer lease of the two kinds of worker.
const HANDLER_TOLERANCE: Duration = Duration::from_secs(ACP_LEASE_SECONDS + 2);
/// One exec run in this many; the rest use the noop handler (the soak is about the lease
/// protocol, and a process per run would bound the throughput by fork/exec).
const EXEC_EVERY: u64 = 5;
/// One run in this many sleeps long (8 s, on its first execution): heartbeats, expiries and kills then meet a handler
/// that is working, and a handler left running after a loss outlives `HANDLER_TOLERANCE`.
const SLOW_EVERY: u64 = 1_000;
/// How long each spawn takes at the simulator: past the 1 s request timeout, as AGH's spawns
/// that start an agent process and its handshake are, within `coordination.spawn_timeout_seconds`.
const SPAWN_DELAY: Duration = Duration::from_millis(1_500);

/// The exec handler: a marker file for its lifetime; at random, a few sleep 0.3 s, one in 20
/// sleeps 1.5 s, one in 20 fails, one in 20 asks for a release and two in 20 ask for a child
/// session (which the simulator takes [`SPAWN_DELAY`] to make, longer than the request timeout),
/// so every terminal call, some heartbeats and slow spawns are exercised.
const HANDLER_SCRIPT: &str = r#"#!/bin/sh
# agh-worker soak handler: marks its run while it works (see src/soak.rs).
set -u
marker="$SOAK_MARKERS/$AGH_WORKER_RUN_ID.$PPID.$$"
: >"$marker"
trap 'rm -f "$marker"' EXIT
# A signal ends the script through `exit`, so the EXIT trap removes the marker. PIPE: the worker
# died and nobody reads stdout any more.
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE
IFS= read -r task || exit 1
# The session the run was claimed by, into the marker: a resident worker runs the handlers of
# many sessions.
session=${task#*\"session_id\":\"}
[ "$session" = "$task" ] || printf '%s' "${session%%\"*}" >"$marker"
# A slow run sleeps on its first execution only: kills and expiries would otherwise restart it
# forever, and requeued runs come first, so every worker would end up cycling on the slow runs.
case $task in
*'"title":"exec slow'*)
    if [ ! -e "$SOAK_MARKERS/../slow-$AGH_WORKER_RUN_ID" ]; then
        : >"$SOAK_MARKERS/../slow-$AGH_WORKER_RUN_ID"
        sleep 8
    fi
    ;;
esac
# One random byte: pids alone are a poor dice (each handler takes a fixed number of them).
roll=$(od -An -N1 -tu1 /dev/urandom 2>/dev/null | tr -d ' ')
case $((${roll:-0} % 20)) in
0 | 1 | 2 | 3) sleep 0.3 ;;
# Past a heartbeat (every second), so heartbeat faults and expiries meet a working handler.
6) sleep 1.5 ;;
# A child session, slower to spawn than the request timeout; the answer comes on stdin.
7 | 8)
    printf '{"type":"spawn","agent_name":"worker"}\n'
    IFS= read -r answer || exit 1
    ;;
4)
    echo "soak handler: failing on purpose" >&2
    exit 1
    ;;
5) exit 75 ;;
esac
printf '{"type":"result","result":{"soak":true}}\n'
exit 0
"#;

/// What to run, from the flags.
#[derive(Debug, Clone)]
struct Plan {
    runs: u64,
    workers: usize,
    seed: u64,
    limit: Duration,
    quick: bool,
    log_dir: Option<PathBuf>,
}

impl Plan {
    fn from_args(args: &SoakArgs) -> Plan {
        let seed = args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64)
        });
        Plan {
            runs: args
                .runs
                .unwrap_or(if args.quick { 400 } else { 10_000 })
                .max(1),
            workers: args.workers.clamp(1, 16),
            seed,
            limit: Duration::from_secs(
                args.duration_limit
                    .unwrap_or(if args.quick { 180 } else { 600 })
                    .max(1),
            ),
            quick: args.quick,
            log_dir: args.log_dir.clone(),
        }
    }
}

pub async fn run(args: &SoakArgs) -> ExitCode {
    crate::ops::logging::init("warn", crate::config::LogFormat::Text);
    let plan = Plan::from_args(args);
    match soak(&plan).await {
        Ok(report) => {
            report.print(&plan);
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("agh-worker soak: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One worker slot: a session and the process currently serving it.
struct Slot {
    index: usize,
    session: SessionInfo,
    policy: &'static str,
    endpoint: String,
    child: Option<Child>,
    pid: Option<u32>,
    /// When the current process first logged "run in hand" (a claim or an adoption).
    first_run: watch::Receiver<Option<Instant>>,
    /// The last lines the current process logged, for reports.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Set from a SIGKILL until the restarted process has a run in hand.
    killed_at: Option<Instant>,
    restart_at: Option<Instant>,
}

/// Everything the soak loop works with.
struct Rig {
    plan: Plan,
    sim: Simulator,
    tcp: Option<SimServer>,
    unix: Option<SimServer>,
    dir: PathBuf,
    markers: PathBuf,
    handler: PathBuf,
    binary: PathBuf,
    slots: Vec<Slot>,
    rng: fastrand::Rng,
    report: Report,
    /// Worker processes this soak SIGKILLed (their handlers may be orphans).
    killed_pids: HashSet<u32>,
    /// Marker file → when its run was first seen not held by the marker's worker.
    unheld_since: HashMap<String, Instant>,
    /// Markers already reported.
    reported: HashSet<String>,
    /// Runs whose lease was already forced to expire (once per run is enough, and a run expired
    /// again and again would never finish).
    expired: HashSet<String>,
    /// Every worker process started → its session.
    pid_sessions: HashMap<u32, String>,
    /// Runs an operator cancelled → when, until their handler group is seen gone.
    canceled: HashMap<String, Instant>,
    /// Tasks an operator paused → when to resume them.
    paused: Vec<(String, Instant)>,
    /// The `acp` workers' sessions, which the simulator launches and stops as AGH does.
    acp: sessions::AcpSessions,
    /// The resident worker and the sessions attached to it.
    attached: attached::Attached,
}

async fn soak(plan: &Plan) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!("agh-worker-soak-{}", std::process::id()));
    // A leftover directory of an earlier soak with the same pid would mix in stale markers.
    let _ = std::fs::remove_dir_all(&dir);
    let markers = dir.join("markers");
    std::fs::create_dir_all(&markers).context("cannot create the soak directory")?;
    let handler = dir.join("soak-handler.sh");
    std::fs::write(&handler, HANDLER_SCRIPT).context("cannot write the handler script")?;
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755))?;
    if let Some(logs) = &plan.log_dir {
        std::fs::create_dir_all(logs).context("cannot create the log directory")?;
    }
    let binary = std::env::current_exe().context("cannot find the agh-worker binary")?;

    // Expired leases (killed workers, forced expiry) come back to the queue within a second.
    let sim = Simulator::new(SimConfig {
        sweep_interval: Duration::from_secs(1),
        create_default_session: false,
        spawn_delay: SPAWN_DELAY,
        ..SimConfig::default()
    });
    let tcp = sim
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("cannot serve the simulator over TCP")?;
    let socket = dir.join("sim.sock");
    let unix = sim
        .serve_unix(&socket)
        .await
        .context("cannot serve the simulator on a Unix socket")?;

    let mut slots = Vec::new();
    for index in 0..plan.workers {
        let session = sim.create_session(SessionSpec {
            agent_name: "worker".into(),
            workspace_id: Some(DEFAULT_WORKSPACE.into()),
            name: Some(format!("soak-{index}")),
            ..SessionSpec::default()
        });
        // Both transports and both orphan policies are exercised, alternating.
        let endpoint = if index % 2 == 0 {
            tcp.base_url()
        } else {
            format!("unix:{}", socket.display())
        };
        let (_, first_run) = watch::channel(None);
        slots.push(Slot {
            index,
            session,
            policy: if index % 2 == 0 { "adopt" } else { "release" },
            endpoint,
            child: None,
            pid: None,
            first_run,
            tail: Arc::default(),
            killed_at: None,
            restart_at: None,
        });
    }
    let slow_every = if plan.quick {
        (plan.runs / 3).max(1)
    } else {
        SLOW_EVERY
    };
    for index in 0..plan.runs {
        let title = if index % slow_every == slow_every / 2 {
            format!("exec slow {index}")
        } else if index % EXEC_EVERY == 0 {
            format!("exec {index}")
        } else {
            format!("noop {index}")
        };
        sim.enqueue_task(TaskSpec {
            max_attempts: 10,
            ..TaskSpec::titled(&title)
        });
    }

    let attached = attached::Attached::new(&dir);
    let mut rig = Rig {
        plan: plan.clone(),
        sim,
        tcp: Some(tcp),
        unix: Some(unix),
        dir,
        markers,
        handler,
        binary,
        slots,
        rng: fastrand::Rng::with_seed(plan.seed),
        report: Report::default(),
        killed_pids: HashSet::new(),
        unheld_since: HashMap::new(),
        reported: HashSet::new(),
        pid_sessions: HashMap::new(),
        canceled: HashMap::new(),
        paused: Vec::new(),
        expired: HashSet::new(),
        acp: sessions::AcpSessions::new(plan.workers.min(4), format!("unix:{}", socket.display())),
        attached,
    };
    let result = rig.drive().await;
    // Whatever happened, no worker process outlives the soak.
    for slot in &mut rig.slots {
        if let Some(child) = slot.child.as_mut() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
    }
    if let Some(server) = rig.tcp.take() {
        server.shutdown().await;
    }
    if let Some(server) = rig.unix.take() {
        server.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&rig.dir);
    result?;
    Ok(rig.report)
}

impl Rig {
    async fn drive(&mut self) -> anyhow::Result<()> {
        for index in 0..self.slots.len() {
            self.spawn_worker(index)?;
        }
        self.set_acp_provider();
        self.start_resident()?;
        self.set_thin_provider();
        let started = Instant::now();
        let deadline = started + self.plan.limit;
        // Gaps between chaos events, in ms. The quick soak has few runs, so it packs the same
        // kinds of trouble closer together to still meet each of them several times.
        // Faults are paced by traffic (one per so many requests), not by time: a time-paced
        // fault rate swamped a single worker, whose every call then met a queued fault.
        let (fault_gap, expiry_gap, kill_gap, operator_gap, stop_gap) = if self.plan.quick {
            (4..16, 300..1_200, 1_000..3_000, 400..1_500, 2_000..5_000)
        } else {
            (
                15..60,
                500..3_000,
                4_000..12_000,
                1_000..4_000,
                5_000..15_000,
            )
        };
        let mut next_fault = self.rng.u64(fault_gap.clone());
        let mut next_expiry = started + Duration::from_millis(1_000);
        let mut next_kill = started + Duration::from_millis(self.rng.u64(kill_gap.clone()));
        let mut next_marker_check = started;
        let mut next_operator = started + Duration::from_millis(self.rng.u64(operator_gap.clone()));
        let mut sweeps: Vec<Instant> = Vec::new();
        // Progress fractions at which the simulator restarts: once in a quick soak, twice otherwise.
        let mut restart_points: Vec<u64> = if self.plan.quick {
            vec![self.rng.u64(30..60)]
        } else {
            vec![self.rng.u64(20..45), self.rng.u64(55..80)]
        };
        loop {
            let now = Instant::now();
            let ledger = self.sim.ledger();
            let finished = ledger.transitions_of(TransitionKind::Completed)
                + ledger.transitions_of(TransitionKind::Failed)
                + ledger.runs_in_status("canceled");
            // The soak goes on until the resident and its sessions have met each of their faults.
            if finished >= self.plan.runs && self.attached_covered() {
                self.report.finished_in_time = true;
                break;
            }
            if now >= deadline {
                break;
            }
            self.watch_processes(now).await?;
            self.tend_sessions(now, stop_gap.clone()).await?;
            self.tend_attached(now).await?;

            let requests: u64 = ledger.requests.iter().map(|count| count.count).sum();
            if requests >= next_fault {
                self.inject_fault();
                next_fault = requests + self.rng.u64(fault_gap.clone());
            }
            if now >= next_expiry {
                if self.expire_one(&ledger.recent) {
                    sweeps.push(now + Duration::from_millis(self.rng.u64(200..2_000)));
                }
                next_expiry = now + Duration::from_millis(self.rng.u64(expiry_gap.clone()));
            }
            sweeps.retain(|at| {
                if *at <= now {
                    self.sim.sweep_now();
                    false
                } else {
                    true
                }
            });
            if now >= next_kill {
                self.kill_one(now).await;
                next_kill = now + Duration::from_millis(self.rng.u64(kill_gap.clone()));
            }
            if let Some(&point) = restart_points.first()
                && finished * 100 >= point * self.plan.runs
            {
                restart_points.remove(0);
                self.restart_sim().await?;
            }
            if now >= next_operator {
                self.operate(now);
                next_operator = now + Duration::from_millis(self.rng.u64(operator_gap.clone()));
            }
            self.resume_paused(now, false);
            if now >= next_marker_check {
                self.check_markers(now);
                self.check_canceled(now);
                next_marker_check = now + Duration::from_millis(250);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.report.elapsed = started.elapsed();
        self.finish().await;
        Ok(())
    }

    /// Stops the workers gracefully and checks the end state.
    async fn finish(&mut self) {
        self.sim.clear_faults();
        self.resume_paused(Instant::now(), true);
        for slot in &self.slots {
            if let Some(pid) = slot.pid
                && slot.child.is_some()
            {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        // AGH stops its sessions while the `run` workers drain.
        self.stop_sessions_at_end().await;
        self.stop_attached_at_end().await;
        let within = Duration::from_secs(DRAIN_SECONDS + 10);
        for slot in &mut self.slots {
            // A kill whose restarted process never had a run in hand (or was not restarted yet).
            if slot.killed_at.take().is_some() {
                self.report.unmeasured_recoveries += 1;
            }
            let Some(mut child) = slot.child.take() else {
                continue;
            };
            match tokio::time::timeout(within, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => self.report.violations.push(format!(
                    "worker {} exited with {status} after SIGTERM; its last log lines:\n{}",
                    slot.index,
                    tail_text(&slot.tail)
                )),
                Ok(Err(err)) => self
                    .report
                    .violations
                    .push(format!("worker {}: cannot wait for it: {err}", slot.index)),
                Err(_) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    self.report.violations.push(format!(
                        "worker {} did not stop within {} s of SIGTERM; its last log lines:\n{}",
                        slot.index,
                        within.as_secs(),
                        tail_text(&slot.tail)
                    ));
                }
            }
        }

        // Handlers of workers that stopped gracefully are all gone now; a live one leaked.
        for marker in read_markers(&self.markers) {
            if !group_alive(marker.pid) {
                self.report.stale_markers += 1;
            } else if self.killed_pids.contains(&marker.worker_pid) {
                // Killed too late for a restarted worker to sweep before the end (a handler
                // outliving a restart is a violation, found while the soak runs).
                self.report.orphaned_by_kill += u64::from(self.reported.insert(marker.file));
            } else {
                self.report.violations.push(format!(
                    "handler pid {} for run {} still runs after its worker (pid {}) stopped",
                    marker.pid, marker.run_id, marker.worker_pid
                ));
            }
        }

        // Leases nobody will finish: the clock past every lease, then the daemon's sweep.
        let before = self.sim.ledger();
        self.report.claimed_at_end = before.runs_in_status("claimed");
        self.sim
            .advance_clock(Duration::from_secs(ACP_LEASE_SECONDS * 2 + 1));
        // The sweep works in batches; bounded by the number of runs.
        for _ in 0..=(self.plan.runs / 100 + 1) {
            let swept = self.sim.sweep_now();
            self.report.swept_at_end += swept as u64;
            if swept == 0 {
                break;
            }
        }
        let ledger = self.sim.ledger();
        self.report.completed = ledger.transitions_of(TransitionKind::Completed);
        self.report.failed = ledger.transitions_of(TransitionKind::Failed);
        self.report.queued = ledger.runs_in_status("queued");
        self.report.transitions = ledger.transitions.clone();
        let claimed = ledger.runs_in_status("claimed");
        if claimed > 0 {
            self.report.violations.push(format!(
                "{claimed} runs still claimed after the clock passed every lease and a sweep"
            ));
        }
        self.report.canceled = ledger.runs_in_status("canceled");
        self.check_children();
        self.check_sessions_at_end();
        self.check_attached_at_end();
        let accounted =
            self.report.completed + self.report.failed + self.report.queued + self.report.canceled;
        if accounted != self.plan.runs {
            self.report.violations.push(format!(
                "{} runs enqueued, but {} completed + {} failed + {} queued + {} canceled = {accounted}",
                self.plan.runs,
                self.report.completed,
                self.report.failed,
                self.report.queued,
                self.report.canceled
            ));
        }
        if ledger.violations_total > 0 {
            self.report.violations.push(format!(
                "the ledger found {} lease violations",
                ledger.violations_total
            ));
            for violation in &ledger.violations {
                self.report.violations.push(format!(
                    "ledger: run {}: {}: {}",
                    violation.run_id, violation.rule, violation.detail
                ));
            }
        }
    }
}
