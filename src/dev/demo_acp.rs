//! `agh-worker demo --acp`: the AGH-launched way. The built-in simulator plays AGH: a provider
//! whose command is this binary's `acp`, pool-owned tasks, worker sessions it starts by itself
//! (AGH's task-role runtime: one per channel), and AGH's stop at the end.
//!
//! `demo --attach`: the resident way. A resident worker (`run --attach`) runs beside the
//! simulator, the provider's command is the thin `acp --attach`, and each session works in a slot
//! of the resident.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::demo::{TITLES, follow_progress};
use crate::dev::sim::acp::AgentProvider;
use crate::dev::sim::{DEFAULT_WORKSPACE, SimConfig, Simulator, TaskSpec};

/// The agent whose pool owns the demo's tasks.
const AGENT: &str = "agh-worker";

/// The tasks' network channels: runs on one channel share one worker session, so two channels
/// show two sessions started by the simulator.
const CHANNELS: [&str; 2] = ["demo-a", "demo-b"];

/// How long the runs may take before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs `total` pool-owned tasks through sessions the simulator starts; prints the summary.
/// With `attached`, the sessions hand themselves to a resident worker started for the demo.
pub(super) async fn run(
    total: u32,
    workdir: &Path,
    handler: &Path,
    attached: bool,
) -> anyhow::Result<()> {
    let home = workdir.join("agh-home");
    std::fs::create_dir_all(&home).context("cannot create the demo's AGH home")?;
    let socket = home.join("daemon.sock");
    let config_file = workdir.join("agh-worker.toml");
    // The worker finds the daemon as the `agh` CLI does: `$AGH_HOME/daemon.sock`.
    std::fs::write(
        &config_file,
        format!(
            "[log]\nlevel = \"error\"\n\n[health]\nenabled = false\n\n[acp]\nlog_file = {log:?}\n\n[[handlers]]\nname = \"example\"\nkind = \"exec\"\n[handlers.exec]\nprogram = {program:?}\n",
            log = workdir.join("acp.log").display().to_string(),
            program = handler.display().to_string(),
        ),
    )
    .context("cannot write the demo's worker configuration")?;
    let exe = std::env::current_exe().context("cannot find this program to launch it")?;
    let simulator = Simulator::new(SimConfig {
        create_default_session: false,
        ..SimConfig::default()
    });
    let attach_socket = workdir.join("attach.sock");
    let subcommand = if attached {
        format!("acp --attach 'unix:{}'", attach_socket.display())
    } else {
        "acp".to_string()
    };
    simulator.set_agent_provider(AgentProvider {
        command: format!(
            "'{}' --config '{}' {subcommand}",
            exe.display(),
            config_file.display()
        ),
        env: vec![(
            "STATE_DIRECTORY".into(),
            workdir.join("state").display().to_string(),
        )],
        agh_home: Some(home.clone()),
        agents: vec![AGENT.into()],
        workspace_root: Some(workdir.to_path_buf()),
    });
    let server = simulator.serve_unix(&socket).await?;
    let mut resident = if attached {
        Some(start_resident(&exe, &config_file, &home, &attach_socket, workdir).await?)
    } else {
        None
    };
    println!(
        "agh-worker demo ({}): {total} tasks owned by the pool of agent {AGENT:?} on the built-in AGH simulator at {}; it starts `agh-worker {subcommand}` for their sessions, handler {}",
        if attached {
            "resident, attached sessions"
        } else {
            "AGH-launched"
        },
        socket.display(),
        handler.display()
    );
    let started = Instant::now();
    for index in 0..total {
        let title = TITLES[index as usize % TITLES.len()];
        simulator.enqueue_task(TaskSpec {
            owner: Some(format!("pool:{AGENT}")),
            workspace_id: Some(DEFAULT_WORKSPACE.into()),
            channel: Some(CHANNELS[index as usize % CHANNELS.len()].into()),
            ..TaskSpec::titled(&format!("{title} ({})", index + 1))
        });
    }
    follow_progress(&simulator, u64::from(total), || {
        started.elapsed() > PATIENCE || !simulator.agent_errors().is_empty()
    })
    .await;
    let elapsed = started.elapsed();
    let sessions = simulator.agent_sessions();
    let mut stops = Vec::new();
    for session in &sessions {
        if let Ok(stop) = simulator.stop_agent_session(&session.session_id).await {
            stops.push((session, stop));
        }
    }
    let resident_exit = match resident.as_mut() {
        Some(resident) => Some(stop_resident(resident).await),
        None => None,
    };
    server.shutdown().await;

    let ledger = simulator.ledger();
    let completed = ledger.runs_in_status("completed");
    let failed = ledger.runs_in_status("failed");
    println!();
    println!("  sessions started      {:>8}", sessions.len());
    for (session, stop) in &stops {
        println!(
            "    {} on {}: stopped, {} in {} ms",
            session.session_id,
            session.channel.as_deref().unwrap_or("-"),
            if stop.exited_by_itself {
                "exited by itself"
            } else {
                "signalled"
            },
            stop.waited.as_millis()
        );
    }
    println!("  runs completed        {completed:>8}");
    println!("  runs failed           {failed:>8}");
    println!(
        "  throughput            {:>8.1} runs/s",
        (completed + failed) as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!("  ledger violations     {:>8}", ledger.violations_total);
    if let Some(exit) = &resident_exit {
        println!("  resident worker       {exit}");
    }
    let errors = simulator.agent_errors();
    if !errors.is_empty() {
        anyhow::bail!("sessions did not start: {}", errors.join("; "));
    }
    if completed + failed < u64::from(total) {
        anyhow::bail!(
            "only {} of {total} runs finished within {PATIENCE:?}; the worker's log is {}",
            completed + failed,
            workdir.join("acp.log").display()
        );
    }
    if ledger.violations_total > 0 {
        anyhow::bail!(
            "the simulator's ledger recorded violations: {:?}",
            ledger.violations
        );
    }
    if let Some(exit) = resident_exit
        && exit != RESIDENT_STOPPED
    {
        anyhow::bail!("the resident worker did not stop cleanly: {exit}");
    }
    if let Some((session, _)) = stops.iter().find(|(_, stop)| !stop.exited_by_itself) {
        anyhow::bail!(
            "session {} did not exit by itself when stopped",
            session.session_id
        );
    }
    Ok(())
}

/// What the summary says of a resident that drained and exited 0.
const RESIDENT_STOPPED: &str = "drained and stopped on SIGTERM";

/// Starts the resident worker on `attach_socket` and waits until it listens.
async fn start_resident(
    exe: &Path,
    config_file: &Path,
    home: &Path,
    attach_socket: &Path,
    workdir: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(config_file)
        .args(["run", "--attach"])
        .arg(format!("unix:{}", attach_socket.display()))
        .env("AGH_HOME", home)
        .env("STATE_DIRECTORY", workdir.join("state"))
        .env_remove("AGH_SESSION_ID")
        .env_remove("AGH_AGENT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the resident worker")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attach_socket.exists() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the resident worker exited at start: {status}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("the resident worker did not listen within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// SIGTERM, as systemd stops it; says how it went.
async fn stop_resident(resident: &mut tokio::process::Child) -> String {
    if let Some(pid) = resident.id().and_then(|pid| i32::try_from(pid).ok())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    match tokio::time::timeout(Duration::from_secs(60), resident.wait()).await {
        Ok(Ok(status)) if status.success() => RESIDENT_STOPPED.to_string(),
        Ok(Ok(status)) => format!("exited {status}"),
        Ok(Err(err)) => format!("cannot be waited for: {err}"),
        Err(_) => "did not stop within 60 s".to_string(),
    }
}
