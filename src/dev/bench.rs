//! `agh-worker bench`: throughput, per-run overhead, idle footprint, latency and growth of the
//! worker against the built-in AGH simulator on loopback, printed as one table.
//!
//! Two kinds of measurement. In-process ones (throughput, start latency, lease loss) run the
//! simulator and the worker loop in this process over loopback TCP, so the numbers are about the
//! worker's own code and not process start-up. Process ones (idle footprint, start-up, SIGTERM,
//! growth) start this very executable as `agh-worker run`, configured only through the
//! environment, against a simulator served from this process, and read `/proc/<pid>/…`.
//!
//! Nothing here asserts a target: the table says whether each one was met, and the exit code is
//! non-zero only when a measurement could not be made at all.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::api::types::{ClaimRequest, CompleteRequest};
use crate::api::{AghClient, ClaimOutcome, ClientOptions, Endpoint, Identity};
use crate::assembly::{Worker, WorkerBuilder};
use crate::cli::BenchArgs;
use crate::config::Config;
use crate::dev::sim::{
    Route, SessionInfo, SimConfig, SimServer, Simulator, TaskSpec, TransitionKind,
};
use crate::handler::exec::ExecConfig;
use crate::handler::{Handler, HandlerConfig, HandlerKind, MatchRule, Outcome, TaskContext};
use crate::worker::{Shutdown, WorkerExit, WorkerSettings};

/// The hand-written loop the exec worker is compared with, embedded so the bench runs anywhere.
const CURL_LOOP: &str = include_str!("../../benches/curl-loop.sh");

/// The section titles, printed as they are (the smoke test looks for them).
pub const SECTIONS: [&str; 5] = [
    "Throughput and per-run overhead",
    "Against a hand-written curl loop",
    "Idle footprint",
    "Latency",
    "Growth",
];

/// How much of everything to do.
#[derive(Clone, Debug)]
struct Plan {
    repeat: u32,
    /// No-op runs per repeat, for the worker and for the floor.
    runs: u64,
    /// Exec runs per repeat (each starts a process).
    exec_runs: u64,
    /// Runs of the curl loop per repeat (each starts several processes).
    curl_runs: u64,
    idle: Duration,
    latency_samples: usize,
    lease_samples: usize,
    /// Runs after which the first and the second growth reading are taken.
    growth: (u64, u64),
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Plan {
        let mut plan = if args.smoke {
            Plan {
                repeat: 1,
                runs: 100,
                exec_runs: 20,
                curl_runs: 10,
                idle: Duration::from_secs(1),
                latency_samples: 5,
                lease_samples: 1,
                growth: (50, 150),
            }
        } else if args.quick {
            Plan {
                repeat: 3,
                runs: 1_000,
                exec_runs: 300,
                curl_runs: 100,
                idle: Duration::from_secs(10),
                latency_samples: 30,
                lease_samples: 5,
                growth: (1_000, 10_000),
            }
        } else {
            Plan {
                repeat: 5,
                runs: 3_000,
                exec_runs: 1_000,
                curl_runs: 300,
                idle: Duration::from_secs(60),
                latency_samples: 100,
                lease_samples: 10,
                growth: (1_000, 100_000),
            }
        };
        if let Some(repeat) = args.repeat {
            plan.repeat = repeat.max(1);
        }
        if let Some(runs) = args.runs {
            plan.runs = runs.max(1);
            // Exec runs start a process each: a third of the no-op count keeps a repeat short.
            plan.exec_runs = (runs / 3).max(1);
            plan.curl_runs = plan.curl_runs.min(runs.max(1));
        }
        plan
    }
}

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    spread: String,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(figure: impl Into<String>, value: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            value: value.into(),
            spread: String::new(),
            target: String::new(),
            met: None,
        }
    }

    fn spread(mut self, spread: impl Into<String>) -> Row {
        self.spread = spread.into();
        self
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// Runs the benchmark and prints its table.
pub async fn run(args: &BenchArgs) -> ExitCode {
    // Warnings only: the worker under test logs at info per run, and a subscriber writing those
    // lines would measure the terminal, not the worker (the growth section runs the binary with
    // its default info logging to /dev/null instead).
    crate::ops::logging::init("warn", crate::config::LogFormat::Text);
    let plan = Plan::from_args(args);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("agh-worker bench: cannot find this executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("# agh-worker bench");
    println!();
    println!(
        "build: {}; cores: {}; load average at start: {}",
        if cfg!(debug_assertions) {
            "debug (figures are not representative: use `cargo run --release -- bench`)"
        } else {
            "release"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "plan: {} repeats; {} no-op runs, {} exec runs, {} curl-loop runs per repeat; idle {} s; \
         {} latency samples; {} lease-loss samples; growth after {} and {} runs",
        plan.repeat,
        plan.runs,
        plan.exec_runs,
        plan.curl_runs,
        plan.idle.as_secs(),
        plan.latency_samples,
        plan.lease_samples,
        plan.growth.0,
        plan.growth.1
    );
    let mut failed = false;
    let sections: [(&str, SectionFuture<'_>); 5] = [
        (SECTIONS[0], Box::pin(throughput(&plan))),
        (SECTIONS[1], Box::pin(against_curl(&plan))),
        (SECTIONS[2], Box::pin(idle_footprint(&plan, &exe))),
        (SECTIONS[3], Box::pin(latency(&plan, &exe))),
        (SECTIONS[4], Box::pin(growth(&plan, &exe))),
    ];
    let only = args.only.as_deref().map(str::to_lowercase);
    for (title, section) in sections {
        if only
            .as_deref()
            .is_some_and(|only| !title.to_lowercase().contains(only))
        {
            continue;
        }
        eprintln!("bench: {title} …");
        let rows = match section.await {
            Ok(rows) => rows,
            Err(err) => {
                failed = true;
                vec![Row::new("(not measured)", format!("error: {err:#}"))]
            }
        };
        print_section(title, &rows);
    }
    println!();
    println!("load average at end: {}", load_average());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

type SectionFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Row>>> + 'a>>;

fn print_section(title: &str, rows: &[Row]) {
    println!();
    println!("## {title}");
    println!();
    println!("| figure | median | spread | target | met |");
    println!("|---|--:|--:|---|---|");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            row.figure, row.value, row.spread, row.target, met
        );
    }
}

// ---- throughput -----------------------------------------------------------------------------

async fn throughput(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut floor = Vec::new();
    let mut worker = Vec::new();
    let mut ratio = Vec::new();
    for round in 0..plan.repeat {
        eprintln!("bench:   repeat {}/{}", round + 1, plan.repeat);
        // Alternating which goes first spreads slow moments of a busy machine over both.
        let (f, w) = if round % 2 == 0 {
            let f = floor_rate(plan.runs).await?;
            (f, worker_rate(noop_handlers(), plan.runs).await?)
        } else {
            let w = worker_rate(noop_handlers(), plan.runs).await?;
            (floor_rate(plan.runs).await?, w)
        };
        floor.push(f);
        worker.push(w);
        // Time per run of the worker over the floor's: the floor's rate over the worker's.
        ratio.push(f / w);
    }
    let ratio_median = median(&ratio);
    Ok(vec![
        Row::new(
            "floor: claim → context → complete loop, runs/s",
            format!("{:.0}", median(&floor)),
        )
        .spread(min_max(&floor, 0)),
        Row::new(
            "worker, noop handler, runs/s",
            format!("{:.0}", median(&worker)),
        )
        .spread(min_max(&worker, 0)),
        Row::new(
            "worker time per run ÷ floor's",
            format!("{ratio_median:.3}"),
        )
        .spread(min_max(&ratio, 3))
        .target("≤ 1.15", ratio_median <= 1.15),
        Row::new(
            "worker per-run time, µs",
            format!("{:.0}", 1e6 / median(&worker)),
        )
        .spread(format!("floor {:.0} µs", 1e6 / median(&floor))),
    ])
}

fn noop_handlers() -> WorkerBuilder {
    builder(vec![HandlerConfig {
        name: "noop".into(),
        kind: HandlerKind::Noop,
        matches: MatchRule::default(),
        exec: None,
        webhook: None,
        coder: None,
    }])
}

fn exec_true_handlers() -> WorkerBuilder {
    builder(vec![HandlerConfig {
        name: "true".into(),
        kind: HandlerKind::Exec,
        matches: MatchRule::default(),
        exec: Some(ExecConfig {
            program: PathBuf::from("/bin/true"),
            ..ExecConfig::default()
        }),
        webhook: None,
        coder: None,
    }])
}

/// A simulator served on a loopback port, with its default session.
struct Rig {
    sim: Simulator,
    server: SimServer,
    session: SessionInfo,
}

impl Rig {
    async fn start() -> anyhow::Result<Rig> {
        let sim = Simulator::new(SimConfig::default());
        let server = sim
            .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("serving the simulator on loopback")?;
        let session = sim
            .default_session()
            .context("the simulator has no default session")?;
        Ok(Rig {
            sim,
            server,
            session,
        })
    }

    fn client(&self) -> anyhow::Result<AghClient> {
        let endpoint = Endpoint::parse(&self.server.base_url())?;
        let identity = Identity {
            session_id: self.session.session_id.clone(),
            agent: self.session.agent_name.clone(),
            workspace_id: None,
        };
        Ok(AghClient::new(
            endpoint,
            identity,
            ClientOptions::default(),
        )?)
    }

    fn enqueue(&self, count: u64) {
        for index in 0..count {
            self.sim
                .enqueue_task(TaskSpec::titled(&format!("bench task {index}")));
        }
    }

    fn completed(&self) -> u64 {
        self.sim.ledger().transitions_of(TransitionKind::Completed)
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

/// The settings of an in-process worker: long-poll claims, a lease that needs no renewal
/// during a no-op run, and no idle exit.
fn settings(max_runs: Option<u64>, lease: Duration, heartbeat: Duration) -> WorkerSettings {
    WorkerSettings {
        lease,
        heartbeat_every: heartbeat,
        max_runs,
        ..super::in_process_settings()
    }
}

/// A builder for the configured `handlers` (and no others).
fn builder(handlers: Vec<HandlerConfig>) -> WorkerBuilder {
    WorkerBuilder::new(Config {
        handlers,
        ..Config::default()
    })
}

/// A worker of `builder` against the rig's simulator, without coordination: the bare loop.
fn in_process_worker(
    rig: &Rig,
    builder: WorkerBuilder,
    settings: WorkerSettings,
) -> anyhow::Result<Worker> {
    Ok(builder
        .client(rig.client()?)
        .settings(settings)
        .log_events_only()
        .build()?)
}

/// Runs/s of the worker loop through `runs` queued runs.
async fn worker_rate(handlers: WorkerBuilder, runs: u64) -> anyhow::Result<f64> {
    let rig = Rig::start().await?;
    rig.enqueue(runs);
    let worker = in_process_worker(
        &rig,
        handlers,
        settings(Some(runs), Duration::from_secs(60), Duration::from_secs(20)),
    )?;
    let started = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(600), worker.run(Shutdown::default()))
        .await
        .context("the worker did not finish its runs within 10 minutes")?;
    let elapsed = started.elapsed();
    ensure!(
        exit == WorkerExit::MaxRuns,
        "the worker stopped early: {exit:?}"
    );
    let completed = rig.completed();
    ensure!(
        completed == runs,
        "{completed} of {runs} runs completed in the simulator"
    );
    rig.stop().await;
    Ok(runs as f64 / elapsed.as_secs_f64())
}

/// Runs/s of the least a correct worker must do per run, with the same client: claim (waiting),
/// read the context (the handler's bundle and time limit), complete.
async fn floor_rate(runs: u64) -> anyhow::Result<f64> {
    let rig = Rig::start().await?;
    rig.enqueue(runs);
    let client = rig.client()?;
    let request = ClaimRequest {
        wait: true,
        lease_seconds: Some(60),
        ..ClaimRequest::default()
    };
    let result = CompleteRequest {
        result: Some(json!({"handler": "noop"})),
    };
    let started = Instant::now();
    for _ in 0..runs {
        let claim = match client.claim_next(&request).await? {
            ClaimOutcome::Claimed(claim) => claim,
            other => bail!("the floor loop found no run to claim: {other:?}"),
        };
        client.context().await?;
        client.complete(&claim.run.id, &result).await?;
    }
    let elapsed = started.elapsed();
    let completed = rig.completed();
    ensure!(
        completed == runs,
        "{completed} of {runs} runs completed in the simulator"
    );
    rig.stop().await;
    Ok(runs as f64 / elapsed.as_secs_f64())
}

// ---- against curl ---------------------------------------------------------------------------

async fn against_curl(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let dir = scratch_dir("curl")?;
    let script = dir.join("curl-loop.sh");
    std::fs::write(&script, CURL_LOOP)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    let mut curl = Vec::new();
    let mut exec = Vec::new();
    let mut ratio = Vec::new();
    for round in 0..plan.repeat {
        eprintln!("bench:   repeat {}/{}", round + 1, plan.repeat);
        let c = curl_rate(&script, plan.curl_runs).await?;
        let e = worker_rate(exec_true_handlers(), plan.exec_runs).await?;
        curl.push(c);
        exec.push(e);
        ratio.push(e / c);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ratio_median = median(&ratio);
    Ok(vec![
        Row::new(
            "curl loop: claim, `true`, complete; runs/s",
            format!("{:.1}", median(&curl)),
        )
        .spread(min_max(&curl, 1)),
        Row::new(
            "worker, exec handler `/bin/true`, runs/s",
            format!("{:.1}", median(&exec)),
        )
        .spread(min_max(&exec, 1)),
        Row::new("worker ÷ curl loop", format!("{ratio_median:.2}×"))
            .spread(min_max(&ratio, 2))
            .target("≥ 4×", ratio_median >= 4.0),
    ])
}

async fn curl_rate(script: &Path, runs: u64) -> anyhow::Result<f64> {
    let rig = Rig::start().await?;
    rig.enqueue(runs);
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(script)
        .arg(rig.server.base_url())
        .arg(&rig.session.session_id)
        .arg(&rig.session.agent_name)
        .arg(runs.to_string())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the curl loop (bash and curl must be installed)")?;
    let elapsed = started.elapsed();
    ensure!(
        output.status.success(),
        "the curl loop failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let completed = rig.completed();
    ensure!(
        completed == runs,
        "{completed} of {runs} runs completed in the simulator"
    );
    rig.stop().await;
    Ok(runs as f64 / elapsed.as_secs_f64())
}

// ---- the binary as a child process ----------------------------------------------------------

/// `agh-worker run` as a child process, configured through the environment only.
struct ChildWorker {
    child: Child,
    pid: u32,
    health: SocketAddr,
    http: reqwest::Client,
}

impl ChildWorker {
    fn spawn(
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
    async fn ready(&mut self, within: Duration) -> anyhow::Result<()> {
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
    async fn requests(&self) -> anyhow::Result<(u64, u64)> {
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

    fn memory(&self) -> anyhow::Result<ProcStatus> {
        proc_status(self.pid)
    }

    /// Sends SIGTERM and waits for the exit; answers the time from the signal to the exit.
    async fn terminate(mut self, within: Duration) -> anyhow::Result<(Duration, i32)> {
        let sent = signal(self.pid, "TERM").await?;
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .context("the worker did not exit after SIGTERM")??;
        Ok((sent.elapsed(), status.code().unwrap_or(-1)))
    }
}

fn noop_handlers_json() -> serde_json::Value {
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
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    fds: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
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
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---- idle -----------------------------------------------------------------------------------

async fn idle_footprint(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
    let rig = Rig::start().await?;
    let mut worker = ChildWorker::spawn(exe, &rig, noop_handlers_json(), &[])?;
    worker.ready(Duration::from_secs(20)).await?;
    tokio::time::timeout(
        Duration::from_secs(10),
        rig.sim.wait_for_waiters(Route::ClaimNext, 1),
    )
    .await
    .context("the worker opened no long-poll claim")?;
    // Start-up work (config, client, first `me`) is done; what follows is the steady idle state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (claims_before, all_before) = worker.requests().await?;
    let before = worker.memory()?;
    let started = Instant::now();
    tokio::time::sleep(plan.idle).await;
    let after = worker.memory()?;
    let window = started.elapsed();
    let (claims_after, all_after) = worker.requests().await?;
    let long_poll = ClientOptions::default().long_poll_timeout;
    let (stop, code) = worker.terminate(Duration::from_secs(40)).await?;
    rig.stop().await;

    let cpu_s = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / clock_ticks();
    let cpu_pct = cpu_s / window.as_secs_f64() * 100.0;
    let rss_mib = after.rss_kib as f64 / 1024.0;
    // Each long-poll claim ends at its deadline when there is no work, so one claim ends per
    // deadline (counted when it ends); a window a little longer than a whole number of deadlines
    // must not allow one more.
    let claims = claims_after.saturating_sub(claims_before);
    let deadlines = (window.as_secs_f64() / long_poll.as_secs_f64()).round() as u64;
    let all = all_after.saturating_sub(all_before);
    Ok(vec![
        Row::new("RSS, MiB", format!("{rss_mib:.1}"))
            .spread(format!("peak {:.1}", after.hwm_kib as f64 / 1024.0))
            .target("≤ 10", rss_mib <= 10.0),
        Row::new("threads", after.threads.to_string()).target("≤ 4", after.threads <= 4),
        Row::new("open file descriptors", after.fds.to_string()),
        Row::new(
            format!("CPU over {:.0} s, % of one core", window.as_secs_f64()),
            format!("{cpu_pct:.3}"),
        )
        .spread(format!("{cpu_s:.2} s"))
        .target("≤ 0.1", cpu_pct <= 0.1),
        Row::new(
            format!(
                "claim-next requests in {:.0} s (long-poll deadline {} s)",
                window.as_secs_f64(),
                long_poll.as_secs()
            ),
            claims.to_string(),
        )
        .spread(format!("{all} requests in all"))
        .target(
            format!("≤ {} (one per deadline)", deadlines.max(1)),
            claims <= deadlines.max(1),
        ),
        Row::new(
            "exit after SIGTERM while idle, ms",
            format!("{:.0}", ms(stop)),
        )
        .spread(format!("exit code {code}")),
    ])
}

// ---- latency --------------------------------------------------------------------------------

/// A handler that reports when it starts and, when it blocks, when it sees its cancellation.
struct Probe {
    starts: mpsc::UnboundedSender<(String, Instant)>,
    cancels: mpsc::UnboundedSender<(String, Instant)>,
    block: bool,
}

impl Handler for Probe {
    async fn run(&self, context: TaskContext) -> Outcome {
        let run_id = context.document.run_id.clone();
        let _ = self.starts.send((run_id.clone(), Instant::now()));
        if self.block {
            context.cancel.cancelled().await;
            let _ = self.cancels.send((run_id, Instant::now()));
            return Outcome::Release("cancelled".into());
        }
        Outcome::Complete(json!({"handler": "probe"}))
    }
}

/// A worker whose only handler is a [`Probe`], running in this process against a rig: what the
/// probe reports, and how to stop the worker.
struct ProbeWorker {
    starts: mpsc::UnboundedReceiver<(String, Instant)>,
    cancels: mpsc::UnboundedReceiver<(String, Instant)>,
    shutdown: Shutdown,
    running: tokio::task::JoinHandle<WorkerExit>,
}

impl ProbeWorker {
    /// Starts the worker; `block` makes the probe wait for each run's cancellation.
    fn start(rig: &Rig, block: bool, settings: WorkerSettings) -> anyhow::Result<Self> {
        let (starts_tx, starts) = mpsc::unbounded_channel();
        let (cancels_tx, cancels) = mpsc::unbounded_channel();
        let probe = Probe {
            starts: starts_tx,
            cancels: cancels_tx,
            block,
        };
        let worker = in_process_worker(
            rig,
            builder(Vec::new()).handler("probe", MatchRule::default(), probe),
            settings,
        )?;
        let shutdown = Shutdown::default();
        let running = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { worker.run(shutdown).await })
        };
        Ok(ProbeWorker {
            starts,
            cancels,
            shutdown,
            running,
        })
    }
}

async fn latency(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Enqueue → handler start, while the worker waits in a long-poll.
    let starts = start_latencies(plan.latency_samples).await?;
    let p50 = percentile(&starts, 50.0);
    let p99 = percentile(&starts, 99.0);
    rows.push(
        Row::new("enqueue → handler start p50, ms", format!("{p50:.1}")).spread(format!(
            "p10–p90 {:.1}–{:.1}",
            percentile(&starts, 10.0),
            percentile(&starts, 90.0)
        )),
    );
    rows.push(
        Row::new("enqueue → handler start p99, ms", format!("{p99:.1}"))
            .spread(format!("max {:.1}; {} samples", max(&starts), starts.len()))
            .target("≤ 150", p99 <= 150.0),
    );

    // Start-up to READY, and to the first long-poll claim.
    let mut ready = Vec::new();
    let mut first_claim = Vec::new();
    for _ in 0..plan.repeat {
        let (r, c) = startup(exe).await?;
        ready.push(r);
        first_claim.push(c);
    }
    rows.push(
        Row::new("spawn → /readyz 200, ms", format!("{:.1}", median(&ready)))
            .spread(min_max(&ready, 1)),
    );
    rows.push(
        Row::new(
            "spawn → first claim-next waiting at the daemon, ms",
            format!("{:.1}", median(&first_claim)),
        )
        .spread(min_max(&first_claim, 1)),
    );

    // Lease loss → handler cancelled.
    let losses = lease_loss(plan.lease_samples).await?;
    rows.push(
        Row::new(
            "lease lost at the daemon → handler sees cancel, ms (heartbeat every 1 s)",
            format!("{:.0}", median(&losses)),
        )
        .spread(min_max(&losses, 0))
        .target(
            "≤ 1 heartbeat (1000) + a round trip",
            max(&losses) <= 1100.0,
        ),
    );

    // SIGTERM with a run in flight.
    let mut stops = Vec::new();
    let mut released = true;
    for _ in 0..plan.repeat.min(3) {
        let (elapsed, run_released) = sigterm_in_flight(exe).await?;
        stops.push(elapsed);
        released &= run_released;
    }
    rows.push(
        Row::new(
            "SIGTERM → exit, run in flight, drain timeout 1 s, ms",
            format!("{:.0}", median(&stops)),
        )
        .spread(min_max(&stops, 0))
        .target(
            "drain 1 s + < 500 ms; run released",
            max(&stops) < 1500.0 && released,
        ),
    );
    Ok(rows)
}

async fn start_latencies(samples: usize) -> anyhow::Result<Vec<f64>> {
    let rig = Rig::start().await?;
    let mut probe = ProbeWorker::start(
        &rig,
        false,
        settings(None, Duration::from_secs(60), Duration::from_secs(20)),
    )?;
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        tokio::time::timeout(
            Duration::from_secs(10),
            rig.sim.wait_for_waiters(Route::ClaimNext, 1),
        )
        .await
        .context("the worker opened no long-poll claim")?;
        // A random moment within two of the daemon's 100 ms polls.
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..200_000))).await;
        let enqueued = Instant::now();
        rig.sim.enqueue_task(TaskSpec::titled("latency probe"));
        let (_, started) = tokio::time::timeout(Duration::from_secs(10), probe.starts.recv())
            .await
            .context("the handler did not start within 10 s")?
            .context("the worker stopped")?;
        latencies.push(ms(started.saturating_duration_since(enqueued)));
    }
    probe.shutdown.drain.cancel();
    let _ = probe.running.await;
    rig.stop().await;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Time from spawn to `/readyz` 200, and to the first claim waiting at the daemon, in ms.
async fn startup(exe: &Path) -> anyhow::Result<(f64, f64)> {
    let rig = Rig::start().await?;
    let spawned = Instant::now();
    let mut worker = ChildWorker::spawn(exe, &rig, noop_handlers_json(), &[])?;
    let claim_open = {
        let sim = rig.sim.clone();
        tokio::spawn(async move {
            sim.wait_for_waiters(Route::ClaimNext, 1).await;
            Instant::now()
        })
    };
    worker.ready(Duration::from_secs(20)).await?;
    let ready = spawned.elapsed();
    let claim_open = tokio::time::timeout(Duration::from_secs(10), claim_open)
        .await
        .context("the worker opened no long-poll claim")??;
    worker.terminate(Duration::from_secs(40)).await?;
    rig.stop().await;
    Ok((ms(ready), ms(claim_open.duration_since(spawned))))
}

/// Expires the lease of a run whose handler is working, sweeps it back to the queue, and times
/// how long the handler takes to see its cancellation. In ms.
async fn lease_loss(samples: usize) -> anyhow::Result<Vec<f64>> {
    let rig = Rig::start().await?;
    let mut probe = ProbeWorker::start(
        &rig,
        true,
        settings(None, Duration::from_secs(6), Duration::from_secs(1)),
    )?;
    let mut losses = Vec::with_capacity(samples);
    for _ in 0..samples {
        // A run swept back to the queue is claimed again (until its attempts run out); otherwise
        // a fresh task gives the next sample.
        let started =
            match tokio::time::timeout(Duration::from_millis(300), probe.starts.recv()).await {
                Ok(started) => started,
                Err(_) => {
                    rig.sim.enqueue_task(TaskSpec::titled("lease loss probe"));
                    tokio::time::timeout(Duration::from_secs(10), probe.starts.recv())
                        .await
                        .context("the handler did not start within 10 s")?
                }
            };
        let (run_id, _) = started.context("the worker stopped")?;
        // A random moment of the heartbeat cycle.
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..1_000_000))).await;
        ensure!(
            rig.sim.expire_lease(&run_id),
            "the run {run_id} was not claimed when its lease was to be expired"
        );
        rig.sim.sweep_now();
        let lost = Instant::now();
        let (cancelled_run, seen) =
            tokio::time::timeout(Duration::from_secs(10), probe.cancels.recv())
                .await
                .context("the handler saw no cancellation within 10 s")?
                .context("the worker stopped")?;
        ensure!(
            cancelled_run == run_id,
            "another run ({cancelled_run}) was cancelled"
        );
        losses.push(ms(seen.saturating_duration_since(lost)));
    }
    probe.shutdown.force.cancel();
    let _ = probe.running.await;
    rig.stop().await;
    Ok(losses)
}

/// SIGTERM to the binary while an exec handler (`sleep 30`) works, with a 1 s drain timeout:
/// the time to exit in ms, and whether the run went back to the queue.
async fn sigterm_in_flight(exe: &Path) -> anyhow::Result<(f64, bool)> {
    let rig = Rig::start().await?;
    let handlers = json!([{
        "name": "slow",
        "kind": "exec",
        "exec": {"program": "/bin/sleep", "args": ["30"], "kill_grace_ms": 1000},
    }]);
    let mut worker = ChildWorker::spawn(
        exe,
        &rig,
        handlers,
        &[("AGH_WORKER__WORKER__DRAIN_TIMEOUT_SECONDS", "1")],
    )?;
    worker.ready(Duration::from_secs(20)).await?;
    let run = rig.sim.enqueue_task(TaskSpec::titled("slow task"));
    let claimed_by = Instant::now() + Duration::from_secs(10);
    while rig
        .sim
        .run(&run.run_id)
        .is_none_or(|snapshot| snapshot.status != "claimed")
    {
        ensure!(Instant::now() < claimed_by, "the slow run was not claimed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The handler starts right after the claim and one context read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (elapsed, code) = worker.terminate(Duration::from_secs(40)).await?;
    ensure!(code == 0, "the worker exited with {code} after SIGTERM");
    let released = rig.sim.ledger().transitions_of(TransitionKind::Released) >= 1;
    rig.stop().await;
    Ok((ms(elapsed), released))
}

// ---- growth ---------------------------------------------------------------------------------

async fn growth(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
    let (small, large) = plan.growth;
    let rig = Rig::start().await?;
    let mut worker = ChildWorker::spawn(exe, &rig, noop_handlers_json(), &[])?;
    worker.ready(Duration::from_secs(20)).await?;
    feed(&rig, small).await?;
    let first = settle_and_read(&rig, &worker).await?;
    let started = Instant::now();
    feed(&rig, large).await?;
    let rate = (large - small) as f64 / started.elapsed().as_secs_f64();
    let second = settle_and_read(&rig, &worker).await?;
    let violations = rig.sim.ledger().violations_total;
    worker.terminate(Duration::from_secs(40)).await?;
    rig.stop().await;

    let rss_growth = growth_pct(first.rss_kib, second.rss_kib);
    let fd_growth = growth_pct(first.fds, second.fds);
    Ok(vec![
        Row::new(
            format!("RSS after {small} runs → after {large}, MiB"),
            format!(
                "{:.1} → {:.1}",
                first.rss_kib as f64 / 1024.0,
                second.rss_kib as f64 / 1024.0
            ),
        )
        .spread(format!("{rss_growth:+.1} %"))
        .target("within 10 %", rss_growth.abs() <= 10.0),
        Row::new(
            format!("open file descriptors after {small} → after {large}"),
            format!("{} → {}", first.fds, second.fds),
        )
        .spread(format!("{fd_growth:+.1} %"))
        .target("within 10 %", fd_growth.abs() <= 10.0),
        Row::new(
            format!("threads after {small} → after {large}"),
            format!("{} → {}", first.threads, second.threads),
        ),
        Row::new(
            "binary worker, noop, info logs to /dev/null, runs/s",
            format!("{rate:.0}"),
        )
        .spread(format!("{} runs", large - small)),
        Row::new("simulator ledger violations", violations.to_string())
            .target("0", violations == 0),
    ])
}

/// Keeps the queue topped up until `total` runs have completed. A bounded queue keeps the
/// simulator's per-claim work (and this process's memory) flat, so the worker sets the pace.
async fn feed(rig: &Rig, total: u64) -> anyhow::Result<()> {
    const AHEAD: u64 = 500;
    let mut enqueued = rig.completed();
    let mut last_progress = (Instant::now(), enqueued);
    loop {
        let completed = rig.completed();
        if completed >= total {
            return Ok(());
        }
        while enqueued < total && enqueued < completed + AHEAD {
            rig.sim.enqueue_task(TaskSpec::titled("growth"));
            enqueued += 1;
        }
        if completed != last_progress.1 {
            last_progress = (Instant::now(), completed);
        }
        ensure!(
            last_progress.0.elapsed() < Duration::from_secs(30),
            "the worker completed nothing for 30 s (at {completed} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the worker is back in a long-poll with nothing to do, then reads its footprint.
async fn settle_and_read(rig: &Rig, worker: &ChildWorker) -> anyhow::Result<ProcStatus> {
    tokio::time::timeout(
        Duration::from_secs(10),
        rig.sim.wait_for_waiters(Route::ClaimNext, 1),
    )
    .await
    .context("the worker opened no long-poll claim")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.memory()
}

fn growth_pct(before: u64, after: u64) -> f64 {
    if before == 0 {
        return 0.0;
    }
    (after as f64 - before as f64) / before as f64 * 100.0
}

// ---- statistics and small helpers -----------------------------------------------------------

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn max(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::NAN, f64::max)
}

fn min_max(samples: &[f64], decimals: usize) -> String {
    let min = samples.iter().copied().fold(f64::NAN, f64::min);
    if samples.len() < 2 {
        return "1 sample".to_string();
    }
    format!("{min:.decimals$}–{:.decimals$}", max(samples))
}

/// The p-th percentile (nearest rank) of samples sorted ascending.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agh-worker-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 50.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn growth_is_relative_to_the_first_reading() {
        assert_eq!(growth_pct(100, 110), 10.0);
        assert_eq!(growth_pct(0, 5), 0.0);
    }

    #[test]
    fn the_process_status_of_this_process_is_readable() {
        let status = proc_status(std::process::id()).expect("own /proc entry");
        assert!(status.rss_kib > 0);
        assert!(status.threads >= 1);
        assert!(status.fds >= 1);
    }
}
