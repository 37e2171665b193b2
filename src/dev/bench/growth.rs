//! Growth: the binary's memory, descriptors and threads after a small and a large number of runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use super::child::{ChildWorker, ProcStatus, noop_handlers_json};
use super::rig::Rig;
use super::{Plan, Row};
use crate::dev::sim::{Route, TaskSpec};

pub(super) async fn growth(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_relative_to_the_first_reading() {
        assert_eq!(growth_pct(100, 110), 10.0);
        assert_eq!(growth_pct(0, 5), 0.0);
    }
}
