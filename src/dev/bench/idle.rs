//! The idle footprint of the binary: memory, threads, descriptors, CPU and claims while idle.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::child::{ChildWorker, clock_ticks};
use super::rig::Rig;
use super::stats::ms;
use super::{Plan, Row};
use crate::api::ClientOptions;
use crate::dev::sim::Route;

pub(super) async fn idle_footprint(plan: &Plan, exe: &Path) -> anyhow::Result<Vec<Row>> {
    let rig = Rig::start().await?;
    // An exec-only worker, the common deployment: its handler is a program, so nothing at idle
    // needs TLS or an HTTP client beyond AGH's.
    let handlers =
        serde_json::json!([{"name": "true", "kind": "exec", "exec": {"program": "/bin/true"}}]);
    let mut worker = ChildWorker::spawn(exe, &rig, handlers, &[])?;
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
        Row::new("RSS, exec-only worker, MiB", format!("{rss_mib:.1}"))
            .spread(format!("peak {:.1}", after.hwm_kib as f64 / 1024.0))
            .target("≤ 8", rss_mib <= 8.0),
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
