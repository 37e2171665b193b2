//! The real `agh-worker` binary as a child process against an in-process AGH simulator,
//! configured only through environment variables: exits, SIGTERM drains, a second signal, bad
//! configuration, and the demo.

mod support;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use agh_worker::dev::sim::{
    EnqueuedRun, SimConfig, SimServer, Simulator, TaskSpec, TransitionKind,
};
use support::sim;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_agh-worker");

struct Rig {
    sim: Simulator,
    server: SimServer,
    home: tempfile::TempDir,
}

impl Rig {
    async fn new() -> Rig {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve over tcp");
        Rig {
            sim,
            server,
            home: tempfile::tempdir().expect("temporary home"),
        }
    }

    fn enqueue(&self, title: &str) -> EnqueuedRun {
        self.sim.enqueue_task(TaskSpec::titled(title))
    }

    /// `agh-worker <args>` with a clean environment: identity, endpoint, the example exec
    /// handler, short leases and polls, then `extra` (which may override any of them).
    fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let session = self.sim.default_session().expect("default session");
        let handler = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-handler.sh");
        let handlers = serde_json::json!([{
            "name": "example",
            "kind": "exec",
            "exec": {"program": handler, "kill_grace_ms": 1000},
        }])
        .to_string();
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AGH_SESSION_ID", &session.session_id)
            .env("AGH_AGENT", &session.agent_name)
            .env("AGH_WORKER__AGH__ENDPOINT", self.server.base_url())
            .env("AGH_WORKER__HANDLERS", handlers)
            .env("AGH_WORKER__WORKER__LEASE_SECONDS", "4")
            .env("AGH_WORKER__WORKER__HEARTBEAT_EVERY_SECONDS", "1")
            .env("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "10")
            .env("AGH_WORKER__AGH__LONG_POLL_TIMEOUT_MS", "1000")
            .env("AGH_WORKER__AGH__REQUEST_TIMEOUT_MS", "2000")
            .env("AGH_WORKER__RETRY__INITIAL_BACKOFF_MS", "50")
            .env("AGH_WORKER__RETRY__MAX_BACKOFF_MS", "500")
            .env("AGH_WORKER__LOG__FORMAT", "text")
            // Tests run side by side: each worker's health server takes a free port.
            .env("AGH_WORKER__HEALTH__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        command
    }

    fn check_ledger(&self) {
        sim::assert_no_violation_and_no_claimed_run(&self.sim);
    }
}

/// A running child whose stderr (the log) is collected as it comes.
struct Running {
    child: Child,
    log: watch::Receiver<String>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = watch::channel(String::new());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|log| {
                    log.push_str(&line);
                    log.push('\n');
                });
            }
        });
        Running { child, log }
    }

    /// Waits until the log holds `needle` `count` times (the child's own words, no sleeping).
    async fn until_logged(&mut self, needle: &str, count: usize) {
        let found = timeout(
            Duration::from_secs(8),
            self.log
                .wait_for(|log| log.matches(needle).count() >= count),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        assert!(
            found,
            "the worker never logged {needle:?}:\n{}",
            self.log.borrow().as_str()
        );
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    async fn exit(mut self, within: Duration) -> (ExitStatus, String) {
        let status = timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker exits in time:\n{}", self.log.borrow().as_str()))
            .expect("wait for the child");
        // The log pipe closes with the process; take what was written.
        let _ = timeout(Duration::from_secs(2), self.log.wait_for(|_| false)).await;
        let log = self.log.borrow().clone();
        (status, log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_max_runs_3_completes_three_runs_and_exits_0() {
    let rig = Rig::new().await;
    let runs: Vec<EnqueuedRun> = (1..=4).map(|n| rig.enqueue(&format!("job {n}"))).collect();
    let worker = Running::start(rig.command(&["run", "--max-runs", "3"], &[]));
    let (status, log) = worker.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    let ledger = rig.sim.ledger();
    assert_eq!(ledger.runs_in_status("completed"), 3, "{log}");
    assert_eq!(ledger.runs_in_status("queued"), 1);
    let done = rig.sim.run(&runs[0].run_id).expect("run");
    assert_eq!(
        done.result.expect("a result")["summary"],
        serde_json::json!("handled: job 1")
    );
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_idle_exit_exits_0_when_there_is_nothing_to_do() {
    let rig = Rig::new().await;
    let worker = Running::start(rig.command(&["run", "--idle-exit", "1s"], &[]));
    let (status, log) = worker.exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_handles_one_run_and_exits_0() {
    let rig = Rig::new().await;
    let first = rig.enqueue("first");
    let second = rig.enqueue("second");
    let worker = Running::start(rig.command(&["run", "--once"], &[]));
    let (status, log) = worker.exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(rig.sim.run(&first.run_id).expect("run").status, "completed");
    assert_eq!(rig.sim.run(&second.run_id).expect("run").status, "queued");
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_run_in_flight_finish_within_the_drain_then_exits_0() {
    let rig = Rig::new().await;
    let run = rig.enqueue("slow migration");
    let mut worker = Running::start(rig.command(&["run"], &[]));
    worker.until_logged("handler started", 1).await;
    worker.signal("-TERM");
    let (status, log) = worker.exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "completed", "{log}");
    assert_eq!(snapshot.claims, 1);
    assert_eq!(rig.sim.ledger().transitions_of(TransitionKind::Released), 0);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_drain_time_releases_the_run_in_flight_then_exits_0() {
    let rig = Rig::new().await;
    let run = rig.enqueue("slow migration");
    let mut worker = Running::start(rig.command(
        &["run"],
        &[("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "0")],
    ));
    worker.until_logged("handler started", 1).await;
    worker.signal("-TERM");
    let (status, log) = worker.exit(Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "queued", "{log}");
    assert_eq!(rig.sim.ledger().transitions_of(TransitionKind::Released), 1);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_releases_the_run_in_flight_at_once() {
    let rig = Rig::new().await;
    let run = rig.enqueue("slow migration");
    let mut worker = Running::start(rig.command(
        &["run"],
        &[("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "60")],
    ));
    worker.until_logged("handler started", 1).await;
    worker.signal("-TERM");
    worker.until_logged("letting the run finish", 1).await;
    let second = tokio::time::Instant::now();
    worker.signal("-TERM");
    let (status, log) = worker.exit(Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        second.elapsed() < Duration::from_millis(1800),
        "released at once, not after the 2 s script: {:?}\n{log}",
        second.elapsed()
    );
    let snapshot = rig.sim.run(&run.run_id).expect("run");
    assert_eq!(snapshot.status, "queued", "{log}");
    assert_eq!(rig.sim.ledger().transitions_of(TransitionKind::Released), 1);
    rig.check_ledger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_that_is_not_a_number_exits_64_naming_the_variable() {
    let rig = Rig::new().await;
    let worker =
        Running::start(rig.command(&["run"], &[("AGH_WORKER__WORKER__LEASE_SECONDS", "abc")]));
    let (status, log) = worker.exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains("AGH_WORKER__WORKER__LEASE_SECONDS"), "{log}");
    assert!(
        rig.sim.ledger().requests.is_empty(),
        "nothing reached the daemon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_handlers_exits_64() {
    let rig = Rig::new().await;
    let mut command = rig.command(&["run"], &[]);
    command.env_remove("AGH_WORKER__HANDLERS");
    let worker = Running::start(command);
    let (status, log) = worker.exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains("no handlers are configured"), "{log}");
}

/// The demo with `args`, as on a fresh machine: PATH and an empty home, nothing else.
async fn demo(args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().expect("temporary home");
    let path = std::env::var_os("PATH").unwrap_or_default();
    support::binary::run_clean(
        &[
            ("PATH", path.as_os_str()),
            ("HOME", home.path().as_os_str()),
        ],
        args,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_eight_tasks_and_prints_its_summary() {
    let output = demo(&["demo", "--tasks", "8"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    for line in ["runs completed", "claim→start p50", "throughput"] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    let violations = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("ledger violations"))
        .expect("a ledger line");
    assert!(violations.trim_end().ends_with(" 0"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_acp_mode_runs_pool_owned_tasks_through_sessions_the_simulator_starts() {
    let output = demo(&["demo", "--acp", "--tasks", "4"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = |label: &str| {
        stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
            .to_owned()
    };
    assert!(
        line("sessions started").trim_end().ends_with(" 2"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("exited by itself").count(),
        2,
        "each session stopped as AGH stops it, before any signal: {stdout}"
    );
    assert!(
        line("runs completed").trim_end().ends_with(" 4"),
        "{stdout}"
    );
    assert!(
        line("ledger violations").trim_end().ends_with(" 0"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_attach_mode_runs_the_sessions_in_slots_of_one_resident_worker() {
    let output = demo(&["demo", "--attach", "--tasks", "4"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("acp --attach"), "{stdout}");
    assert_eq!(
        stdout.matches("exited by itself").count(),
        2,
        "each thin process stopped as AGH stops it: {stdout}"
    );
    for (label, value) in [
        ("runs completed", " 4"),
        ("ledger violations", " 0"),
        ("resident worker", "drained and stopped on SIGTERM"),
    ] {
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"));
        assert!(line.trim_end().ends_with(value), "{stdout}");
    }
}

/// A handler that leaves a grandchild in its group and reports both pids, then waits.
const FAMILY_HANDLER: &str =
    "#!/bin/sh\nsleep 300 &\necho $! >\"$DIR/grandchild\"\necho $$ >\"$DIR/leader\"\nwait\n";

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie has exited: not running).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Waits until `done` holds, checking every 20 ms for at most 5 s (a process's death and a
/// file's appearance have no channel to wait on).
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..250 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_workers_handler_dies_with_it_and_the_next_worker_kills_what_it_left() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new().await;
    let dir = rig.home.path().join("family");
    std::fs::create_dir_all(&dir).expect("a folder for the pid files");
    let program = dir.join("family.sh");
    std::fs::write(&program, FAMILY_HANDLER).expect("write the handler");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let handlers = serde_json::json!([{
        "name": "family",
        "kind": "exec",
        "exec": {"program": program, "env": {"DIR": dir}},
    }])
    .to_string();
    let state = rig.home.path().join("state");
    let state_text = state.display().to_string();
    let env = [
        ("AGH_WORKER__HANDLERS", handlers.as_str()),
        ("STATE_DIRECTORY", state_text.as_str()),
        ("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "0"),
    ];
    rig.enqueue("long family job");

    let mut first = Running::start(rig.command(&["run"], &env));
    first.until_logged("handler started", 1).await;
    eventually("the handler's pid files", || {
        read_pid(&dir.join("leader")).is_some() && read_pid(&dir.join("grandchild")).is_some()
    })
    .await;
    let leader = read_pid(&dir.join("leader")).expect("leader pid");
    let grandchild = read_pid(&dir.join("grandchild")).expect("grandchild pid");
    let records: Vec<String> = std::fs::read_dir(state.join("process-groups"))
        .expect("the process-group record exists while the handler runs")
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .collect();
    assert!(
        records
            .iter()
            .any(|text| text.contains(&format!("\"pgid\":{leader}"))),
        "the handler's group is on record: {records:?}"
    );

    first.signal("-KILL");
    let _ = first.exit(Duration::from_secs(5)).await;
    eventually("the handler's death with its worker", || !alive(leader)).await;
    assert!(
        alive(grandchild),
        "the grandchild outlives its parent until a sweep"
    );

    std::fs::remove_file(dir.join("leader")).expect("reset the pid file");
    let mut second = Running::start(rig.command(&["run"], &env));
    second
        .until_logged(
            "killed a handler process group left running by a worker that died",
            1,
        )
        .await;
    eventually("the grandchild's death", || !alive(grandchild)).await;
    second.until_logged("handler started", 1).await;
    let log = second.log.borrow().clone();
    let swept_at = log
        .find("killed a handler process group")
        .expect("the sweep line");
    let started_at = log.find("handler started").expect("the start line");
    assert!(
        swept_at < started_at,
        "swept before the adopted run restarted:\n{log}"
    );
    second.signal("-TERM");
    let (status, log) = second.exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{log}");
    eventually("the second handler's end", || {
        read_pid(&dir.join("leader")).is_none_or(|pid| !alive(pid))
    })
    .await;
    rig.check_ledger();
}
