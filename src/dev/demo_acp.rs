//! `agh-worker demo --acp`: the AGH-launched way. The built-in simulator plays AGH: a provider
//! whose command is this binary's `acp`, pool-owned tasks, worker sessions it starts by itself
//! (AGH's task-role runtime: one per channel), and AGH's stop at the end.

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
pub(super) async fn run(total: u32, workdir: &Path, handler: &Path) -> anyhow::Result<()> {
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
    simulator.set_agent_provider(AgentProvider {
        command: format!(
            "'{}' --config '{}' acp",
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
    println!(
        "agh-worker demo (AGH-launched): {total} tasks owned by the pool of agent {AGENT:?} on the built-in AGH simulator at {}; it starts `agh-worker acp` for their sessions, handler {}",
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
    if let Some((session, _)) = stops.iter().find(|(_, stop)| !stop.exited_by_itself) {
        anyhow::bail!(
            "session {} did not exit by itself when stopped",
            session.session_id
        );
    }
    Ok(())
}
