//! `agh-worker demo`: the built-in AGH simulator, a set of sample tasks, the worker with the
//! example exec handler, live progress, and a summary of what happened.

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::assembly::WorkerBuilder;
use crate::cli::DemoArgs;
use crate::config::{Config, OrphanPolicy};
use crate::coordination::CoordinationSettings;
use crate::coordination::listener::ListenerSettings;
use crate::dev::sim::{DEFAULT_WORKSPACE, SessionSpec, SimConfig, Simulator, TaskSpec};
use crate::handler::exec::ExecConfig;
use crate::handler::{HandlerConfig, HandlerKind, MatchRule};
use crate::worker::{Shutdown, WorkerSettings};

/// The network channel of the demo's session and tasks, so progress lines become real channel
/// messages (a session can only send on its own channel).
const DEMO_CHANNEL: &str = "demo";

/// The example handler, embedded so the demo works from any directory.
const EXAMPLE_HANDLER: &str = include_str!("../../examples/exec-handler.sh");

pub(super) const TITLES: &[&str] = &[
    "Summarise the build log",
    "Triage issue #412",
    "Update the changelog",
    "Check links in the docs",
    "Refresh the dependency report",
    "Draft the changelog entry",
    "Fail: reproduce the flaky test",
    "Review the API contract",
];

/// Runs the demo and prints its summary.
pub async fn run(args: &DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agh-worker demo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    // Warnings only, so the progress and summary stay readable; RUST_LOG shows more.
    crate::ops::logging::init("warn", crate::config::LogFormat::Text);
    let workdir = tempfile_dir()?;
    let handler = match &args.handler {
        Some(path) => path.clone(),
        None => write_example_handler(&workdir)?,
    };
    if args.acp || args.attach {
        let shown = super::demo_acp::run(args.tasks.max(1), &workdir, &handler, args.attach).await;
        // Kept when something went wrong: the error names the worker's log in it.
        if shown.is_ok() {
            let _ = std::fs::remove_dir_all(&workdir);
        }
        return shown;
    }
    let simulator = Simulator::new(SimConfig::default());
    let server = simulator
        .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await?;
    let session = simulator.create_session(SessionSpec {
        agent_name: "worker".into(),
        workspace_id: Some(DEFAULT_WORKSPACE.into()),
        channel: Some(DEMO_CHANNEL.into()),
        ..SessionSpec::default()
    });
    let total = args.tasks.max(1);
    for index in 0..total {
        let title = TITLES[index as usize % TITLES.len()];
        simulator.enqueue_task(TaskSpec {
            channel: Some(DEMO_CHANNEL.into()),
            ..TaskSpec::titled(&format!("{title} ({})", index + 1))
        });
    }
    let mut config = Config::default();
    config.agh.session_id = session.session_id.clone();
    config.agh.agent = session.agent_name.clone();
    config.handlers = vec![HandlerConfig {
        name: "example".into(),
        kind: HandlerKind::Exec,
        matches: MatchRule::default(),
        exec: Some(ExecConfig {
            program: handler.clone(),
            ..ExecConfig::default()
        }),
        webhook: None,
        coder: None,
    }];
    let settings = WorkerSettings {
        orphan_policy: OrphanPolicy::Adopt,
        max_runtime: Some(Duration::from_secs(60)),
        idle_exit: Some(Duration::from_secs(10)),
        ..super::in_process_settings()
    };
    let worker = Arc::new(
        WorkerBuilder::new(config)
            .endpoint(&server.base_url())?
            .settings(settings)
            .coordination(CoordinationSettings {
                progress_interval: Duration::from_millis(200),
                ..CoordinationSettings::default()
            })
            .listener(Some(ListenerSettings {
                session_channel: Some(DEMO_CHANNEL.into()),
                idle_backoff_initial: crate::coordination::listener::IDLE_BACKOFF_INITIAL,
                idle_backoff_max: Duration::from_secs(5),
                error_backoff_initial: Duration::from_millis(100),
                error_backoff_max: Duration::from_secs(2),
                disabled_probe: Duration::from_secs(60),
            }))
            .build()?,
    );
    let shutdown = Shutdown::default();
    println!(
        "agh-worker demo: {total} tasks on the built-in AGH simulator at {}, handler {}",
        server.base_url(),
        handler.display()
    );
    let started = Instant::now();
    let running = {
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { worker.run(shutdown).await })
    };
    follow_progress(&simulator, total as u64, || running.is_finished()).await;
    let elapsed = started.elapsed();
    shutdown.drain.cancel();
    let _ = running.await;
    server.shutdown().await;

    let ledger = simulator.ledger();
    let snapshot = worker.status();
    let mut latencies: Vec<u64> = snapshot.start_latencies_us.iter().copied().collect();
    latencies.sort_unstable();
    let counters = &snapshot.counters;
    let finished = counters.runs_completed + counters.runs_failed;
    println!();
    println!("  runs completed        {:>8}", counters.runs_completed);
    println!("  runs failed           {:>8}", counters.runs_failed);
    println!("  runs released         {:>8}", counters.runs_released);
    println!("  leases lost           {:>8}", counters.leases_lost);
    println!("  channel messages sent {:>8}", counters.messages_sent);
    println!(
        "  claim→start p50       {:>8}",
        format_micros(percentile(&latencies, 50))
    );
    println!(
        "  claim→start p99       {:>8}",
        format_micros(percentile(&latencies, 99))
    );
    println!(
        "  throughput            {:>8.1} runs/s",
        finished as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!("  ledger violations     {:>8}", ledger.violations_total);
    let _ = std::fs::remove_dir_all(&workdir);
    if ledger.violations_total > 0 {
        anyhow::bail!(
            "the simulator's ledger recorded violations: {:?}",
            ledger.violations
        );
    }
    Ok(())
}

/// Shows how many runs have finished until all `total` have, or `give_up` says so.
pub(super) async fn follow_progress(
    simulator: &Simulator,
    total: u64,
    mut give_up: impl FnMut() -> bool,
) {
    let terminal = std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        let ledger = simulator.ledger();
        let done = ledger.runs_in_status("completed") + ledger.runs_in_status("failed");
        if terminal {
            print!("\r{} {done}/{total}", progress_bar(done, total, 30));
            let _ = std::io::stdout().flush();
        } else if done != shown {
            println!("progress: {done}/{total} runs finished");
        }
        shown = done;
        if done >= total || give_up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if terminal {
        println!();
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("agh-worker-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn write_example_handler(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("exec-handler.sh");
    std::fs::write(&path, EXAMPLE_HANDLER)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn progress_bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done.min(total) as usize) * width) / total as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The p-th percentile (nearest rank) of sorted samples.
pub fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p as f64 / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn format_micros(value: Option<u64>) -> String {
    match value {
        None => "-".into(),
        Some(us) if us < 1000 => format!("{us} µs"),
        Some(us) => format!("{:.1} ms", us as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), Some(50));
        assert_eq!(percentile(&samples, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_progress_bar_fills_in_proportion() {
        assert_eq!(progress_bar(5, 10, 10), "[#####.....]");
        assert_eq!(progress_bar(10, 10, 4), "[####]");
    }
}
