//! One resident worker for the idle figures: its RSS with one slot and with eight attached and
//! idle, and how soon a wake prompt brings a queued run to a slot's claim and handler.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::rig::{MAX_SLOTS, SlotRig, enqueue};
use crate::dev::sim::SimConfig;

/// What the idle resident showed.
pub(super) struct IdleFigures {
    /// RSS with one slot attached and idle, KiB.
    pub(super) rss_one: u64,
    /// RSS with every slot attached and idle, KiB.
    pub(super) rss_all: u64,
    /// RSS with every slot attached and idle again after the wake samples, KiB.
    pub(super) rss_after: u64,
    /// Enqueue with its wake prompt → claim answered, ms.
    pub(super) claims: Vec<f64>,
    /// Enqueue with its wake prompt → the handler program running, ms.
    pub(super) starts: Vec<f64>,
    /// Samples whose wake brought no claim (the run then had to be woken again).
    pub(super) missed: usize,
}

/// How long one sample may wait for its claim before the bench wakes every slot by hand.
const WAKE_PATIENCE: Duration = Duration::from_secs(5);

pub(super) async fn idle_slots(exe: &Path, samples: usize) -> anyhow::Result<IdleFigures> {
    // The daemon re-checks an open claim long-poll only every poll interval (an hour here, and
    // the simulator's own scheduler ticks with it): only the wake sent at enqueue brings a run.
    let config = SimConfig {
        poll_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    };
    // The handler's first act is to read the wall clock; its stdout is the run's result.
    let handlers = json!([{
        "name": "clock",
        "kind": "exec",
        "exec": {"program": "/bin/date", "args": ["+%s%N"]},
    }]);
    let mut rig = SlotRig::start(exe, "wake", config, &handlers).await?;
    rig.attach(1).await?;
    let rss_one = settled_rss(&rig).await?;
    rig.attach(MAX_SLOTS - 1).await?;
    let rss_all = settled_rss(&rig).await?;

    let mut claims = Vec::with_capacity(samples);
    let mut starts = Vec::with_capacity(samples);
    let mut missed = 0;
    for _ in 0..samples {
        rig.until_idle().await?;
        // The slots that lost the last claim race answer their wake turn and go back to their
        // long-poll; a session whose turn is still open is not woken (as in AGH).
        tokio::time::sleep(Duration::from_millis(20)).await;
        match sample(&rig).await? {
            Some((claim, start)) => {
                claims.push(claim);
                starts.push(start);
            }
            None => missed += 1,
        }
    }
    rig.until_idle().await?;
    let rss_after = settled_rss(&rig).await?;
    rig.stop().await?;
    Ok(IdleFigures {
        rss_one,
        rss_all,
        rss_after,
        claims,
        starts,
        missed,
    })
}

/// RSS once the slots have been idle a moment (attaching is done; what follows is steady).
async fn settled_rss(rig: &SlotRig) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.rss_kib()
}

/// One run queued (the simulator sends the idle sessions AGH's wake prompt as it queues it):
/// (→ claim answered, → handler running) in ms, or `None` when no slot claimed it in time.
async fn sample(rig: &SlotRig) -> anyhow::Result<Option<(f64, f64)>> {
    let woke_at = SystemTime::now();
    let woke = Instant::now();
    let run = enqueue(&rig.sim, 1).remove(0);
    let mut claimed = None;
    let in_time = rig
        .sim
        .wait_until(WAKE_PATIENCE, |sim| {
            // Checked after every request the simulator answers: the claim-next that took the
            // run is the first after which it is no longer queued.
            if claimed.is_none() {
                claimed = sim
                    .run(&run)
                    .filter(|run| run.status != "queued")
                    .map(|_| woke.elapsed());
            }
            claimed.is_some()
        })
        .await;
    if !in_time {
        // Not a figure: wake every session by hand so the run does not wait an hour.
        let task = rig.sim.run(&run).context("the queued run")?.task_id;
        for session in rig.sessions() {
            let _ = rig.sim.wake_agent(&session.session_id, &task, &run).await;
        }
    }
    let done = rig
        .sim
        .wait_until(Duration::from_secs(30), |sim| {
            sim.run(&run).is_some_and(|run| run.status == "completed")
        })
        .await;
    ensure!(done, "the woken run did not complete within 30 s");
    let Some(claimed) = claimed.filter(|_| in_time) else {
        return Ok(None);
    };
    let result = rig.sim.run(&run).and_then(|run| run.result);
    let printed = result
        .as_ref()
        .and_then(|result| result["stdout_tail"].as_str())
        .context("the exec handler's result has no stdout")?;
    let nanos: u128 = printed
        .trim()
        .parse()
        .with_context(|| format!("the handler printed {printed:?}, not a time in ns"))?;
    let woke_nanos = woke_at.duration_since(UNIX_EPOCH)?.as_nanos();
    let start = nanos.saturating_sub(woke_nanos) as f64 / 1e6;
    Ok(Some((claimed.as_secs_f64() * 1000.0, start)))
}
