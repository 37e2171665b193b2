//! Runs/s of a resident worker with N slots, and of N floor loops at once: the most the
//! simulator (on this machine, beside its client) serves N sessions working at once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::super::floor::floor_loop;
use super::rig::{Scratch, SlotRig, completed, enqueue, serve_sim, session_spec, until_completed};
use crate::api::{AghClient, ClientOptions, Endpoint, Identity};
use crate::dev::sim::SimConfig;

/// How long one measurement may take.
const WITHIN: Duration = Duration::from_secs(600);

/// Runs/s of a resident worker with `slots` attached sessions and a no-op handler through
/// `runs` queued runs: from the first enqueue (the simulator wakes the idle slots at once, as
/// AGH's scheduler does) to the last completion seen at the simulator.
pub(super) async fn slots_rate(exe: &Path, slots: usize, runs: u64) -> anyhow::Result<f64> {
    let handlers = json!([{"name": "noop", "kind": "noop"}]);
    let mut rig = SlotRig::start(exe, "rate", SimConfig::default(), &handlers).await?;
    rig.attach(slots).await?;
    let started = Instant::now();
    enqueue(&rig.sim, runs);
    let ended = until_completed(&rig.sim, runs, WITHIN).await?;
    rig.stop().await?;
    Ok(runs as f64 / ended.duration_since(started).as_secs_f64())
}

/// Runs/s of `loops` floor loops at once, each as a session of its own, through `runs` queued
/// runs: claim (waiting), the context beside the task view, complete, as the bench's floor
/// does, with nothing else (no heartbeats, task streams or channel listeners).
pub(super) async fn floor_rate(loops: usize, runs: u64) -> anyhow::Result<f64> {
    let dir = Scratch::new("floor")?;
    let (sim, server) = serve_sim(dir.path(), SimConfig::default()).await?;
    let endpoint = Endpoint::Unix(dir.path().join("agh-home/daemon.sock"));
    let clients = (0..loops)
        .map(|_| {
            let session = sim.create_session(session_spec());
            let identity = Identity {
                session_id: session.session_id,
                agent: session.agent_name,
                workspace_id: session.workspace_id,
            };
            AghClient::new(endpoint.clone(), identity, ClientOptions::default())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    enqueue(&sim, runs);
    // Each claim takes one run off the count first, so no loop waits for a run that is not
    // there.
    let left = Arc::new(AtomicU64::new(runs));
    let loops: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let left = left.clone();
            tokio::spawn(async move {
                let another = || {
                    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                };
                tokio::time::timeout(WITHIN, floor_loop(&client, another)).await?
            })
        })
        .collect();
    for done in futures_util::future::join_all(loops).await {
        done.context("a floor loop panicked")??;
    }
    let elapsed = started.elapsed();
    let done = completed(&sim);
    server.shutdown().await;
    anyhow::ensure!(
        done == runs,
        "{done} of {runs} runs completed in the simulator"
    );
    Ok(runs as f64 / elapsed.as_secs_f64())
}
