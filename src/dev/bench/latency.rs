//! Latency: enqueue to handler start, start-up to ready, lease loss to cancel, operator cancel to
//! handler stopped, SIGTERM to exit.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::json;
use tokio::sync::mpsc;

use super::child::{ChildWorker, noop_handlers_json};
use super::rig::{Rig, builder, in_process_worker, settings};
use super::stats::{max, ms, percentile};
use super::{Plan, Row};
use crate::dev::sim::{Route, TaskSpec, TransitionKind};
use crate::handler::{Handler, MatchRule, Outcome, TaskContext};
use crate::worker::{Shutdown, WorkerExit, WorkerSettings};

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

pub(super) async fn latency(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
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
    rows.push(Row::samples("spawn → /readyz 200, ms", &ready, 1));
    rows.push(Row::samples(
        "spawn → first claim-next waiting at the daemon, ms",
        &first_claim,
        1,
    ));

    // Lease loss → handler cancelled.
    let losses = lease_loss(plan.lease_samples).await?;
    rows.push(
        Row::samples(
            "lease lost at the daemon → handler sees cancel, ms (heartbeat every 1 s)",
            &losses,
            0,
        )
        .target(
            "≤ 1 heartbeat (1000) + a round trip",
            max(&losses) <= 1100.0,
        ),
    );

    // Operator cancel → handler stopped, found through the task stream with a 20 s heartbeat.
    let cancels = operator_cancel(plan.latency_samples).await?;
    let p50 = percentile(&cancels, 50.0);
    let p99 = percentile(&cancels, 99.0);
    rows.push(
        Row::new(
            "operator cancel → handler stopped p50, ms (heartbeat every 20 s)",
            format!("{p50:.1}"),
        )
        .spread(format!(
            "p10–p90 {:.1}–{:.1}",
            percentile(&cancels, 10.0),
            percentile(&cancels, 90.0)
        )),
    );
    rows.push(
        Row::new(
            "operator cancel → handler stopped p99, ms (heartbeat every 20 s)",
            format!("{p99:.1}"),
        )
        .spread(format!(
            "max {:.1}; {} samples",
            max(&cancels),
            cancels.len()
        ))
        .target("≤ 1000", p99 <= 1000.0),
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
        Row::samples(
            "SIGTERM → exit, run in flight, drain timeout 1 s, ms",
            &stops,
            0,
        )
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

/// Cancels, as an operator, the task of a run whose handler is working, and times how long the
/// handler takes to see its cancellation, with heartbeats 20 s apart (so only the task stream
/// can tell it in time). In ms.
async fn operator_cancel(samples: usize) -> anyhow::Result<Vec<f64>> {
    let rig = Rig::start().await?;
    let mut probe = ProbeWorker::start(
        &rig,
        true,
        settings(None, Duration::from_secs(60), Duration::from_secs(20)),
    )?;
    let mut cancels = Vec::with_capacity(samples);
    for _ in 0..samples {
        let task = rig
            .sim
            .enqueue_task(TaskSpec::titled("operator cancel probe"));
        let (run_id, _) = tokio::time::timeout(Duration::from_secs(10), probe.starts.recv())
            .await
            .context("the handler did not start within 10 s")?
            .context("the worker stopped")?;
        // The run's stream is subscribed once the simulator has recorded its opening.
        let followed_by = Instant::now() + Duration::from_secs(10);
        while !rig
            .sim
            .stream_opens()
            .iter()
            .any(|open| open.task_id == task.task_id)
        {
            ensure!(
                Instant::now() < followed_by,
                "the worker did not follow the task stream"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..50_000))).await;
        let cancelled = Instant::now();
        ensure!(
            rig.sim.cancel_task(&task.task_id, Some("bench")),
            "the task {} could not be cancelled",
            task.task_id
        );
        let (cancelled_run, seen) =
            tokio::time::timeout(Duration::from_secs(30), probe.cancels.recv())
                .await
                .context("the handler saw no cancellation within 30 s")?
                .context("the worker stopped")?;
        ensure!(
            cancelled_run == run_id,
            "another run ({cancelled_run}) was cancelled"
        );
        cancels.push(ms(seen.saturating_duration_since(cancelled)));
    }
    probe.shutdown.force.cancel();
    let _ = probe.running.await;
    rig.stop().await;
    cancels.sort_by(f64::total_cmp);
    Ok(cancels)
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
