//! Throughput: the floor loop against the worker's no-op rate, and the exec worker against the
//! hand-written curl loop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tokio::process::Command;

use super::floor::floor_loop;
use super::rig::{Rig, builder, in_process_worker, settings};
use super::stats::{median, min_max};
use super::{Plan, Row};
use crate::assembly::WorkerBuilder;
use crate::handler::exec::ExecConfig;
use crate::handler::{HandlerConfig, HandlerKind, MatchRule};
use crate::worker::{Shutdown, WorkerExit, WorkerSettings};

/// The hand-written loop the exec worker is compared with, embedded so the bench runs anywhere.
const CURL_LOOP: &str = include_str!("../../../benches/curl-loop.sh");

pub(super) async fn throughput(plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut floor = Vec::new();
    let mut worker = Vec::new();
    let mut quiet = Vec::new();
    let mut ratio = Vec::new();
    for round in 0..plan.repeat {
        eprintln!("bench:   repeat {}/{}", round + 1, plan.repeat);
        // Alternating which goes first spreads slow moments of a busy machine over both.
        let (f, w) = if round % 2 == 0 {
            let f = floor_rate(plan.runs).await?;
            (f, worker_rate(noop_handlers(), plan.runs, true).await?)
        } else {
            let w = worker_rate(noop_handlers(), plan.runs, true).await?;
            (floor_rate(plan.runs).await?, w)
        };
        floor.push(f);
        worker.push(w);
        quiet.push(worker_rate(noop_handlers(), plan.runs, false).await?);
        // Time per run of the worker over the floor's: the floor's rate over the worker's.
        ratio.push(f / w);
    }
    let ratio_median = median(&ratio);
    Ok(vec![
        Row::samples(
            "floor: claim → context + task view → complete loop, runs/s",
            &floor,
            0,
        ),
        Row::samples("worker, noop handler, runs/s", &worker, 0),
        Row::samples(
            "worker, noop handler, task stream not followed, runs/s",
            &quiet,
            0,
        ),
        Row::new(
            "worker time per run ÷ floor's",
            format!("{ratio_median:.3}"),
        )
        .spread(min_max(&ratio, 3))
        .target("≤ 1.05", ratio_median <= 1.05),
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

/// Runs/s of the worker loop through `runs` queued runs, following each run's task stream or
/// not (`worker.follow_task_events`: one stream connection per run).
async fn worker_rate(handlers: WorkerBuilder, runs: u64, follow: bool) -> anyhow::Result<f64> {
    let rig = Rig::start().await?;
    rig.enqueue(runs);
    let worker = in_process_worker(
        &rig,
        handlers,
        WorkerSettings {
            follow_task_events: follow,
            ..settings(Some(runs), Duration::from_secs(60), Duration::from_secs(20))
        },
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
    rig.rate(runs, elapsed).await
}

/// Runs/s of the floor loop (the least a correct worker must do per run, with the same client).
async fn floor_rate(runs: u64) -> anyhow::Result<f64> {
    let rig = Rig::start().await?;
    rig.enqueue(runs);
    let client = rig.client()?;
    let mut claims = 0;
    let started = Instant::now();
    floor_loop(&client, || {
        claims += 1;
        claims <= runs
    })
    .await?;
    let elapsed = started.elapsed();
    rig.rate(runs, elapsed).await
}

// ---- against curl ---------------------------------------------------------------------------

pub(super) async fn against_curl(plan: &Plan) -> anyhow::Result<Vec<Row>> {
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
        let e = worker_rate(exec_true_handlers(), plan.exec_runs, true).await?;
        curl.push(c);
        exec.push(e);
        ratio.push(e / c);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ratio_median = median(&ratio);
    Ok(vec![
        Row::samples("curl loop: claim, `true`, complete; runs/s", &curl, 1),
        Row::samples("worker, exec handler `/bin/true`, runs/s", &exec, 1),
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
    rig.rate(runs, elapsed).await
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agh-worker-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
